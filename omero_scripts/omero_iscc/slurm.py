"""Slurm as the backlog uses it: its commands run on this host or over SSH on a login node,
the cluster's limits, batch jobs and arrays submitted with the flags tracking relies on, and
the state of each task, or the same tasks run on this host, N at a time.

What is live (pending, running) is asked of ``squeue``; how a task ended, of ``sacct`` where
the cluster keeps accounting (it remembers jobs that left the queue), else of ``scontrol``
while slurmctld still holds the record (``MinJobAge``); the caller reads the tasks' own exit
markers after that. Nothing here knows what a task does.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .errors import InputError


class SlurmError(InputError):
    """Slurm refused a command, or is not there."""


class NoRoom(SlurmError):
    """sbatch refused a job for a limit of the cluster or the user: submit it later."""


#: Flags the backlog sets itself: given in ``slurm_options`` they would change what is
#: submitted or where its output goes, and the backlog could no longer follow its jobs.
OWN_FLAGS = {
    "--job-name": "the jobs are found by the names the backlog gives them",
    "--array": "the backlog sizes its arrays from the cluster's limits",
    "--dependency": "the backlog chains its arrays and its ingest job itself",
    "--export": "the tasks get no environment from the submitting host (--export=NONE)",
    "--export-file": "the tasks get no environment from the submitting host (--export=NONE)",
    "--get-user-env": "the tasks get no environment from the submitting host (--export=NONE)",
    "--output": "the logs are kept in the work directory, appended across requeues",
    "--error": "the logs are kept in the work directory, appended across requeues",
    "--open-mode": "the logs are appended across requeues",
    "--parsable": "the backlog reads sbatch's answer itself",
    "--wait": "the backlog follows its jobs itself (backlog ingest --wait)",
    "--wrap": "the backlog submits its own scripts",
    "--test-only": "nothing would be submitted",
}
SHORT_FLAGS = {
    "-J": "--job-name",
    "-a": "--array",
    "-d": "--dependency",
    "-o": "--output",
    "-e": "--error",
    "-W": "--wait",
}

#: Environment variables sbatch reads as options: left out of its environment for the same reason.
SBATCH_ENV = (
    "SBATCH_ARRAY_INX",
    "SBATCH_DEPENDENCY",
    "SBATCH_ERROR",
    "SBATCH_EXPORT",
    "SBATCH_JOB_NAME",
    "SBATCH_OPEN_MODE",
    "SBATCH_OUTPUT",
    "SBATCH_WAIT",
)

#: Job states while a task is queued or running (``squeue``'s view).
LIVE = frozenset(
    {
        "PENDING",
        "CONFIGURING",
        "RUNNING",
        "COMPLETING",
        "SUSPENDED",
        "REQUEUED",
        "REQUEUE_FED",
        "REQUEUE_HOLD",
        "RESIZING",
        "SIGNALING",
        "STAGE_OUT",
        "STOPPED",
        "RESV_DEL_HOLD",
    }
)

#: sbatch's words when a job is refused for a limit (the job may be submitted later).
LIMIT_WORDS = ("MaxSubmit", "MaxJobCount", "Job violates accounting/QOS policy", "QOSMax", "AssocMax", "AssocGrp")


def check_options(options: Iterable[str]) -> list[str]:
    """``slurm_options`` as given, or :class:`SlurmError` naming a flag that would break the
    backlog's tracking, and why."""
    options = list(options)
    for option in options:
        if not isinstance(option, str) or not option.startswith("-"):
            continue
        flag = option.split("=", 1)[0]
        if not option.startswith("--") and option[:2] in SHORT_FLAGS:
            flag = SHORT_FLAGS[option[:2]]
        if flag in OWN_FLAGS:
            raise SlurmError(f"slurm_options: {option!r} is not allowed: {OWN_FLAGS[flag]}")
    return options


