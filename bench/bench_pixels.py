#!/usr/bin/env python3
"""Pixel-code throughput: the worker's `pixels` over a framed plane stream against iscc-sum
(wide) and `omero-iscc sum --wide` over the same bytes, run interleaved round by round; then
the end-to-end rate of the helper reading planes through the stand-in server's RawPixelsStore
into the worker (tests/python/fake_server.py: the planes are served from memory, so this
measures the pipeline's own overhead, not a real server's decoding).

    bench/bench_pixels.py [--runs N] [--workdir DIR] [--plane-mib M] [--planes P]

Needs the test environment's Python (iscc-sum and omero-py installed: tests/setup/env.sh) and
the release binary. Like bench_sum.py it refuses README figures from a busy machine.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sum import WORKER, interleaved, load, machine, parser, refuse_if_busy, table  # noqa: E402

TOP = Path(__file__).resolve().parents[1]


def make_stream(work: Path, plane_mib: int, planes: int) -> tuple[Path, Path]:
    """The raw canonical stream (random bytes) and the same bytes framed as one image."""
    raw = work / f"planes-{planes}x{plane_mib}MiB.bin"
    framed = work / f"planes-{planes}x{plane_mib}MiB.frames"
    plane = plane_mib << 20
    if not raw.exists() or raw.stat().st_size != plane * planes:
        with open(raw, "wb") as f:
            for _ in range(planes):
                f.write(os.urandom(plane))
    if not framed.exists():
        with open(raw, "rb") as src, open(framed, "wb") as out:
            out.write(b'{"image": 1, "planes": %d, "plane_bytes": %d}\n' % (planes, plane))
            for _ in range(planes):
                out.write(b'{"bytes": %d}\n' % plane)
                out.write(src.read(plane))
            out.write(b'{"end": true}\n')
    for p in (raw, framed):
        with open(p, "rb") as f:
            while f.read(16 << 20):
                pass
    return raw, framed


def end_to_end(plane_mib: int, planes: int, runs: int) -> list[float]:
    """Seconds of `compute_pixels` over one image served by the stand-in, per run."""
    sys.path.insert(0, str(TOP / "omero_scripts"))
    sys.path.insert(0, str(TOP / "tests" / "python"))
    import fake_pixels
    from fake_server import FakeServer

    from omero_iscc.pixels import compute_pixels, pixels_infos

    side = int((plane_mib << 19) ** 0.5)  # uint16: 2 bytes per pixel
    server = FakeServer(root=str(TOP))
    [image] = server.add_fileset([], "bench/", names=["bench"])
    data = os.urandom(side * side * 2 * planes)
    fake_pixels.add_pixels(server, image, (side, side, planes, 1, 1), "uint16", 2, data)
    omero = server.access()
    info = pixels_infos(omero, [image])[image]
    walls = []
    for _ in range(runs):
        start = time.perf_counter()
        result = compute_pixels(omero, [info], str(WORKER))[image]
        walls.append(time.perf_counter() - start)
        assert result.ok, result.error
    return walls


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--plane-mib", type=int, default=8)
    ap.add_argument("--planes", type=int, default=64)
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    raw, framed = make_stream(args.workdir, args.plane_mib, args.planes)
    cores = os.cpu_count() or 1
    total = args.plane_mib * args.planes
    print(f"machine: {machine()}")
    load_before = load()
    print(f"runs per command: {args.runs}, interleaved; load average before: {load_before:.2f} ({cores} cores)")
    w = str(WORKER)
    rows = interleaved(
        [
            ("iscc-sum (wide) over the raw stream", [sys.executable, "-m", "iscc_sum", str(raw)]),
            ("omero-iscc sum --wide over the raw stream", [w, "sum", "--wide", str(raw)]),
            ("cat frames | omero-iscc pixels", ["sh", "-c", f"cat '{framed}' | '{w}' pixels"]),
            ("cat frames | omero-iscc pixels --simprints", ["sh", "-c", f"cat '{framed}' | '{w}' pixels --simprints"]),
        ],
        args.runs,
    )
    table(f"{args.planes} planes of {args.plane_mib} MiB ({total} MiB) as one image", rows, rows[0]["label"])
    for r in rows:
        print(f"  {r['label']}: {total / r['wall']:.0f} MiB/s")
    walls = end_to_end(args.plane_mib, args.planes, args.runs)
    wall = statistics.median(walls)
    print(
        f"\nEnd to end through the stand-in RawPixelsStore (getPlane, read-ahead, worker): "
        f"{wall:.3f} s median for {total} MiB = {total / wall:.0f} MiB/s "
        f"(range {min(walls):.3f}-{max(walls):.3f} s)"
    )
    refuse_if_busy(load_before, args.max_load)


if __name__ == "__main__":
    main()
