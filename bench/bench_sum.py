#!/usr/bin/env python3
"""Side-by-side speed and memory of `omero-iscc sum` and its peers (iscc-sum, b3sum, cat).

    bench/bench_sum.py [--runs N] [--workdir DIR] [--big-gib G] [--small N] [--sparse-gib G]
                       [--scaling-only]

Runs every command on the same warm (page-cached) inputs, N rounds, each round running the
peer and ours one after the other (interleaved, so a change of load hits both alike), and
prints the median wall time, the peak resident memory, and the ratio to iscc-sum taken round
by round (median and range), with the machine and its load average before and after. For
each thread count N it also prints the speed-up over one thread, how busy the N threads were,
and the machine's ceiling: N independent one-thread runs started together. A run
that starts on a busy machine (load above --max-load per core) ends with status 1 and says
its figures are not for the README. Inputs: one random file of G GiB, N random files of 20-80 KB, and a
sparse file (memory only). Needs the test environment's Python (iscc-sum installed) and the
release binary; `tests/setup/env.sh` provides both. Timings are never asserted in tests: these
machines are shared and noisy, so the numbers are read, not checked.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOP = Path(__file__).resolve().parents[1]
WORKER = TOP / "target" / "x86_64-unknown-linux-gnu" / "release" / "omero-iscc"
GNU_TIME = "/usr/bin/time"  # Debian package `time`


def run(cmd: list[str], cwd: Path | None = None) -> tuple[float, int, float]:
    """Wall seconds, peak RSS (KiB) and CPU seconds (user + system) of one run. RSS and CPU
    come from GNU time: a child forked (or vforked) from this interpreter would report the
    interpreter's own resident memory."""
    with tempfile.NamedTemporaryFile("r") as usage:
        start = time.perf_counter()
        proc = subprocess.run(
            [GNU_TIME, "-f", "%M %U %S", "-o", usage.name, *cmd],
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            check=False,
        )
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            sys.exit(f"failed: {' '.join(cmd)}: {proc.stderr.decode()[-500:]}")
        peak, user, system = usage.read().split()[-3:]
        return wall, int(peak), float(user) + float(system)


def interleaved(commands: list[tuple[str, list[str]]], runs: int, cwd: Path | None = None) -> list[dict]:
    """Runs the commands round-robin, `runs` rounds (peer, ours, peer, ours, ...), so that a
    change in the machine's load falls on every command alike; keeps every wall and CPU time."""
    walls: dict[str, list[float]] = {label: [] for label, _ in commands}
    cpus: dict[str, list[float]] = {label: [] for label, _ in commands}
    rss: dict[str, int] = dict.fromkeys(walls, 0)
    for _ in range(runs):
        for label, cmd in commands:
            wall, peak, cpu = run(cmd, cwd)
            walls[label].append(wall)
            cpus[label].append(cpu)
            rss[label] = max(rss[label], peak)
    return [
        {
            "label": label,
            "walls": walls[label],
            "cpus": cpus[label],
            "wall": statistics.median(walls[label]),
            "rss": rss[label],
        }
        for label, _ in commands
    ]


def machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, Linux {platform.release()}, Python {platform.python_version()}"


def big_file(work: Path, gib: float) -> Path:
    """The random file of `gib` GiB in `work`, made once."""
    work.mkdir(parents=True, exist_ok=True)
    big = work / f"random-{gib:g}GiB.bin"
    if not big.exists() or big.stat().st_size != int(gib * (1 << 30)):
        with open(big, "wb") as f:
            left = int(gib * (1 << 30))
            while left:
                n = min(left, 64 << 20)
                f.write(os.urandom(n))
                left -= n
    return big


