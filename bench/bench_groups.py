#!/usr/bin/env python3
"""Many-file groups and trees: `sum --groups` and `sum --tree` against `sum` over the same
files and against `iscc-sum --tree`, run interleaved round by round.

    bench/bench_groups.py [--runs N] [--workdir DIR]

Inputs (made once in the work directory): 5,000 random files of 20-80 KB (those of
bench_sum.py), and 200 random files of 8 MiB. Prints the median wall time of each command and
its ratio to the reference of its table, round by round (median and range), with the load
average before and after; like bench_sum.py it refuses to give README figures from a machine
that was busy before the runs.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sum import WORKER, interleaved, load, machine, make_inputs, parser, refuse_if_busy, table  # noqa: E402


def group_file(directory: Path, out: Path) -> Path:
    files = sorted(p.name for p in directory.iterdir() if p.is_file())
    out.write_text(json.dumps({"id": "group", "files": files}) + "\n")
    return out


def main() -> None:
    args = parser(__doc__).parse_args()
    cores = os.cpu_count() or 1
    _big, small, _sparse = make_inputs(args.workdir, 1.0, 5000, 0.001)
    large = args.workdir / "large-200x8MiB"
    if not large.exists() or len(list(large.iterdir())) != 200:
        large.mkdir(exist_ok=True)
        for k in range(200):
            (large / f"f{k:03d}.bin").write_bytes(os.urandom(8 << 20))
    for p in large.iterdir():
        p.read_bytes()
    print(f"machine: {machine()}")
    load_before = load()
    print(f"runs per command: {args.runs}, interleaved; load average before: {load_before:.2f} ({cores} cores)")
    w, iscc_sum = str(WORKER), [sys.executable, "-m", "iscc_sum"]

    groups = group_file(small, args.workdir / "group-small.jsonl")
    rows = interleaved(
        [
            ("omero-iscc sum (5,000 files)", [w, "sum", "."]),
            ("omero-iscc sum --json --groups (one group)", [w, "sum", "--json", "--groups", str(groups)]),
        ],
        args.runs,
        cwd=small,
    )
    table("One group of 5,000 files of 20-80 KB", rows, "omero-iscc sum (5,000 files)", "vs sum of the files")
    rows = interleaved(
        [
            ("iscc-sum --narrow --tree", [*iscc_sum, "--narrow", "--tree", "."]),
            ("omero-iscc sum --tree", [w, "sum", "--tree", "."]),
        ],
        args.runs,
        cwd=small,
    )
    table("--tree of the 5,000 files", rows, "iscc-sum --narrow --tree")
    groups = group_file(large, args.workdir / "group-large.jsonl")
    rows = interleaved(
        [
            ("omero-iscc sum (1 GiB file)", [w, "sum", str(args.workdir / "random-1GiB.bin")]),
            ("omero-iscc sum (200 files of 8 MiB)", [w, "sum", "."]),
            ("omero-iscc sum --tree (200 x 8 MiB)", [w, "sum", "--tree", "."]),
            ("omero-iscc sum --json --groups (200 x 8 MiB)", [w, "sum", "--json", "--groups", str(groups)]),
        ],
        args.runs,
        cwd=large,
    )
    for r in rows:
        size = (1 << 30) if "1 GiB" in r["label"] else 200 * (8 << 20)
        r["label"] = f"{r['label']}: {size / r['wall'] / 2**30:.2f} GiB/s"
    table("200 files of 8 MiB against one 1 GiB file (rates in the labels)", rows, rows[0]["label"], "time vs 1 GiB")
    refuse_if_busy(load_before, args.max_load)


if __name__ == "__main__":
    main()
