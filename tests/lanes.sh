#!/usr/bin/env bash
# The README's test command: both CPU lanes, each in its own venv, created here if missing.
#   lane "up":     upstream triton 3.9 (Triton interpreter on CPU)
#   lane "ascend": triton-ascend 3.2.0 (installs as module `triton`; its interpreter on CPU,
#                  plus the Ascend compile check through its triton-adapter-opt)
# It changes nothing in the checkout (checked at the end) and writes only under a private
# temporary folder.
set -euo pipefail
cd "$(dirname "$0")/.."
# CPU tensors run the Triton kernels through the interpreter (opt-in, before import)
export ASCEND_KERNELS_INTERPRET=1
out=$(mktemp -d)  # everything the lanes write goes here, never into the checkout or ~/.cache
export ASCEND_KERNELS_CACHE_DIR="$out/cache" TRITON_CACHE_DIR="$out/triton" MPLCONFIGDIR="$out/matplotlib"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_WARN_SCRIPT_LOCATION=1
tree_state() { git status --porcelain 2>/dev/null || true; }
before=$(tree_state)

make_lane() {  # make_lane NAME PACKAGES...
    local venv=".venv-$1"; shift
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    # the dev extras carry the test dependencies, numpy<2.4 included (triton-ascend 3.2's
    # interpreter converts 1-element arrays with int())
    "$venv/bin/pip" install -q torch==2.13.0 -e ".[dev]" "$@" 2>&1 \
        | grep -v "is ignored: it is neither a file nor a directory" || true
}

make_lane up triton==3.9.0
make_lane ascend triton-ascend==3.2.0 pybind11

echo "== lane up: upstream triton, interpreter on CPU"
.venv-up/bin/python -m pytest -q -p no:cacheprovider --basetemp="$out/pytest-up" "$@"
echo "== lane up: ascend-kernels bench --suite quick (CPU smoke run)"
.venv-up/bin/ascend-kernels bench --suite quick --no-progress --results "$out/quick" > /dev/null
tail -n 5 "$out/quick/bench.md"
echo "== lane ascend: Ascend compile check (triton-adapter-opt)"
# every kernel x every Ascend config, on the quick suite's shapes, none may fail
# (bench/results/ascend_check.md holds the report over every suite)
.venv-ascend/bin/ascend-kernels check --suite quick --quiet --strict --out "$out/ascend_check.md"
echo "== lane ascend: triton-ascend 3.2.0, interpreter on CPU"
.venv-ascend/bin/python -m pytest -q -p no:cacheprovider --basetemp="$out/pytest-ascend" "$@"

echo "== the checkout is unchanged (outputs: $out)"
after=$(tree_state)
if [ "$after" != "$before" ]; then
    echo "the lanes changed the checkout (git status --porcelain, before and after):" >&2
    diff <(echo "$before") <(echo "$after") >&2 || true
    exit 1
fi
