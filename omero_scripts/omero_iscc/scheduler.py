"""The scheduler: find images without an ISCC annotation, hash and annotate them.

With ``codes: ["files", "pixels"]`` each poll does the same for the pixel code (its own
namespace, its own failure state in ``state_dir/pixels``), after the files' code, so an image
that has one code and lacks the other gets the missing one.

One poll takes at most ``batch_size`` unannotated images across all groups, by ascending id
(an HQL query, so an image missed once is found next time), skipping images that failed
recently or too often. A lost connection is re-established with exponential backoff
(capped at 5 minutes) and the same batch carried on: annotations are checked before each
image is written, so nothing is annotated twice and nothing is lost. A ``--once`` run that
cannot reach the server at all gives up at once (cron runs it again), with its own exit
status (``NO_SERVER``): no image is counted as failed for it. SIGTERM and SIGINT let the
image in hand finish, save the state and end the run with status 0.

Images a backlog plan holds (``holds.py``) are left to it, and a Fileset the backlog refused
for fixity is never annotated: both are skipped when a batch is taken and checked again, with
the image's annotations, under ``state_dir/annotate.lock`` just before each save.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import Callable

from . import holds as holds_mod
from . import state as state_mod
from .annotate import ImageOutcome, annotate, annotate_pixels, recheck
from .config import Config, WorkerLimits
from .connection import is_connection_error
from .layout import IsccRecord, PixelRecord
from .notices import import_checks
from .statuses import ExitStatus, ImageStatus
from .webhook import Webhook
from .worker import find_worker

log = logging.getLogger("omero_iscc")

RECONNECT_CAP = 300.0
#: Reconnection attempts of a ``--once`` run before it gives up (a loop keeps trying).
ONCE_RECONNECTS = 5


@dataclass
class PollResult:
    annotated: int = 0
    failed: int = 0
    seen: int = 0
    stopped: bool = False
    #: The server could not be reached (or the connection was lost and not regained).
    unreachable: bool = False


class Scheduler:
    def __init__(
        self,
        cfg: Config,
        connect: Callable[[Config], tuple],
        sleep: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.connect_fn = connect
        self.clock = clock
        self.stop_event = threading.Event()
        self.sleep = sleep or (lambda s: self.stop_event.wait(s))
        self.client = None
        self.omero = None
        #: Whether a session was opened in this run (a --once run that never got one gives
        #: up at its first failure: the server is down, not the connection flaky).
        self.connected = False
        #: Failure state per code: the files' in ``state_dir``, the pixels' beside it.
        self.state_dirs = {"files": cfg.state_dir, "pixels": os.path.join(cfg.state_dir, "pixels")}
        self.states = {code: state_mod.load(self.state_dirs[code]) for code in cfg.codes}
        self.code = cfg.codes[0]
        self.webhook = Webhook(cfg.webhook_url)
        self.worker = find_worker(cfg.worker)
        self.server = cfg.host
        self.once = False
        self.annotated_in_poll = 0
        #: The daemon runs its workers in their own session (see worker._popen); a script does not.
        self.detach = True
        #: time.monotonic() after which no new image is started (a script's time budget).
        self.deadline: float | None = None
        #: The scan's resume point before the current batch (``_next_batch``).
        self.scan_before = 0
        #: The same for the poll in hand (``time_budget``): set when each poll starts.
        self.poll_deadline: float | None = None
        #: Reconnections before a poll gives up (None: the default of the mode; a script,
        #: whose session is its own, has nothing to reconnect to: 0).
        self.max_reconnects: int | None = None
        #: The code index and the duplicates notices (``index``), run after each poll on the
        #: images it annotated.
        self.checks = import_checks(cfg, self.worker, self.webhook.notify) if cfg.index else None
        self.annotated_images: set[int] = set()

    # -- lifecycle -------------------------------------------------------------------------
    def request_stop(self, *_args) -> None:
        if not self.stop_event.is_set():
            log.info("stop requested: finishing the image in hand")
        self.stop_event.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    def _connect(self) -> None:
        self.client, self.omero = self.connect_fn(self.cfg)
        self.connected = True

    def _disconnect(self) -> None:
        client, self.client, self.omero = self.client, None, None
        if client is not None:
            with contextlib.suppress(Exception):  # the session is being dropped anyway
                client.closeSession()

    def close(self) -> None:
        self.webhook.drain(timeout=30)
        if self.omero is not None:
            self.omero.close_sudo_sessions()
        self._disconnect()

    # -- work ------------------------------------------------------------------------------
    def _annotated(self, image_id: int, record: IsccRecord | PixelRecord, seconds: float = 0.0) -> None:
        log.info("image %d %s %s %.2fs", image_id, self.code, record.iscc, seconds)
        self.annotated_in_poll += 1
        self.annotated_images.add(image_id)
        self.states[self.code].record_success(image_id)
        self.webhook.notify(
            {
                "image_id": image_id,
                "code": self.code,
                "iscc": record.iscc,
                "datahash": record.datahash,
                "timestamp": record.timestamp,
                "server": self.server,
            }
        )

    def _should_stop(self) -> bool:
        now = time.monotonic()
        return self.stop_event.is_set() or any(d is not None and now > d for d in (self.deadline, self.poll_deadline))

    def limits(self) -> WorkerLimits:
        """The worker's limits now: until the nearer of the script's and the poll's deadlines,
        files up to ``max_file_size``."""
        deadlines = [d for d in (self.deadline, self.poll_deadline) if d is not None]
        return WorkerLimits(min(deadlines) if deadlines else None, self.cfg.max_file_size)

    def _next_batch(self) -> tuple[list[int], int]:
        """Up to ``batch_size`` images without an ISCC, by ascending id, leaving out those
        that wait for a retry or were given up (filtered here: the list grows without limit,
        so it is never sent to the server); then every image of their Filesets, so that a
        Fileset is read once whatever the batch size. Returns the images and how many were
        found without an ISCC.

        The scan resumes after the last image the previous poll took (``scan_after``, kept in
        the state): images given up on, or waiting for a retry, stay without an ISCC, and a
        scan from id 0 would read them again every poll. Once a scan reaches the end it
        starts over from 0 at the next poll, which finds the retries that have come due."""
        state = self.states[self.code]
        excluded = set(state.excluded(self.clock()))
        namespace = self.cfg.namespace if self.code == "files" else self.cfg.pixels_namespace
        # The backlog computes only the files' code: its holds do not concern the pixels'.
        holds = holds_mod.load(self.cfg.state_dir) if self.code == "files" else holds_mod.Holds([])
        excluded |= set(holds.fixity)
        found: list[int] = []
        after = state.scan_after
        at_end = False
        while len(found) < self.cfg.batch_size:
            after = holds.skip(after)
            if after >= holds_mod.EVERYTHING:
                at_end = True
                break
            page = self.omero.unannotated_images(namespace, self.cfg.batch_size, after)
            found += [i for i in page if i not in excluded and holds.held_by(i) is None]
            if len(page) < self.cfg.batch_size:
                at_end = True
                break
            after = page[-1]
        found = found[: self.cfg.batch_size]
        self.scan_before = state.scan_after  # put back if the batch is not finished
        state.scan_after = 0 if at_end or not found else found[-1]
        more = self.omero.fileset_images(found)
        whole = sorted(set(found) | {i for i in more if i not in excluded and holds.held_by(i) is None})
        return whole, len(found)

    @contextlib.contextmanager
    def _guard(self, done: list):
        """Around each save of the files' code: under the annotate lock, leaves out the images
        a backlog plan took or refused meanwhile and those annotated meanwhile."""
        with holds_mod.annotate_lock(self.cfg.state_dir):
            holds = holds_mod.load(self.cfg.state_dir)
            kept, left_out = [], []
            for unit, record in done:
                ids = [image.getId().val for image in unit.images]
                why = next((holds.fixity[i] for i in ids if i in holds.fixity), None)
                hold = next((h for h in map(holds.held_by, ids) if h is not None), None)
                if why is None and hold is None:
                    kept.append((unit, record))
                    continue
                message = f"refused for fixity: {why}" if why else f"left to the backlog plan in {hold.workdir}"
                left_out += [ImageOutcome(i, ImageStatus.ALREADY, message) for i in ids]
            kept, already = recheck(self.omero, kept, self.cfg.namespace)
            yield kept, left_out + already

    def poll_once(self) -> PollResult:
        """One batch per code; see :meth:`_poll_code`."""
        if self.cfg.time_budget is not None:
            self.poll_deadline = time.monotonic() + self.cfg.time_budget
        total = PollResult()
        annotated = 0
        for code in self.cfg.codes:
            self.code = code
            result = self._poll_code()
            annotated += result.annotated
            total.failed += result.failed
            total.seen = max(total.seen, result.seen)
            if result.unreachable:
                total.unreachable = True
                break
            if result.stopped:
                total.stopped = True
                break
        total.annotated = annotated
        self._after_poll(run=not (total.unreachable or total.stopped or self.stop_event.is_set()))
        return total

    def _after_poll(self, run: bool) -> None:
        """The index and the duplicates notices of the images annotated (see notices.py); a
        failure there is logged and never stops the annotating."""
        if self.checks is None:
            return
        images, self.annotated_images = sorted(self.annotated_images), set()
        if not run or self.omero is None:
            self.checks.defer(images)
            return
        try:
            # A script's poll (a deadline) leaves rebuilds and reconciliations to the scheduler.
            self.checks.after_poll(self.omero, images, full=self.deadline is None)
        except Exception as exc:  # noqa: BLE001 - the annotations are saved; the checks wait for the next poll
            if is_connection_error(exc):
                log.warning("code index: connection lost (%s); the checks wait for the next poll", exc)
                self._disconnect()
            else:
                log.exception("code index: the checks failed; they wait for the next poll")

    def _annotate_batch(self, batch: list[int]):
        if self.code == "pixels":
            return annotate_pixels(
                self.omero,
                batch,
                self.worker,
                namespace=self.cfg.pixels_namespace,
                on_annotated=self._annotated,
                should_stop=self._should_stop,
                detach=self.detach,
                limits=self.limits(),
            )
        root = self.cfg.repository or self.omero.repository_root()
        return annotate(
            self.omero,
            batch,
            self.worker,
            root,
            self.cfg.namespace,
            chunk_size=self.cfg.chunk_size,
            units_per_run=1,
            on_annotated=self._annotated,
            should_stop=self._should_stop,
            detach=self.detach,
            allowed_roots=tuple(self.cfg.allowed_roots),
            guard=self._guard,
            limits=self.limits(),
        )

    def _poll_code(self) -> PollResult:
        """One batch of the current code; reconnects and carries on with the same batch if the
        connection drops."""
        delay = 1.0
        attempts = 0
        batch: list[int] | None = None
        result = PollResult()
        self.annotated_in_poll = 0
        while True:
            try:
                if self.omero is None:
                    self._connect()
                if batch is None:
                    batch, result.seen = self._next_batch()
                    log.info("poll: %d image(s) without a %s code, with their filesets' images", len(batch), self.code)
                report = self._annotate_batch(batch)
                break
            except Exception as exc:  # noqa: BLE001 - classified below; anything else propagates
                if not is_connection_error(exc):
                    raise
                attempts += 1
                self._disconnect()
                limit = (
                    self.max_reconnects if self.max_reconnects is not None else (ONCE_RECONNECTS if self.once else None)
                )
                never = self.once and not self.connected
                if self.stop_event.is_set() or never or (limit is not None and attempts > limit):
                    what = "cannot reach the OMERO server" if never else "connection lost"
                    log.error("%s at %s:%s (%s); giving up for now", what, self.cfg.host, self.cfg.port, exc)
                    result.unreachable = True
                    self.states[self.code].scan_after = self.scan_before
                    return result
                log.warning("connection lost (%s); reconnecting in %.0f s", exc, delay)
                self.sleep(delay)
                delay = min(delay * 2, RECONNECT_CAP)
        now = self.clock()
        for outcome in report.outcomes:
            if outcome.status in (ImageStatus.FAILED, ImageStatus.NOT_PERMITTED):
                # Not permitted is kept like a failure: reported by `status`, retried with
                # backoff (privileges change), and never in the way of the images after it.
                f = self.states[self.code].record_failure(
                    outcome.image_id, outcome.message, now, self.cfg.poll_interval
                )
                log.error(
                    "image %d %s failed (attempt %d of %d): %s",
                    outcome.image_id,
                    self.code,
                    f.attempts,
                    state_mod.MAX_ATTEMPTS,
                    outcome.message,
                )
                result.failed += 1
            elif outcome.status is ImageStatus.NOT_YET:
                # Nothing is wrong with it: looked at again next poll, no attempt counted.
                self.states[self.code].record_waiting(outcome.image_id, outcome.message, now, self.cfg.poll_interval)
                log.info("image %d %s not yet: %s", outcome.image_id, self.code, outcome.message)
            elif outcome.status is ImageStatus.NO_FILES:
                # Registered without files (omero zarr import): only a pixel code can exist.
                self.states[self.code].no_files.setdefault(outcome.image_id, now)
                log.info("image %d has no original files: no file code; not looked at again", outcome.image_id)
            elif outcome.status is ImageStatus.ANNOTATED:
                pass  # logged and counted as it happened (also before a reconnection)
            else:
                log.info("image %d skipped: %s", outcome.image_id, outcome.message or outcome.status)
        result.annotated = self.annotated_in_poll
        result.stopped = report.stopped or self.stop_event.is_set()
        if result.stopped:  # the images of the batch not reached are scanned again next time
            self.states[self.code].scan_after = self.scan_before
        self.states[self.code].last_poll = now
        state_mod.save(self.state_dirs[self.code], self.states[self.code])
        return result

    def run(self, once: bool) -> int:
        """Polls once or forever; returns the exit status: 0, 1 if an image failed, or
        ``NO_SERVER`` if the last poll could not reach the server."""
        self.once = once
        failed = unreachable = False
        try:
            while True:
                result = self.poll_once()
                failed |= result.failed > 0
                unreachable = result.unreachable
                if once or result.stopped or self.stop_event.is_set():
                    break
                if result.seen < self.cfg.batch_size or result.annotated == 0:
                    # Nothing more to do, or a poll that made no progress: wait, never spin.
                    self.sleep(self.cfg.poll_interval)
                if self.stop_event.is_set():
                    break
        finally:
            for code, state in self.states.items():
                state_mod.save(self.state_dirs[code], state)
            self.close()
        if self.stop_event.is_set():
            return ExitStatus.SUCCESS  # stopped on request: the state is saved, the next run resumes
        if unreachable:
            return ExitStatus.NO_SERVER
        return ExitStatus.FAILURE if failed else ExitStatus.SUCCESS
