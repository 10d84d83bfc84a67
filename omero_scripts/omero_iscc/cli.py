"""``omero iscc``: the OMERO CLI's commands (``IsccControl``), registered by the plugin file
``omero/plugins/iscc.py``.

The jobs the OMERO scripts run (``jobs``), through the CLI's own session (``omero login``
first, or ``-s/-u/-w`` like every plugin), and the scheduler's commands (``commands``) with
their argument builders: each argument is parsed once, by the CLI, and the parsed namespace
goes to the command.
"""

from __future__ import annotations

import json
import sys

from omero.cli import BaseControl, ProxyStringType

from . import commands

HELP = """ISCC-SUM content identifiers (ISO 24138) for the files of OMERO images

Annotate images with the ISCC of their original files, verify them, find duplicates, and run
the scheduler, through this CLI's session:

    omero login
    omero iscc annotate Dataset:1 --dry-run
    omero iscc annotate Dataset:1 Image:42
    omero iscc verify Plate:3 --json
    omero iscc annotate Dataset:1 --code both
    omero iscc backlog --slurm        (then: omero iscc backlog status)
    omero iscc scripts install --upload   (the OMERO.scripts, as iscc/NAME.py)

Exit status: 0 when everything succeeded, 1 when an image (or a check) failed, 2 for input
errors, 3 when another scheduler holds the lock, 5 when the OMERO server cannot be reached.
"""

OBJECT_TYPES = ["Project", "Dataset", "Image", "Screen", "Plate", "Fileset"]


def _grouped(objects) -> list[tuple[str, list[int]]]:
    """Object arguments (``Image:42``...) as (type, ids) in the order first given."""
    out: dict[str, list[int]] = {}
    for obj in objects:
        kind = type(obj).__name__.rstrip("I")
        out.setdefault(kind, []).append(obj.getId().val)
    return list(out.items())


