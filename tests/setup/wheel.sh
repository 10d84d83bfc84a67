# shellcheck shell=bash
# Sourced by tests/run.sh: what the platform wheel's build and its install test need, made
# once per user in the cache (OMERO_ISCC_CACHE, from tests/setup/env.sh):
#
#   OMERO_ISCC_WHEEL_TOOLS     a Python environment with maturin and auditwheel
#                              (tests/requirements-wheel.txt)
#   OMERO_ISCC_WHEELHOUSE      wheels of omero-py and all it needs for the 3.11 test Python
#                              (omero-py 5.23) and OMERO_ISCC_WHEELHOUSE39 for 3.9 (5.21.3), the
#                              cached zeroc-ice wheels included: the install test makes fresh
#                              environments from them with --no-index, as a server without a
#                              network would
#
# and fetches every crate of Cargo.lock (all platforms' too) into cargo's cache, so that
# `maturin build --offline` can read the lock file's metadata without a network.

_omero_iscc_wheelhouse() {
    local py=$1 reqs=$2 pytag pin dir
    pytag=$("$py" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")') || return 1
    pin=$(grep -E '^omero-py==' "$reqs") || return 1
    dir="$OMERO_ISCC_CACHE/wheelhouse-$pytag-$(echo "$pin" | sha256sum | cut -c1-12)"
    if [ ! -f "$dir/.complete" ]; then
        echo "tests/setup: downloading $pin and what it needs into $dir" >&2
        rm -rf "$dir"
        "$py" -m pip download --quiet --find-links "$OMERO_ISCC_CACHE/wheels/$pytag" -d "$dir" "$pin" >&2 &&
            ls "$dir"/zeroc_ice-*.whl >/dev/null && touch "$dir/.complete" || return 1
    fi
    echo "$dir"
}

_wheel_reqs="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/requirements-wheel.txt"
_wheel_tools="$OMERO_ISCC_CACHE/venv-wheel-tools-$(sha256sum <"$_wheel_reqs" | cut -c1-12)"
if [ ! -f "$_wheel_tools/.complete" ]; then
    echo "tests/setup: creating the wheel tools environment in $_wheel_tools" >&2
    rm -rf "$_wheel_tools"
    "${OMERO_ISCC_BASE_PYTHON:-python3}" -m venv "$_wheel_tools" &&
        "$_wheel_tools/bin/python" -m pip install --quiet -r "$_wheel_reqs" >&2 &&
        touch "$_wheel_tools/.complete" ||
        { echo "tests/setup: cannot build the wheel tools environment" >&2; return 1; }
fi
export OMERO_ISCC_WHEEL_TOOLS="$_wheel_tools"
OMERO_ISCC_WHEELHOUSE=$(_omero_iscc_wheelhouse "$OMERO_ISCC_PYTHON" "$(dirname "$_wheel_reqs")/requirements.txt") ||
    { echo "tests/setup: cannot fill the omero-py wheelhouse for Python 3.11" >&2; return 1; }
OMERO_ISCC_WHEELHOUSE39=$(_omero_iscc_wheelhouse "$OMERO_ISCC_PYTHON39" "$(dirname "$_wheel_reqs")/requirements-py39.txt") ||
    { echo "tests/setup: cannot fill the omero-py wheelhouse for Python 3.9" >&2; return 1; }
export OMERO_ISCC_WHEELHOUSE OMERO_ISCC_WHEELHOUSE39
if [ ! -f "$OMERO_ISCC_CACHE/.crates-fetched-$(sha256sum <Cargo.lock | cut -c1-12)" ]; then
    echo "tests/setup: fetching every crate of Cargo.lock (maturin reads all platforms' metadata)" >&2
    cargo fetch --locked --quiet && touch "$OMERO_ISCC_CACHE/.crates-fetched-$(sha256sum <Cargo.lock | cut -c1-12)" ||
        { echo "tests/setup: cargo fetch failed" >&2; return 1; }
fi
unset _wheel_reqs _wheel_tools
unset -f _omero_iscc_wheelhouse
