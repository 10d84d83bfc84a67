"""``python -m omero_iscc``: the scheduler and its admin commands.

    python -m omero_iscc [run] [--once]     poll for images without an ISCC and annotate them
    python -m omero_iscc status             failures kept in the state file
    python -m omero_iscc doctor [--test T]  connection | processing | service | list
    python -m omero_iscc find ISCC:...|ID   images whose ISCC equals or is near a code or image

Exit status (``statuses.ExitStatus``, as the worker's): 0 when nothing failed, 1 when an image
(or a check) failed, 2 on configuration errors, 3 when another scheduler already holds the
lock (nothing was done).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
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
    p.add_argument("--once", action="store_true", help=argparse.SUPPRESS)
    return p


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


def main(argv: list[str] | None = None, connect=None) -> int:
    args = parser().parse_args(argv)
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
    if command == "status":
        return cmd_status(cfg)
    if command == "doctor":
        from . import doctor

        return doctor.run(cfg, connect, args.test)
    if command == "find":
        from .duplicates import find_command

        return find_command(cfg, connect, args.query, args.threshold)
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
        return scheduler.run(once=bool(getattr(args, "once", False)))
    finally:
        lock.release()


if __name__ == "__main__":
    sys.exit(main())
