#!/usr/bin/env python3
"""What opening beneath the root costs per file: `omero-iscc sum --root` over many small files,
this build against a baseline build, interleaved.

    bench/bench_open.py --baseline OTHER_BINARY [--files N] [--runs N] [--workdir DIR]

Lays out N small files (20-80 KB, random) in a tree shaped like an OMERO ManagedRepository
(user/date/time/file), page-cached, and times, round by round (baseline, ours, ours with
sizes), `sum --json --root REPO --groups -` with one group per file, as the OMERO helper sends
them, and the same files as one `--files-from` list. Prints the median wall time per command,
the per-file difference to the baseline, and the ratio taken round by round (median and
range), with the load average before and after. Timings are read, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

TOP = Path(__file__).resolve().parents[1]
WORKER = TOP / "target" / "x86_64-unknown-linux-gnu" / "release" / "omero-iscc"


def lay_out(repo: Path, count: int) -> list[tuple[str, int]]:
    """`count` random files under `repo`, 40 per leaf directory; their paths and sizes."""
    rng = random.Random(7)
    files = []
    for n in range(count):
        rel = f"user_{n % 5}/2026-0{n % 9 + 1}/{n // 200:02d}/{(n // 40) % 5:02d}-00-00.000/f{n}.tif"
        path = repo / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        size = rng.randint(20_000, 80_000)
        path.write_bytes(rng.randbytes(size))
        files.append((rel, size))
    return files


def timed(cmd: list[str], stdin: bytes) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, input=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}: {proc.stderr.decode()[-300:]}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", required=True, help="the omero-iscc binary to compare with")
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        repo = Path(tmp) / "repo"
        files = lay_out(repo, args.files)
        plain = "".join(json.dumps({"id": f"g{n}", "files": [rel]}) + "\n" for n, (rel, _) in enumerate(files))
        sized = "".join(
            json.dumps({"id": f"g{n}", "files": [{"path": rel, "size": size}]}) + "\n"
            for n, (rel, size) in enumerate(files)
        )
        listed = "".join(rel + "\n" for rel, _ in files)
        base = ["sum", "--json", "--root", str(repo)]
        commands = {
            "baseline --groups": ([args.baseline, *base, "--groups", "-"], plain),
            "ours --groups": ([str(WORKER), *base, "--groups", "-"], plain),
            "ours --groups with sizes": ([str(WORKER), *base, "--groups", "-"], sized),
            "baseline --files-from": ([args.baseline, *base, "--files-from", "-"], listed),
            "ours --files-from": ([str(WORKER), *base, "--files-from", "-"], listed),
        }
        for cmd, stdin in commands.values():  # warm the page cache and both binaries
            timed(cmd, stdin.encode())
        load_before = os.getloadavg()[0]
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, (cmd, stdin) in commands.items():
                times[name].append(timed(cmd, stdin.encode()))
        load_after = os.getloadavg()[0]
    print(f"{args.files} files of 20-80 KB, {args.runs} interleaved rounds, {os.cpu_count()} cores")
    print(f"load average: {load_before:.2f} before, {load_after:.2f} after")
    for name, walls in times.items():
        print(f"{name:28s} median {statistics.median(walls) * 1000:8.1f} ms")
    for mode in ("--groups", "--files-from"):
        base_walls, ours_walls = times[f"baseline {mode}"], times[f"ours {mode}"]
        ratios = sorted(o / b for o, b in zip(ours_walls, base_walls))
        per_file = (statistics.median(ours_walls) - statistics.median(base_walls)) / args.files * 1e6
        print(
            f"{mode}: ours/baseline median {statistics.median(ratios):.3f} "
            f"(range {ratios[0]:.3f}-{ratios[-1]:.3f}), {per_file:+.1f} µs per file"
        )
    sized_ratio = sorted(s / o for s, o in zip(times["ours --groups with sizes"], times["ours --groups"]))
    print(f"--groups with sizes / without: median {statistics.median(sized_ratio):.3f}")


if __name__ == "__main__":
    main()
