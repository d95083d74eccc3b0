#!/usr/bin/env bash
# Install llama-cpp-python[server]==0.3.36 into the current Python environment.
#
# PyPI has only the source distribution, so pip compiles llama.cpp (about 5.5 min on 2 cores).
# Two traps (see MODELS.md): a default build uses -march=native, which can enable instructions
# (Intel AMX) that a virtual machine forbids -> "Illegal instruction" on the first prompt; and
# pip's wheel cache hands back an earlier build whatever CMAKE_ARGS say.  So this script builds a
# portable AVX2 wheel once, with no pip cache, keeps it in
#   ${SPECULABEL_HOME:-$HOME/.cache/speculabel}/wheels
# and installs from there on every later run (CI on the same machine skips the build).
#
# Usage: scripts/install-llama.sh            (uses $PYTHON, else `python` on PATH)
#        REBUILD=1 scripts/install-llama.sh  (throw the kept wheel away and build again)
set -euo pipefail

VERSION=0.3.36
PY="${PYTHON:-python}"
WHEELS="${SPECULABEL_HOME:-$HOME/.cache/speculabel}/wheels"
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF}"

mkdir -p "$WHEELS"
echo "python: $("$PY" -c 'import sys; print(sys.executable)')"
echo "wheel directory: $WHEELS"

# Is there a kept wheel that this interpreter can install?  (offline check: no index)
have_wheel() {
    "$PY" -m pip install --dry-run --quiet --no-deps --no-index --find-links "$WHEELS" \
        --only-binary=:all: "llama-cpp-python==$VERSION" >/dev/null 2>&1
}

build_wheel() {
    echo "building llama-cpp-python $VERSION (portable AVX2; takes several minutes)"
    echo "CMAKE_ARGS=$CMAKE_ARGS"
    "$PY" -m pip wheel --no-cache-dir --no-deps -w "$WHEELS" "llama-cpp-python==$VERSION"
}

if [ "${REBUILD:-0}" = "1" ]; then
    rm -f "$WHEELS"/llama_cpp_python-"$VERSION"-*.whl
fi

if ! have_wheel; then
    # One build at a time: a second job waits for the first one's wheel instead of building too.
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$WHEELS/.build.lock"
        flock 9
    fi
    if ! have_wheel; then
        build_wheel
    fi
fi
have_wheel || { echo "error: no installable llama-cpp-python $VERSION wheel in $WHEELS" >&2; exit 1; }
echo "using kept wheel: $(ls "$WHEELS"/llama_cpp_python-"$VERSION"-*.whl | head -n 1)"

# The kept wheel for llama-cpp-python itself (never a source build: --only-binary), and its
# dependencies, the [server] extra's included, from the usual index.
"$PY" -m pip install --find-links "$WHEELS" --only-binary=llama-cpp-python \
    "llama-cpp-python[server]==$VERSION"

"$PY" - <<'EOF'
import llama_cpp
print("llama-cpp-python", llama_cpp.__version__, "installed:", llama_cpp.__file__)
EOF
