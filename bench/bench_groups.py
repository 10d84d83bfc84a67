#!/usr/bin/env python3
"""Many-file groups and trees: `sum --groups` (the group's code and each file's) and `sum --tree`
against `sum` over the same files, and against `iscc-sum --tree`, run interleaved round by round.

    bench/bench_groups.py [--runs N] [--workdir DIR] [--before WORKER] [--only small|large]

Inputs (made once in the work directory): 5,000 random files of 20-80 KB (those of
bench_sum.py), 200 random files of 8 MiB, and the random 1 GiB file of bench_sum.py. For each
set of files it prints the median wall time of each command, its time over `sum`'s taken
round by round (median and range; the target for a group is at most 1.3), and its byte rate
against the single 1 GiB file's. `--before` runs a second build's `--groups` in the same
rounds (an earlier commit's binary), so that figures before and after a change come from
the same minutes of this shared machine. Prints the load average before and after; like
bench_sum.py it refuses to give figures for the documentation from a machine that was busy
before the runs.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sum import (  # noqa: E402
    WORKER,
    big_file,
    interleaved,
    load,
    machine,
    make_inputs,
    parser,
    refuse_if_busy,
    table,
)

GROUP_TARGET = 1.3  # a group's time over `sum`'s on the same files


def group_file(directory: Path, out: Path) -> Path:
    files = sorted(p.name for p in directory.iterdir() if p.is_file())
    out.write_text(json.dumps({"id": "group", "files": files}) + "\n")
    return out


def large_files(work: Path) -> Path:
    large = work / "large-200x8MiB"
    if not large.exists() or len(list(large.iterdir())) != 200:
        large.mkdir(exist_ok=True)
        for k in range(200):
            (large / f"f{k:03d}.bin").write_bytes(os.urandom(8 << 20))
    for p in large.iterdir():
        p.read_bytes()
    return large


SINGLE = "omero-iscc sum, one 1 GiB file"


def versus_sum(title: str, rows: list[dict], base: str, size: int) -> None:
    """Each command's time over `base`'s (the same round's), its CPU time over `base`'s (user +
    system: steadier than wall time when other jobs share the cores), its byte rate, also as a
    share of the single 1 GiB file's rate measured in the same rounds, and its peak memory."""
    ref = next(r for r in rows if r["label"] == base)
    single_rate = 1 / next(r for r in rows if r["label"] == SINGLE)["wall"]
    print(f"\n{title}")
    print(
        f"| {'command':44} | {'wall (median)':>13} | {'GiB/s':>5} | {'vs one file':>11} "
        f"| {'time / sum: median (range)':>26} | {'CPU / sum':>9} | {'peak RSS':>9} |"
    )
    print(f"|{'-' * 46}|{'-' * 15}:|{'-' * 6}:|{'-' * 12}:|{'-' * 27}:|{'-' * 10}:|{'-' * 10}:|")
    for r in rows:
        rate = ((1 << 30) if r["label"] == SINGLE else size) / r["wall"] / 2**30
        ratio = cpu = "-"
        if r["label"] not in (base, SINGLE):
            ratios = [o / b for o, b in zip(r["walls"], ref["walls"])]
            ratio = f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"
            cpu = f"{statistics.median([o / b for o, b in zip(r['cpus'], ref['cpus'])]):.2f}"
        print(
            f"| {r['label']:44} | {r['wall']:11.3f} s | {rate:5.2f} | {rate / single_rate:11.0%} "
            f"| {ratio:>26} | {cpu:>9} | {r['rss'] / 1024:5.1f} MiB |"
        )
    for r in rows:
        if "--groups" in r["label"]:
            ratios = [o / b for o, b in zip(r["walls"], ref["walls"])]
            met = "met" if statistics.median(ratios) <= GROUP_TARGET else "NOT met"
            print(f"{r['label']}: {statistics.median(ratios):.2f}x the time of sum (target {GROUP_TARGET}x: {met})")


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--before", type=Path, help="another build of the worker, run in the same rounds")
    ap.add_argument("--only", choices=["small", "large"], help="one set of files only")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    w, iscc_sum = str(WORKER), [sys.executable, "-m", "iscc_sum"]
    before = str(args.before.resolve()) if args.before else None
    _big, small, _sparse = make_inputs(args.workdir, 1.0, 5000, 0.001)
    big = big_file(args.workdir, 1.0)
    large = large_files(args.workdir) if args.only != "small" else None
    print(f"machine: {machine()}")
    load_before = load()
    print(f"runs per command: {args.runs}, interleaved; load average before: {load_before:.2f} ({cores} cores)")

    sets = []
    if args.only != "large":
        sets.append(("5,000 files of 20-80 KB", small))
    if large is not None:
        sets.append(("200 files of 8 MiB", large))
    for title, directory in sets:
        groups = group_file(directory, args.workdir / f"group-{directory.name}.jsonl")
        size = sum(p.stat().st_size for p in directory.iterdir())
        commands = [
            (SINGLE, [w, "sum", str(big)]),
            ("omero-iscc sum (each file)", [w, "sum", "."]),
            ("omero-iscc sum --json --groups (one group)", [w, "sum", "--json", "--groups", str(groups)]),
            ("omero-iscc sum --tree", [w, "sum", "--tree", "."]),
        ]
        if before:
            commands.append(("before: sum --json --groups", [before, "sum", "--json", "--groups", str(groups)]))
        rows = interleaved(commands, args.runs, cwd=directory)
        versus_sum(f"{title} ({size / 2**20:.0f} MiB)", rows, "omero-iscc sum (each file)", size)

    if args.only != "large":
        rows = interleaved(
            [
                ("iscc-sum --narrow --tree", [*iscc_sum, "--narrow", "--tree", "."]),
                ("omero-iscc sum --tree", [w, "sum", "--tree", "."]),
            ],
            args.runs,
            cwd=small,
        )
        table("--tree of the 5,000 files against iscc-sum", rows, "iscc-sum --narrow --tree")
    refuse_if_busy(load_before, args.max_load)


if __name__ == "__main__":
    main()
