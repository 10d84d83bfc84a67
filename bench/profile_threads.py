#!/usr/bin/env python3
"""Where the threads of `omero-iscc sum --threads N` wait: a scheduler trace and a CPU profile.

    bench/profile_threads.py [--threads N] [--runs R] [--worker BIN] [--workdir DIR] [--big-gib G]

Runs the worker R times over the benchmark's random file (page cache warm) under
`perf sched record`, and prints for each run how long the worker threads slept (waited for
work: a thread that is out of tasks spins briefly, then sleeps), how often, and the longest
sleeps with their time into the run; then one `perf record` profile of where the CPU time
went, which also shows any time spent spinning in the thread pool (rayon's symbols).
`--worker` profiles another build (an older commit, say) with the same figures. Needs `perf`
(Debian package linux-perf) and the permission to trace the scheduler (root, or
kernel.perf_event_paranoid <= 0). The figures are read, not checked.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sum import WORKER, big_file, machine, parser  # noqa: E402


def perf(*args: str) -> str:
    proc = subprocess.run(["perf", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"perf {args[0]} failed: {proc.stderr.strip()[-400:]}")
    return proc.stdout


def thread_sleeps(worker: Path, threads: int, big: Path, trace: Path) -> tuple[float, dict[str, list]]:
    """One traced run: its span (ms) and, per worker thread, (start, sleep ms, run ms) of
    every time it was switched in."""
    perf("sched", "record", "-q", "-o", str(trace), str(worker), "sum", "--threads", str(threads), str(big))
    rows: dict[str, list] = {}
    first = last = None
    for line in perf("sched", "timehist", "-i", str(trace)).splitlines():
        fields = line.split()
        # time [cpu] task wait-time sch-delay run-time; the pool's threads are omero-iscc-K.
        if len(fields) < 6 or not fields[2].startswith("omero-iscc-"):
            continue
        try:
            when, sleep, run = float(fields[0]), float(fields[3]), float(fields[5])
        except ValueError:
            continue
        first = when if first is None else first
        last = when
        rows.setdefault(fields[2].split("[")[0], []).append((when, sleep, run))
    span = ((last or 0) - (first or 0)) * 1000
    return span, {name: [(when - (first or 0), s, r) for when, s, r in items] for name, items in rows.items()}


def main() -> None:
    ap = parser(__doc__)
    ap.set_defaults(runs=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--worker", type=Path, default=WORKER)
    ap.add_argument("--big-gib", type=float, default=1.0)
    args = ap.parse_args()
    if not shutil.which("perf"):
        sys.exit("perf is needed: apt-get install linux-perf")
    if not args.worker.exists():
        sys.exit(f"build the release binary first: cargo build --release ({args.worker})")
    big = big_file(args.workdir, args.big_gib)
    subprocess.run(["cat", str(big)], stdout=subprocess.DEVNULL, check=True)  # warm the cache
    print(f"machine: {machine()}")
    print(f"worker: {args.worker}, --threads {args.threads}, {args.big_gib:g} GiB random file\n")
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "sched.data"
        asleep = []
        for run in range(1, args.runs + 1):
            span, threads = thread_sleeps(args.worker, args.threads, big, trace)
            total = sum(s for items in threads.values() for _, s, _ in items)
            asleep.append(total / (args.threads * span) if span else 0.0)
            print(f"run {run}: {span:.0f} ms; worker threads asleep {total:.1f} ms ({asleep[-1]:.1%} of their time)")
            for name, items in sorted(threads.items()):
                sleeps = [s for _, s, _ in items if s > 0]
                longest = sorted(items, key=lambda item: -item[1])[:3]
                where = ", ".join(f"{s:.2f} ms at {t * 1000:.0f} ms" for t, s, _ in longest if s > 0)
                print(f"  {name}: {len(sleeps)} sleeps, {sum(sleeps):.1f} ms; longest: {where or '-'}")
        print(f"\nasleep, median over {args.runs} runs: {statistics.median(asleep):.1%} of the threads' time")
        profile = Path(tmp) / "cpu.data"
        command = [str(args.worker), "sum", "--threads", str(args.threads), str(big)]
        perf("record", "-q", "-F", "2000", "-o", str(profile), *command)
        report = perf("report", "-i", str(profile), "--no-children", "--sort", "sym", "--percent-limit", "0.3")
        print("\nwhere the CPU time went (perf record):")
        for line in report.splitlines():
            if line.strip() and not line.startswith("#"):
                print(f"  {line.strip()}")


if __name__ == "__main__":
    main()
