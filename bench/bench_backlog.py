#!/usr/bin/env python3
"""Backlog throughput: the same synthetic repository annotated three ways through the stand-in
OMERO server: the scheduler's plain poll (`run --once`, one batch of everything), `backlog
--local 2`, and `backlog --slurm` on a one-node Slurm cluster started here (and stopped by
process id). Prints wall time, MiB/s and images/s of each, and the ratio to the scheduler.

    bench/bench_backlog.py [--runs N] [--filesets N] [--files F] [--file-kib K] [--workdir DIR]

Needs root (slurmd), the Slurm packages (tests/setup/slurm.sh), the test environment's Python
(omero-py) and the release binary. On one node the array cannot beat --local: what it shows is
the cost of going through Slurm (the probe job, the array, ingesting as shards finish); the
gain is more nodes.
"""

from __future__ import annotations

import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

TOP = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TOP / "omero_scripts"))
sys.path.insert(0, str(TOP / "tests" / "python"))
sys.path.insert(0, str(TOP / "tests" / "setup"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_sum import WORKER, load, machine, parser  # noqa: E402


def make_repo(root: Path, filesets: int, files: int, kib: int) -> list[tuple[str, list[str]]]:
    """Random files laid out as a ManagedRepository, made once; the Filesets' paths."""
    rng = random.Random(1)
    layout = []
    for k in range(filesets):
        d = f"user_2/2026-12/01/{k:05d}/"
        names = [f"f{j}.bin" for j in range(files)]
        layout.append((d, names))
        if not (root / d / names[-1]).exists():
            (root / d).mkdir(parents=True, exist_ok=True)
            for n in names:
                (root / d / n).write_bytes(rng.randbytes(kib << 10))
    return layout


def server_over(repo: Path, layout: list):
    from fake_server import FakeServer

    server = FakeServer(root=str(repo))
    images = []
    for d, names in layout:
        images += server.add_fileset([server.original_file(str(repo / d / n), d) for n in names], d)
    return server, images


def timed(label: str, repo: Path, layout: list, argv: list[str], cfg_extra: dict, total: int) -> dict:
    from omero_iscc.__main__ import main

    server, images = server_over(repo, layout)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "c.json"
        values = {
            "worker": str(WORKER),
            "repository": str(repo),
            "state_dir": tmp,
            "backlog_dir": f"{tmp}/b",
            "backlog_poll_interval": 0.2,
        }
        cfg.write_text(json.dumps({**values, **cfg_extra}))
        connect = lambda c: (None, server.access(0))  # noqa: E731
        start = time.perf_counter()
        status = main(["--config", str(cfg), *argv], connect=connect)
        wall = time.perf_counter() - start
    annotated = sum(1 for i in images if server.iscc_anns(i))
    assert status == 0 and annotated == len(images), (label, status, annotated, len(images))
    return {"label": label, "wall": wall, "mib_s": total / wall / (1 << 20), "images_s": len(images) / wall}


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--filesets", type=int, default=400)
    ap.add_argument("--files", type=int, default=5)
    ap.add_argument("--file-kib", type=int, default=512)
    args = ap.parse_args()
    repo = args.workdir / f"backlog-repo-{args.filesets}x{args.files}x{args.file_kib}k"
    layout = make_repo(repo, args.filesets, args.files, args.file_kib)
    total = args.filesets * args.files * (args.file_kib << 10)
    for p in repo.rglob("*.bin"):
        p.read_bytes()  # page cache warm, as for every peer
    print(f"machine: {machine()}; load average before: {load():.2f}")
    print(f"repository: {args.filesets} Filesets x {args.files} files x {args.file_kib} KiB = {total >> 20} MiB")
    shard = total // 16
    modes = [
        ("scheduler: run --once (one batch)", ["run", "--once"], {"batch_size": 1_000_000}),
        ("backlog --local 2", ["backlog", "--local", "2"], {"shard_bytes": shard}),
        (
            "backlog --slurm --wait (probe, array %2)",
            ["backlog", "--slurm", "--wait"],
            {"shard_bytes": shard, "slurm_throttle": 2},
        ),
    ]
    from slurm_local import LocalSlurm

    walls: dict[str, list[float]] = {label: [] for label, _, _ in modes}
    with tempfile.TemporaryDirectory() as tmp, LocalSlurm(Path(tmp)):
        for _ in range(args.runs):  # the modes interleaved, round after round
            for label, argv, extra in modes:
                walls[label].append(timed(label, repo, layout, argv, extra, total)["wall"])
    base = statistics.median(walls[modes[0][0]])
    print(f"\n{args.runs} round(s), the modes interleaved; median wall (min-max)")
    print(f"\n| {'mode':42} | {'wall':>22} | {'MiB/s':>7} | {'images/s':>8} | {'vs scheduler':>12} |")
    print(f"|{'-' * 44}|{'-' * 23}:|{'-' * 8}:|{'-' * 9}:|{'-' * 13}:|")
    images = args.filesets
    for label, _, _ in modes:
        w = statistics.median(walls[label])
        span = f"{w:6.2f} s ({min(walls[label]):.2f}-{max(walls[label]):.2f})"
        print(f"| {label:42} | {span:>22} | {total / w / (1 << 20):7.0f} | {images / w:8.0f} | {base / w:11.2f}x |")
    print(f"\nload average after: {load():.2f}")
    if shutil.which("sbatch") is None:
        print("(no sbatch on PATH: the Slurm row used the cluster started here)")


if __name__ == "__main__":
    main()
