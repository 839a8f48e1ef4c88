#!/usr/bin/env bash
# The README's test command: both CPU lanes, each in its own venv, created here if missing.
#   lane "up":     upstream triton 3.9 (Triton interpreter on CPU)
#   lane "ascend": triton-ascend 3.2.0 (installs as module `triton`; its interpreter on CPU,
#                  plus the Ascend compile check through its triton-adapter-opt)
set -euo pipefail
cd "$(dirname "$0")/.."
# CPU tensors run the Triton kernels through the interpreter (opt-in, before import)
export ASCEND_KERNELS_INTERPRET=1
out=$(mktemp -d)  # everything the lanes write goes here, never into the checkout
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_WARN_SCRIPT_LOCATION=1

make_lane() {  # make_lane NAME PACKAGES...
    local venv=".venv-$1"; shift
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    # numpy<2.4: triton-ascend 3.2's interpreter converts 1-element arrays with int()
    "$venv/bin/pip" install -q torch==2.13.0 "numpy<2.4" pyyaml tqdm pytest pytest-timeout \
        "transformers>=5.17,<6" "$@" 2>&1 \
        | grep -v "is ignored: it is neither a file nor a directory" || true
    "$venv/bin/pip" install -q --no-deps -e . 2>&1 | grep -v "is ignored" || true
}

make_lane up triton==3.9.0 matplotlib
make_lane ascend triton-ascend==3.2.0 pybind11

echo "== lane up: upstream triton, interpreter on CPU"
.venv-up/bin/python -m pytest -q -p no:cacheprovider "$@"
echo "== lane up: ascend-kernels bench --suite quick (CPU smoke run)"
.venv-up/bin/ascend-kernels bench --suite quick --no-progress > "$out/quick_bench.md"
tail -n 5 "$out/quick_bench.md"
echo "== lane ascend: Ascend compile check (triton-adapter-opt)"
ASCEND_KERNELS_CACHE_DIR="$out/cache" .venv-ascend/bin/ascend-kernels check --quiet --out "$out/ascend_check.md"
echo "== lane ascend: triton-ascend 3.2.0, interpreter on CPU"
.venv-ascend/bin/python -m pytest -q -p no:cacheprovider "$@"