def make_inputs(work: Path, big_gib: float, small: int, sparse_gib: float) -> tuple[Path, Path, Path]:
    big = big_file(work, big_gib)
    smalldir = work / f"small-{small}"
    if not smalldir.exists() or len(list(smalldir.iterdir())) != small:
        shutil.rmtree(smalldir, ignore_errors=True)
        smalldir.mkdir()
        rng = random.Random(5000)
        for i in range(small):
            (smalldir / f"f{i:05d}.bin").write_bytes(os.urandom(rng.randint(20_000, 80_000)))
    sparse = work / f"sparse-{sparse_gib:g}GiB.bin"
    with open(sparse, "wb") as f:
        f.truncate(int(sparse_gib * (1 << 30)))
    for p in [big, *smalldir.iterdir()]:
        with open(p, "rb") as f:
            while f.read(16 << 20):
                pass
    return big, smalldir, sparse


def table(title: str, rows: list[dict], base: str, versus: str = "vs iscc-sum") -> None:
    """Median wall time and peak memory per command, and the ratio to `base` taken run by run
    (each round's peer time over the same round's time): its median and its range."""
    ref = next((r["walls"] for r in rows if r["label"] == base), None)
    print(f"\n{title}")
    print(f"| {'command':40} | {'wall (median)':>13} | {'peak RSS':>10} | {versus + ': median (range)':>27} |")
    print(f"|{'-' * 42}|{'-' * 15}:|{'-' * 11}:|{'-' * 28}:|")
    for r in rows:
        ratio = "-"
        if ref and r["label"] != base:
            ratios = [p / o for p, o in zip(ref, r["walls"])]
            ratio = f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"
        print(f"| {r['label']:40} | {r['wall']:11.3f} s | {r['rss'] / 1024:7.1f} MiB | {ratio:>27} |")


ONE_THREAD = "omero-iscc sum --threads 1"


def at_once_label(copies: int) -> str:
    return f"{copies} x omero-iscc sum --threads 1, at once"


def at_once(copies: int, cmd: list[str]) -> tuple[str, list[str]]:
    """`copies` independent one-thread runs started together: what the machine gives
    `copies` busy cores when nothing is shared between them (the ceiling of any scaling)."""
    script = f'for i in $(seq {copies}); do "$@" >/dev/null & done; wait'
    return at_once_label(copies), ["sh", "-c", script, "sh", *cmd]


def scaling(rows: list[dict]) -> None:
    """Speed-up of N threads over one, round by round (the same round's one-thread time over
    its N-thread time): median and range. Beside it, two figures that tell the code's share
    of the gap from the machine's: the busy fraction (CPU time over N x wall: below 1, a
    thread waited) and the ceiling (N x one run's time over N independent runs at once: how
    much N busy cores slow each other down, which no code can win back)."""
    rows_by = {r["label"]: r for r in rows}
    one = rows_by.get(ONE_THREAD)
    if not one:
        return
    for label, row in rows_by.items():
        if not label.startswith("omero-iscc sum --threads ") or label == ONE_THREAD:
            continue
        threads = int(label.rsplit(" ", 1)[1])
        ratios = [a / b for a, b in zip(one["walls"], row["walls"])]
        busy = [c / (threads * w) for c, w in zip(row["cpus"], row["walls"])]
        line = (
            f"scaling: {threads} threads give {statistics.median(ratios):.2f}x one thread "
            f"(range {min(ratios):.2f}-{max(ratios):.2f} over {len(ratios)} rounds); "
            f"threads busy {statistics.median(busy):.1%} of the time"
        )
        copies = rows_by.get(at_once_label(threads))
        if copies:
            ceiling = [threads * a / b for a, b in zip(one["walls"], copies["walls"])]
            share = [r / c for r, c in zip(ratios, ceiling)]
            line += (
                f"; ceiling ({threads} one-thread runs at once) {statistics.median(ceiling):.2f}x "
                f"(range {min(ceiling):.2f}-{max(ceiling):.2f}), reached to {statistics.median(share):.1%}"
            )
        print(line)


def load() -> float:
    return os.getloadavg()[0]


