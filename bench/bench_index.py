#!/usr/bin/env python3
"""`omero-iscc index` against iscc-search 0.3.3 and iscc-usearch 0.8.1 on the same codes:
query latency, a batch of queries, adding codes, recall, size on disk and resident memory.

    bench/bench_index.py [--codes N] [--big N] [--queries Q] [--batch B] [--rounds R]
                         [--threshold T] [--k K] [--no-peers] [--workdir DIR]

The peers are installed (once, pinned) into a virtual environment of their own in the per-user
cache, and the script runs itself there. Codes: N narrow ISCC-SUMs of random digests, a tenth
of them near copies (0 to T bits of the Data-Code flipped) of earlier ones and a twentieth exact
copies; queries: near copies at every distance 0..T of indexed codes, and a tenth random codes.
The truth is a brute force over all N Data-Codes (numpy). Each system answers the same queries
one at a time in rounds, the systems taking turns (interleaved); ours runs as one `index query`
process fed a line at a time, the peers in this interpreter. Recall@K counts the true matches
(distance <= T) among a peer's K nearest; ours returns every match, so its recall is over all.
Then the same for a batch of B queries, and for adding B new codes. With --big, ours alone
on a larger index: its latency, bytes per code and resident memory. Prints the machine and the
load average; timings are read, never asserted.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sum import WORKER, load, machine  # noqa: E402

PEERS = ["iscc-search==0.3.3", "iscc-usearch==0.8.1"]
CACHE = Path(os.environ.get("OMERO_ISCC_CACHE", Path.home() / ".cache" / "omero-iscc")) / "bench"
VENV = CACHE / "index-peers-venv"


def in_peer_venv() -> None:
    """Re-runs this script in the peers' virtual environment, made once."""
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    python = VENV / "bin" / "python"
    stamp = VENV / "installed.txt"
    if not stamp.exists() or stamp.read_text().split() != PEERS:
        shutil.rmtree(VENV, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PEERS], check=True)
        stamp.write_text(" ".join(PEERS))
    os.execv(str(python), [str(python), __file__, *sys.argv[1:]])


def header() -> bytes:
    """The 2 header bytes of a narrow ISCC-SUM, from a code the worker composed."""
    out = subprocess.run([str(WORKER), "sum", "-"], input=b"x", capture_output=True, check=True).stdout
    body = out.split()[0].decode().removeprefix("ISCC:")
    return base64.b32decode(body + "=" * (-len(body) % 8))[:2]


def iscc(head: bytes, data: int, instance: int) -> str:
    raw = head + data.to_bytes(8, "big") + instance.to_bytes(8, "big")
    return "ISCC:" + base64.b32encode(raw).decode().rstrip("=")


def make_codes(n: int, threshold: int, seed: int):
    """Data-Codes and Instance-Codes (uint64 arrays) with planted near and exact copies."""
    import numpy as np

    rng = np.random.default_rng(seed)
    data = rng.integers(0, 2**64, size=n, dtype=np.uint64)
    instance = rng.integers(0, 2**64, size=n, dtype=np.uint64)
    idx = np.arange(n)
    near = idx[(idx % 10 == 5) & (idx > 0)]
    data[near] = data[rng.integers(0, near, dtype=np.int64)] ^ flips(rng, len(near), threshold)
    same = idx[(idx % 20 == 10)]
    source = rng.integers(0, same, dtype=np.int64)
    data[same], instance[same] = data[source], instance[source]
    return data, instance


def flips(rng, count: int, most: int):
    """`count` masks of 0..most random bits each."""
    import numpy as np

    masks = np.zeros(count, dtype=np.uint64)
    bits = rng.integers(0, most + 1, size=count)
    for k in range(most):
        pos = rng.integers(0, 64, size=count).astype(np.uint64)
        masks |= np.where(bits > k, np.uint64(1) << pos, np.uint64(0))
    return masks


