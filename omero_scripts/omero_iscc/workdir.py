"""The backlog's work directory, on storage the OMERO host and the cluster's nodes share:

    backlog.json                 the plan: shards, arrays submitted, shards ingested, retries
    backlog.lock                 held by whatever plans, submits or ingests (flock)
    shards/shard-NNNNN.jsonl     the worker's --groups lines (one per Fileset)
    shards/shard-NNNNN.json      its Filesets' image ids, bytes, files, the checksums to compute
    shards/shard-NNNNN.checksums those checksums' names, for the task script
    arrays/array-NNNNN.list      the shard of each task of one array, one per line
    task.sh, probe.sh            what one array task runs; the probe job
    results/shard-NNNNN.jsonl    a task's result: written beside, renamed into place when whole
    results/shard-NNNNN.time     its start and end (epoch seconds)
    results/shard-NNNNN.exit     how the task's last run ended: "JOB_TASK STATUS" or "... TERM"
    rejected/                    results that were not whole (truncated, garbled), set aside
    failures.jsonl               Filesets not annotated: fixity failures, unreadable files
    logs/                        the tasks' logs, appended across requeues

The directory and everything in it is its owner's only (0700, 0600): the paths, checksums and
image ids of every group are in it. The plan is rewritten whole (``atomic.write``) under the
lock, each writer reading it again once it holds the lock, so no update is lost.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

from . import atomic
from .worker import GroupResult

log = logging.getLogger(__name__)

MANIFEST = "backlog.json"
LOCK = "backlog.lock"
VERSION = 2


class BacklogError(Exception):
    """The work directory cannot be used (no plan, another plan's directory, open to others...)."""


class Workdir:
    """The backlog's directory, its plan (``manifest``), and the directory as the cluster's
    login node and nodes see it (``cluster``)."""

    def __init__(self, root: Path | str, cluster: str | None = None, manifest: dict | None = None) -> None:
        self.root = Path(root)
        self.cluster = (cluster or str(self.root.resolve())).rstrip("/")
        self.manifest: dict = manifest or {}

    # -- paths ---------------------------------------------------------------------------------
    def shard(self, n: int) -> Path:
        return self.root / "shards" / f"shard-{n:05d}.jsonl"

    def meta(self, n: int) -> Path:
        return self.root / "shards" / f"shard-{n:05d}.json"

    def checksums(self, n: int) -> Path:
        return self.root / "shards" / f"shard-{n:05d}.checksums"

    def result(self, n: int) -> Path:
        return self.root / "results" / f"shard-{n:05d}.jsonl"

    def timing(self, n: int) -> Path:
        return self.root / "results" / f"shard-{n:05d}.time"

    def marker(self, n: int) -> Path:
        return self.root / "results" / f"shard-{n:05d}.exit"

    def array_list(self, seq: int) -> Path:
        return self.root / "arrays" / f"array-{seq:05d}.list"

    @property
    def task_script(self) -> Path:
        return self.root / "task.sh"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def on_nodes(self, path: Path) -> str:
        """``path`` (in this directory) as the login node and the nodes see it."""
        return f"{self.cluster}/{path.relative_to(self.root).as_posix()}"

    # -- the plan ----------------------------------------------------------------------------------
    @property
    def shard_count(self) -> int:
        return len(self.manifest.get("shards", []))

    @classmethod
    def create(cls, root: str, cluster: str | None = None) -> Workdir:
        """A new work directory (or an empty one): its owner's only."""
        work = cls(Path(root), cluster)
        if (work.root / MANIFEST).exists():
            raise BacklogError(f"{root} already holds a plan: use --resume, or another directory")
        atomic.private_dir(work.root)
        for sub in ("shards", "arrays", "results", "rejected", "logs", "probe"):
            atomic.private_dir(work.root / sub)
        return work

    @classmethod
    def open(cls, root: str, cluster: str | None = None) -> Workdir:
        path = Path(root) / MANIFEST
        if not path.is_file():
            raise BacklogError(f"{root} holds no backlog plan (run `backlog --slurm` or `--local N` first)")
        if atomic.exposed(root):
            raise BacklogError(
                f"{root} can be read by others than its owner: it holds paths, checksums and image ids "
                f"of every group (chmod -R go-rwx {root})"
            )
        work = cls(Path(root), cluster)
        work.reload()
        if work.manifest.get("version") != VERSION:
            raise BacklogError(f"{root} holds a plan of another version of omero-iscc: plan again in a new directory")
        return work

    def reload(self) -> None:
        self.manifest = json.loads((self.root / MANIFEST).read_text())

    def save(self) -> None:
        atomic.write(self.root / MANIFEST, json.dumps(self.manifest, indent=1))

    @contextlib.contextmanager
    def locked(self, what: str) -> Iterator[Workdir]:
        """The work directory's exclusive lock, for planning, submitting and ingesting; the
        plan is read again once the lock is held (another process may have changed it)."""
        with atomic.locked(self.root / LOCK, what):
            if (self.root / MANIFEST).exists():
                self.reload()
            yield self

    # -- shards ------------------------------------------------------------------------------------
    def units(self, n: int) -> dict[str, list[int]]:
        """The shard's Filesets (``fileset:ID``) in order, with their image ids."""
        return json.loads(self.meta(n).read_text())["units"]

    def write_shard(self, n: int, lines: list[str], units: dict[str, list[int]], sizes: dict, checksums: set) -> dict:
        """Writes shard ``n``; returns its entry for the plan. ``sizes``: key -> (bytes, files)."""
        atomic.write(self.shard(n), "".join(line + "\n" for line in lines))
        meta = {"units": units, "sizes": sizes, "checksums": sorted(checksums)}
        atomic.write(self.meta(n), json.dumps(meta))
        atomic.write(self.checksums(n), "".join(f"{c}\n" for c in sorted(checksums)))
        return {
            "bytes": sum(b for b, _ in sizes.values()),
            "files": sum(f for _, f in sizes.values()),
            "filesets": len(units),
        }

    def shard_lines(self, n: int) -> dict[str, str]:
        """The shard's --groups lines by Fileset key."""
        lines = {}
        with open(self.shard(n), encoding="utf-8") as f:
            for line in f:
                lines[json.loads(line)["id"]] = line.rstrip("\n")
        return lines

    # -- results -----------------------------------------------------------------------------------
    def check_result(self, n: int) -> str | None:
        """Why the shard's result is not whole (``"missing"`` when there is none), or ``None``
        when it is: one JSON record per Fileset of the shard, in order, the last line ended.
        Reads the file as a stream; a result that is not whole is moved to ``rejected/``."""
        path = self.result(n)
        if not path.is_file():
            return "missing"
        expected = list(self.units(n))
        problem = None
        count = 0
        with open(path, "rb") as f:
            for line in f:
                if not line.endswith(b"\n"):
                    problem = "its last line is cut off"
                    break
                try:
                    record_id = str(json.loads(line).get("id"))
                except (ValueError, AttributeError):
                    problem = f"line {count + 1} is not a JSON record"
                    break
                if count >= len(expected) or record_id != expected[count]:
                    problem = f"record {count + 1} is {record_id!r}, the shard's is {expected[count:count + 1]}"
                    break
                count += 1
        if problem is None and count != len(expected):
            problem = f"{count} records for {len(expected)} Filesets"
        if problem is not None:
            self.set_aside(n, problem)
        return problem

    def set_aside(self, n: int, problem: str) -> None:
        path = self.result(n)
        rejected = self.root / "rejected" / f"{path.name}.{time.time_ns()}"
        with contextlib.suppress(FileNotFoundError):
            os.replace(path, rejected)
            log.warning("shard %d: result set aside (%s): %s; it will be hashed again", n, problem, rejected)

    def results(self, n: int) -> Iterator[GroupResult]:
        """The shard's records one at a time (checked whole by :meth:`check_result` first)."""
        with open(self.result(n), encoding="utf-8") as f:
            for line in f:
                yield GroupResult.from_record(json.loads(line))

    def leftovers(self) -> list[Path]:
        """Partial results of tasks that were killed while writing (``results/.shard-*``)."""
        return sorted((self.root / "results").glob(".shard-*"))
