"""Reference pixel codes from iscc-bio 0.2.0, for the Python tests of the pixel code.

Run with the iscc-bio test environment's Python (tests/setup/env.sh: OMERO_ISCC_BIO_PYTHON):

    iscc_bio_pixels.py OUTDIR

Writes OME-TIFF files with tifffile (and a few other containers), computes iscc-bio's
``biocode`` (with simprints) of every image in them through its own local reader, and writes
``OUTDIR/cases.json``: per image its pixel type, sizes, iscc-bio's entry, and the path of its
pixels as OMERO's RawPixelsStore would serve them (big-endian, T, C, Z, Y, X order) for the
stand-in server. Where iscc-bio departs from the IMAGEWALK spec (RGB files), the case says so
and carries the spec's canonical stream instead.
"""

from __future__ import annotations

import itertools
import json
import logging
import sys
from pathlib import Path

import numpy as np
import tifffile
from iscc_bio.biocode import generate_biocode
from iscc_bio.imagewalk.iw_bioio import iter_planes_bioio
from loguru import logger

#: numpy dtype -> OMERO pixel type.
OMERO_TYPES = {
    "uint8": "uint8",
    "int8": "int8",
    "uint16": "uint16",
    "int16": "int16",
    "uint32": "uint32",
    "int32": "int32",
    "float32": "float",
    "float64": "double",
}


def array(dtype: str, shape: tuple, seed: int) -> np.ndarray:
    """Random pixels over the type's whole range (floats: signed, with fractions)."""
    rng = np.random.default_rng(seed)
    if dtype.startswith("float"):
        return (rng.standard_normal(shape) * 1000).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)


def spec_stream(a: np.ndarray) -> bytes:
    """IMAGEWALK's canonical bytes of a TCZYX array: Z, C, T (T innermost), big-endian."""
    t, c, z = a.shape[:3]
    be = a.dtype.newbyteorder(">")
    return b"".join(a[ti, ci, zi].astype(be).tobytes() for zi in range(z) for ci in range(c) for ti in range(t))


def write_ome_tiff(path: Path, arrays: list[np.ndarray]) -> None:
    with tifffile.TiffWriter(path, ome=True) as w:
        for a in arrays:
            w.write(a, metadata={"axes": "TCZYX"}, photometric="minisblack")


def main(out: Path) -> None:
    logging.disable(logging.CRITICAL)
    logger.remove()  # iscc-bio logs every scene at DEBUG
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, list[tuple[str, np.ndarray]]] = {}
    seed = itertools.count(1)
    # Every type: a single plane, and a Z, C and T stack.
    for dtype in OMERO_TYPES:
        files[f"{dtype}.ome.tif"] = [
            (f"{dtype} single plane", array(dtype, (1, 1, 1, 9, 13), next(seed))),
            (f"{dtype} stack", array(dtype, (2, 3, 2, 6, 7), next(seed))),
        ]
    # Z, C and T sizes 2 to 5 in every combination, the types taking turns; a file each (the
    # reader slows down with many series in one file).
    dtypes = list(OMERO_TYPES)
    for n, (z, c, t) in enumerate(itertools.product(range(2, 6), repeat=3)):
        dtype = dtypes[n % len(dtypes)]
        files[f"zct-{z}{c}{t}.ome.tif"] = [(f"Z{z} C{c} T{t} {dtype}", array(dtype, (t, c, z, 5, 4), next(seed)))]
    # Planes larger than the stand-in's maximum plane size in the tests (read as strips).
    files["large.ome.tif"] = [("large planes uint16", array("uint16", (1, 2, 2, 150, 130), next(seed)))]
    # The same pixels in a second container: a plain TIFF written by tifffile without OME.
    dup = array("uint16", (1, 2, 1, 20, 30), next(seed))
    files["duplicate.ome.tif"] = [("duplicate (OME-TIFF)", dup)]
    cases = []
    for name, images in files.items():
        path = out / name
        write_ome_tiff(path, [a for _, a in images])
        entries = generate_biocode(iter_planes_bioio(str(path)), simprints=True)
        assert len(entries) == len(images), (name, len(entries))
        for scene, ((label, a), entry) in enumerate(zip(images, entries)):
            cases.append(case(out, label, a, name, scene, entry))
    # The second container of the duplicate: the same array in a plain (ImageJ) TIFF.
    tifffile.imwrite(out / "duplicate.tif", dup[0], imagej=True, photometric="minisblack")
    # RGB: iscc-bio reads only the first sample of each pixel (a departure from the spec);
    # OMERO imports the file as C=3, and the spec hashes all three channels.
    rgb = array("uint8", (12, 10, 3), next(seed))
    tifffile.imwrite(out / "rgb.tif", rgb, photometric="rgb")
    [entry] = generate_biocode(iter_planes_bioio(str(out / "rgb.tif")), simprints=False)
    tczyx = np.moveaxis(rgb, 2, 0)[None, :, None, :, :]  # C=3 as OMERO imports it
    rgb_case = case(out, "RGB", tczyx, "rgb.tif", 0, entry)
    (out / "rgb.spec").write_bytes(spec_stream(tczyx))
    rgb_case["spec_stream"] = str(out / "rgb.spec")
    rgb_case["iscc_bio_departs"] = True
    cases.append(rgb_case)
    (out / "cases.json").write_text(json.dumps(cases, indent=1))


def case(out: Path, label: str, a: np.ndarray, file: str, scene: int, entry: dict) -> dict:
    raw = out / f"{len(list(out.glob('*.raw'))):04d}.raw"
    raw.write_bytes(a.astype(a.dtype.newbyteorder(">")).tobytes())  # T, C, Z, Y, X
    t, c, z, y, x = a.shape
    return {
        "label": label,
        "file": file,
        "scene": scene,
        "pixel_type": OMERO_TYPES[str(a.dtype)],
        "bytes_per_pixel": a.dtype.itemsize,
        "sizes": [x, y, z, c, t],
        "raw": str(raw),
        "biocode": entry,
    }


if __name__ == "__main__":
    main(Path(sys.argv[1]))
