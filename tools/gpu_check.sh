#!/usr/bin/env bash
# Everything that needs a GPU, in one go, for the day one is lent: configure with CUDA kernels,
# build, run the `gpu`-labelled tests (which must not skip) and every kernel benchmark.
# On the GPU machine torch is the system python's 2.11.0+cu130: pass LATENTMOE_PYTHON=python3.
# Output goes to stdout and, when $OUT is set, to $OUT/gpu_check.log.
set -euo pipefail
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${BUILD:-$repo_root/build-gpu}
python_bin=${LATENTMOE_PYTHON:-$(cat "$repo_root/.venv-path" 2>/dev/null)/bin/python}
log=${OUT:-/tmp}/gpu_check.log

{
  nvidia-smi || { echo "gpu_check: nvidia-smi failed: no GPU here"; exit 1; }
  torch_lib=$("$python_bin" -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
  export LD_LIBRARY_PATH="$torch_lib:${LD_LIBRARY_PATH:-}"
  export PATH="/usr/local/cuda/bin:$PATH"
  cmake -S "$repo_root" -B "$build_dir" -G Ninja -DLATENTMOE_PYTHON="$python_bin" -DLATENTMOE_CUDA=ON \
        -DCMAKE_CUDA_ARCHITECTURES="90"
  cmake --build "$build_dir" --parallel "$(nproc)"
  "$build_dir/latentmoe" version
  # A GPU test that skips here is a failure: the point of this script is that it runs.
  ctest --test-dir "$build_dir" -L gpu --output-on-failure --no-tests=error
  if ctest --test-dir "$build_dir" -L gpu -V 2>&1 | grep -q "\[  SKIPPED \]"; then
    echo "gpu_check: a GPU test skipped although a GPU is present"; exit 1
  fi
  # The NCCL process groups: the DP and EP equivalence tests with parallel.backend=nccl (CPU
  # training; collectives staged through cuda:LOCAL_RANK). NCCL needs one GPU per rank.
  gpus=$(nvidia-smi --list-gpus | wc -l)
  if ((gpus >= 2)); then
    LATENTMOE_BUILD_DIR="$build_dir" LATENTMOE_TEST_BACKEND=nccl "$python_bin" -m pytest -q -p no:cacheprovider \
      "$repo_root/tests/python/test_distributed.py" -k "dp2_equals or ep2_equals or zero1"
  else
    echo "gpu_check: NCCL multi-rank tests not run: $gpus GPU(s) here, NCCL needs one per rank (2)"
  fi
  for b in "$build_dir"/bench/bench_*; do
    echo "== $b"
    "$b" --benchmark_min_time=0.2
  done
} 2>&1 | tee "$log"
