"""The backlog: every image without an ISCC, hashed on a cluster (or N at a time on this host)
and annotated through one OMERO session.

A work directory on storage the cluster shares holds everything, so each step can run again:

    backlog.json                 the plan: shards, their bytes, submissions, shards ingested
    shards/shard-NNNNN.jsonl     the worker's --groups lines (one per Fileset), by bytes
    shards/shard-NNNNN.json      its Filesets' image ids, bytes and the OMERO checksums to compute
    shards/shard-NNNNN.checksums those checksums' names, for the task script
    task.sh                      what one array task runs (SLURM_ARRAY_TASK_ID = shard number)
    results/shard-NNNNN.jsonl    a task's result: written beside, renamed into place when whole
    results/shard-NNNNN.time     its start and end (epoch seconds)
    rejected/                    results that were not whole (truncated, garbled), set aside
    failures.jsonl               Filesets not annotated: fixity failures, unreadable files

Planning reads OMERO page by page (``unannotated_images`` by id, whole Filesets); hashing is
the static worker's ``sum --groups`` on the nodes against the repository as they mount it;
ingest checks each file's size and import checksum against OMERO's record, skips images that
got an ISCC meanwhile, and saves through ``annotate.save`` (owner, batches, once per Fileset).
Images without a Fileset (imported before OMERO 5) are left to the scheduler, which reads them
through OMERO.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import slurm
from .annotate import save, triage
from .compute import unit_record
from .config import Config
from .filesets import Unit, plan
from .gateway import Omero
from .layout import FILES, INPUT_REPOSITORY
from .provenance import SUPPORTED_HASHERS, Trust
from .statuses import ImageStatus
from .worker import GroupResult

log = logging.getLogger("omero_iscc.backlog")

#: Images asked for per page while planning.
PLAN_PAGE = 1000


class BacklogError(Exception):
    """The work directory cannot be used (no plan, another plan's directory...)."""


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@dataclass
class Workdir:
    """The backlog's directory and its plan (``backlog.json``)."""

    root: Path
    manifest: dict = field(default_factory=dict)

    def shard(self, n: int) -> Path:
        return self.root / "shards" / f"shard-{n:05d}.jsonl"

    def meta(self, n: int) -> Path:
        return self.root / "shards" / f"shard-{n:05d}.json"

    def result(self, n: int) -> Path:
        return self.root / "results" / f"shard-{n:05d}.jsonl"

    def timing(self, n: int) -> Path:
        return self.root / "results" / f"shard-{n:05d}.time"

    @property
    def task_script(self) -> Path:
        return self.root / "task.sh"

    @property
    def shard_count(self) -> int:
        return len(self.manifest.get("shards", []))

    @classmethod
    def open(cls, root: str) -> Workdir:
        path = Path(root) / "backlog.json"
        if not path.is_file():
            raise BacklogError(f"{root} holds no backlog plan (run `backlog --slurm` or `--local N` first)")
        return cls(Path(root), json.loads(path.read_text()))

    def save(self) -> None:
        _write_atomically(self.root / "backlog.json", json.dumps(self.manifest, indent=1))

    def units(self, n: int) -> dict[str, list[int]]:
        return json.loads(self.meta(n).read_text())["units"]

    def valid_result(self, n: int) -> list[GroupResult] | None:
        """The shard's result if it is whole: one JSON record per group of the shard, in order;
        else ``None`` (missing), and a partial or garbled file is moved to ``rejected/``."""
        path = self.result(n)
        if not path.is_file():
            return None
        groups = list(self.units(n))
        raw = path.read_bytes()
        records: list[GroupResult] = []
        problem = None
        if raw and not raw.endswith(b"\n"):
            problem = "its last line is cut off"
        else:
            for line in raw.splitlines():
                try:
                    records.append(GroupResult.from_record(json.loads(line)))
                except ValueError:
                    problem = "a line is not JSON"
                    break
        if problem is None and [r.id for r in records] != groups:
            problem = f"{len(records)} records for {len(groups)} Filesets"
        if problem is None:
            return records
        rejected = self.root / "rejected" / f"{path.name}.{int(time.time())}"
        rejected.parent.mkdir(exist_ok=True)
        os.replace(path, rejected)
        log.warning("shard %d: result set aside (%s): %s; it will be hashed again", n, problem, rejected)
        return None


# -- planning ---------------------------------------------------------------------------------


class _ShardWriter:
    def __init__(self, work: Workdir, shard_bytes: int) -> None:
        self.work, self.shard_bytes = work, shard_bytes
        self.shards: list[dict] = []
        self._open()

    def _open(self) -> None:
        self.lines: list[str] = []
        self.units: dict[str, list[int]] = {}
        self.bytes = 0
        self.checksums: set[str] = set()

    def add(self, unit: Unit) -> None:
        self.lines.append(json.dumps({"id": unit.key, "files": [f.repo_path for f in unit.files]}))
        self.units[unit.key] = [im.getId().val for im in unit.images]
        self.bytes += sum(f.size or 0 for f in unit.files)
        self.checksums |= {f.hasher for f in unit.files if f.hasher in SUPPORTED_HASHERS and f.hash}
        if self.bytes >= self.shard_bytes:
            self.close()

    def close(self) -> None:
        if not self.lines:
            return
        n = len(self.shards)
        _write_atomically(self.work.shard(n), "\n".join(self.lines) + "\n")
        meta = {"units": self.units, "bytes": self.bytes, "checksums": sorted(self.checksums)}
        _write_atomically(self.work.meta(n), json.dumps(meta))
        _write_atomically(
            self.work.meta(n).with_suffix(".checksums"), "".join(f"{c}\n" for c in sorted(self.checksums))
        )
        self.shards.append({"bytes": self.bytes, "filesets": len(self.units)})
        self._open()


def make_plan(omero: Omero, cfg: Config, root: str, shard_bytes: int) -> Workdir:
    """Pages through every image without an ISCC, groups them by Fileset and writes the
    shards; returns the new plan."""
    work = Workdir(Path(root))
    if (work.root / "backlog.json").exists():
        raise BacklogError(f"{root} already holds a plan: use --resume, or another directory")
    for sub in ("shards", "results", "logs"):
        (work.root / sub).mkdir(parents=True, exist_ok=True)
    writer = _ShardWriter(work, shard_bytes)
    seen: set[str] = set()
    legacy = images = after = 0
    while True:
        page = omero.unannotated_images(cfg.namespace, PLAN_PAGE, after)
        if not page:
            break
        after = page[-1]
        ids = sorted(set(page) | set(omero.fileset_images(page)))
        for unit in plan(omero, omero.images(ids)):
            if unit.key in seen:
                continue
            seen.add(unit.key)
            if unit.fileset_id is None or unit.trust is Trust.REFUSED:
                # No repository path, or rows that do not say OMERO put the files there
                # (provenance; a gated unit is hashed: ingest keeps its code only when every
                # import checksum matches, fixity_problem): left to the scheduler.
                legacy += 1
                continue
            images += len(unit.images)
            writer.add(unit)
    writer.close()
    work.manifest = {
        "created": time.time(),
        "namespace": cfg.namespace,
        "shard_bytes": shard_bytes,
        "shards": writer.shards,
        "images": images,
        "left_to_the_scheduler": legacy,
        "submissions": [],
        "ingested": [],
    }
    write_task_script(work, cfg)
    work.save()
    log.info(
        "planned %d shard(s), %d Fileset(s), %d image(s) in %s", len(writer.shards), len(seen) - legacy, images, root
    )
    return work


def write_task_script(work: Workdir, cfg: Config) -> None:
    """The array task: the worker on one shard, its result renamed into place when whole."""
    worker = cfg.cluster_worker or cfg.worker or "omero-iscc"
    root = cfg.cluster_root or cfg.repository
    if not root:
        raise BacklogError("the repository as the compute nodes mount it is unknown: set cluster_root")
    allow = " ".join(f"--allow-root {shlex.quote(a)}" for a in cfg.allowed_roots)
    w = shlex.quote(str(work.root.resolve()))
    script = f"""#!/bin/sh
# omero-iscc backlog task: hashes shard $SLURM_ARRAY_TASK_ID of {work.root}; the result appears
# (renamed into place) only when the worker has written every record of the shard.
set -u
n=$(printf %05d "$SLURM_ARRAY_TASK_ID")
W={w}
out="$W/results/shard-$n.jsonl"
tmp="$W/results/.shard-$n.jsonl.$$"
start=$(date +%s.%N)
set --
for alg in $(cat "$W/shards/shard-$n.checksums"); do set -- "$@" --checksum "$alg"; done
{shlex.quote(worker)} sum --json --units --progress never --root {shlex.quote(root)} {allow} "$@" \\
    --groups "$W/shards/shard-$n.jsonl" > "$tmp"
status=$?
# 0: every record hashed; 1: some files failed (their records say why): both are whole.
if [ "$status" -gt 1 ]; then rm -f "$tmp"; exit "$status"; fi
mv "$tmp" "$out" && echo "$start $(date +%s.%N)" > "$W/results/shard-$n.time"
"""
    work.task_script.write_text(script)
    work.task_script.chmod(0o755)


# -- hashing ----------------------------------------------------------------------------------


def _slurm_jobs(work: Workdir) -> list[str]:
    return [s["job"] for s in work.manifest["submissions"] if s.get("job")]


def running_tasks(work: Workdir) -> dict[int, str]:
    """Shards whose Slurm task is still queued or running."""
    jobs = _slurm_jobs(work)
    return slurm.active_tasks(jobs) if jobs else {}


def missing_shards(work: Workdir) -> list[int]:
    """Shards without a whole result and no task queued or running for them."""
    running = running_tasks(work)
    return [n for n in range(work.shard_count) if n not in running and work.valid_result(n) is None]


def submit(work: Workdir, cfg: Config, local: int | None = None, ingest_command: str | None = None) -> dict:
    """Runs the missing shards: ``local`` tasks at a time on this host, or as one Slurm array
    (and, with ``ingest_command``, a job that ingests once the array has ended). Returns the
    submission as recorded in the plan."""
    tasks = missing_shards(work)
    entry: dict = {"mode": "local" if local else "slurm", "tasks": tasks, "time": time.time(), "job": None}
    if not tasks:
        log.info("every shard has its result: nothing to run")
        return entry
    script, logs = str(work.task_script), str(work.root / "logs")
    if local:
        statuses = slurm.run_local(script, tasks, local)
        entry["failed"] = sorted(n for n, rc in statuses.items() if rc != 0)
    else:
        entry["job"] = slurm.submit_array(
            script,
            tasks,
            logs,
            throttle=cfg.slurm_throttle,
            partition=cfg.slurm_partition,
            time_limit=cfg.slurm_time,
            options=cfg.slurm_options,
        )
        if ingest_command:
            entry["ingest_job"] = slurm.submit_after(
                ingest_command, entry["job"], logs, cfg.slurm_options, cfg.slurm_partition
            )
    work.manifest["submissions"].append(entry)
    work.save()
    log.info("%s: %d shard(s)%s", entry["mode"], len(tasks), f", job {entry['job']}" if entry["job"] else "")
    return entry


# -- ingest -----------------------------------------------------------------------------------


@dataclass
class IngestReport:
    annotated: int = 0
    already: int = 0
    not_permitted: int = 0
    failed: list[dict] = field(default_factory=list)  # {"shard", "fileset", "images", "kind", "message"}
    ingested: list[int] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)

    def message(self) -> str:
        fixity = sum(1 for f in self.failed if f["kind"] == "fixity")
        parts = [
            f"{self.annotated} image(s) annotated from {len(self.ingested)} shard(s)",
            f"{self.already} already had an ISCC",
        ]
        if self.not_permitted:
            parts.append(f"{self.not_permitted} not permitted")
        if self.failed:
            parts.append(f"{len(self.failed)} Fileset(s) not annotated ({fixity} fixity failure(s))")
        if self.missing:
            parts.append(f"{len(self.missing)} shard(s) without a result yet (backlog --resume)")
        return ", ".join(parts)


