"""The backlog: every image without an ISCC, hashed on a Slurm cluster (or N at a time on this
host) and annotated on the OMERO host through one session (docs/backlog.md).

1. **Plan** (``make_plan``): pages through OMERO's images without an ISCC by id, groups them by
   Fileset and writes shards bounded by bytes and by files into the work directory
   (``workdir.py``). From its first page the plan holds its images back from the scheduler
   (``holds.py``).
2. **Probe** (``probe``): one small job checks that the nodes see the work directory as this
   host wrote it and can write there, that the worker runs there, and that a sample of the
   repository's files can be read; a failed probe stops the submission, with the reason.
3. **Submit** (``submit_arrays``): arrays of dense indices (each task reads its shard in the
   array's list file) no larger than ``MaxArraySize``, no more tasks than ``MaxJobCount`` and
   the user's ``MaxSubmitJobs`` leave room for, ``slurm_throttle`` shared among them. Each
   array is recorded as submitting before ``sbatch`` and as accepted as soon as it answers;
   ``ingest --wait`` submits the rest as room frees.
4. **Ingest** (``ingest``, ``follow``): on the OMERO host by default, as shards finish. Each
   result is checked whole as a stream; each file's size and import checksum must match
   OMERO's record (a Fileset that fails is refused for good, by the scheduler too); transient
   read failures are hashed again by ``--resume``, in new shards; annotations are checked
   again under the annotate lock just before each save.
5. **Resume**: the shards whose task failed or never ran, those that timed out split in two,
   and the Filesets to retry; exactly those, the same way.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import atomic, slurm
from . import holds as holds_mod
from .annotate import recheck, save, triage
from .compute import unit_record
from .config import Config, from_file
from .filesets import Unit, plan
from .gateway import Omero
from .layout import FILES, INPUT_REPOSITORY
from .provenance import SUPPORTED_HASHERS, Trust
from .statuses import ImageStatus
from .workdir import MANIFEST, VERSION, BacklogError, Workdir
from .worker import GroupResult

__all__ = ["BacklogError", "Workdir"]

log = logging.getLogger("omero_iscc.backlog")

#: Images asked for per page while planning.
PLAN_PAGE = 1000
#: Filesets per save while ingesting.
INGEST_BATCH = 200
#: Filesets the probe reads (the smallest of shards spread over the plan).
PROBE_SAMPLE = 8
#: Runs of a Fileset whose files could not be read before it is handed to the scheduler.
MAX_TRIES = 3
#: The worker's error kinds that may pass (a storage hiccup, a node without the mount, a file
#: being written): retried by --resume. The others (outside the repository, not a file) will
#: not change by reading again.
RETRYABLE = frozenset({"io", "not_found", "permission_denied", "changed_while_reading"})

#: Shard states besides Slurm's.
INGESTED, HASHED, WAITING, SPLIT, UNKNOWN = "INGESTED", "HASHED", "WAITING", "SPLIT", "UNKNOWN"
DONE_STATES = (INGESTED, HASHED, SPLIT)


def runner(cfg: Config) -> slurm.Runner:
    return slurm.Runner(cfg.slurm_ssh, tuple(cfg.slurm_ssh_options))


def open_workdir(cfg: Config, root: str) -> Workdir:
    return Workdir.open(root, cfg.cluster_backlog_dir)


# -- planning ---------------------------------------------------------------------------------


class _ShardWriter:
    """Fills shards up to ``shard_bytes`` or ``shard_files`` (a Fileset larger than either
    has a shard of its own) and keeps the smallest Fileset of each for the probe's sample."""

    def __init__(self, work: Workdir, shard_bytes: int, shard_files: int, first: int = 0) -> None:
        self.work, self.shard_bytes, self.shard_files = work, shard_bytes, shard_files
        self.next = first
        self.entries: list[dict] = []
        self.smallest: list[tuple[int, str]] = []
        self._open()

    def _open(self) -> None:
        self.lines: list[str] = []
        self.units: dict[str, list[int]] = {}
        self.sizes: dict[str, tuple[int, int]] = {}
        self.checksums: set[str] = set()
        self.bytes = self.files = 0
        self.small: tuple[int, str] | None = None

    def add(self, key: str, line: str, images: list[int], size: tuple[int, int], checksums: set[str]) -> None:
        if self.lines and (self.bytes + size[0] > self.shard_bytes or self.files + size[1] > self.shard_files):
            self.close()
        self.lines.append(line)
        self.units[key] = images
        self.sizes[key] = size
        self.checksums |= checksums
        self.bytes += size[0]
        self.files += size[1]
        if self.small is None or size[0] < self.small[0]:
            self.small = (size[0], line)

    def add_unit(self, unit: Unit) -> None:
        line = json.dumps({"id": unit.key, "files": [f.repo_path for f in unit.files]})
        size = (sum(f.size or 0 for f in unit.files), len(unit.files))
        checksums = {f.hasher for f in unit.files if f.hasher in SUPPORTED_HASHERS and f.hash}
        self.add(unit.key, line, [im.getId().val for im in unit.images], size, checksums)

    def close(self) -> None:
        if not self.lines:
            return
        entry = self.work.write_shard(self.next, self.lines, self.units, self.sizes, self.checksums)
        self.entries.append(entry)
        if self.small is not None:
            self.smallest.append(self.small)
        self.next += 1
        self._open()


