#!/usr/bin/env bash
# The committed golden runs (tests/golden/NAME.json), defined once: `make golden` records them,
# the test suite checks them (tests/python/test_golden.py), docs/ci.md explains both.
#
#   tools/golden_runs.sh record [NAME ...]   re-record (after an intended numerical change)
#   tools/golden_runs.sh check  [NAME ...]   check; exit 5 names the first diverging step and metric
#
# Environment: LATENTMOE_BUILD_DIR (default build), GOLDEN_OUT (a directory: each check also
# writes NAME.report.json and NAME.junit.xml there), GOLDEN_ARGS (extra train arguments).
set -euo pipefail
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
binary="${LATENTMOE_BUILD_DIR:-$repo_root/build}/latentmoe"

declare -A runs=(
  [tiny]="--config tiny"
  [debug-fp32]="--config debug --set train.steps=50"
  [debug-bf16]="--config debug --set train.steps=50 --set precision.compute_dtype=bf16 --set precision.cpu_low_precision_gemm=emulated"
)
mode=${1:-}
shift || true
[[ "$mode" == record || "$mode" == check ]] || { echo "usage: $0 record|check [${!runs[*]}]" >&2; exit 2; }
names=("$@")
((${#names[@]})) || names=(tiny debug-fp32 debug-bf16)

status=0
for name in "${names[@]}"; do
  [[ -n "${runs[$name]:-}" ]] || { echo "unknown golden run '$name' (known: ${!runs[*]})" >&2; exit 2; }
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  # shellcheck disable=SC2206
  args=(train ${runs[$name]} --set "checkpoint.dir=$work/checkpoints" --set "logging.dir=$work/logs"
        --golden "$repo_root/tests/golden/$name.json")
  if [[ "$mode" == record ]]; then
    args+=(--golden-write)
  elif [[ -n "${GOLDEN_OUT:-}" ]]; then
    mkdir -p "$GOLDEN_OUT"
    args+=(--report "$GOLDEN_OUT/$name.report.json" --junit "$GOLDEN_OUT/$name.junit.xml")
  fi
  # shellcheck disable=SC2206
  args+=(${GOLDEN_ARGS:-})
  echo "== $mode $name: latentmoe ${args[*]}"
  rc=0
  (cd "$repo_root" && "$binary" "${args[@]}") || rc=$?
  rm -rf "$work"
  ((rc == 0)) || status=$rc
done
exit $status
