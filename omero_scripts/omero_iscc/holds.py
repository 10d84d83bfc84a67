"""What the backlog holds back from the scheduler, in ``state_dir/backlog/`` (one file per plan).

While a backlog plan is active, the images it planned are its own: the scheduler leaves them
alone, so that no image is hashed twice nor annotated twice. A plan holds every image up to
the highest id it planned (planning pages through the images by ascending id) except the ones
it hands back (images without a Fileset, Filesets the nodes could never read); while it is
being planned, it holds every image. A Fileset the backlog refused for fixity (a file that
changed since import) stays refused for the scheduler too, also after the plan is done; the
scheduler's ``status`` lists it.

Saves of the scheduler and of the backlog's ingest take ``state_dir/annotate.lock`` and check
the image's annotations again under it, so that no two of them annotate one image twice.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import atomic

log = logging.getLogger(__name__)

REGISTRY = "backlog"
ANNOTATE_LOCK = "annotate.lock"
#: Beyond every image id: what a plan being made holds up to.
EVERYTHING = sys.maxsize

PLANNING, ACTIVE, DONE, CLOSED = "planning", "active", "done", "closed"


@dataclass
class Hold:
    """One plan's hold, as the scheduler reads it."""

    plan: str
    workdir: str
    state: str = PLANNING
    #: The highest image id the plan holds (``None`` while planning: every id).
    upto: int | None = None
    #: Images up to ``upto`` handed back to the scheduler, ascending.
    released: list[int] = field(default_factory=list)
    #: Image id (as text) -> why its Fileset failed the fixity check: final, for the scheduler too.
    fixity: dict[str, str] = field(default_factory=dict)
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    time: float = field(default_factory=time.time)

    @property
    def holding(self) -> bool:
        return self.state in (PLANNING, ACTIVE)

    def stale(self) -> bool:
        """A plan whose planning process died on this host: it holds nothing."""
        if self.state != PLANNING or self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def release(self, image_ids: list[int]) -> None:
        self.released = sorted(set(self.released) | set(image_ids))


def path(state_dir: str, plan: str) -> Path:
    return Path(state_dir) / REGISTRY / f"{plan}.json"


def save(state_dir: str, hold: Hold) -> None:
    atomic.private_dir(Path(state_dir) / REGISTRY)
    atomic.write(path(state_dir, hold.plan), json.dumps(asdict(hold), indent=1))


def read(state_dir: str, plan: str) -> Hold | None:
    try:
        return Hold(**json.loads(path(state_dir, plan).read_text()))
    except FileNotFoundError:
        return None


def read_all(state_dir: str) -> list[Hold]:
    directory = Path(state_dir) / REGISTRY
    if not directory.is_dir():
        return []
    holds = []
    for entry in sorted(directory.glob("*.json")):
        try:
            holds.append(Hold(**json.loads(entry.read_text())))
        except (OSError, ValueError, TypeError) as exc:
            # A file that cannot be read holds nothing, but says so: it may hide a plan.
            log.warning("backlog hold %s cannot be read (%s): it is ignored", entry, exc)
    return holds


class Holds:
    """Every plan's holds at one moment: which images are held, and the fixity verdicts."""

    def __init__(self, holds: list[Hold]) -> None:
        self.plans = holds
        self.active = []
        for hold in holds:
            if not hold.holding:
                continue
            if hold.stale():
                log.warning("backlog plan %s in %s died while planning: it holds nothing", hold.plan, hold.workdir)
                continue
            self.active.append(hold)
        self.fixity: dict[int, str] = {}
        for hold in holds:
            for image, why in hold.fixity.items():
                self.fixity[int(image)] = f"{why} (backlog plan in {hold.workdir})"

    def _upto(self, hold: Hold) -> int:
        return EVERYTHING if hold.upto is None else hold.upto

    def held_by(self, image_id: int) -> Hold | None:
        """The plan that holds this image, if one does."""
        for hold in self.active:
            if image_id <= self._upto(hold):
                k = bisect.bisect_left(hold.released, image_id)
                if k == len(hold.released) or hold.released[k] != image_id:
                    return hold
        return None

    def skip(self, after: int) -> int:
        """Where to go on asking for images after ``after``: the last id before the next image
        no plan holds (``EVERYTHING`` when there is none), so that a poll does not walk through
        the millions of images a plan holds."""
        while True:
            moved = after
            for hold in self.active:
                upto = self._upto(hold)
                if moved >= upto:
                    continue
                k = bisect.bisect_right(hold.released, moved)
                nxt = hold.released[k] if k < len(hold.released) else None
                moved = upto if nxt is None else max(moved, nxt - 1)
            if moved == after:
                return after
            after = moved


def load(state_dir: str) -> Holds:
    return Holds(read_all(state_dir))


@contextlib.contextmanager
def annotate_lock(state_dir: str) -> Iterator[None]:
    """Held by every save of the scheduler and of the backlog's ingest on this host."""
    atomic.private_dir(state_dir)
    with atomic.locked(os.path.join(state_dir, ANNOTATE_LOCK), "saving annotations"):
        yield
