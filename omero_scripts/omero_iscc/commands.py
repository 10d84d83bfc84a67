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
import sys

from . import state as state_mod
from .config import Config, ConfigError, load
from .statuses import ExitStatus

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
    p.add_argument("action", nargs="?", choices=["run", "ingest", "status"], default="run")
    p.add_argument("--workdir", default=None, help="work directory the cluster shares (default: backlog_dir)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--slurm", action="store_true", help="submit one sbatch --array job (and an ingest job)")
    mode.add_argument("--local", type=int, metavar="N", help="run the shards on this host, N at a time, then ingest")
    p.add_argument("--resume", action="store_true", help="run only the shards without a whole result")
    p.add_argument("--shard-bytes", type=int, default=None, help="bytes per shard (default: shard_bytes)")
    p.add_argument("--no-ingest-job", action="store_true", help="with --slurm: no dependent ingest job")


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
    return ExitStatus.SUCCESS


def cmd_backlog(cfg: Config, connect, args: argparse.Namespace) -> int:
    """``backlog``: plan and run (``--slurm``, ``--local N``), ``--resume``, ``ingest``, ``status``."""
    from . import backlog
    from .connection import session
    from .errors import InputError

    workdir = args.workdir or cfg.backlog_dir or os.path.join(cfg.state_dir, "backlog")
    try:
        if args.action == "status":
            print(backlog.format_status(backlog.status(backlog.Workdir.open(workdir))))
            return ExitStatus.SUCCESS
        if args.action == "ingest":
            work = backlog.Workdir.open(workdir)
            with session(cfg, connect) as omero:
                report = backlog.ingest(omero, work)
            print(report.message())
            return ExitStatus.FAILURE if report.failed else ExitStatus.SUCCESS
        if not (args.slurm or args.local):
            print("omero-iscc: backlog needs --slurm or --local N", file=sys.stderr)
            return ExitStatus.USAGE
        if args.resume:
            work = backlog.Workdir.open(workdir)
            backlog.write_task_script(work, cfg)  # the worker or the mounts may have moved
        else:
            with session(cfg, connect) as omero:
                work = backlog.make_plan(omero, cfg, workdir, args.shard_bytes or cfg.shard_bytes)
        command = None if args.local or args.no_ingest_job else backlog.ingest_command(args.config, workdir)
        entry = backlog.submit(work, cfg, local=args.local, ingest_command=command)
        if args.local:
            with session(cfg, connect) as omero:
                report = backlog.ingest(omero, work)
            print(report.message())
            return ExitStatus.FAILURE if report.failed or entry.get("failed") else ExitStatus.SUCCESS
        print(f"submitted job {entry['job']} ({len(entry['tasks'])} shard(s)) from {workdir}")
        return ExitStatus.SUCCESS
    except (backlog.BacklogError, InputError) as exc:
        print(f"omero-iscc: {exc}", file=sys.stderr)
        return ExitStatus.USAGE


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