@dataclass(frozen=True)
class Runner:
    """Runs Slurm's commands: here, or with ``ssh`` on a login node (``ssh`` a destination
    such as ``user@login1`` or a Host of the SSH configuration; ``ssh_options`` added before
    it, e.g. ``-i KEY``). SSH never asks for a password here (BatchMode)."""

    ssh: str | None = None
    ssh_options: tuple[str, ...] = ()
    timeout: float = 120.0

    def where(self) -> str:
        return f"on {self.ssh} (ssh)" if self.ssh else "on this host"

    def run(self, args: list[str], stdin: str | None = None) -> str:
        """The command's standard output; :class:`SlurmError` if it fails."""
        env = {k: v for k, v in os.environ.items() if k not in SBATCH_ENV}
        if self.ssh:
            # The remote shell gets one command line: every word quoted, files it makes private.
            argv = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=30", *self.ssh_options, self.ssh, "--"]
            argv.append("umask 077; " + " ".join(f"unset {v};" for v in SBATCH_ENV) + " " + shlex.join(args))
        else:
            argv = args
        try:
            proc = subprocess.run(
                argv,
                input=stdin,
                capture_output=True,
                text=True,
                check=False,
                timeout=self.timeout,
                env=env,
                umask=0o077,
            )
        except FileNotFoundError:
            if self.ssh:
                raise SlurmError("ssh not found: it runs the Slurm commands on the login node") from None
            raise SlurmError(f"{args[0]} not found: this host is no Slurm submit host (or set slurm_ssh)") from None
        except subprocess.TimeoutExpired:
            raise SlurmError(f"{args[0]} did not answer within {self.timeout:.0f} s {self.where()}") from None
        if self.ssh and proc.returncode == 255:
            raise SlurmError(f"ssh {self.ssh} failed: {proc.stderr.strip()}")
        if proc.returncode != 0:
            message = proc.stderr.strip() or proc.stdout.strip()
            kind = NoRoom if any(w in message for w in LIMIT_WORDS) else SlurmError
            raise kind(f"{shlex.join(args[:2])}... failed {self.where()}: {message}")
        return proc.stdout


# -- the cluster's limits ----------------------------------------------------------------------


@dataclass
class Limits:
    """What bounds a submission: the highest array index + 1 (``MaxArraySize``), the job
    records slurmctld holds (``MaxJobCount``; every array task counts), the jobs the user may
    have queued (the association's or QOS's ``MaxSubmitJobs``, where accounting tells), and
    whether ``sacct`` can be asked."""

    max_array_size: int = 1001
    max_job_count: int = 10000
    max_submit: int | None = None
    accounting: bool = False
    cluster: str = ""
    user: str = ""

    #: Share of MaxJobCount the backlog leaves to others.
    SHARE = 0.9


def show_config(runner: Runner) -> dict[str, str]:
    out = runner.run(["scontrol", "show", "config"])
    conf = {}
    for line in out.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            conf[key.strip()] = value.strip()
    return conf


def _number(value: str | None) -> int | None:
    match = re.match(r"\s*(\d+)", value or "")
    return int(match.group(1)) if match else None


def limits(runner: Runner) -> Limits:
    """The cluster's limits (``scontrol show config``) and the user's (``sacctmgr``, when the
    cluster keeps accounting and lets the user read them)."""
    conf = show_config(runner)
    lim = Limits(
        max_array_size=_number(conf.get("MaxArraySize")) or 1001,
        max_job_count=_number(conf.get("MaxJobCount")) or 10000,
        accounting="slurmdbd" in conf.get("AccountingStorageType", ""),
        cluster=conf.get("ClusterName", ""),
    )
    if lim.max_array_size < 1:
        raise SlurmError("the cluster has job arrays disabled (MaxArraySize=0)")
    lim.user = runner.run(["id", "-un"]).strip()
    if lim.accounting:
        lim.max_submit = _user_max_submit(runner, lim)
    return lim


