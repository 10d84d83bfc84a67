#!/usr/bin/env python3
"""The scheduler's code index over the stand-in OMERO server (tests/standin/): what the end of
a poll costs when new codes arrive at a large index, and `find` and server-wide duplicates
from the index against the server read.

    bench/bench_index_omero.py [--indexed N] [--new M] [--world W] [--rounds R]

Part 1: an index of N narrow codes (random, ids above the world's) and a world of M newly
annotated images (a tenth of them copies of another new one, so that notices get written).
Each round times ``ImportChecks.after_poll`` on the M images (pick-up of the new links, the
index update, the duplicates check, the notices written), once with the N codes indexed and
once with none, taking turns (each goes first every other round, after one warm-up run that
is not counted); the state and the world are made afresh for every run.

Part 2: a world of W annotated images (a tenth near copies, a twentieth exact copies), its index
built from the server by ``KeptIndex``. Each round times, taking turns: ``find`` of one code
over the server read and from the index; a server-wide duplicates report over the server read
and from the index. Both answers are checked equal.

The stand-in evaluates HQL in Python over in-memory rows and serves over Ice on 127.0.0.1: a
server read costs here what the stand-in's Python costs per row, not what PostgreSQL costs.
Prints the machine and the load; timings are read, never asserted.
"""

from __future__ import annotations

import argparse
import base64
import logging
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

