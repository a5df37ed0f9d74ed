#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 12 machine: Debian -dev packages, then a Python venv
# (cached OUTSIDE the repo) holding the pinned PyPI torch wheel that provides libtorch, plus the
# pinned Python test/tool dependencies. A second run only checks stamps and takes seconds.
#
# Environment:
#   LATENTMOE_CACHE   where the venv lives (default: ~/.cache/latentmoe)
#   LATENTMOE_NO_APT  set to 1 to skip the Debian package step (e.g. no root)
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache_dir=${LATENTMOE_CACHE:-$HOME/.cache/latentmoe}
python_bin=${LATENTMOE_PYTHON:-python3}
py_tag=$("$python_bin" -c 'import sys; print(f"py{sys.version_info[0]}.{sys.version_info[1]}")')
venv_dir="$cache_dir/venv-$py_tag"
requirements="$repo_root/requirements.txt"

say() { printf '[setup] %s\n' "$*"; }

# --- 1. Debian packages -----------------------------------------------------------------------
# Each one is used by the build or the default run:
#   cmake, ninja-build, g++      build system (ninja: fast no-op and incremental builds)
#   ccache                       warm rebuilds in seconds
#   libyaml-cpp-dev              config files (YAML, and JSON through the same parser: one schema)
#   nlohmann-json3-dev           JSON output (safetensors headers, metrics, trainer state)
#   libspdlog-dev (+libfmt-dev)  logging
#   libcli11-dev                 the `latentmoe` command line
#   libgtest-dev, libbenchmark-dev  unit tests and benchmarks
#   libpcre2-dev                 \p{L}/\p{N} in the byte-level BPE pre-tokenizer regex
#   libssl-dev                   SHA-256 of checkpoint files (libcrypto uses the CPU's SHA extensions)
#   libtcmalloc-minimal4         the malloc `latentmoe` links: freed buffers are reused, not returned to
#                                the OS and faulted in again every step (measured against glibc and
#                                jemalloc: docs/performance.md)
#   libjemalloc-dev              the measured alternative (LD_PRELOAD) for that comparison
#   python3.11-doc               the bundled default training corpus (English reStructuredText)
#   libgloo-dev                  HEADERS ONLY: torch's ProcessGroupGloo.hpp includes gloo headers the
#                                wheel does not ship; we never link Debian's libgloo (libtorch has
#                                its own gloo built in). tests/python/test_distributed.py checks it.
#   clang, libclang-rt-14-dev    the sanitizer and libFuzzer build of the torch-free core
#                                (tools/sanitizers.sh: `make test-asan`, `make fuzz`)
apt_packages=(cmake ninja-build g++ ccache libyaml-cpp-dev nlohmann-json3-dev libspdlog-dev
              libfmt-dev libcli11-dev libgtest-dev libbenchmark-dev libpcre2-dev libssl-dev libtcmalloc-minimal4 libjemalloc-dev python3.11-doc
              libgloo-dev clang libclang-rt-14-dev)
if [[ "${LATENTMOE_NO_APT:-0}" != 1 ]]; then
  missing=()
  for pkg in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    say "installing Debian packages: ${missing[*]}"
    sudo_cmd=()
    [[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
  else
    say "Debian packages present"
  fi
fi

# --- 2. Python venv with torch (libtorch) and test/tool deps -----------------------------------
stamp="$venv_dir/.latentmoe-requirements.sha256"
want=$(sha256sum "$requirements" | cut -d' ' -f1)
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$venv_dir/bin/python" ]]; then
  say "venv up to date: $venv_dir"
else
  say "creating/updating venv $venv_dir (first time downloads ~3 GB: torch + its CUDA wheels)"
  mkdir -p "$cache_dir"
  [[ -x "$venv_dir/bin/python" ]] || "$python_bin" -m venv "$venv_dir"
  "$venv_dir/bin/python" -m pip install -q --upgrade pip >/dev/null
  "$venv_dir/bin/python" -m pip install -q -r "$requirements"
  echo "$want" > "$stamp"
fi

# Verify what the build relies on: the pinned version and the C++11 ABI of Debian's g++.
"$venv_dir/bin/python" - <<'EOF'
import torch, sys
if not torch.__version__.startswith("2.11.0"):
    sys.exit(f"[setup] torch {torch.__version__} in the venv, expected 2.11.0: delete the venv and re-run")
if not torch._C._GLIBCXX_USE_CXX11_ABI:
    sys.exit("[setup] torch was built with the old C++ ABI; Debian's g++ libraries need ABI=1")
EOF
echo "$venv_dir" > "$repo_root/.venv-path"
say "ready (torch $("$venv_dir/bin/python" -c 'import torch; print(torch.__version__)'))"
