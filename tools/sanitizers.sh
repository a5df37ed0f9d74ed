#!/usr/bin/env bash
# The torch-free core (latentmoe_base) built with clang under ASan + UBSan (+ libFuzzer coverage),
# in its own build directory so it never mixes with the libtorch build.
#   tools/sanitizers.sh test            build, then run the torch-free unit tests (make test-asan)
#   tools/sanitizers.sh fuzz SECONDS [TARGET...]
#                                       run each fuzz target for SECONDS on its committed corpus
#                                       (make fuzz FUZZ_SECONDS=N); prints executions and findings
# A finding (crash, leak, timeout, out-of-memory, sanitizer report) exits non-zero and leaves the
# input under $build/fuzz/artifacts/<target>/; docs/fuzzing.md says how to reproduce and keep it.
set -euo pipefail
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${LATENTMOE_SANITIZE_BUILD:-$repo_root/build-asan}
all_targets=(fuzz_safetensors_header fuzz_safetensors_index fuzz_indexed_dataset fuzz_tokenizer_json
             fuzz_bpe_encode fuzz_config fuzz_hf_config)

build() {
  if [[ ! -f "$build_dir/build.ninja" ]]; then
    cmake -S "$repo_root" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
      -DLATENTMOE_WITH_TORCH=OFF -DLATENTMOE_SANITIZE=address,undefined -DLATENTMOE_BUILD_FUZZERS=ON >/dev/null
  fi
  cmake --build "$build_dir" --parallel "$(nproc)"
}

# Reports go to stderr with a stack; detect_leaks is on by default with ASan on Linux.
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

run_tests() {
  build
  ctest --test-dir "$build_dir" --output-on-failure --parallel "$(nproc)"
}

run_fuzz() {
  local seconds=$1
  shift
  local targets=("$@")
  ((${#targets[@]})) || targets=("${all_targets[@]}")
  build
  local failed=0
  printf '%-26s %10s %12s %9s %s\n' target seconds executions corpus findings
  for target in "${targets[@]}"; do
    local seeds="$repo_root/tests/fuzz/corpus/$target" work="$build_dir/fuzz/corpus/$target"
    local artifacts="$build_dir/fuzz/artifacts/$target" log="$build_dir/fuzz/$target.log"
    [[ -d "$seeds" ]] || { echo "unknown fuzz target '$target' (targets: ${all_targets[*]})" >&2; exit 2; }
    mkdir -p "$work" "$artifacts"
    local dict=()
    [[ "$target" == fuzz_bpe_encode || "$target" == fuzz_indexed_dataset || "$target" == fuzz_config ]] ||
      dict=(-dict="$repo_root/tests/fuzz/json.dict")
    local rc=0
    # New inputs go to the work corpus (under the build dir); the committed seeds are only read.
    "$build_dir/tests/fuzz/$target" "$work" "$seeds" "${dict[@]}" -max_total_time="$seconds" -timeout=20 \
      -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 -artifact_prefix="$artifacts/" >"$log" 2>&1 || rc=$?
    local executions corpus findings
    executions=$(grep -oP 'stat::number_of_executed_units:\s*\K\d+' "$log" | tail -n 1 || true)
    corpus=$(find "$work" -type f | wc -l)
    findings=$(find "$artifacts" -type f | wc -l)
    printf '%-26s %10s %12s %9s %s\n' "$target" "$seconds" "${executions:-?}" "$corpus" "$findings"
    if ((rc != 0 || findings != 0)); then
      failed=1
      echo "  $target: exit $rc; log $log; inputs in $artifacts" >&2
      grep -m 5 -E 'ERROR|runtime error|property violated|SUMMARY' "$log" | sed 's/^/    /' >&2 || true
    fi
  done
  return $failed
}

case "${1:-}" in
  test) run_tests ;;
  fuzz) shift; [[ "${1:-}" =~ ^[0-9]+$ ]] || { echo "usage: $0 fuzz SECONDS [TARGET...]" >&2; exit 2; }; run_fuzz "$@" ;;
  build) build ;;
  *) echo "usage: $0 test | fuzz SECONDS [TARGET...] | build" >&2; exit 2 ;;
esac
