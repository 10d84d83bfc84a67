#!/usr/bin/env python3
"""Writes a small OME-Zarr tree (NGFF 0.4, Zarr v2 layout) with the standard library only, for
`examples/group_sharing.rs`: how often a group's Data-Code shares its files' chunks on a
tree of chunk files.

    bench/make_ome_zarr.py SOURCE OUT.zarr [--compressor zlib|none] [--side 512] [--tile 128]

The pixels are SOURCE's bytes read as 16-bit planes of side x side (an OME-TIFF of the test
samples gives real microscopy bytes), one channel per plane; three resolution levels, each
half the size of the one before (every other pixel). Chunks are tiles of one plane, written
zlib-compressed (numcodecs' `zlib` codec) or raw, as zarr writes them.
"""

from __future__ import annotations

import argparse
import json
import zlib
from array import array
from pathlib import Path


def planes(source: bytes, side: int) -> list[array]:
    plane_bytes = side * side * 2
    out = []
    for k in range(max(1, len(source) // plane_bytes)):
        chunk = source[k * plane_bytes : (k + 1) * plane_bytes].ljust(plane_bytes, b"\0")
        out.append(array("H", chunk))
    return out


def half(plane: array, side: int) -> array:
    out = array("H")
    for y in range(0, side, 2):
        out.extend(plane[y * side : (y + 1) * side : 2])
    return out


def write_level(root: Path, level: int, channels: list[array], side: int, tile: int, compressor: str) -> None:
    path = root / str(level)
    path.mkdir(parents=True)
    meta = {
        "zarr_format": 2,
        "shape": [len(channels), 1, side, side],
        "chunks": [1, 1, tile, tile],
        "dtype": "<u2",
        "compressor": {"id": "zlib", "level": 5} if compressor == "zlib" else None,
        "fill_value": 0,
        "order": "C",
        "filters": None,
        "dimension_separator": "/",
    }
    (path / ".zarray").write_text(json.dumps(meta, indent=4))
    for c, plane in enumerate(channels):
        for ty in range(0, side, tile):
            for tx in range(0, side, tile):
                rows = array("H")
                for y in range(ty, ty + tile):
                    rows.extend(plane[y * side + tx : y * side + tx + tile])
                data = rows.tobytes()
                if compressor == "zlib":
                    data = zlib.compress(data, 5)
                out = path / str(c) / "0" / str(ty // tile) / str(tx // tile)
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(data)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--compressor", choices=["zlib", "none"], default="zlib")
    ap.add_argument("--side", type=int, default=512)
    ap.add_argument("--tile", type=int, default=128)
    args = ap.parse_args()
    root = args.out
    root.mkdir(parents=True)
    (root / ".zgroup").write_text(json.dumps({"zarr_format": 2}))
    axes = [
        {"name": "c", "type": "channel"},
        {"name": "z", "type": "space", "unit": "micrometer"},
        {"name": "y", "type": "space", "unit": "micrometer"},
        {"name": "x", "type": "space", "unit": "micrometer"},
    ]
    datasets = [
        {"path": str(k), "coordinateTransformations": [{"type": "scale", "scale": [1, 1, 2.0**k, 2.0**k]}]}
        for k in range(3)
    ]
    attrs = {"multiscales": [{"version": "0.4", "name": args.source.name, "axes": axes, "datasets": datasets}]}
    (root / ".zattrs").write_text(json.dumps(attrs, indent=4))
    channels, side = planes(args.source.read_bytes(), args.side), args.side
    for level in range(3):
        write_level(root, level, channels, side, min(args.tile, side), args.compressor)
        channels, side = [half(p, side) for p in channels], side // 2


if __name__ == "__main__":
    main()