def fixity_problem(unit: Unit, result: GroupResult) -> tuple[str, str] | None:
    """(kind, message) when the hashed files are not the files OMERO recorded: a size or an
    import checksum that differs; ``None`` when they are."""
    if not result.ok:
        return "unreadable", result.error or result.error_kind or "not hashed"
    if len(result.files) != len(unit.files):
        return "fixity", f"{len(result.files)} files hashed, the Fileset has {len(unit.files)} now"
    for source, hashed in zip(unit.files, result.files):
        name = unit.relative(source)
        if not hashed.ok:
            return "unreadable", f"{name}: {hashed.error}"
        if source.size is not None and hashed.filesize != source.size:
            return "fixity", f"{name}: {hashed.filesize} bytes, OMERO recorded {source.size}"
        recorded = source.hash if source.hasher in SUPPORTED_HASHERS else None
        if recorded and hashed.checksums.get(source.hasher, "").lower() != recorded.lower():
            return "fixity", f"{name}: {source.hasher} differs from the checksum OMERO recorded at import"
    return None


def ingest(omero: Omero, work: Workdir) -> IngestReport:
    """Annotates the images of every whole result not ingested yet, through this session;
    images that have an ISCC by now are left as they are, so ingesting twice annotates nothing
    twice. Fileset-level failures are appended to ``failures.jsonl``."""
    report = IngestReport()
    namespace = work.manifest["namespace"]
    layout = FILES.in_namespace(namespace)
    done_before = set(work.manifest["ingested"])
    for n in range(work.shard_count):
        if n in done_before:
            continue
        results = work.valid_result(n)
        if results is None:
            report.missing.append(n)
            continue
        by_key = {r.id: r for r in results}
        image_ids = [i for ids in work.units(n).values() for i in ids]
        triaged, todo, _existing = triage(omero, image_ids, namespace)
        report.already += triaged.count(ImageStatus.ALREADY)
        report.not_permitted += triaged.count(ImageStatus.NOT_PERMITTED)
        ready = []
        for unit in plan(omero, todo):
            result = by_key.get(unit.key)
            problem = fixity_problem(unit, result) if result is not None else ("unreadable", "not in the shard")
            if problem is not None:
                report.failed.append(
                    {
                        "shard": n,
                        "fileset": unit.fileset_id,
                        "images": [im.getId().val for im in unit.images],
                        "kind": problem[0],
                        "message": problem[1],
                    }
                )
                continue
            ready.append((unit, unit_record(unit, result, result.files, INPUT_REPOSITORY)))
        for outcome, _record_saved in save(omero, ready, layout, {}, 0.0):
            if outcome.status is ImageStatus.ANNOTATED:
                report.annotated += 1
            elif outcome.status is ImageStatus.NOT_PERMITTED:
                report.not_permitted += 1
            else:
                report.failed.append(
                    {
                        "shard": n,
                        "fileset": None,
                        "images": [outcome.image_id],
                        "kind": "save",
                        "message": outcome.message,
                    }
                )
        with open(work.root / "failures.jsonl", "a", encoding="utf-8") as f:
            for failure in (x for x in report.failed if x["shard"] == n):
                f.write(json.dumps(failure) + "\n")
        work.manifest["ingested"].append(n)
        work.save()  # after every shard: an interrupted ingest resumes where it stopped
        report.ingested.append(n)
    return report


