# Sourced by tests/run.sh (and usable by hand): installs, once per machine, what the tests
# need into a per-user cache outside the checkout, and exports where it is.
#
#   OMERO_ISCC_CACHE     cache root (default: ${XDG_CACHE_HOME:-~/.cache}/omero-iscc)
#   OMERO_ISCC_PYTHON    Python 3.11+ of the main test environment: the reference packages
#                        (iscc-sum, iscc-core, pathspec), pytest, the linters, and omero-py
#                        5.23 with a locally built zeroc-ice
#   OMERO_ISCC_PYTHON39  Python 3.9 (the floor of OMERO servers on Rocky/RHEL 9) with
#                        omero-py 5.21.3 and its own zeroc-ice build, for the Python suite
#   OMERO_ISCC_SAMPLES   real microscopy sample files (OME-TIFF, DICOM) unpacked from the
#                        ndev-sampledata and pydicom packages
#   OMERO_ISCC_BIO_PYTHON  Python with iscc-bio 0.2.0 (the pixel code's reference) and its
#                        readers, an environment of its own (large: bioio, dask, zarr)
#   OMERO_ISCC_PIXEL_CASES  iscc-bio's pixel codes of the test images, computed once with
#                        tests/reference/iscc_bio_pixels.py (about 1.5 minutes)
# Re-runs reuse everything; a changed requirements file makes a new environment.

_here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
_top=$(cd "$_here/../.." && pwd)
export OMERO_ISCC_CACHE=${OMERO_ISCC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/omero-iscc}
mkdir -p "$OMERO_ISCC_CACHE"