TOP = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TOP / "omero_scripts"))
sys.path.insert(0, str(TOP / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_index import header  # noqa: E402
from bench_sum import WORKER, load, machine  # noqa: E402

NS, PIXELS_NS = "org.iscc.omero.sum", "org.iscc.omero.pixels"
HEADER = header()  # a narrow ISCC-SUM's 2 header bytes, as the worker composes them


def code(data: int, instance: int) -> str:
    raw = HEADER + data.to_bytes(8, "big") + instance.to_bytes(8, "big")
    return "ISCC:" + base64.b32encode(raw).decode().rstrip("=")


def near(rng: random.Random, data: int, most: int) -> int:
    for bit in rng.sample(range(64), rng.randint(0, most)):
        data ^= 1 << bit
    return data


def world_of(n: int, seed: int, near_share: int = 10, copy_share: int = 20):
    """A stand-in world of ``n`` images, each with a files' code annotation."""
    from standin.world import FakeServer

    rng = random.Random(seed)
    fake = FakeServer()
    codes: list[tuple[int, int]] = []
    images = []
    for k in range(n):
        if k and k % copy_share == 0:
            data, instance = codes[rng.randrange(k)]
        elif k and k % near_share == 0:
            data, instance = near(rng, codes[rng.randrange(k)][0], 12), rng.getrandbits(64)
        else:
            data, instance = rng.getrandbits(64), rng.getrandbits(64)
        codes.append((data, instance))
        image = fake.add_image(group_id=1 + k % 2, owner=2)
        fake.add_annotation(image, [["iscc:sum", code(data, instance)]], NS)
        images.append(image)
    return fake, images, codes


def big_index(directory: str, n: int, seed: int) -> float:
    """An index of ``n`` random narrow codes with ids from 10^9; returns the seconds."""
    from omero_iscc.codeindex import CodeIndex

    rng = random.Random(seed)
    records = (
        {
            "id": 10**9 + k,
            "iscc": code(rng.getrandbits(64), rng.getrandbits(64)),
            "group": 1 + k % 50,
            "owner": 100 + k % 500,
        }
        for k in range(n)
    )
    started = time.perf_counter()
    CodeIndex(str(WORKER), directory).rebuild(records)
    return time.perf_counter() - started


def one_poll_end(template: str | None, new: int, seed: int, work: Path) -> tuple[float, float, int]:
    """(seconds of after_poll, of its pick-up and update alone, notices written) for ``new``
    new images and the index in ``template`` (None: no codes indexed before)."""
    from omero_iscc.codeindex import CodeIndex, KeptIndex
    from omero_iscc.notices import ImportChecks

    state = work / f"state-{seed}-{'big' if template else 'empty'}"
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(mode=0o700)
    index_dir = state / "index"
    if template:
        shutil.copytree(template, index_dir)
    else:
        CodeIndex(str(WORKER), str(index_dir)).rebuild([])
    fake, images, _ = world_of(new, seed, near_share=10**9, copy_share=10)
    kept = KeptIndex(str(WORKER), str(state), {"files": NS, "pixels": PIXELS_NS}, reconcile_polls=0)
    kept.state.complete = True
    kept.state.namespaces = dict(kept.namespaces)
    kept.state.generation = int(kept.index.stats()["generation"])
    kept.verified = True
    events: list = []
    checks = ImportChecks(kept, notify=events.append)
    access = fake.access(0)
    started = time.perf_counter()
    kept_step = kept.step
    step_time = [0.0]

    def timed_step(omero, full=True):
        t = time.perf_counter()
        try:
            return kept_step(omero, full)
        finally:
            step_time[0] = time.perf_counter() - t

    kept.step = timed_step
    checks.after_poll(access, images)
    total = time.perf_counter() - started
    access.close_sudo_sessions()
    fake.close_clients()
    return total, step_time[0], len(events)


def part_one(args, work: Path) -> None:
    template = str(work / "template-index")
    shutil.rmtree(template, ignore_errors=True)
    built = big_index(template, args.indexed, 7)
    print(f"\n## the end of a poll: {args.new:,} new codes, index of {args.indexed:,} (built in {built:.1f} s)")
    one_poll_end(None, min(args.new, 100), 99, work)  # a warm-up, not counted: imports, first sessions
    rows: dict[str, list] = {"big": [], "empty": []}
    peers = [("big", template), ("empty", None)]
    for r in range(args.rounds):
        for label, tmpl in peers if r % 2 == 0 else peers[::-1]:  # each goes first every other round
            rows[label].append(one_poll_end(tmpl, args.new, 100 + r, work))
    print("| index before | after_poll, median | pick-up and update | notices written |")
    print("|---|---:|---:|---:|")
    for label, name in (("empty", "no codes"), ("big", f"{args.indexed:,} codes")):
        total = statistics.median(t for t, _, _ in rows[label])
        step = statistics.median(s for _, s, _ in rows[label])
        print(f"| {name} | {total:.2f} s | {step:.2f} s | {rows[label][0][2]} |")
    ratios = [b[0] / e[0] for b, e in zip(rows["big"], rows["empty"])]
    spread = f"median {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"
    print(f"ratio (index of {args.indexed:,} / empty), round by round: {spread}")


def part_two(args, work: Path) -> None:
    from omero_iscc import duplicates, fromindex
    from omero_iscc.codeindex import KeptIndex

    fake, images, codes = world_of(args.world, 11)
    state = work / "state-world"
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(mode=0o700)
    access = fake.access(2)
    kept = KeptIndex(str(WORKER), str(state), {"files": NS, "pixels": PIXELS_NS})
    started = time.perf_counter()
    kept.step(fake.access(0))
    built = time.perf_counter() - started
    print(f"\n## find and duplicates: {args.world:,} annotated images (index built from the server in {built:.1f} s)")
    rng = random.Random(5)
    times: dict[str, list] = {k: [] for k in ("find server", "find index", "dups server", "dups index")}
    for _ in range(args.rounds):
        query = code(*codes[rng.randrange(len(codes))])
        t = time.perf_counter()
        a = duplicates.find(access, query, NS)
        times["find server"].append(time.perf_counter() - t)
        t = time.perf_counter()
        b = fromindex.find(access, kept.index, query, NS)
        times["find index"].append(time.perf_counter() - t)
        assert [(vars(c), d) for c, d in a] == [(vars(c), d) for c, d in b]
        t = time.perf_counter()
        a = duplicates.find_duplicates(access, None, str(WORKER), NS)
        times["dups server"].append(time.perf_counter() - t)
        t = time.perf_counter()
        source = fromindex.IndexSource(access, kept.index)
        b = duplicates.find_duplicates(access, None, str(WORKER), NS, source=source)
        times["dups index"].append(time.perf_counter() - t)
        assert [(g["kind"], [(c.image_id, d) for c, d in g["members"]]) for g in a.groups] == [
            (g["kind"], [(c.image_id, d) for c, d in g["members"]]) for g in b.groups
        ]
    groups = len(a.groups)
    print("| | server read, median | from the index, median | ratio, median of rounds |")
    print("|---|---:|---:|---:|")
    rows = [
        ("find (one code)", "find server", "find index"),
        (f"duplicates, all ({groups} groups)", "dups server", "dups index"),
    ]
    for what, s, i in rows:
        ratios = [x / y for x, y in zip(times[s], times[i])]
        print(
            f"| {what} | {statistics.median(times[s]) * 1000:.0f} ms | {statistics.median(times[i]) * 1000:.0f} ms"
            f" | {statistics.median(ratios):.1f} ({min(ratios):.1f}-{max(ratios):.1f}) |"
        )
    fake.close_clients()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--indexed", type=int, default=1_000_000)
    ap.add_argument("--new", type=int, default=1_000)
    ap.add_argument("--world", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(f"# {machine()}; load average {load():.1f}")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-index-omero-"))
    os.chmod(work, 0o700)
    try:
        part_one(args, work)
        part_two(args, work)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    print(f"load average after: {load():.1f}")


if __name__ == "__main__":
    main()