class IsccControl(BaseControl):
    """The ``omero iscc`` subcommands."""

    def _configure(self, parser):
        sub = parser.sub()

        def objects(p, required=True):
            p.add_argument(
                "objects",
                nargs="+" if required else "*",
                type=ProxyStringType("Image"),
                help="OMERO objects: Image:42, Dataset:7, Plate:3, Project, Screen or Fileset (several)",
            )
            p.add_argument("--json", action="store_true", help="one JSON object with a row per image")

        annotate = parser.add(sub, self.annotate, "Compute and store the ISCC of each image's files")
        objects(annotate)
        annotate.add_argument("--replace", action="store_true", help="recompute images that have an ISCC")
        annotate.add_argument("--wide", action="store_true", help="2x128-bit codes (ISCC:K4A...)")
        annotate.add_argument("--dry-run", action="store_true", help="say what would be done per image, do nothing")
        annotate.add_argument(
            "--code",
            choices=["files", "pixels", "both"],
            default="files",
            help="the original files' code (default), the pixel code (IMAGEWALK: reads every plane "
            "through the server), or both",
        )
        annotate.add_argument("--simprints", action="store_true", help="with the pixel code: each plane's simprint too")
        verify = parser.add(sub, self.verify, "Recompute the ISCC and import checksums and compare")
        objects(verify)
        dups = parser.add(sub, self.duplicates, "Identical and similar images by their ISCC")
        objects(dups, required=False)
        dups.add_argument("--all", action="store_true", help="every image you can see, not a selection")
        dups.add_argument("--threshold", type=int, default=12, help="Data-Code bits apart (default 12)")
        find = parser.add(sub, self.find, "Images whose ISCC equals or is near a code or an image's")
        status = parser.add(sub, self.status, "Failures kept in the scheduler's state file")
        doctor = parser.add(sub, self.doctor, "Check the connection, the worker, the repository and the service")
        run = parser.add(sub, self.run, "The scheduler: poll for images without an ISCC and annotate them")
        backlog = parser.add(sub, self.backlog, commands.BACKLOG_HELP)
        for name, p in (("find", find), ("status", status), ("doctor", doctor), ("run", run), ("backlog", backlog)):
            commands.COMMANDS[name][1](p)
            p.set_defaults(command=name)
        for p in (annotate, verify, dups, find, status, doctor, run, backlog):
            p.add_login_arguments()
            p.add_argument("--config", default=None, help="omero-iscc configuration file")
        scripts = parser.add(sub, self.scripts, "Install the OMERO.scripts: upload them, or copy them to OMERO.server")
        commands.add_scripts_arguments(scripts)
        scripts.add_login_arguments()

    # -- plumbing ---------------------------------------------------------------------------
    def omero_access(self, args):
        """The helper's OMERO access over the CLI's session (tests give a stand-in)."""
        from .connection import omero_access

        return omero_access(self.ctx.conn(args))

    def _settings(self, args):
        from .config import DEFAULT_CONFIG_FILE, script_settings

        return script_settings(args.config or DEFAULT_CONFIG_FILE)

    def _finish(self, args, result, title: str) -> None:
        from .jobs import image_status_word
        from .statuses import ExitStatus

        if args.json:
            self.ctx.out(json.dumps({"message": result.message, "rows": result.rows}))
        else:
            codes = {row.get("code", "files") for row in result.rows}
            for row in result.rows:
                name = f"Image:{row['image_id']}"
                if len(codes) > 1:
                    name += f" {row.get('code', 'files')}"
                extra = " ".join(str(row[k]) for k in ("iscc", "message") if row.get(k))
                self.ctx.out(f"{name:16} {image_status_word(row['status']):24} {extra}".rstrip())
            self.ctx.out(f"{title}: {result.message}")
        self.ctx.rv = int(ExitStatus.FAILURE if result.failed else ExitStatus.SUCCESS)

    def _job(self, args, work, title: str) -> None:
        from .errors import InputError
        from .statuses import ExitStatus
        from .worker import WorkerError

        try:
            result = work()
        except (InputError, WorkerError) as exc:
            self.ctx.die(int(ExitStatus.USAGE), f"omero iscc: {exc}")
            return
        self._finish(args, result, title)

    def _progress(self, args):
        if args.json or not sys.stderr.isatty():
            return None
        return lambda image_id, record, seconds: self.ctx.err(f"  Image:{image_id} {record.iscc} {seconds:.2f}s")

    # -- jobs -------------------------------------------------------------------------------
    def annotate(self, args):
        from .jobs import JobResult, annotate_job, codes_of

        def work():
            access, settings = self.omero_access(args), self._settings(args)
            results = [
                annotate_job(
                    access,
                    kind,
                    ids,
                    settings,
                    replace=args.replace,
                    wide=args.wide,
                    dry_run=args.dry_run,
                    on_annotated=self._progress(args),
                    codes=codes_of(args.code),
                    simprints=args.simprints,
                )
                for kind, ids in _grouped(args.objects)
            ]
            return JobResult(
                "; ".join(r.message for r in results),
                [row for r in results for row in r.rows],
                failed=any(r.failed for r in results),
            )

        self._job(args, work, "dry run" if args.dry_run else "annotate")

    def verify(self, args):
        from .jobs import JobResult, verify_job

        def work():
            access, settings = self.omero_access(args), self._settings(args)
            results = [verify_job(access, kind, ids, settings) for kind, ids in _grouped(args.objects)]
            return JobResult(
                "; ".join(r.message for r in results),
                [row for r in results for row in r.rows],
                failed=any(r.failed for r in results),
            )

        self._job(args, work, "verify")

    def duplicates(self, args):
        from .errors import InputError
        from .jobs import duplicates_job

        def work():
            groups = _grouped(args.objects)
            if not args.all and len(groups) != 1:
                raise InputError("give the objects of one type, or --all for every image you can see")
            kind, ids = groups[0] if groups else ("Image", [])
            return duplicates_job(
                self.omero_access(args),
                kind,
                ids,
                self._settings(args),
                scope="Server" if args.all else "Selection",
                threshold=args.threshold,
            )

        self._job(args, work, "duplicates")

    # -- the scheduler's commands, with this CLI's session ------------------------------------
    def _command(self, args) -> None:
        """``commands.run`` on the namespace the CLI parsed (``args.command`` names the command)."""
        self.ctx.rv = int(commands.run(args, connect=lambda cfg: (None, self.omero_access(args))))

    def find(self, args):
        self._command(args)

    def status(self, args):
        self._command(args)

    def doctor(self, args):
        self._command(args)

    def run(self, args):
        self._command(args)

    def backlog(self, args):
        self._command(args)

    def scripts(self, args):
        from . import deploy

        def services():
            client = self.ctx.conn(args)
            return client.sf.getScriptService(), client.sf.getQueryService()

        self.ctx.rv = int(deploy.run(args.uninstall, args.omero_dir, services, args.dry_run, out=self.ctx.out))