# -- status -----------------------------------------------------------------------------------


def status(work: Workdir, running: dict[int, str] | None = None) -> dict:
    """Shards done, running, failed and waiting; bytes hashed, throughput and time left."""
    running = running_tasks(work) if running is None else running
    submitted = {n for s in work.manifest["submissions"] for n in s["tasks"]}
    sizes = [s["bytes"] for s in work.manifest["shards"]]
    done = [n for n in range(work.shard_count) if work.result(n).is_file()]
    spans = []
    for n in done:
        try:
            start, end = (float(x) for x in work.timing(n).read_text().split())
            spans.append((start, end))
        except (OSError, ValueError):
            continue
    bytes_done = sum(sizes[n] for n in done)
    seconds = (max(e for _, e in spans) - min(s for s, _ in spans)) if spans else 0.0
    rate = bytes_done / seconds if seconds > 0 else None
    left = sum(sizes) - bytes_done
    return {
        "shards": work.shard_count,
        "done": len(done),
        "ingested": len(work.manifest["ingested"]),
        "running": sum(1 for n in running if n not in done and running[n] == "RUNNING"),
        "queued": sum(1 for n in running if n not in done and running[n] != "RUNNING"),
        "failed": sorted(n for n in submitted if n not in done and n not in running),
        "waiting": sum(1 for n in range(work.shard_count) if n not in submitted),
        "bytes": sum(sizes),
        "bytes_done": bytes_done,
        "bytes_per_second": rate,
        "seconds_left": left / rate if rate else None,
        "images": work.manifest.get("images", 0),
        "left_to_the_scheduler": work.manifest.get("left_to_the_scheduler", 0),
    }


