"""The backlog's task runners: a Slurm job array (``sbatch``, ``squeue``), or the same tasks on
this host, N at a time. Both run the backlog's task script with ``SLURM_ARRAY_TASK_ID`` set to
the shard number; nothing here knows what a shard holds."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from .errors import InputError

#: The array jobs' name (``squeue`` finds them by it).
ARRAY_NAME = "omero-iscc-backlog"


class SlurmError(InputError):
    """Slurm refused a command or is not there."""


def _run(args: list[str]) -> str:
    try:
        proc = subprocess.run(args, capture_output=True, text=True, check=False, timeout=120)
    except FileNotFoundError:
        raise SlurmError(f"{args[0]} not found: is this a Slurm submit host?") from None
    except subprocess.TimeoutExpired:
        raise SlurmError(f"{args[0]} did not answer within 120 s") from None
    if proc.returncode != 0:
        raise SlurmError(f"{' '.join(args[:2])}... failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


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


def submit_array(
    script: str,
    tasks: Iterable[int],
    log_dir: str,
    throttle: int | None = None,
    partition: str | None = None,
    time_limit: str | None = None,
    options: Iterable[str] = (),
    job_name: str = "",
) -> str:
    """Submits ``script`` as one array job over ``tasks``; returns the job id."""
    args = ["sbatch", "--parsable", f"--array={array_spec(tasks, throttle)}", f"--job-name={job_name or ARRAY_NAME}"]
    args.append(f"--output={os.path.join(log_dir, '%A_%a.out')}")
    if partition:
        args.append(f"--partition={partition}")
    if time_limit:
        args.append(f"--time={time_limit}")
    args += list(options)
    args.append(script)
    return _run(args).strip().split(";")[0]


def submit_after(
    command: str, after_job: str, log_dir: str, options: Iterable[str] = (), partition: str | None = None
) -> str:
    """Submits ``command`` to start once every task of ``after_job`` ended, however
    (``afterany``); returns its job id."""
    args = ["sbatch", "--parsable", f"--dependency=afterany:{after_job}", "--job-name=omero-iscc-ingest"]
    args.append(f"--output={os.path.join(log_dir, 'ingest_%j.out')}")
    if partition:
        args.append(f"--partition={partition}")
    args += list(options) + ["--wrap", command]
    return _run(args).strip().split(";")[0]


def active_tasks(job_ids: Iterable[str]) -> dict[int, str]:
    """Array tasks of these jobs still known to the queue: task number -> state (PENDING,
    RUNNING...). A job that left the queue has no entry."""
    ids = {j for j in job_ids if j}
    if not ids:
        return {}
    # By name and user, filtered here: squeue fails outright on a job id that left the queue.
    out = _run(["squeue", "-h", "-r", "--me", f"--name={ARRAY_NAME}", "-o", "%i %T"])
    tasks: dict[int, str] = {}
    for line in out.splitlines():
        name, _, state = line.strip().partition(" ")
        job, _, task = name.partition("_")
        if job in ids and task.isdigit():
            tasks[int(task)] = state
    return tasks


def run_local(script: str, tasks: Iterable[int], parallel: int) -> dict[int, int]:
    """Runs the tasks on this host, ``parallel`` at a time; returns each task's exit status."""
    tasks = sorted(set(tasks))

    def one(task: int) -> tuple[int, int]:
        env = dict(os.environ, SLURM_ARRAY_TASK_ID=str(task))
        proc = subprocess.run([script], env=env, capture_output=True, check=False)
        return task, proc.returncode

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        return dict(pool.map(one, tasks))
