"""The scheduler's commands (``run``, ``status``, ``doctor``, ``find``, ``backlog``, ``scripts``):
their argument builders and one function that runs a parsed command.

Both command lines use them: ``python -m omero_iscc`` (``__main__``, which logs in itself) and
``omero iscc`` (``cli``, through the OMERO CLI's session). Each builds its parsers from the
``add_*_arguments`` functions below, parses once, and hands the namespace to :func:`run`,
whose exit status (``statuses.ExitStatus``) both return as theirs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import shlex
import sys

from . import holds as holds_mod
from . import state as state_mod
from .config import Config, ConfigError, load
from .statuses import ExitStatus

log = logging.getLogger("omero_iscc")

#: Settings of the configuration that ``python -m omero_iscc`` can override on its command line.
SCHED_OPTIONS = [
    ("host", str),
    ("port", int),
    ("username", str),
    ("poll_interval", float),
    ("batch_size", int),
    ("chunk_size", int),
    ("namespace", str),
    ("log_level", str),
    ("webhook_url", str),
    ("repository", str),
    ("worker", str),
    ("state_dir", str),
]

RUN_HELP = "poll and annotate (the default)"
STATUS_HELP = "show failures kept in the state file"
DOCTOR_HELP = "check connection, processing and service"
FIND_HELP = "images whose ISCC equals or is near a code or an image's code"
BACKLOG_HELP = "hash every image without an ISCC on a Slurm cluster, then annotate"
SCRIPTS_HELP = "install (or --uninstall) the OMERO.scripts in OMERO.server/lib/scripts/iscc"


def add_overrides(p) -> None:
    """``--host``, ``--port``... : each overrides that setting of the configuration."""
    for name, kind in SCHED_OPTIONS:
        p.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=kind,
            default=None,
            help=f"overrides '{name}' of the configuration",
        )


def add_run_arguments(p) -> None:
    p.add_argument("--once", action="store_true", help="one poll, then exit (what cron runs)")


def add_status_arguments(p) -> None:
    """``status`` takes none."""


def add_doctor_arguments(p) -> None:
    p.add_argument(
        "--test",
        action="append",
        choices=["connection", "processing", "service", "list"],
        help="run only this check (repeatable)",
    )


def add_find_arguments(p) -> None:
    p.add_argument("query", help="an ISCC (ISCC:...) or an image id")
    p.add_argument("--threshold", type=int, default=12, help="Data-Code bits apart (default 12)")


def add_backlog_arguments(p) -> None:
    """The ``backlog`` arguments, here and in ``omero iscc backlog``."""
    p.add_argument("action", nargs="?", choices=["run", "ingest", "status", "close"], default="run")
    p.add_argument("--workdir", default=None, help="work directory the cluster shares (default: backlog_dir)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--slurm", action="store_true", help="submit Slurm arrays (their ingest: backlog ingest --wait)")
    mode.add_argument("--local", type=int, metavar="N", help="run the shards on this host, N at a time, then ingest")
    p.add_argument("--resume", action="store_true", help="run the shards without a result; split those timed out")
    p.add_argument("--wait", action="store_true", help="then ingest here as the shards finish, until the tasks end")
    p.add_argument("--shard-bytes", type=int, default=None, help="bytes per shard at most (default: shard_bytes)")
    p.add_argument("--shard-files", type=int, default=None, help="files per shard at most (default: shard_files)")
    p.add_argument("--no-probe", action="store_true", help="with --slurm: submit without the probe job first")
    p.add_argument(
        "--ingest-job", action="store_true", help="with --slurm: ingest in a job on the nodes (see cluster_python)"
    )


def add_scripts_arguments(p, upload: bool = True) -> None:
    """``upload``: ``--upload`` too, through a session (``omero iscc scripts``); without one
    (``python -m omero_iscc scripts``) the scripts can only be copied."""
    p.add_argument("action", choices=["install"], help="put the scripts of this release in place")
    where = p.add_mutually_exclusive_group(required=True)
    if upload:
        where.add_argument(
            "--upload", action="store_true", help="as official scripts iscc/NAME.py, through this session"
        )
    where.add_argument("--omero-dir", metavar="DIR", help="copy into DIR/lib/scripts/iscc (on the server host)")
    p.add_argument("--uninstall", action="store_true", help="remove them (only what this release installs)")
    p.add_argument("--dry-run", action="store_true", help="say what would be done, do nothing")


#: Each command with its help and its argument builder, for both command lines.
COMMANDS = {
    "run": (RUN_HELP, add_run_arguments),
    "status": (STATUS_HELP, add_status_arguments),
    "doctor": (DOCTOR_HELP, add_doctor_arguments),
    "find": (FIND_HELP, add_find_arguments),
    "backlog": (BACKLOG_HELP, add_backlog_arguments),
}


def _config(args: argparse.Namespace) -> Config:
    # ``omero iscc`` has no overrides: its namespace lacks them, which means "not given".
    cli = {name: getattr(args, name, None) for name, _ in SCHED_OPTIONS}
    return load(cli=cli, config_file=args.config)


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def cmd_status(cfg: Config) -> int:
    st = state_mod.load(cfg.state_dir)
    when = dt.datetime.fromtimestamp(st.last_poll, dt.timezone.utc).isoformat() if st.last_poll else "never"
    print(f"state: {cfg.state_dir}")
    print(f"last poll: {when}; annotated so far: {st.annotated_total}")
    given_up = st.given_up()
    retrying = {i: f for i, f in st.failures.items() if i not in given_up}
    print(f"given up after {state_mod.MAX_ATTEMPTS} attempts: {len(given_up)}")
    for image_id, f in sorted(given_up.items()):
        print(f"  image {image_id}: {f.error}")
    print(f"waiting to be retried: {len(retrying)}")
    for image_id, f in sorted(retrying.items()):
        print(f"  image {image_id}: attempt {f.attempts}: {f.error}")
    _print_waiting("", st)
    if st.no_files:
        print(f"without original files (no file code can exist; a pixel code can): {len(st.no_files)}")
        shown = sorted(st.no_files)
        more = f" and {len(shown) - 20} more" if len(shown) > 20 else ""
        print("  images " + ", ".join(map(str, shown[:20])) + more)
    if "pixels" in cfg.codes:
        pixels = state_mod.load(os.path.join(cfg.state_dir, "pixels"))
        print(f"pixel code: given up {len(pixels.given_up())}, failing {len(pixels.failures) - len(pixels.given_up())}")
        for image_id, f in sorted(pixels.failures.items()):
            print(f"  image {image_id}: attempt {f.attempts}: {f.error}")
        _print_waiting("pixel code: ", pixels)
    holds = holds_mod.load(cfg.state_dir)
    for hold in holds.active:
        upto = "every image (planning)" if hold.upto is None else f"images up to id {hold.upto}"
        print(f"left to the backlog plan in {hold.workdir}: {upto}, but {len(hold.released)} handed back")
    print(f"refused by the backlog's fixity check (never annotated): {len(holds.fixity)}")
    for image_id, why in sorted(holds.fixity.items()):
        print(f"  image {image_id}: {why}")
    return ExitStatus.SUCCESS


def _print_waiting(label: str, st: state_mod.State) -> None:
    """Images not ready yet (no attempt counted), with since when."""
    if not st.waiting:
        return
    print(f"{label}not ready yet, looked at again each poll: {len(st.waiting)}")
    for image_id, w in sorted(st.waiting.items()):
        since = dt.datetime.fromtimestamp(w.since, dt.timezone.utc).isoformat()
        print(f"  image {image_id}: {w.reason} (since {since})")


def cmd_backlog(cfg: Config, connect, args: argparse.Namespace) -> int:
    """``backlog``: plan and run (``--slurm``, ``--local N``), ``--resume``, ``ingest``,
    ``status``, ``close``."""
    from . import backlog
    from .connection import is_connection_error
    from .errors import InputError

    workdir = args.workdir or cfg.backlog_dir or os.path.join(cfg.state_dir, "backlog")
    try:
        return _backlog(cfg, connect, args, workdir)
    except (backlog.BacklogError, InputError) as exc:
        print(f"omero-iscc: {exc}", file=sys.stderr)
        return ExitStatus.USAGE
    except Exception as exc:  # noqa: BLE001 - a lost or refused connection is told plainly; the rest propagates
        if not is_connection_error(exc):
            raise
        print(f"omero-iscc: no connection to OMERO at {cfg.host}:{cfg.port}: {type(exc).__name__}", file=sys.stderr)
        return ExitStatus.FAILURE


def _backlog(cfg: Config, connect, args: argparse.Namespace, workdir: str) -> int:
    from . import backlog
    from . import slurm as slurm_mod
    from .connection import session

    if args.action == "close":
        work = backlog.open_workdir(cfg, workdir)
        run = backlog.runner(cfg) if any(a.get("mode") != "local" for a in work.manifest["arrays"]) else None
        cancelled = backlog.close(work, cfg, run)
        print(f"closed the plan in {workdir}" + (f"; cancelled job(s) {', '.join(cancelled)}" if cancelled else ""))
        return ExitStatus.SUCCESS
    if args.action in ("status", "ingest") or args.resume:
        work = backlog.open_workdir(cfg, workdir)
        slurm_used = args.slurm or any(a.get("mode") != "local" for a in work.manifest["arrays"])
        # A plain ingest needs no Slurm (it may run in a job on a node).
        slurm_used = slurm_used and not (args.action == "ingest" and not args.wait)
    else:
        work, slurm_used = None, args.slurm
    if args.slurm:
        slurm_mod.check_options(cfg.slurm_options)
        slurm_mod.check_options(cfg.slurm_ingest_options)
    run = backlog.runner(cfg) if slurm_used else None
    lim = slurm_mod.limits(run) if run is not None else None
    if args.action == "status":
        print(backlog.format_status(backlog.status(work, run, lim)))
        return ExitStatus.SUCCESS
    if args.action == "ingest":
        if run is not None:
            report = backlog.follow(cfg, connect, work, run, lim)
        else:
            log.info("backlog ingest: %s, %d shard(s)", workdir, work.shard_count)
            with session(cfg, connect) as omero:
                report = backlog.ingest(omero, work, cfg)
        print(report.message())
        return ExitStatus.FAILURE if report.failed or (args.wait and report.missing) else ExitStatus.SUCCESS
    if not (args.slurm or args.local):
        print("omero-iscc: backlog needs --slurm or --local N", file=sys.stderr)
        return ExitStatus.USAGE
    if work is None:
        with session(cfg, connect) as omero:
            work = backlog.make_plan(
                omero, cfg, workdir, args.shard_bytes or cfg.shard_bytes, args.shard_files or cfg.shard_files
            )
    if args.local:
        with work.locked("running here"):
            shards = backlog.prepare(work, cfg, run, lim, args.resume)
            array = backlog.submit_local(work, cfg, shards, args.local) if shards else {"ended": []}
        with session(cfg, connect) as omero:
            report = backlog.ingest(omero, work, cfg)
        print(report.message())
        failed = report.failed or "FAILED" in array["ended"]
        return ExitStatus.FAILURE if failed else ExitStatus.SUCCESS
    with work.locked("submitting"):
        shards = backlog.prepare(work, cfg, run, lim, args.resume)
        if shards and not args.no_probe:
            backlog.probe(work, cfg, run, lim)
            work.save()
        arrays = backlog.submit_arrays(work, cfg, run, lim, shards, backlog.shard_states(work, run, lim))
    tasks = sum(len(a["shards"]) for a in arrays)
    jobs = ", ".join(a["job"] for a in arrays) or "none"
    print(f"{tasks} of {len(shards)} shard(s) submitted in {len(arrays)} array(s) (job(s) {jobs}) from {workdir}")
    if tasks < len(shards):
        print(f"{len(shards) - tasks} shard(s) wait for room in the queue: backlog ingest --wait submits them")
    if args.ingest_job and arrays:
        try:
            job = backlog.submit_ingest_job(work, cfg, run, args.config, [a["job"] for a in arrays])
        except (slurm_mod.SlurmError, backlog.BacklogError) as exc:
            print(f"omero-iscc: the arrays are submitted and recorded, but not the ingest job: {exc}", file=sys.stderr)
            print(f"ingest here instead: {shlex.join(backlog.python_command(args.config, workdir))}", file=sys.stderr)
            return ExitStatus.FAILURE
        print(f"ingest job {job} starts once the arrays have ended")
    if args.wait:
        report = backlog.follow(cfg, connect, work, run, lim)
        print(report.message())
        return ExitStatus.FAILURE if report.failed or report.missing else ExitStatus.SUCCESS
    if not args.ingest_job:
        print(f"ingest as shards finish: {shlex.join(backlog.python_command(args.config, workdir))}")
    return ExitStatus.SUCCESS


def run(args: argparse.Namespace, connect=None) -> int:
    """Runs the parsed command (``args.command``; none: ``run``) and returns its exit status.
    ``connect``: how to open a session (``connection.connect`` when not given)."""
    try:
        return _run(args, connect)
    except Exception as exc:  # noqa: BLE001 - the three kinds an administrator must act on; the rest propagate
        from .connection import is_connection_error, is_login_refused
        from .errors import InputError

        if isinstance(exc, InputError):
            print(f"omero-iscc: {exc}", file=sys.stderr)
            return ExitStatus.USAGE
        if is_login_refused(exc):
            print(f"omero-iscc: the OMERO server refused the login: {exc}; check the credentials", file=sys.stderr)
            return ExitStatus.USAGE
        if is_connection_error(exc):
            print(f"omero-iscc: cannot reach the OMERO server: {type(exc).__name__} {exc}".rstrip(), file=sys.stderr)
            return ExitStatus.NO_SERVER
        raise


def _run(args: argparse.Namespace, connect) -> int:
    try:
        cfg = _config(args)
    except ConfigError as exc:
        print(f"omero-iscc: configuration error: {exc}", file=sys.stderr)
        return ExitStatus.USAGE
    _setup_logging(cfg.log_level)
    if connect is None:
        from .connection import connect as connect_default

        connect = connect_default
    command = args.command or "run"
    if command == "scripts":
        from . import deploy

        return deploy.run(args.uninstall, args.omero_dir, dry_run=args.dry_run)
    if command == "status":
        return cmd_status(cfg)
    if command == "doctor":
        from . import doctor

        return doctor.run(cfg, connect, args.test)
    if command == "find":
        from .fromindex import find_command

        return find_command(cfg, connect, args.query, args.threshold)
    if command == "backlog":
        return cmd_backlog(cfg, connect, args)
    from .scheduler import Scheduler
    from .worker import WorkerError

    logging.getLogger("omero_iscc").info("configuration: %s", json.dumps(cfg.masked(), sort_keys=True))
    try:
        lock = state_mod.Lock(cfg.state_dir).acquire()
    except state_mod.LockedError as exc:
        print(f"omero-iscc: {exc}", file=sys.stderr)
        return ExitStatus.INCOMPLETE
    try:
        try:
            scheduler = Scheduler(cfg, connect)
        except WorkerError as exc:
            print(f"omero-iscc: {exc}", file=sys.stderr)
            return ExitStatus.USAGE
        scheduler.install_signal_handlers()
        status = scheduler.run(once=bool(getattr(args, "once", False)))
        if status == ExitStatus.NO_SERVER:
            print(f"omero-iscc: cannot reach the OMERO server at {cfg.host}:{cfg.port}: see the log", file=sys.stderr)
        return status
    finally:
        lock.release()