def make_plan(omero: Omero, cfg: Config, root: str, shard_bytes: int, shard_files: int) -> Workdir:
    """Pages through every image without an ISCC, groups them by Fileset and writes the
    shards; returns the new plan. The plan holds its images from before its first page."""
    work = Workdir.create(root, cfg.cluster_backlog_dir)
    with work.locked("planning"):
        if (work.root / MANIFEST).exists():
            raise BacklogError(f"{root} already holds a plan: use --resume, or another directory")
        here = str(work.root.resolve())
        others = [h for h in holds_mod.read_all(cfg.state_dir) if h.holding and not h.stale() and h.workdir != here]
        if others:
            raise BacklogError(
                f"the backlog plan in {others[0].workdir} is {others[0].state}: finish it (backlog ingest --wait) "
                f"or close it (backlog close --workdir {others[0].workdir}) before planning another"
            )
        hold = holds_mod.Hold(plan=secrets.token_hex(6), workdir=here)
        holds_mod.save(cfg.state_dir, hold)
        try:
            work.manifest = _plan_pages(omero, cfg, work, hold.plan, shard_bytes, shard_files)
        except BaseException:
            hold.state = holds_mod.CLOSED
            holds_mod.save(cfg.state_dir, hold)
            raise
        write_task_script(work, cfg)
        work.save()
        sync_hold(work, cfg)
    m = work.manifest
    log.info(
        "planned %d shard(s), %d image(s) in %s; %d image(s) without a Fileset left to the scheduler",
        work.shard_count,
        m["images"],
        root,
        len(m["released"]),
    )
    return work