def parser(doc: str) -> argparse.ArgumentParser:
    """The options every benchmark has: rounds, the work directory of its inputs (in the
    per-user cache), and the load above which its figures are not for the README."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument(
        "--workdir",
        type=Path,
        default=Path(os.environ.get("OMERO_ISCC_CACHE", Path.home() / ".cache" / "omero-iscc")) / "bench",
    )
    ap.add_argument(
        "--max-load",
        type=float,
        default=0.3,
        help="largest 1-minute load average per core before the runs for figures fit for the README",
    )
    return ap


def refuse_if_busy(load_before: float, max_load: float) -> None:
    """Prints the load after the runs; exits 1 if the machine was busy before them."""
    cores = os.cpu_count() or 1
    print(f"\nload average after: {load():.2f} (this benchmark's own runs included)")
    if load_before > max_load * cores:
        # Another job shared the cores: the ratios are not what an idle machine gives.
        sys.exit(
            f"NOT FOR THE README: the machine was busy before the runs (load {load_before:.2f} > "
            f"{max_load:g} x {cores} cores); run again on an idle machine"
        )


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--big-gib", type=float, default=1.0)
    ap.add_argument("--small", type=int, default=5000)
    ap.add_argument("--sparse-gib", type=float, default=16.0)
    ap.add_argument("--skip-sparse", action="store_true")
    ap.add_argument(
        "--scaling-only",
        action="store_true",
        help="only the thread scaling on the big file (one thread, N threads, N one-thread runs at once)",
    )
    args = ap.parse_args()
    if not os.access(GNU_TIME, os.X_OK):
        sys.exit("GNU time is needed for peak memory: apt-get install time")
    if not WORKER.exists():
        sys.exit(f"build the release binary first: cargo build --release ({WORKER})")
    iscc_sum = [sys.executable, "-m", "iscc_sum"]
    big, smalldir, sparse = make_inputs(args.workdir, args.big_gib, args.small, args.sparse_gib)
    cores = os.cpu_count() or 1
    print(f"machine: {machine()}")
    print(f"runs per command: {args.runs}, interleaved with the peer (page cache warm)")
    load_before = load()
    print(f"load average before: {load_before:.2f} ({cores} cores)")
    b3sum = shutil.which("b3sum")

    commands = [] if args.scaling_only else [("iscc-sum --narrow", [*iscc_sum, "--narrow", str(big)])]
    one_thread = [str(WORKER), "sum", "--threads", "1", str(big)]
    for t in sorted({1, 2, cores} | set(range(2, cores + 1, max(1, cores // 4)))):
        if t <= cores:
            commands.append((f"omero-iscc sum --threads {t}", [str(WORKER), "sum", "--threads", str(t), str(big)]))
            if t > 1:
                commands.append(at_once(t, one_thread))
    if args.scaling_only:
        scaling(interleaved(commands, args.runs))
        refuse_if_busy(load_before, args.max_load)
        return
    commands.append(("omero-iscc sum --no-mmap", [str(WORKER), "sum", "--no-mmap", str(big)]))
    if b3sum:
        commands.append(("b3sum (BLAKE3 only)", [b3sum, str(big)]))
    commands.append(("cat > /dev/null", ["cat", str(big)]))
    rows = interleaved(commands, args.runs)
    table(
        f"One {args.big_gib:g} GiB random file",
        [r for r in rows if not r["label"].endswith(", at once")],
        "iscc-sum --narrow",
    )
    scaling(rows)

    files = sorted(p.name for p in smalldir.iterdir())
    commands = [
        ("iscc-sum --narrow DIR", [*iscc_sum, "--narrow", "."]),
        ("omero-iscc sum DIR", [str(WORKER), "sum", "."]),
        ("omero-iscc sum --threads 1 DIR", [str(WORKER), "sum", "--threads", "1", "."]),
    ]
    if b3sum:
        commands.append(("b3sum (BLAKE3 only)", [b3sum, *files]))
    rows = interleaved(commands, args.runs, cwd=smalldir)
    table(f"{args.small} random files of 20-80 KB", rows, "iscc-sum --narrow DIR")

    if not args.skip_sparse:
        rows = interleaved([(f"omero-iscc sum ({args.sparse_gib:g} GiB sparse)", [str(WORKER), "sum", str(sparse)])], 1)
        table(f"Peak memory on a {args.sparse_gib:g} GiB sparse file (target: at most 64 MiB)", rows, "")

    refuse_if_busy(load_before, args.max_load)


if __name__ == "__main__":
    main()
