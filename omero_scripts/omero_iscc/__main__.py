"""``python -m omero_iscc``: the scheduler and its admin commands.

    python -m omero_iscc [run] [--once]     poll for images without an ISCC and annotate them
    python -m omero_iscc status             failures kept in the state file
    python -m omero_iscc doctor [--test T]  connection | processing | service | list
    python -m omero_iscc find ISCC:...|ID   images whose ISCC equals or is near a code or image
    python -m omero_iscc backlog --slurm | --local N [--resume]
                                            every image without an ISCC, hashed on a Slurm
                                            cluster (or N at a time here), annotated here
    python -m omero_iscc backlog ingest     annotate what the cluster has hashed so far
    python -m omero_iscc backlog status     shards done, running, failed; throughput, time left
    python -m omero_iscc scripts install --omero-dir DIR [--uninstall]
                                            copy the OMERO.scripts into DIR/lib/scripts/iscc
                                            (`omero iscc scripts install --upload` uploads them)

Exit status (``statuses.ExitStatus``, 0 to 3 as the worker's): 0 when nothing failed, 1 when
an image (or a check) failed, 2 on configuration errors (the server refusing the login
included), 3 when another scheduler already holds the lock (nothing was done), 5 when the
OMERO server cannot be reached (no image is counted as failed).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys

from . import __version__
from . import state as state_mod
from .config import Config, ConfigError, load
from .statuses import ExitStatus

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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m omero_iscc",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"omero-iscc {__version__}")
    p.add_argument("--config", default=None, help="JSON configuration file (default /etc/omero-iscc/config.json)")
    for name, kind in SCHED_OPTIONS:
        p.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=kind,
            default=None,
            help=f"overrides '{name}' of the configuration",
        )
    sub = p.add_subparsers(dest="command")
    run = sub.add_parser("run", help="poll and annotate (the default)")
    run.add_argument("--once", action="store_true", help="one poll, then exit (what cron runs)")
    sub.add_parser("status", help="show failures kept in the state file")
    doctor = sub.add_parser("doctor", help="check connection, processing and service")
    doctor.add_argument(
        "--test",
        action="append",
        choices=["connection", "processing", "service", "list"],
        help="run only this check (repeatable)",
    )
    find = sub.add_parser("find", help="images whose ISCC equals or is near a code or an image's code")
    find.add_argument("query", help="an ISCC (ISCC:...) or an image id")
    find.add_argument("--threshold", type=int, default=12, help="Data-Code bits apart (default 12)")
    add_backlog_arguments(sub.add_parser("backlog", help=BACKLOG_HELP))
    add_scripts_arguments(sub.add_parser("scripts", help=SCRIPTS_HELP), upload=False)
    p.add_argument("--once", action="store_true", help=argparse.SUPPRESS)
    return p


BACKLOG_HELP = "hash every image without an ISCC on a Slurm cluster, then annotate"


def add_backlog_arguments(p) -> None:
    """The ``backlog`` arguments, here and in ``omero iscc backlog``."""
    p.add_argument("action", nargs="?", choices=["run", "ingest", "status"], default="run")
    p.add_argument("--workdir", default=None, help="work directory the cluster shares (default: backlog_dir)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--slurm", action="store_true", help="submit one sbatch --array job (and an ingest job)")
    mode.add_argument("--local", type=int, metavar="N", help="run the shards on this host, N at a time, then ingest")
    p.add_argument("--resume", action="store_true", help="run only the shards without a whole result")
    p.add_argument("--shard-bytes", type=int, default=None, help="bytes per shard (default: shard_bytes)")
    p.add_argument("--no-ingest-job", action="store_true", help="with --slurm: no dependent ingest job")


SCRIPTS_HELP = "install (or --uninstall) the OMERO.scripts in OMERO.server/lib/scripts/iscc"


def add_scripts_arguments(p, upload: bool = True) -> None:
    """The ``scripts`` arguments, here (copy only: no session) and in ``omero iscc scripts``."""
    p.add_argument("action", choices=["install"], help="put the scripts of this release in place")
    where = p.add_mutually_exclusive_group(required=True)
    if upload:
        where.add_argument(
            "--upload", action="store_true", help="as official scripts iscc/NAME.py, through this session"
        )
    where.add_argument("--omero-dir", metavar="DIR", help="copy into DIR/lib/scripts/iscc (on the server host)")
    p.add_argument("--uninstall", action="store_true", help="remove them (only what this release installs)")
    p.add_argument("--dry-run", action="store_true", help="say what would be done, do nothing")


def backlog_argv(args: argparse.Namespace) -> list[str]:
    """Parsed ``backlog`` arguments back into a command line (for ``omero iscc backlog``)."""
    argv = ["backlog", args.action]
    for flag, value in (("--workdir", args.workdir), ("--local", args.local), ("--shard-bytes", args.shard_bytes)):
        if value:
            argv += [flag, str(value)]
    return argv + [
        flag
        for flag, on in (("--slurm", args.slurm), ("--resume", args.resume), ("--no-ingest-job", args.no_ingest_job))
        if on
    ]


def _config(args: argparse.Namespace) -> Config:
    cli = {name: getattr(args, name) for name, _ in SCHED_OPTIONS}
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


def main(argv: list[str] | None = None, connect=None) -> int:
    args = parser().parse_args(argv)
    try:
        return _main(args, connect)
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


def _main(args: argparse.Namespace, connect) -> int:
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


if __name__ == "__main__":
    sys.exit(main())