def _user_max_submit(runner: Runner, lim: Limits) -> int | None:
    """The lowest MaxSubmitJobs of the user's associations on this cluster and of their QOS
    (``None``: no limit, or none this user may read)."""
    try:
        assocs = runner.run(
            [
                "sacctmgr",
                "-n",
                "-P",
                "show",
                "assoc",
                "where",
                f"user={lim.user}",
                f"cluster={lim.cluster}",
                "format=MaxSubmit,GrpSubmit,QOS,DefaultQOS",
            ]
        )
        found = []
        qos_names = set()
        for line in assocs.splitlines():
            fields = line.split("|")
            if len(fields) < 4:
                continue
            found += [n for n in (_number(fields[0]), _number(fields[1])) if n is not None]
            qos_names |= {q for q in fields[2].split(",") + [fields[3]] if q}
        if qos_names:
            qos = runner.run(["sacctmgr", "-n", "-P", "show", "qos", "format=Name,MaxSubmitPU"])
            for line in qos.splitlines():
                name, _, value = line.partition("|")
                if name in qos_names and _number(value) is not None:
                    found.append(_number(value))
    except SlurmError:
        return None
    return min(found) if found else None


def queued(runner: Runner, mine: bool) -> int:
    """Job records in slurmctld now (each array task counts): the user's queued ones, or
    every one this user can see, ended ones slurmctld still holds included."""
    args = ["squeue", "-h", "-r", "-o", "%i"] + (["--me"] if mine else ["-t", "all"])
    return len(runner.run(args).split())


def room(runner: Runner, lim: Limits) -> int:
    """How many more tasks may be queued now, within MaxJobCount (a share of it) and the
    user's MaxSubmitJobs."""
    free = int(lim.max_job_count * Limits.SHARE) - queued(runner, mine=False)
    if lim.max_submit is not None:
        free = min(free, lim.max_submit - queued(runner, mine=True))
    return max(0, free)


# -- submitting ---------------------------------------------------------------------------------