def make_queries(data, q: int, threshold: int, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    base = rng.integers(0, len(data), size=q)
    queries = data[base].copy()
    for k in range(q):
        d = k % (threshold + 1)
        for bit in rng.choice(64, size=d, replace=False):
            queries[k] ^= np.uint64(1) << np.uint64(bit)
    rand = np.arange(q) % 10 == 9
    queries[rand] = rng.integers(0, 2**64, size=int(rand.sum()), dtype=np.uint64)
    return queries, rng.integers(0, 2**64, size=q, dtype=np.uint64)


def truth(data, queries, threshold: int) -> list[set[int]]:
    """Ids (index + 1) of the codes within `threshold` of each query, by brute force."""
    import numpy as np

    return [set((np.flatnonzero(np.bitwise_count(data ^ q) <= threshold) + 1).tolist()) for q in queries]


def write_codes(path: Path, head: bytes, data, instance, first_id: int = 1) -> None:
    with open(path, "w") as f:
        for k, (d, i) in enumerate(zip(data.tolist(), instance.tolist())):
            rec = {"id": first_id + k, "iscc": iscc(head, d, i), "group": 1 + k % 7, "owner": 1 + k % 50}
            f.write(json.dumps(rec, separators=(",", ":")) + "\n")


def query_lines(head: bytes, queries, instances) -> list[str]:
    return [json.dumps({"iscc": iscc(head, d, i)}) + "\n" for d, i in zip(queries.tolist(), instances.tolist())]


class Ours:
    """One `index query` process, fed a line at a time."""

    def __init__(self, directory: Path, threshold: int) -> None:
        self.proc = subprocess.Popen(
            [str(WORKER), "index", "query", "--threshold", str(threshold), str(directory)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )

    def ask(self, line: str) -> set[int]:
        self.proc.stdin.write(line)
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline())
        return {m["id"] for m in answer["matches"]}

    def rss_kib(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


class Usearch:
    """iscc-usearch's NphdIndex over the 64-bit Data-Codes (HNSW, default settings)."""

    def __init__(self, data, k: int) -> None:
        import numpy as np
        from iscc_usearch import NphdIndex

        self.np, self.k = np, k
        self.index = NphdIndex(max_dim=64)
        self.index.add(np.arange(1, len(data) + 1, dtype=np.uint64), self.vectors(data), threads=0)

    def vectors(self, data):
        return data.astype(">u8").view(self.np.uint8).reshape(-1, 8)

    def ask(self, q) -> set[int]:
        return {int(key) for key in self.index.search(self.vectors(self.np.array([q]))[0], count=self.k).keys}

    def batch(self, queries) -> None:
        self.index.search(self.vectors(queries), count=self.k, threads=0)

    def add(self, data, first_id: int) -> None:
        keys = self.np.arange(first_id, first_id + len(data), dtype=self.np.uint64)
        self.index.add(keys, self.vectors(data), threads=0)


class IsccSearch:
    """iscc-search's UsearchIndex (LMDB for instances, sharded HNSW for Data-Codes)."""

    def __init__(self, directory: Path, head: bytes, data, instance, k: int) -> None:
        from iscc_search.indexes.usearch.index import UsearchIndex
        from loguru import logger

        logger.remove()
        shutil.rmtree(directory, ignore_errors=True)
        self.head, self.k = head, k
        self.index = UsearchIndex(directory)
        self.ids: dict[str, int] = {}
        self.add(data, instance, 1)

    def add(self, data, instance, first_id: int) -> None:
        import iscc_core as ic
        from iscc_search.schema import IsccEntry

        entries = []
        unit = lambda kind, bits: "ISCC:" + ic.encode_component(kind, ic.ST.NONE, ic.VS.V0, 64, bits.to_bytes(8, "big"))  # noqa: E731
        for k, (d, i) in enumerate(zip(data.tolist(), instance.tolist())):
            iscc_id = ic.gen_iscc_id_v1(timestamp=1_700_000_000_000_000 + first_id + k, hub_id=1)["iscc"]
            self.ids[iscc_id] = first_id + k
            # The units must be given: from the code alone, nothing is indexed.
            units = [unit(ic.MT.DATA, d), unit(ic.MT.INSTANCE, i)]
            entries.append(IsccEntry(iscc_id=iscc_id, iscc_code=iscc(self.head, d, i), units=units))
        for start in range(0, len(entries), 50_000):
            self.index.add_assets(entries[start : start + 50_000])

    def ask(self, code: str) -> set[int]:
        from iscc_search.schema import IsccQuery

        result = self.index.search_assets(IsccQuery(iscc_code=code), limit=self.k)
        return {self.ids[m.iscc_id] for m in result.global_matches}


def worker(*args: str) -> float:
    """Runs the worker; returns the CPU seconds (user + system) it used: on a machine shared
    with other work, the figure that its load does not inflate."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([str(WORKER), *args], stdout=subprocess.DEVNULL, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def stats_of(directory: Path) -> dict:
    out = subprocess.run([str(WORKER), "index", "stats", str(directory)], capture_output=True, check=True).stdout
    return json.loads(out)


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def ms(values: list[float]) -> str:
    values = sorted(values)
    return f"{statistics.median(values) * 1e3:.3f} ms (p99 {values[int(len(values) * 0.99) - 1] * 1e3:.3f})"


def recall(found: list[set[int]], want: list[set[int]]) -> str:
    hit = sum(len(f & w) for f, w in zip(found, want))
    total = sum(len(w) for w in want)
    return f"{hit / total:.4f} ({hit}/{total})"


def single_queries(systems: dict, inputs: dict, rounds: int, want: list[set[int]]) -> None:
    """Each system answers the queries one by one; rounds take turns between systems."""
    n = len(want)
    per = {name: [] for name in systems}
    found: dict[str, list[set[int]]] = {name: [set() for _ in range(n)] for name in systems}
    block = max(1, n // rounds)
    for start in range(0, n, block):
        for name, ask in systems.items():
            for k in range(start, min(n, start + block)):
                t, got = timed(ask, inputs[name][k])
                per[name].append(t)
                found[name][k] = got
    print("\n| system | one query: median (p99) | recall of the matches within the threshold |\n|---|---:|---:|")
    for name in systems:
        print(f"| {name} | {ms(per[name])} | {recall(found[name], want)} |")
    ours = statistics.median(per["omero-iscc index"])
    for name in systems:
        if name != "omero-iscc index":
            print(f"latency ratio {name} / omero-iscc index: {statistics.median(per[name]) / ours:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--codes", type=int, default=1_000_000)
    ap.add_argument(
        "--big", type=int, action="append", default=[], help="also an index of this size, ours alone (repeatable)"
    )
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threshold", type=int, default=12)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--workdir", type=Path, default=CACHE / "index")
    args = ap.parse_args()
    if not args.no_peers:
        in_peer_venv()
    import numpy as np

    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}")
    load_before = load()
    print(f"load average before: {load_before:.2f}; codes {args.codes:,}, threshold {args.threshold}, k {args.k}")
    head = header()
    data, instance = make_codes(args.codes, args.threshold, 1)
    # Cached across runs, so named by size and seed: the 1 M codes here and those of `--big`
    # come from different seeds, and one file must never stand for the other's codes.
    codes = args.workdir / f"codes-{args.codes}-seed1.jsonl"
    if not codes.exists():
        write_codes(codes, head, data, instance)
    ours_dir = args.workdir / f"ours-{args.codes}"
    shutil.rmtree(ours_dir, ignore_errors=True)
    build = {}
    build["omero-iscc index"] = timed(worker, "index", "rebuild", str(ours_dir), str(codes))[0]
    queries, q_inst = make_queries(data, args.queries, args.threshold, 2)
    want = truth(data, queries, args.threshold)
    lines = query_lines(head, queries, q_inst)
    systems, inputs = {}, {}
    ours = Ours(ours_dir, args.threshold)
    systems["omero-iscc index"], inputs["omero-iscc index"] = ours.ask, lines
    if not args.no_peers:
        build["iscc-usearch NphdIndex"], usearch = timed(Usearch, data, args.k)
        systems["iscc-usearch NphdIndex"], inputs["iscc-usearch NphdIndex"] = usearch.ask, list(queries)
        peer_dir = args.workdir / f"iscc-search-{args.codes}"
        build["iscc-search UsearchIndex"], search = timed(IsccSearch, peer_dir, head, data, instance, args.k)
        systems["iscc-search UsearchIndex"] = search.ask
        inputs["iscc-search UsearchIndex"] = [json.loads(line)["iscc"] for line in lines]
    print("\n| system | build from all codes |\n|---|---:|")
    for name, t in build.items():
        print(f"| {name} | {t:.1f} s |")
    single_queries(systems, inputs, args.rounds, want)
    stats = stats_of(ours_dir)
    print(
        f"omero-iscc index: {stats['bytes_per_code']} bytes per code on disk, resident {ours.rss_kib() / 1024:.0f} MiB"
    )
    ours.close()

    # A batch of queries, and adding codes, rounds taking turns.
    bq, bq_inst = make_queries(data, args.batch, args.threshold, 3)
    batch_file = args.workdir / "batch.jsonl"
    batch_file.write_text("".join(query_lines(head, bq, bq_inst)))
    times: dict[str, list[float]] = {}
    for r in range(args.rounds):
        new_data, new_inst = make_codes(args.batch, args.threshold, 100 + r)
        first = 10**9 + r * args.batch
        add_file = args.workdir / "add.jsonl"
        write_codes(add_file, head, new_data, new_inst, first)
        t = str(args.threshold)
        runs = {
            "omero-iscc index: batch": lambda t=t: worker(
                "index", "query", "--threshold", t, str(ours_dir), str(batch_file)
            ),
            "omero-iscc index: add": lambda f=add_file: worker("index", "add", str(ours_dir), str(f)),
        }
        if not args.no_peers:
            runs["iscc-usearch NphdIndex: batch"] = lambda: usearch.batch(bq)
            runs["iscc-usearch NphdIndex: add"] = lambda d=new_data, f=first: usearch.add(d, f)
            if r == 0:  # one query at a time: a batch of 10,000 takes long
                runs["iscc-search UsearchIndex: batch"] = lambda: [
                    search.ask(iscc(head, d, i)) for d, i in zip(bq.tolist(), bq_inst.tolist())
                ]
            runs["iscc-search UsearchIndex: add"] = lambda d=new_data, i=new_inst, f=first: search.add(d, i, f)
        for name, fn in runs.items():
            times.setdefault(name, []).append(timed(fn)[0])
    print(f"\n| {args.batch:,} at once | median (range) over rounds |\n|---|---:|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.3f} s ({min(values):.3f}-{max(values):.3f}) |")
    if not args.no_peers:
        print(f"disk: omero-iscc index {du(ours_dir) / 2**20:.0f} MiB, iscc-search {du(peer_dir) / 2**20:.0f} MiB")

    for size in args.big:
        big(args, head, size)
    print(f"\nload average before {load_before:.2f}, after {load():.2f} ({os.cpu_count()} cores)")
    del np


def big(args, head: bytes, size: int) -> None:
    """Ours alone on a larger index: build, one query at a time, a batch, adding, size and
    memory."""
    data, instance = make_codes(size, args.threshold, 11)
    codes = args.workdir / f"codes-{size}-seed11.jsonl"
    if not codes.exists():
        write_codes(codes, head, data, instance)
    directory = args.workdir / f"ours-{size}"
    shutil.rmtree(directory, ignore_errors=True)
    t, _ = timed(worker, "index", "rebuild", str(directory), str(codes))
    queries, q_inst = make_queries(data, args.queries, args.threshold, 12)
    want = truth(data, queries, args.threshold)
    ours = Ours(directory, args.threshold)
    per, found = [], []
    for line in query_lines(head, queries, q_inst):
        dt, got = timed(ours.ask, line)
        per.append(dt)
        found.append(got)
    rss = ours.rss_kib()
    ours.close()
    bq, bq_inst = make_queries(data, args.batch, args.threshold, 13)
    batch_file = args.workdir / "batch-big.jsonl"
    batch_file.write_text("".join(query_lines(head, bq, bq_inst)))
    batches, adds, batch_cpu, add_cpu = [], [], [], []
    for r in range(args.rounds):
        wall, cpu = timed(worker, "index", "query", str(directory), str(batch_file))
        batches.append(wall)
        batch_cpu.append(cpu)
        new_data, new_inst = make_codes(args.batch, args.threshold, 200 + r)
        add_file = args.workdir / "add-big.jsonl"
        write_codes(add_file, head, new_data, new_inst, 10**10 + r * args.batch)
        wall, cpu = timed(worker, "index", "add", str(directory), str(add_file))
        adds.append(wall)
        add_cpu.append(cpu)
    stats = stats_of(directory)
    print(f"\n{size:,} codes, ours alone: build {t:.1f} s; one query {ms(per)}; recall {recall(found, want)}")
    print(
        f"batch of {args.batch:,} queries {statistics.median(batches):.3f} s ({min(batches):.3f}-{max(batches):.3f}); "
        f"add of {args.batch:,} codes {statistics.median(adds):.3f} s ({min(adds):.3f}-{max(adds):.3f}); "
        f"CPU time (user + system): batch {statistics.median(batch_cpu):.3f} s, add {statistics.median(add_cpu):.3f} s"
    )
    print(f"one query: mean {statistics.mean(per) * 1e3:.3f} ms")
    print(
        f"{stats['bytes'] / 2**20:.0f} MiB on disk ({stats['bytes_per_code']} bytes per code, "
        f"{stats['segments']} segments after the adds); resident memory of the query process: {rss / 1024:.0f} MiB"
    )


if __name__ == "__main__":
    main()