def format_status(st: dict) -> str:
    gib = 1 << 30
    lines = [
        f"shards: {st['shards']}: {st['done']} done ({st['ingested']} ingested), {st['running']} running, "
        f"{st['queued']} queued, {len(st['failed'])} failed, {st['waiting']} never submitted",
        f"bytes: {st['bytes_done'] / gib:.2f} of {st['bytes'] / gib:.2f} GiB hashed",
    ]
    if st["failed"]:
        lines.append(f"failed shards (backlog --resume runs them again): {', '.join(map(str, st['failed'][:20]))}")
    if st["bytes_per_second"]:
        left = st["seconds_left"] or 0
        lines.append(f"throughput: {st['bytes_per_second'] / (1 << 20):.0f} MiB/s; time left: {left / 3600:.1f} h")
    if st["left_to_the_scheduler"]:
        lines.append(f"{st['left_to_the_scheduler']} image(s) without a Fileset are left to the scheduler")
    return "\n".join(lines)


def ingest_command(config_file: str | None, workdir: str) -> str:
    """The command the Slurm ingest job runs (this Python, this configuration)."""
    args = [sys.executable, "-m", "omero_iscc"] + (["--config", config_file] if config_file else [])
    return shlex.join(args + ["backlog", "ingest", "--workdir", workdir])
