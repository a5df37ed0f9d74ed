#!/usr/bin/env bash
# Runs every test: ctest (C++ unit/integration), pytest (Python reference tests), then the
# sanitizer build of the torch-free core (ASan + UBSan unit tests, and each fuzz target for
# LATENTMOE_FUZZ_SMOKE_SECONDS, default 5, as a smoke check). All always run; the exit code is
# non-zero if any failed. Output ends with each runner's summary line.
set -uo pipefail
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=$(cd "${1:-$repo_root/build}" && pwd)
python_bin="$(cat "$repo_root/.venv-path")/bin/python"

ctest --test-dir "$build_dir" --output-on-failure --parallel "$(nproc)"
ctest_rc=$?

export LATENTMOE_BUILD_DIR="$build_dir"
# The multi-process and multi-host tests already ran under ctest (labels multiproc, multihost).
cd "$repo_root" && "$python_bin" -m pytest tests/python -q -p no:cacheprovider --ignore=tests/python/test_distributed.py \
  --ignore=tests/python/test_multihost.py
pytest_rc=$?

bash "$repo_root/tools/sanitizers.sh" test
asan_rc=$?
bash "$repo_root/tools/sanitizers.sh" fuzz "${LATENTMOE_FUZZ_SMOKE_SECONDS:-5}"
fuzz_rc=$?

if ((ctest_rc != 0 || pytest_rc != 0 || asan_rc != 0 || fuzz_rc != 0)); then
  echo "tests failed: ctest exit $ctest_rc, pytest exit $pytest_rc, sanitizer tests exit $asan_rc, fuzz smoke exit $fuzz_rc" >&2
  exit 1
fi
