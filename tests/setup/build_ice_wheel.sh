#!/usr/bin/env bash
# Build a zeroc-ice 3.6.5 wheel for this Python, once, into the per-user cache.
#
# omero-py needs zeroc-ice 3.6.5, which the package index carries only as an sdist that no
# longer compiles on Python >= 3.11. Two source fixes make it build:
#   * src/Slice.cpp includes <eval.h>, removed in 3.11; its declarations live in Python.h.
#   * src/Util.cpp reads PyThreadState->frame, a private field since 3.11; the public
#     PyThreadState_GetFrame() returns the same frame as a new reference, which is released.
# The build takes about 9 minutes on 2 cores, so the wheel is cached and reused.
#
# Usage: build_ice_wheel.sh PYTHON   (prints the wheel's path on stdout)
set -euo pipefail
py=${1:?usage: build_ice_wheel.sh PYTHON}
cache=${OMERO_ISCC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/omero-iscc}
tag=$("$py" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
wheels="$cache/wheels/$tag"
mkdir -p "$wheels"
if whl=$(ls "$wheels"/zeroc_ice-3.6.5-*.whl 2>/dev/null | head -n1) && [ -n "$whl" ]; then
    echo "$whl"; exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$py" -m pip download --quiet --no-deps --no-binary=:all: zeroc-ice==3.6.5 -d "$work" >&2
tar -xzf "$work"/zeroc-ice-3.6.5.tar.gz -C "$work"
src="$work/zeroc-ice-3.6.5/src"
sed -i 's|#include <eval.h>|#include <Python.h>|' "$src/Slice.cpp"
"$py" - "$src/Util.cpp" <<'PY'
import sys
path = sys.argv[1]
text = open(path).read()
old = """    PyFrameObject *f = PyThreadState_GET()->frame;
    PyObjectHandle code = PyObject_GetAttrString(reinterpret_cast<PyObject*>(f), STRCAST("f_code"));"""
new = """    PyObjectHandle frame(reinterpret_cast<PyObject*>(PyThreadState_GetFrame(PyThreadState_GET())));
    PyObjectHandle code = PyObject_GetAttrString(frame.get(), STRCAST("f_code"));"""
if old not in text:
    sys.exit("build_ice_wheel: Util.cpp does not have the expected frame access; not patching blindly")
open(path, "w").write(text.replace(old, new))
PY
grep -q 'PyThreadState_GetFrame' "$src/Util.cpp"
! grep -q '#include <eval.h>' "$src/Slice.cpp"
echo "build_ice_wheel: compiling zeroc-ice 3.6.5 (about 9 minutes on 2 cores)" >&2
MAKEFLAGS="-j$(nproc)" "$py" -m pip wheel --quiet --no-deps --no-build-isolation \
    -w "$work/out" "$work/zeroc-ice-3.6.5" >&2
mv "$work"/out/zeroc_ice-3.6.5-*.whl "$wheels"/
ls "$wheels"/zeroc_ice-3.6.5-*.whl | head -n1