# _omero_iscc_venv BASE_PYTHON REQUIREMENTS: the path of a complete environment (made once).
_omero_iscc_venv() {
    local base=$1 reqs=$2 pytag reqhash venv wheel
    pytag=$("$base" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")') || return 1
    reqhash=$(cat "$reqs" "$_here/build_ice_wheel.sh" | sha256sum | cut -c1-12)
    venv="$OMERO_ISCC_CACHE/venv-$pytag-$reqhash"
    if [ ! -f "$venv/.complete" ]; then
        echo "tests/setup: creating the test environment in $venv" >&2
        rm -rf "$venv"
        "$base" -m venv "$venv" || return 1
        "$venv/bin/python" -m pip install --quiet --upgrade pip setuptools wheel >&2 || return 1
        wheel=$("$_here/build_ice_wheel.sh" "$venv/bin/python") || return 1
        "$venv/bin/python" -m pip install --quiet "$wheel" >&2 || return 1
        "$venv/bin/python" -m pip install --quiet -r "$reqs" >&2 || return 1
        touch "$venv/.complete"
    fi
    echo "$venv/bin/python"
}

# The 3.9 interpreter: OMERO_ISCC_BASE_PYTHON39, else pyenv's 3.9, else python3.9 on PATH.
_omero_iscc_python39() {
    local p
    for p in "${OMERO_ISCC_BASE_PYTHON39:-}" "$(pyenv root 2>/dev/null)"/versions/3.9*/bin/python3 \
             "$HOME"/.pyenv/versions/3.9*/bin/python3 "$(command -v python3.9 2>/dev/null)"; do
        if [ -n "$p" ] && [ -x "$p" ]; then echo "$p"; return 0; fi
    done
    return 1
}

OMERO_ISCC_PYTHON=$(_omero_iscc_venv "${OMERO_ISCC_BASE_PYTHON:-python3}" "$_top/tests/requirements.txt") ||
    { echo "tests/setup: cannot build the Python test environment" >&2; return 1; }
export OMERO_ISCC_PYTHON
if _py39=$(_omero_iscc_python39); then
    OMERO_ISCC_PYTHON39=$(_omero_iscc_venv "$_py39" "$_top/tests/requirements-py39.txt") ||
        { echo "tests/setup: cannot build the Python 3.9 test environment" >&2; return 1; }
    export OMERO_ISCC_PYTHON39
else
    echo "tests/setup: no Python 3.9 found (pyenv install 3.9, or set OMERO_ISCC_BASE_PYTHON39):" \
         "the 3.9 floor cannot be tested" >&2
    return 1
fi

export OMERO_ISCC_SAMPLES="$OMERO_ISCC_CACHE/samples"
if [ ! -f "$OMERO_ISCC_SAMPLES/.complete" ]; then
    echo "tests/setup: fetching sample files into $OMERO_ISCC_SAMPLES" >&2
    rm -rf "$OMERO_ISCC_SAMPLES"
    mkdir -p "$OMERO_ISCC_SAMPLES/dl"
    "$OMERO_ISCC_PYTHON" -m pip download --quiet --no-deps -d "$OMERO_ISCC_SAMPLES/dl" \
        ndev-sampledata==0.0.3 pydicom==3.0.2
    "$OMERO_ISCC_PYTHON" - "$OMERO_ISCC_SAMPLES" <<'PY'
import pathlib, shutil, sys, zipfile
out = pathlib.Path(sys.argv[1])
wanted = {
    "ndev_sampledata/samples/": out / "ome-tiff",
    "pydicom/data/test_files/dicomdirtests/": out / "dicomdirtests",
}
for wheel in sorted((out / "dl").glob("*.whl")):
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            for prefix, target in wanted.items():
                if name.startswith(prefix) and not name.endswith("/"):
                    if prefix.startswith("ndev") and not name.endswith(".tiff"):
                        continue
                    dest = target / name[len(prefix):]
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with z.open(name) as src, open(dest, "wb") as dst:
                        shutil.copyfileobj(src, dst)
tiffs = sorted((out / "ome-tiff").glob("*.tiff"))
assert len(tiffs) == 3, tiffs
assert (out / "dicomdirtests" / "DICOMDIR").is_file()
shutil.rmtree(out / "dl")
PY
    touch "$OMERO_ISCC_SAMPLES/.complete"
fi
_bio_reqs="$_top/tests/requirements-iscc-bio.txt"
_bio_venv="$OMERO_ISCC_CACHE/venv-iscc-bio-$(sha256sum <"$_bio_reqs" | cut -c1-12)"
if [ ! -f "$_bio_venv/.complete" ]; then
    echo "tests/setup: creating the iscc-bio reference environment in $_bio_venv" >&2
    rm -rf "$_bio_venv"
    "${OMERO_ISCC_BASE_PYTHON:-python3}" -m venv "$_bio_venv" &&
        "$_bio_venv/bin/python" -m pip install --quiet --upgrade pip >&2 &&
        "$_bio_venv/bin/python" -m pip install --quiet -r "$_bio_reqs" >&2 &&
        touch "$_bio_venv/.complete" ||
        { echo "tests/setup: cannot build the iscc-bio environment" >&2; return 1; }
fi
export OMERO_ISCC_BIO_PYTHON="$_bio_venv/bin/python"
OMERO_ISCC_PIXEL_CASES="$OMERO_ISCC_CACHE/iscc-bio-cases-$(cat "$_bio_reqs" "$_top/tests/reference/iscc_bio_pixels.py" |
    sha256sum | cut -c1-12)"
export OMERO_ISCC_PIXEL_CASES
if [ ! -f "$OMERO_ISCC_PIXEL_CASES/.complete" ]; then
    echo "tests/setup: computing iscc-bio's pixel codes of the test images into $OMERO_ISCC_PIXEL_CASES" >&2
    rm -rf "$OMERO_ISCC_PIXEL_CASES"
    "$OMERO_ISCC_BIO_PYTHON" "$_top/tests/reference/iscc_bio_pixels.py" "$OMERO_ISCC_PIXEL_CASES" &&
        touch "$OMERO_ISCC_PIXEL_CASES/.complete" ||
        { echo "tests/setup: iscc-bio failed on the test images" >&2; return 1; }
fi
unset _here _top _py39 _bio_reqs _bio_venv
unset -f _omero_iscc_venv _omero_iscc_python39