def array_spec(tasks: Iterable[int], throttle: int | None = None) -> str:
    """``0-4,7,9-12%8``: task numbers as ranges, with the ``%`` throttle."""
    numbers = sorted(set(tasks))
    if not numbers:
        raise ValueError("an array needs at least one task")
    parts = []
    start = prev = numbers[0]
    for n in numbers[1:] + [None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    spec = ",".join(parts)
    return f"{spec}%{throttle}" if throttle else spec


def sbatch(
    runner: Runner,
    *,
    name: str,
    output: str,
    script: str | None = None,
    script_text: str | None = None,
    args: Iterable[str] = (),
    tasks: int | None = None,
    throttle: int | None = None,
    after: Iterable[str] = (),
    partition: str | None = None,
    time_limit: str | None = None,
    options: Iterable[str] = (),
) -> str:
    """Submits a batch job (``tasks``: an array of that many tasks, indices 0 to tasks - 1)
    with no environment from here (``--export=NONE``), its log appended to ``output``, to
    start when the jobs ``after`` have ended however they ended. The script is a path (as
    the login node sees it) or, ``script_text``, sent on sbatch's standard input. Returns
    the job id; :class:`NoRoom` when a limit refused it."""
    argv = ["sbatch", "--parsable", f"--job-name={name}", f"--output={output}", "--open-mode=append", "--export=NONE"]
    if tasks is not None:
        argv.append(f"--array={array_spec(range(tasks), throttle)}")
    after = [j for j in after if j]
    if after:
        argv.append("--dependency=afterany:" + ":".join(after))
    if partition:
        argv.append(f"--partition={partition}")
    if time_limit:
        argv.append(f"--time={time_limit}")
    argv += check_options(options)
    if script is not None:
        argv += [script, *args]
    out = runner.run(argv, stdin=script_text).strip()
    job = out.split(";")[0].strip()
    if not job.isdigit():
        raise SlurmError(f"sbatch answered {out!r}, not a job id")
    return job


# -- tracking -----------------------------------------------------------------------------------

#: A task: (array job id, task index); a plain job has index ``None``.
Task = tuple[str, "int | None"]


def _task(job: str, index: str) -> Task | None:
    if index in ("", "N/A"):
        return job, None
    return (job, int(index)) if index.isdigit() else None  # "[5-9%2]": pending, squeue lists them


def active_tasks(runner: Runner, job_ids: Iterable[str]) -> dict[Task, str]:
    """Tasks of these jobs still in the queue (pending, running...), with their state: what
    ``squeue`` lists for this user."""
    ids = {j for j in job_ids if j}
    if not ids:
        return {}
    # All of the user's, filtered here: squeue fails outright on a job id that left the queue.
    out = runner.run(["squeue", "-h", "-r", "--me", "-o", "%F|%K|%T"])
    tasks: dict[Task, str] = {}
    for line in out.splitlines():
        fields = line.strip().split("|")
        if len(fields) == 3 and fields[0] in ids:
            task = _task(fields[0], fields[1])
            if task is not None:
                tasks[task] = fields[2]
    return tasks


def ended_tasks(runner: Runner, job_ids: Iterable[str], accounting: bool) -> dict[Task, str]:
    """How tasks of these jobs ended, as far as Slurm still knows: ``sacct`` (COMPLETED,
    FAILED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, PREEMPTED, CANCELLED...), else ``scontrol``
    while slurmctld keeps the records."""
    ids = sorted({j for j in job_ids if j})
    states: dict[Task, str] = {}
    if not ids:
        return states
    if accounting:
        for start in range(0, len(ids), 200):
            out = runner.run(["sacct", "-n", "-P", "-X", "-j", ",".join(ids[start : start + 200]), "-o", "JobID,State"])
            for line in out.splitlines():
                jobid, _, state = line.strip().partition("|")
                job, _, index = jobid.partition("_")
                task = _task(job, index)
                if task is not None and state:
                    states[task] = state.split()[0]  # "CANCELLED by 0"
        return states
    for job in ids:
        try:
            out = runner.run(["scontrol", "-o", "show", "job", job])
        except SlurmError:
            continue  # purged (MinJobAge): the caller reads the task's marker
        for line in out.splitlines():
            fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
            array_job = fields.get("ArrayJobId") or fields.get("JobId", "")
            task = _task(array_job, fields.get("ArrayTaskId", ""))
            if task is not None and fields.get("JobState"):
                states[task] = fields["JobState"]
    return states


def task_states(runner: Runner, job_ids: Iterable[str], accounting: bool) -> dict[Task, str]:
    """Every known task of these jobs: the queue's view where they are live, else how they
    ended. A state sacct or scontrol report as live for a task the queue no longer holds
    (accounting lags a little) is left out: the task has ended, how is not known yet."""
    ids = list(job_ids)
    live = active_tasks(runner, ids)
    ended = {t: s for t, s in ended_tasks(runner, ids, accounting).items() if s not in LIVE}
    return {**ended, **live}


def set_throttle(runner: Runner, job: str, throttle: int) -> None:
    """Changes how many tasks of an array may run at once."""
    runner.run(["scontrol", "update", f"JobId={job}", f"ArrayTaskThrottle={throttle}"])


def find_job(runner: Runner, name: str, accounting: bool) -> str | None:
    """The job id of this user's job named ``name`` (queued, or in accounting), if any."""
    out = runner.run(["squeue", "-h", "--me", f"--name={name}", "-o", "%F"])
    if not out.split() and accounting:
        out = runner.run(["sacct", "-n", "-X", "-P", f"--name={name}", "-S", "now-30days", "-o", "JobID"])
    ids = sorted({line.split("_")[0].strip() for line in out.split() if line.strip()})
    return ids[-1] if ids else None


def cancel(runner: Runner, job_ids: Iterable[str]) -> None:
    ids = [j for j in job_ids if j]
    if ids:
        runner.run(["scancel", *ids])


# -- on this host ---------------------------------------------------------------------------------


def run_local(
    script: str, args: list[str], tasks: int, parallel: int, env: Mapping[str, str] | None = None
) -> dict[int, int]:
    """Runs tasks 0 to ``tasks`` - 1 of ``script`` on this host, ``parallel`` at a time, each
    with ``SLURM_ARRAY_TASK_ID`` set as Slurm sets it; returns each task's exit status."""

    def one(task: int) -> tuple[int, int]:
        task_env = dict(env if env is not None else os.environ, SLURM_ARRAY_TASK_ID=str(task))
        proc = subprocess.run([script, *args], env=task_env, capture_output=True, check=False, umask=0o077)
        return task, proc.returncode

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        return dict(pool.map(one, range(tasks)))