def _plan_pages(omero: Omero, cfg: Config, work: Workdir, plan_id: str, shard_bytes: int, shard_files: int) -> dict:
    writer = _ShardWriter(work, shard_bytes, shard_files)
    seen: set[str] = set()
    legacy: list[int] = []
    images = after = upto = 0
    while True:
        page = omero.unannotated_images(cfg.namespace, PLAN_PAGE, after)
        if not page:
            break
        after = page[-1]
        ids = sorted(set(page) | set(omero.fileset_images(page)))
        upto = max(upto, after, ids[-1])
        for unit in plan(omero, omero.images(ids)):
            if unit.key in seen:
                continue
            seen.add(unit.key)
            if unit.fileset_id is None or unit.trust is Trust.REFUSED:
                # No repository path, or rows that do not say OMERO put the files there
                # (provenance; a gated unit is hashed: ingest keeps its code only when every
                # import checksum matches, fixity_problem): left to the scheduler.
                legacy += [im.getId().val for im in unit.images]  # read through OMERO by the scheduler
                continue
            images += len(unit.images)
            writer.add_unit(unit)
    writer.close()
    step = max(1, len(writer.smallest) // PROBE_SAMPLE)
    sample = [line for _, line in writer.smallest[::step][:PROBE_SAMPLE]]
    atomic.write(work.root / "probe" / "sample.jsonl", "".join(line + "\n" for line in sample))
    return {
        "version": VERSION,
        "plan": plan_id,
        "created": time.time(),
        "namespace": cfg.namespace,
        "shard_bytes": shard_bytes,
        "shard_files": shard_files,
        "shards": writer.entries,
        "images": images,
        "upto": upto,
        "released": sorted(legacy),
        "fixity": {},
        "retry": {},
        "arrays": [],
        "next_array": 0,
        "ingest_jobs": [],
        "ingested": [],
        "finished": False,
        "closed": False,
    }


def sync_hold(work: Workdir, cfg: Config) -> None:
    """Writes the plan's hold for the scheduler, from the plan (its source of truth)."""
    m = work.manifest
    state = holds_mod.CLOSED if m["closed"] else holds_mod.DONE if m["finished"] else holds_mod.ACTIVE
    old = holds_mod.read(cfg.state_dir, m["plan"])
    hold = holds_mod.Hold(
        plan=m["plan"],
        workdir=str(work.root.resolve()),
        state=state,
        upto=m["upto"],
        released=m["released"],
        fixity=m["fixity"],
    )
    if old is None or (old.state, old.upto, old.released, old.fixity) != (state, m["upto"], m["released"], m["fixity"]):
        holds_mod.save(cfg.state_dir, hold)


# -- the scripts the nodes run ------------------------------------------------------------------

TASK_SCRIPT = """#!/bin/sh
# omero-iscc backlog task: hashes the shard named on line SLURM_ARRAY_TASK_ID + 1 of the list
# file $1. The result appears (renamed into place) only when the worker has written every
# record of the shard; results/shard-N.exit says how the task's last run ended.
umask 077
PATH=/usr/local/bin:/usr/bin:/bin; export PATH
W={workdir}
list="$1"
line=$((SLURM_ARRAY_TASK_ID + 1))
shard=$(sed -n "${{line}}p" "$list")
case "$shard" in ''|*[!0-9]*) echo "omero-iscc task: no shard on line $line of $list" >&2; exit 2;; esac
n=$(printf %05d "$shard")
tag="${{SLURM_ARRAY_JOB_ID:-local}}_$SLURM_ARRAY_TASK_ID"
out="$W/results/shard-$n.jsonl"
tmp="$W/results/.shard-$n.jsonl.$(uname -n).$$"
marker="$W/results/shard-$n.exit"
echo "omero-iscc task $tag: shard $shard on $(uname -n), restart ${{SLURM_RESTART_COUNT:-0}}, $(date -u +%FT%TZ)"
start=$(date +%s.%N)
set --
for alg in $(cat "$W/shards/shard-$n.checksums"); do set -- "$@" --checksum "$alg"; done
# Killed (time limit, scancel, requeue, preemption): no partial result is left behind.
trap 'rm -f "$tmp"; echo "$tag TERM" > "$marker"; exit 143' TERM INT HUP
{worker} sum --json --units --progress never --root {root} {allow} "$@" --groups "$W/shards/shard-$n.jsonl" > "$tmp" &
wait $!
status=$?
# 0: every record hashed; 1: some files failed (their records say why): both are whole.
if [ "$status" -gt 1 ]; then rm -f "$tmp"; echo "$tag $status" > "$marker"; exit "$status"; fi
mv "$tmp" "$out" && echo "$start $(date +%s.%N)" > "$W/results/shard-$n.time"
echo "$tag $status" > "$marker"
"""

PROBE_SCRIPT = """#!/bin/sh
# omero-iscc backlog probe: does this node see the work directory as the OMERO host wrote it,
# may it write there, does the worker run, can it read a sample of the repository?
umask 077
PATH=/usr/local/bin:/usr/bin:/bin; export PATH
W={workdir}
report="$W/probe/report.$SLURM_JOB_ID"
echo "omero-iscc probe on $(uname -n)"
{{
  echo "host $(uname -n)"
  echo "token $(cat "$W/probe/token")"
  if {worker} selftest > "$W/probe/selftest.$SLURM_JOB_ID" 2>&1; then echo "selftest 0"; else echo "selftest $?"; fi
  {worker} sum --json --progress never --root {root} {allow} --groups "$W/probe/sample.jsonl" \\
    > "$W/probe/sample.$SLURM_JOB_ID" 2>&1
  echo "sample $?"
}} > "$report.tmp" && mv "$report.tmp" "$report"
"""


def _worker_words(cfg: Config) -> dict[str, str]:
    worker = cfg.cluster_worker or cfg.worker or "omero-iscc"
    root = cfg.cluster_root or cfg.repository
    if not root:
        raise BacklogError("the repository as the compute nodes mount it is unknown: set cluster_root")
    return {
        "worker": shlex.quote(worker),
        "root": shlex.quote(root),
        "allow": " ".join(f"--allow-root {shlex.quote(a)}" for a in cfg.allowed_roots),
    }


def write_task_script(work: Workdir, cfg: Config) -> None:
    """The array task (written again on --resume: the worker or the mounts may have moved)."""
    text = TASK_SCRIPT.format(workdir=shlex.quote(work.cluster), **_worker_words(cfg))
    atomic.write(work.task_script, text, mode=0o700)


# -- tracking -----------------------------------------------------------------------------------


def shard_runs(work: Workdir) -> dict[int, tuple[dict, int]]:
    """Each shard's last run: the array that ran it (or runs it) and its task index there."""
    runs = {}
    for array in work.manifest["arrays"]:
        if array["state"] == "accepted":
            for index, n in enumerate(array["shards"]):
                runs[n] = (array, index)
    return runs


def _marker_state(work: Workdir, n: int, tag: str) -> str | None:
    """How the shard's task ended as it wrote itself (a record Slurm may have dropped)."""
    try:
        who, _, status = work.marker(n).read_text().strip().partition(" ")
    except OSError:
        return None
    if who != tag:
        return None
    if status == "TERM":
        return "TERMINATED"
    return "COMPLETED" if status in ("0", "1") else f"FAILED (exit {status})"


def shard_states(work: Workdir, run: slurm.Runner | None, lim: slurm.Limits | None) -> dict[int, str]:
    """Every shard's state: INGESTED, HASHED (a whole result), SPLIT (replaced by two), WAITING
    (never submitted), or its last task's: Slurm's (PENDING, RUNNING, COMPLETED, FAILED,
    TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, PREEMPTED, CANCELLED...), else the task's own marker
    (COMPLETED, FAILED (exit N), TERMINATED), else UNKNOWN."""
    m = work.manifest
    runs = shard_runs(work)
    jobs = {a["job"] for a, _ in runs.values() if a.get("mode") != "local"}
    tasks = slurm.task_states(run, jobs, lim.accounting) if jobs and run is not None and lim is not None else {}
    ingested = set(m["ingested"])
    states = {}
    for n, entry in enumerate(m["shards"]):
        if entry.get("replaced_by"):
            states[n] = SPLIT
        elif n in ingested:
            states[n] = INGESTED
        elif work.result(n).is_file():
            states[n] = HASHED
        elif n not in runs:
            states[n] = WAITING
        else:
            array, index = runs[n]
            if array.get("mode") == "local":
                states[n] = array["ended"][index]
                continue
            state = tasks.get((array["job"], index)) or _marker_state(work, n, f"{array['job']}_{index}")
            states[n] = state or UNKNOWN
    return states


def _live(state: str) -> bool:
    return state in slurm.LIVE


def clean_leftovers(work: Workdir, states: dict[int, str]) -> int:
    """Removes the partial results of killed tasks whose shard has no live task."""
    removed = 0
    for path in work.leftovers():
        try:
            n = int(path.name.split(".")[1].split("-")[1])
        except (IndexError, ValueError):
            continue
        if not _live(states.get(n, UNKNOWN)):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


# -- probing and submitting -------------------------------------------------------------------


def probe(work: Workdir, cfg: Config, run: slurm.Runner, lim: slurm.Limits, sleep=time.sleep) -> str:
    """Runs the probe job and waits for it; returns the node it ran on, or raises
    :class:`BacklogError` with what failed."""
    token = secrets.token_hex(16)
    atomic.write(work.root / "probe" / "token", token + "\n")
    text = PROBE_SCRIPT.format(workdir=shlex.quote(work.cluster), **_worker_words(cfg))
    job = slurm.sbatch(
        run,
        name=f"iscc-{work.manifest['plan']}-probe",
        output=f"{work.on_nodes(work.logs)}/probe_%j.out",
        script_text=text,
        partition=cfg.slurm_partition,
        time_limit="10:00",
        options=cfg.slurm_options,
    )
    log.info("probe job %s submitted %s", job, run.where())
    deadline = time.monotonic() + cfg.probe_wait
    state = "PENDING"
    while True:
        states = slurm.task_states(run, [job], lim.accounting)
        state = states.get((job, None), "")
        if not _live(state):
            break  # ended (or left the queue, and Slurm no longer tells how: the report does)
        if time.monotonic() > deadline:
            slurm.cancel(run, [job])
            raise BacklogError(
                f"the probe job {job} did not end within {cfg.probe_wait:.0f} s ({state or 'not queued'}): "
                "the cluster may be busy; try again, or submit without it (--no-probe)"
            )
        sleep(1.0)
    log_file = f"{work.on_nodes(work.logs)}/probe_{job}.out"
    report = work.root / "probe" / f"report.{job}"
    if not report.is_file():
        raise BacklogError(
            f"the probe job {job} ended ({state or 'left the queue'}) without writing {report}: the nodes do not see "
            f"this work directory at {work.cluster}, or may not write there (cluster_backlog_dir; its log: {log_file})"
        )
    lines = dict(line.partition(" ")[::2] for line in report.read_text().splitlines())
    node = lines.get("host", "?")
    if lines.get("token") != token:
        raise BacklogError(
            f"the probe job {job} on {node} sees another directory at {work.cluster} than this host's {work.root}: "
            "the work directory must be on storage both share (cluster_backlog_dir)"
        )
    if lines.get("selftest") != "0":
        output = _tail(work.root / "probe" / f"selftest.{job}")
        raise BacklogError(
            f"the worker does not run on {node} (probe job {job}; cluster_worker "
            f"{cfg.cluster_worker or cfg.worker}): {output}"
        )
    problems = []
    for line in _lines(work.root / "probe" / f"sample.{job}"):
        try:
            record = json.loads(line)
        except ValueError:
            problems.append(line.strip())
            continue
        for f in record.get("files") or []:
            if f.get("error"):
                problems.append(f"{f.get('path')}: {f['error'].get('message')}")
        if record.get("error") and not record.get("files"):
            problems.append(f"{record.get('id')}: {record['error'].get('message')}")
    if problems or lines.get("sample") not in ("0",):
        why = "; ".join(problems[:3]) or f"the worker exited with {lines.get('sample')}"
        raise BacklogError(
            f"the repository cannot be read on {node} at {cfg.cluster_root or cfg.repository} (probe job {job}): {why}"
        )
    work.manifest["probe"] = {"job": job, "node": node, "time": time.time()}
    log.info("probe job %s on %s: the work directory, the worker and the repository are fine", job, node)
    return node


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()
    except OSError:
        return []


def _tail(path: Path) -> str:
    return " | ".join(_lines(path)[-3:]) or "no output"


def _recover(work: Workdir, run: slurm.Runner, lim: slurm.Limits) -> None:
    """Arrays left 'submitting' by an interrupted command: accepted if Slurm knows their
    name, else refused."""
    for array in work.manifest["arrays"]:
        if array["state"] != "submitting":
            continue
        job = slurm.find_job(run, array["name"], lim.accounting)
        array.update({"job": job, "state": "accepted"} if job else {"state": "refused", "why": "interrupted"})
        work.save()


def live_arrays(work: Workdir, states: dict[int, str]) -> list[dict]:
    """The plan's arrays that still have a task queued or running."""
    live = {n for n, s in states.items() if _live(s)}
    runs = shard_runs(work)
    return [
        a
        for a in work.manifest["arrays"]
        if a["state"] == "accepted" and a.get("mode") != "local" and any(runs.get(n, (None,))[0] is a for n in live)
    ]


def submit_arrays(
    work: Workdir, cfg: Config, run: slurm.Runner, lim: slurm.Limits, shards: list[int], states: dict[int, str]
) -> list[dict]:
    """Submits ``shards`` (under the work directory's lock) in arrays of dense indices, as
    many as the cluster's limits leave room for. ``slurm_throttle`` is shared among the
    plan's live arrays (``%N`` each, at most that many arrays at once), so that no more tasks
    than it run at once. Returns the arrays accepted; the shards without room stay WAITING
    (``ingest --wait`` submits them later)."""
    live = live_arrays(work, states)
    free = slurm.room(run, lim)
    if free < len(shards):
        log.info("room for %d task(s) of %d now (MaxJobCount, MaxSubmitJobs)", free, len(shards))
    pending = shards[:free]
    chunks = [pending[k : k + lim.max_array_size] for k in range(0, len(pending), lim.max_array_size)]
    chunks = chunks[: max(0, cfg.slurm_throttle - len(live))]
    share = max(1, cfg.slurm_throttle // max(1, len(live) + len(chunks)))
    accepted: list[dict] = []
    for chunk in chunks:
        seq = work.manifest["next_array"]
        work.manifest["next_array"] = seq + 1
        atomic.write(work.array_list(seq), "".join(f"{n}\n" for n in chunk))
        array = {
            "seq": seq,
            "name": f"iscc-{work.manifest['plan']}-{seq}",
            "shards": chunk,
            "job": None,
            "state": "submitting",
            "throttle": share,
            "time": time.time(),
        }
        work.manifest["arrays"].append(array)
        work.save()  # before sbatch: an interruption leaves a name to look for, not a lost job
        try:
            job = _sbatch_array(work, cfg, run, array)
        except slurm.SlurmError as exc:
            array.update({"state": "refused", "why": str(exc)})
            work.save()
            if isinstance(exc, slurm.NoRoom):
                log.info("array %d refused for a limit; its shards wait: %s", seq, exc)
                break
            raise
        array.update({"job": job, "state": "accepted"})
        work.save()  # as soon as sbatch accepted it
        accepted.append(array)
        log.info("array %d: job %s, %d task(s), %d at once", seq, job, len(chunk), share)
    rebalance(work, cfg, run, live + accepted)
    return accepted


def rebalance(work: Workdir, cfg: Config, run: slurm.Runner, live: list[dict]) -> None:
    """Shares ``slurm_throttle`` among the live arrays again (one ended: the others may run more)."""
    if not live:
        return
    share = max(1, cfg.slurm_throttle // len(live))
    for array in live:
        if array.get("throttle") != share:
            try:
                slurm.set_throttle(run, array["job"], share)
            except slurm.SlurmError as exc:  # ended meanwhile: nothing to share
                log.debug("array %s keeps its throttle: %s", array["job"], exc)
                continue
            array["throttle"] = share
    work.save()


def _sbatch_array(work: Workdir, cfg: Config, run: slurm.Runner, array: dict) -> str:
    return slurm.sbatch(
        run,
        name=array["name"],
        output=f"{work.on_nodes(work.logs)}/%A_%a.out",
        script=work.on_nodes(work.task_script),
        args=[work.on_nodes(work.array_list(array["seq"]))],
        tasks=len(array["shards"]),
        throttle=array["throttle"],
        partition=cfg.slurm_partition,
        time_limit=cfg.slurm_time,
        options=cfg.slurm_options,
    )


def _split(work: Workdir, cfg: Config, n: int) -> list[int]:
    """Replaces shard ``n`` (that timed out) by two shards of half its Filesets each."""
    lines = work.shard_lines(n)
    meta = json.loads(work.meta(n).read_text())
    keys = list(meta["units"])
    if len(keys) < 2:
        return []
    half = len(keys) // 2
    new = []
    for part in (keys[:half], keys[half:]):
        m = work.shard_count
        sizes = {k: tuple(meta["sizes"][k]) for k in part}
        entry = work.write_shard(
            m, [lines[k] for k in part], {k: meta["units"][k] for k in part}, sizes, set(meta["checksums"])
        )
        entry["origin"] = f"split of {n}"
        work.manifest["shards"].append(entry)
        new.append(m)
    work.manifest["shards"][n]["replaced_by"] = new
    log.info("shard %d timed out: split into %s", n, new)
    return new


def _retry_shards(work: Workdir, cfg: Config) -> list[int]:
    """New shards of the Filesets whose files could not be read last time."""
    pending = {k: r for k, r in work.manifest["retry"].items() if r["state"] == "pending"}
    if not pending:
        return []
    writer = _ShardWriter(work, work.manifest["shard_bytes"], work.manifest["shard_files"], first=work.shard_count)
    by_shard: dict[int, list[str]] = {}
    for key, r in pending.items():
        by_shard.setdefault(r["shard"], []).append(key)
    placed: dict[str, int] = {}
    for n, keys in sorted(by_shard.items()):
        lines = work.shard_lines(n)
        meta = json.loads(work.meta(n).read_text())
        for key in keys:
            writer.add(key, lines[key], meta["units"][key], tuple(meta["sizes"][key]), set(meta["checksums"]))
            placed[key] = writer.next
    writer.close()
    for entry in writer.entries:
        entry["origin"] = "retry"
        work.manifest["shards"].append(entry)
    for key, shard in placed.items():
        work.manifest["retry"][key].update({"state": "queued", "in": shard})
    new = list(range(writer.next - len(writer.entries), writer.next))
    log.info("%d Fileset(s) to read again, in shard(s) %s", len(placed), new)
    return new


def prepare(work: Workdir, cfg: Config, run: slurm.Runner | None, lim: slurm.Limits | None, resume: bool) -> list[int]:
    """Under the lock: recovers interrupted submissions, removes killed tasks' partial
    results, writes the task script again; with ``resume``, splits the shards that timed out
    and shards the Filesets to retry. Returns the shards to run: never run, or whose last
    task ended without a result."""
    if run is not None and lim is not None:
        _recover(work, run, lim)
    write_task_script(work, cfg)
    states = shard_states(work, run, lim)
    clean_leftovers(work, states)
    if not resume:
        return [n for n, s in states.items() if s == WAITING]
    for n, state in list(states.items()):
        if state == "TIMEOUT":
            for m in _split(work, cfg, n):
                states[n], states[m] = SPLIT, WAITING
    for m in _retry_shards(work, cfg):
        states[m] = WAITING
    work.save()
    return [n for n, s in sorted(states.items()) if s not in DONE_STATES and not _live(s)]


def submit_local(work: Workdir, cfg: Config, shards: list[int], parallel: int) -> dict:
    """Runs the shards on this host, ``parallel`` at a time (under the lock)."""
    seq = work.manifest["next_array"]
    work.manifest["next_array"] = seq + 1
    atomic.write(work.array_list(seq), "".join(f"{n}\n" for n in shards))
    array = {"seq": seq, "name": f"local-{seq}", "mode": "local", "shards": shards, "job": f"local{seq}"}
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SLURM_ARRAY_JOB_ID": array["job"]}
    codes = slurm.run_local(str(work.task_script), [str(work.array_list(seq))], len(shards), parallel, env)
    array.update(
        {"state": "accepted", "ended": ["COMPLETED" if codes[i] == 0 else "FAILED" for i in range(len(shards))]}
    )
    work.manifest["arrays"].append(array)
    work.save()
    return array


def submit_ingest_job(work: Workdir, cfg: Config, run: slurm.Runner, config_file: str | None, after: list[str]) -> str:
    """The ingest as a job on the nodes, once the arrays ``after`` have ended: only when asked
    for, with the Python configured for the nodes, its own time limit, no environment from
    here and no password on its command line (the configuration file, its owner's only,
    holds the credentials)."""
    if not cfg.cluster_python:
        raise BacklogError("an ingest job needs cluster_python: the Python on the nodes with omero-py and omero_iscc")
    config_on_nodes = cfg.cluster_config or config_file
    if not config_on_nodes:
        raise BacklogError("an ingest job needs the configuration file the nodes read: --config, or cluster_config")
    values = from_file(config_file) if config_file else {}
    secret = any(values.get(k) for k in ("password", "session_key"))
    if secret and atomic.exposed(config_file):
        raise BacklogError(f"{config_file} holds a password and others may read it: chmod 600 {config_file}")
    logs_in = values.get("session_key") or (values.get("username") and values.get("password"))
    if not cfg.cluster_config and not logs_in:
        # The job gets no environment from here (--export=NONE): what it logs in with must be
        # in the file; without it the job would fail on a node once every array had ended.
        raise BacklogError(
            f"an ingest job logs in with the credentials of {config_file}, which has none: set username and "
            "password (or session_key) there, or ingest on this host"
        )
    command = [cfg.cluster_python, "-m", "omero_iscc", "--config", config_on_nodes]
    command += ["backlog", "ingest", "--workdir", work.cluster]
    job = slurm.sbatch(
        run,
        name=f"iscc-{work.manifest['plan']}-ingest",
        output=f"{work.on_nodes(work.logs)}/ingest_%j.out",
        script_text=f"#!/bin/sh\numask 077\nexec {ingest_command(command)}\n",
        after=after,
        partition=cfg.slurm_partition,
        time_limit=cfg.slurm_ingest_time,
        options=cfg.slurm_ingest_options,
    )
    work.manifest["ingest_jobs"].append({"job": job, "after": after, "time": time.time()})
    work.save()
    return job


def ingest_command(command: list[str]) -> str:
    """The ingest job's command line."""
    return shlex.join(command)


# -- ingest -----------------------------------------------------------------------------------


@dataclass
class IngestReport:
    annotated: int = 0
    already: int = 0
    not_permitted: int = 0
    gone: int = 0
    failed: list[dict] = field(default_factory=list)  # {"shard", "fileset", "images", "kind", "message"}
    retrying: int = 0
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
        if self.gone:
            parts.append(f"{self.gone} deleted or moved out of reach since planning")
        if self.failed:
            parts.append(f"{len(self.failed)} Fileset(s) not annotated ({fixity} fixity failure(s))")
        if self.retrying:
            parts.append(f"{self.retrying} Fileset(s) unreadable for now, read again by --resume")
        if self.missing:
            parts.append(f"{len(self.missing)} shard(s) without a result yet (backlog ingest --wait, or --resume)")
        return ", ".join(parts)


def fixity_problem(unit: Unit, result: GroupResult) -> tuple[str, str, str] | None:
    """(kind, message, the worker's error kind) when the hashed files are not the files OMERO
    recorded (``fixity``: a size or an import checksum that differs) or could not be read
    (``unreadable``); ``None`` when they are."""
    if not result.ok and not result.files:
        return "unreadable", result.error or result.error_kind or "not hashed", result.error_kind or "io"
    if len(result.files) != len(unit.files):
        return "fixity", f"{len(result.files)} files hashed, the Fileset has {len(unit.files)} now", ""
    for source, hashed in zip(unit.files, result.files):
        name = unit.relative(source)
        if not hashed.ok:
            return "unreadable", f"{name}: {hashed.error}", hashed.error_kind or "io"
        if source.size is not None and hashed.filesize != source.size:
            return "fixity", f"{name}: {hashed.filesize} bytes, OMERO recorded {source.size}", ""
        recorded = source.hash if source.hasher in SUPPORTED_HASHERS else None
        if recorded and hashed.checksums.get(source.hasher, "").lower() != recorded.lower():
            return "fixity", f"{name}: {source.hasher} differs from the checksum OMERO recorded at import", ""
    if not result.ok:
        return "unreadable", result.error or "not hashed", result.error_kind or "io"
    return None


def ingest(
    omero: Omero, work: Workdir, cfg: Config, report: IngestReport | None = None, shards: list[int] | None = None
) -> IngestReport:
    """Annotates the images of every whole result not ingested yet, one shard at a time under
    the work directory's lock; images that have an ISCC by now are left as they are, so
    ingesting twice, or two ingests at once, annotate nothing twice."""
    report = report or IngestReport()
    candidates = range(work.shard_count) if shards is None else shards
    for n in candidates:
        if n in work.manifest["ingested"] or work.manifest["shards"][n].get("replaced_by"):
            continue
        if not work.result(n).is_file():
            report.missing.append(n)
            continue
        with work.locked("ingesting"):
            if n not in work.manifest["ingested"]:
                _ingest_shard(omero, work, cfg, n, report)
    with work.locked("ingesting"):
        _finish_if_done(work)
        sync_hold(work, cfg)
    return report


def _ingest_shard(omero: Omero, work: Workdir, cfg: Config, n: int, report: IngestReport) -> None:
    problem = work.check_result(n)
    if problem is not None:
        report.missing.append(n)
        return
    units = work.units(n)
    failures: list[dict] = []
    batch: list[GroupResult] = []
    for result in work.results(n):
        batch.append(result)
        if len(batch) >= INGEST_BATCH:
            _ingest_batch(omero, work, cfg, n, batch, units, report, failures)
            batch = []
    if batch:
        _ingest_batch(omero, work, cfg, n, batch, units, report, failures)
    if failures:
        with open(work.root / "failures.jsonl", "a", encoding="utf-8") as f:
            os.chmod(f.fileno(), 0o600)
            for failure in failures:
                f.write(json.dumps(failure) + "\n")
    report.failed += failures
    work.manifest["ingested"].append(n)
    work.save()  # after every shard: an interrupted ingest resumes where it stopped
    sync_hold(work, cfg)
    report.ingested.append(n)


def _ingest_batch(
    omero: Omero,
    work: Workdir,
    cfg: Config,
    n: int,
    results: list[GroupResult],
    units: dict[str, list[int]],
    report: IngestReport,
    failures: list[dict],
) -> None:
    m = work.manifest
    namespace = m["namespace"]
    by_key = {r.id: r for r in results}
    image_ids = [i for r in results for i in units[r.id]]
    triaged, todo, _existing = triage(omero, image_ids, namespace)
    report.already += triaged.count(ImageStatus.ALREADY)
    report.not_permitted += triaged.count(ImageStatus.NOT_PERMITTED)
    report.gone += triaged.count(ImageStatus.FAILED)
    ready = []
    for unit in plan(omero, todo):
        result = by_key.get(unit.key)
        verdict = ("moved", "the image is no longer in the Fileset planned", "") if result is None else None
        verdict = verdict or fixity_problem(unit, result)
        if verdict is None:
            m["retry"].pop(unit.key, None)
            ready.append((unit, unit_record(unit, result, result.files, INPUT_REPOSITORY)))
            continue
        kind, message, error_kind = verdict
        images = [im.getId().val for im in unit.images]
        tries = m["retry"].get(unit.key, {}).get("tries", 0) + 1
        if kind == "unreadable" and error_kind in RETRYABLE and tries < MAX_TRIES:
            origin = m["retry"].get(unit.key, {}).get("shard", n)
            m["retry"][unit.key] = {"shard": origin, "tries": tries, "state": "pending", "message": message}
            report.retrying += 1
            continue
        m["retry"].pop(unit.key, None)
        if kind == "fixity":
            m["fixity"].update({str(i): message for i in images})
        else:  # handed back: the scheduler reads it through OMERO if need be
            m["released"] = sorted(set(m["released"]) | set(images))
        failures.append({"shard": n, "fileset": unit.fileset_id, "images": images, "kind": kind, "message": message})
    layout = FILES.in_namespace(namespace)
    with holds_mod.annotate_lock(cfg.state_dir):
        ready, already = recheck(omero, ready, namespace)
        report.already += len(already)
        saved = save(omero, ready, layout, {}, 0.0)
    for outcome, _record in saved:
        if outcome.status is ImageStatus.ANNOTATED:
            report.annotated += 1
        elif outcome.status is ImageStatus.NOT_PERMITTED:
            report.not_permitted += 1
        else:
            failures.append(
                {"shard": n, "fileset": None, "images": [outcome.image_id], "kind": "save", "message": outcome.message}
            )


def _finish_if_done(work: Workdir) -> None:
    m = work.manifest
    ingested = set(m["ingested"])
    left = [n for n, s in enumerate(m["shards"]) if n not in ingested and not s.get("replaced_by")]
    if not left and not m["retry"] and not m["finished"]:
        m["finished"] = time.time()
        work.save()
        log.info("every shard of the plan in %s is ingested: the plan holds no image any more", work.root)


def follow(
    cfg: Config,
    connect: Callable,
    work: Workdir,
    run: slurm.Runner,
    lim: slurm.Limits,
    sleep: Callable[[float], None] = time.sleep,
) -> IngestReport:
    """``ingest --wait``: ingests shards as they finish, submits the shards that found no room
    before as room frees, until no task of the plan is queued or running."""
    from .connection import session

    report = IngestReport()
    while True:
        ingested = set(work.manifest["ingested"])
        ready = [
            n
            for n in range(work.shard_count)
            if n not in ingested and work.result(n).is_file() and not work.manifest["shards"][n].get("replaced_by")
        ]
        if ready:
            with session(cfg, connect) as omero:
                ingest(omero, work, cfg, report, ready)
        with work.locked("following"):
            states = shard_states(work, run, lim)
            clean_leftovers(work, states)
            waiting = [n for n, s in sorted(states.items()) if s == WAITING]
            if waiting:
                submit_arrays(work, cfg, run, lim, waiting, states)
                states = shard_states(work, run, lim)
            else:
                rebalance(work, cfg, run, live_arrays(work, states))
        live = [n for n, s in states.items() if _live(s)]
        hashed = [n for n, s in states.items() if s == HASHED]
        if not live and not hashed and not [n for n, s in states.items() if s == WAITING]:
            break
        if not live and not hashed:
            log.info("%d shard(s) wait for room in the queue", len(waiting))
        sleep(cfg.backlog_poll_interval)
    report.missing = sorted(n for n, s in states.items() if s not in DONE_STATES)
    return report


# -- status -------------------------------------------------------------------------------------


def status(work: Workdir, run: slurm.Runner | None, lim: slurm.Limits | None) -> dict:
    """Shards per state, bytes hashed, throughput and time left, Filesets refused."""
    m = work.manifest
    states = shard_states(work, run, lim)
    counts: dict[str, int] = {}
    for state in states.values():
        counts[state] = counts.get(state, 0) + 1
    sizes = [s["bytes"] for s in m["shards"]]
    done = [n for n, s in states.items() if s in (INGESTED, HASHED)]
    spans = []
    for n in done:
        try:
            start, end = (float(x) for x in work.timing(n).read_text().split())
            spans.append((start, end))
        except (OSError, ValueError):
            continue
    counted = [n for n, s in states.items() if s != SPLIT]
    bytes_done = sum(sizes[n] for n in done)
    seconds = (max(e for _, e in spans) - min(s for s, _ in spans)) if spans else 0.0
    rate = bytes_done / seconds if seconds > 0 else None
    left = sum(sizes[n] for n in counted) - bytes_done
    failures = [json.loads(line) for line in _lines(work.root / "failures.jsonl")]
    return {
        "plan": m["plan"],
        "shards": len(counted),
        "states": states,
        "counts": counts,
        "done": len(done),
        "ingested": counts.get(INGESTED, 0),
        "running": sum(1 for s in states.values() if s == "RUNNING"),
        "queued": sum(1 for s in states.values() if _live(s) and s != "RUNNING"),
        "failed": sorted(n for n, s in states.items() if s not in DONE_STATES and s != WAITING and not _live(s)),
        "waiting": counts.get(WAITING, 0),
        "bytes": sum(sizes[n] for n in counted),
        "bytes_done": bytes_done,
        "bytes_per_second": rate,
        "seconds_left": left / rate if rate else None,
        "images": m["images"],
        "left_to_the_scheduler": len(m["released"]),
        "fixity": [f for f in failures if f["kind"] == "fixity"],
        "unreadable": [f for f in failures if f["kind"] != "fixity"],
        "retrying": len(m["retry"]),
        "finished": bool(m["finished"]),
        "closed": bool(m["closed"]),
    }


def format_status(st: dict) -> str:
    gib = 1 << 30
    shown = ", ".join(f"{n} {state}" for state, n in sorted(st["counts"].items()))
    lines = [
        f"shards: {st['shards']}: {st['done']} done ({st['ingested']} ingested), {st['running']} running, "
        f"{st['queued']} queued, {len(st['failed'])} failed, {st['waiting']} never submitted",
        f"states: {shown}",
        f"bytes: {st['bytes_done'] / gib:.2f} of {st['bytes'] / gib:.2f} GiB hashed",
    ]
    if st["failed"]:
        by_state: dict[str, list[int]] = {}
        for n in st["failed"]:
            by_state.setdefault(st["states"][n], []).append(n)
        for state, shards in sorted(by_state.items()):
            more = f" and {len(shards) - 20} more" if len(shards) > 20 else ""
            lines.append(
                f"{state}: shard(s) {', '.join(map(str, shards[:20]))}{more} (backlog --resume runs them again)"
            )
    if st["bytes_per_second"]:
        left = st["seconds_left"] or 0
        lines.append(f"throughput: {st['bytes_per_second'] / (1 << 20):.0f} MiB/s; time left: {left / 3600:.1f} h")
    if st["fixity"]:
        lines.append(f"refused for fixity (never annotated, by the scheduler neither): {len(st['fixity'])} Fileset(s)")
        lines += [f"  Fileset {f['fileset']} (images {f['images']}): {f['message']}" for f in st["fixity"][:20]]
    if st["unreadable"]:
        lines.append(f"not annotated here, left to the scheduler: {len(st['unreadable'])} Fileset(s)")
        lines += [f"  Fileset {f['fileset']}: {f['kind']}: {f['message']}" for f in st["unreadable"][:20]]
    if st["retrying"]:
        lines.append(f"unreadable for now, read again by --resume: {st['retrying']} Fileset(s)")
    if st["left_to_the_scheduler"]:
        lines.append(f"{st['left_to_the_scheduler']} image(s) handed back to the scheduler (no Fileset, unreadable)")
    if st["finished"]:
        lines.append("the plan is finished: it holds no image any more")
    elif st["closed"]:
        lines.append("the plan is closed: it holds no image any more")
    return "\n".join(lines)


def close(work: Workdir, cfg: Config, run: slurm.Runner | None) -> list[str]:
    """Closes the plan: its queued and running tasks are cancelled and the scheduler takes its
    images back (fixity verdicts stay). Returns the jobs cancelled."""
    with work.locked("closing"):
        jobs = []
        if run is not None:
            jobs = sorted(
                {a["job"] for a in work.manifest["arrays"] if a["state"] == "accepted" and a.get("mode") != "local"}
            )
            live = slurm.active_tasks(run, jobs)
            jobs = sorted({job for job, _ in live})
            slurm.cancel(run, jobs)
        work.manifest["closed"] = time.time()
        work.save()
        sync_hold(work, cfg)
    return jobs


def python_command(config_file: str | None, workdir: str) -> list[str]:
    """This host's ingest command (for the messages)."""
    return (
        [sys.executable, "-m", "omero_iscc"]
        + (["--config", config_file] if config_file else [])
        + [
            "backlog",
            "ingest",
            "--wait",
            "--workdir",
            workdir,
        ]
    )
