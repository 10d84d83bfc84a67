# Sourced by tests/run.sh (and usable by hand): installs, once per machine, what the tests
# need into a per-user cache outside the checkout, and exports where it is.
#
#   OMERO_ISCC_CACHE    cache root (default: ${XDG_CACHE_HOME:-~/.cache}/omero-iscc)
#   OMERO_ISCC_PYTHON   Python of the test virtual environment (reference packages, pytest,
#                       omero-py with a locally built zeroc-ice)
#   OMERO_ISCC_SAMPLES  real microscopy sample files (OME-TIFF, DICOM) unpacked from the
#                       ndev-sampledata and pydicom packages
# Re-runs reuse everything; a changed tests/requirements.txt makes a new environment.

_here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
_top=$(cd "$_here/../.." && pwd)
export OMERO_ISCC_CACHE=${OMERO_ISCC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/omero-iscc}
mkdir -p "$OMERO_ISCC_CACHE"

_base_python=${OMERO_ISCC_BASE_PYTHON:-python3}
_pytag=$("$_base_python" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
_reqhash=$(cat "$_top/tests/requirements.txt" "$_here/build_ice_wheel.sh" | sha256sum | cut -c1-12)
_venv="$OMERO_ISCC_CACHE/venv-$_pytag-$_reqhash"

if [ ! -f "$_venv/.complete" ]; then
    echo "tests/setup: creating the test environment in $_venv" >&2
    rm -rf "$_venv"
    "$_base_python" -m venv "$_venv"
    "$_venv/bin/python" -m pip install --quiet --upgrade pip setuptools wheel
    _ice_wheel=$("$_here/build_ice_wheel.sh" "$_venv/bin/python")
    "$_venv/bin/python" -m pip install --quiet "$_ice_wheel"
    "$_venv/bin/python" -m pip install --quiet -r "$_top/tests/requirements.txt"
    touch "$_venv/.complete"
fi
export OMERO_ISCC_PYTHON="$_venv/bin/python"

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
unset _here _top _base_python _pytag _reqhash _venv _ice_wheel
