"""The code index the scheduler keeps in its state directory (docs/index.md, "The scheduler's
index").

The index is the worker's (``omero-iscc index``, in ``state_dir/index``). One row per image
link of a code annotation: its id is the ``ImageAnnotationLink`` id, which names exactly one
image and one annotation (a Fileset's one annotation is linked to each of its images, and a
query must name images), and is unique across the files' and the pixels' namespaces. Each row
carries the image's group and owner ids, by which a reader's view is filtered.

Kept up to date from the server, in three ways:

- **Incrementally**, each poll: the code links above a high-water mark (the highest link id
  read so far), whoever made them: the scheduler, the scripts, the CLI, the backlog, another
  host. The codes the scheduler wrote in the poll are among them.
- **Reconciled**, every ``index_reconcile_polls`` polls: the live link ids of both namespaces
  (one short row per link, paged by id) are merged with the index's ids, both in id order:
  rows whose link is gone (a deleted or replaced annotation, a deleted image) are removed,
  links the index lacks (saved late under a lower id) and rows whose image changed group or
  owner are read again and added. Memory: the differences, never the whole list.
- **Rebuilt** from the server's annotations when the index is missing, damaged or was never
  completed, with progress in the log. An index changed by another writer (or left by a stop
  between an update and the state's save) is reconciled at once instead.

``state_dir/index-state.json`` keeps the mark, the index's generation after the last write
(another writer shows as a different one), whether a whole build finished, when it was last
brought up to date and for how long readers may trust it, and the images still owed a
duplicates check.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field

from . import state as state_mod
from .gateway import READ_PAGE, CodeLink, Omero
from .statuses import ExitStatus
from .worker import Streamed, run_command

log = logging.getLogger(__name__)

INDEX_DIR = "index"
INDEX_STATE = "index-state.json"
#: The annotation key that holds each space's code.
CODE_KEYS = {"files": "iscc:sum", "pixels": "iscc:pixels"}
#: A rebuild logs its progress every this many links read.
PROGRESS_EVERY = 50_000
#: Rows per page of the server reads.
PAGE = READ_PAGE
#: All segments are merged when there are more than this many, or when removed rows are more
#: than this share of the rows on disk.
COMPACT_SEGMENTS = 24
COMPACT_DEAD_SHARE = 0.25
#: Images kept waiting for a duplicates check when the checks cannot run (the oldest go first).
MAX_PENDING = 100_000
#: Link ids whose code the index refused, kept so a reconciliation does not read them again.
MAX_REFUSED = 100_000
_DATAHASH = re.compile(r"^1e20[0-9a-f]{64}$")


class IndexFailure(Exception):
    """The index cannot be used: missing, damaged, or held by another writer."""


# -- who may see what ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Reader:
    """What a user may read, as the index filters it: every row of ``groups`` (groups whose
    members read each other's data, and groups the user leads), and their own rows in
    ``own_groups`` (private groups). An administrator reads everything."""

    admin: bool
    user: int
    groups: tuple = ()
    own_groups: tuple = ()

    @classmethod
    def of(cls, view: dict) -> Reader:
        """From ``Omero.session_view()``."""
        leader = set(view["leader_of"])
        member = view["member_of"]
        groups = tuple(sorted(g for g in member if view["group_read"].get(g) or g in leader))
        own = tuple(sorted(g for g in member if g not in groups))
        return cls(bool(view["admin"]), int(view["user"]), groups, own)

    def visible(self) -> dict | None:
        """The query's ``visible`` field (``None``: every row, an administrator's view)."""
        if self.admin:
            return None
        return {"groups": list(self.groups), "owner": self.user, "own_groups": list(self.own_groups)}

    def may_see(self, group: int, owner: int) -> bool:
        return self.admin or group in self.groups or (owner == self.user and group in self.own_groups)


# -- the worker's index -------------------------------------------------------------------------


class CodeIndex:
    """The worker's ``index`` commands on one directory."""

    def __init__(self, worker: str, directory: str) -> None:
        self.worker = worker
        self.dir = directory

    def exists(self) -> bool:
        return os.path.isfile(os.path.join(self.dir, "MANIFEST"))

    def _cmd(self, *args: str) -> list[str]:
        return [self.worker, "index", args[0], self.dir, *args[1:]]

    def _failure(self, what: str, rc: int, err: bytes) -> IndexFailure:
        text = err.decode(errors="replace").strip().splitlines()
        return IndexFailure(f"omero-iscc index {what} (exit status {rc}): {text[-1] if text else 'no message'}")

    def _stream(self, command: list[str], lines: Iterable[str]) -> tuple[int, list[dict], bytes]:
        """Runs ``command`` with ``lines`` streamed into it; returns its exit status, the
        answer lines that carry an error, and its standard error."""
        run = Streamed(command, (line.encode() for line in lines))
        refused = [json.loads(raw) for raw in run if b'"error"' in raw]
        status = run.finish()
        if run.failure is not None:
            if isinstance(run.failure, BrokenPipeError):
                raise self._failure(command[2], status, run.stderr)
            raise run.failure
        return status, refused, run.stderr

    def _update(self, what: str, lines: Iterable[str]) -> list[dict]:
        rc, refused, err = self._stream(self._cmd(what), lines)
        if rc not in (ExitStatus.SUCCESS, ExitStatus.FAILURE):
            raise self._failure(what, rc, err)
        return refused

    def add(self, records: Iterable[dict]) -> list[dict]:
        """Adds (or replaces) codes; returns the answers of the records refused."""
        return self._update("add", (json.dumps(r) + "\n" for r in records))

    def rebuild(self, records: Iterable[dict]) -> list[dict]:
        """Replaces the whole index with ``records`` (created if missing)."""
        return self._update("rebuild", (json.dumps(r) + "\n" for r in records))

    def remove(self, ids: Iterable[int]) -> None:
        self._update("remove", (json.dumps({"id": i}) + "\n" for i in ids))

    def _run(self, *args: str) -> bytes:
        proc = run_command(self._cmd(*args))
        if proc.returncode != ExitStatus.SUCCESS:
            raise self._failure(args[0], proc.returncode, proc.stderr)
        return proc.stdout

    def stats(self) -> dict:
        return json.loads(self._run("stats"))

    def verify(self) -> list[str]:
        """Why segments are damaged (empty: the index is whole)."""
        proc = run_command(self._cmd("verify"))
        if proc.returncode == ExitStatus.SUCCESS:
            return []
        lines = [json.loads(raw) for raw in proc.stdout.splitlines() if raw.strip()]
        found = [f"{line.get('file')}: {line['error']}" for line in lines if line.get("error")]
        return found or [proc.stderr.decode(errors="replace").strip() or f"exit status {proc.returncode}"]

    def compact(self) -> None:
        self._run("compact")

    def query(self, queries: list[dict], threshold: int) -> list[dict]:
        """One answer per query, in order (``matches``, or ``error``)."""
        if not queries:
            return []
        proc = run_command(
            self._cmd("query", "--threshold", str(threshold)),
            input="".join(json.dumps(q) + "\n" for q in queries).encode(),
        )
        if proc.returncode not in (ExitStatus.SUCCESS, ExitStatus.FAILURE):
            raise self._failure("query", proc.returncode, proc.stderr)
        answers = [json.loads(raw) for raw in proc.stdout.splitlines() if raw.strip()]
        if len(answers) != len(queries):
            raise IndexFailure(f"omero-iscc index query answered {len(answers)} of {len(queries)} queries")
        return answers

    def rows(self) -> Iterator[dict]:
        """Every row, by id (``index list``), as it streams."""
        run = Streamed(self._cmd("list"))
        try:
            for raw in run:
                yield json.loads(raw)
        finally:
            status = run.finish()
        if status != ExitStatus.SUCCESS:
            raise self._failure("list", status, run.stderr)


def record(link: CodeLink, space: str) -> dict | None:
    """The index's add record of a code link, or ``None`` when it holds no code."""
    code = link.values.get(CODE_KEYS[space])
    if not code:
        return None
    out = {"id": link.link, "iscc": code, "group": link.group, "owner": link.owner}
    datahash = link.values.get("iscc:datahash") or ""
    if _DATAHASH.match(datahash):
        out["datahash"] = datahash
    if space == "pixels":
        out["code"] = "pixels"
    return out


# -- its state ----------------------------------------------------------------------------------


@dataclass
class IndexState:
    #: The highest link id read from the server.
    mark: int = 0
    #: The index's generation after the last write made here.
    generation: int | None = None
    #: A whole build has finished (until then readers never use the index).
    complete: bool = False
    #: The namespaces indexed, per space.
    namespaces: dict = field(default_factory=dict)
    polls_since_reconcile: int = 0
    #: When the index was last brought up to date (time.time()), and for how long after that
    #: readers may answer from it.
    synced_at: float | None = None
    fresh_for: float = 0.0
    #: Link ids whose code the index refused (a malformed code a user wrote).
    refused: list = field(default_factory=list)
    #: Images annotated by the scheduler whose duplicates check has not run yet.
    pending: list = field(default_factory=list)


def load_state(state_dir: str) -> IndexState:
    path = os.path.join(state_dir, INDEX_STATE)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return IndexState()
    with open(fd, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except ValueError:
            log.warning("code index: %s is not JSON; the index will be rebuilt", path)
            return IndexState()
    known = {k: v for k, v in data.items() if k in IndexState.__dataclass_fields__}
    return IndexState(**known)


def save_state(state_dir: str, st: IndexState) -> None:
    """Atomically, through a fresh temporary file (as ``state.save``)."""
    state_mod.ensure_dir(state_dir)
    fd, tmp = tempfile.mkstemp(prefix=INDEX_STATE + ".", suffix=".tmp", dir=state_dir)
    try:
        with open(fd, "w", encoding="utf-8") as f:
            json.dump(asdict(st), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, os.path.join(state_dir, INDEX_STATE))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# -- the scheduler's index ----------------------------------------------------------------------


class KeptIndex:
    """The index the scheduler keeps, brought up to date once per poll by :meth:`step`."""

    def __init__(
        self,
        worker: str,
        state_dir: str,
        namespaces: dict[str, str],
        reconcile_polls: int = 10,
        fresh_for: float = 600.0,
        clock=time.time,
    ) -> None:
        self.state_dir = state_dir
        self.index = CodeIndex(worker, os.path.join(state_dir, INDEX_DIR))
        self.namespaces = dict(namespaces)
        self.reconcile_polls = reconcile_polls
        self.fresh_for = fresh_for
        self.clock = clock
        self.state = load_state(state_dir)
        #: Whether this process has checked the index's segments (once per run).
        self.verified = False
        #: The next step reconciles whatever the count of polls.
        self.must_reconcile = False

    def save(self) -> None:
        save_state(self.state_dir, self.state)

    def _generation(self) -> int:
        return int(self.index.stats()["generation"])

    def _why_rebuild(self) -> str | None:
        """Why the index cannot be carried on from, or ``None``."""
        st = self.state
        if not self.index.exists():
            return "there is no index yet" if not st.complete else "the index is missing"
        if not st.complete:
            return "its last build did not finish"
        if st.namespaces != self.namespaces:
            return "the namespaces changed"
        try:
            generation = self._generation()
        except IndexFailure as exc:
            return f"it cannot be read ({exc})"
        if generation != st.generation:
            # Another writer, or a stop between an update and the state's save: whatever the
            # difference, a reconciliation finds it, at a fraction of a rebuild's reading.
            log.info("code index: generation %d, expected %s: reconciling", generation, st.generation)
            self.must_reconcile = True
        if not self.verified:
            damaged = self.index.verify()
            if damaged:
                return "it is damaged: " + "; ".join(damaged[:3])
            self.verified = True
        return None

    def rebuild(self, omero: Omero) -> None:
        """Replaces the index with the server's code links, read page by page by link id and
        streamed into the worker; logs its progress. Built in a directory beside it, then put
        in its place: whatever the old one held (a damaged manifest too) is not read."""
        started = time.monotonic()
        self.state.complete = False
        self.state.refused = []
        self.save()
        fresh = CodeIndex(self.index.worker, self.index.dir + ".new")
        shutil.rmtree(fresh.dir, ignore_errors=True)
        counts = {space: 0 for space in self.namespaces}
        marks = [0]
        refused_ids: set[int] = set()

        def records() -> Iterator[dict]:
            read = 0
            for space, namespace in self.namespaces.items():
                for page in omero.code_links(namespace, page=PAGE):
                    for link in page:
                        rec = record(link, space)
                        marks[0] = max(marks[0], link.link)
                        if rec is not None:
                            counts[space] += 1
                            yield rec
                    before, read = read, read + len(page)
                    if read // PROGRESS_EVERY > before // PROGRESS_EVERY:
                        log.info("code index: rebuilding: %d code links read (%s)", read, _counts(counts))

        refused = fresh.rebuild(records())
        old = self.index.dir + ".old"
        shutil.rmtree(old, ignore_errors=True)
        if os.path.lexists(self.index.dir):
            os.rename(self.index.dir, old)
        os.rename(fresh.dir, self.index.dir)
        shutil.rmtree(old, ignore_errors=True)
        refused_ids.update(int(r["id"]) for r in refused if r.get("id") is not None)
        self.state.mark = marks[0]
        self.state.refused = sorted(refused_ids)[-MAX_REFUSED:]
        self.state.generation = self._generation()
        self.state.namespaces = dict(self.namespaces)
        self.state.complete = True
        self.state.polls_since_reconcile = 0
        self.verified = True
        self._synced()
        log.info(
            "code index: rebuilt from the server's annotations: %s, %d refused, in %.1f s",
            _counts(counts),
            len(refused_ids),
            time.monotonic() - started,
        )

    def _synced(self) -> None:
        self.state.synced_at = self.clock()
        self.state.fresh_for = self.fresh_for
        self.save()

    def _add(self, records: list[dict]) -> None:
        if not records:
            return
        refused = self.index.add(records)
        if refused:
            ids = {int(r["id"]) for r in refused if r.get("id") is not None}
            log.warning("code index: %d code(s) refused (malformed): links %s", len(ids), sorted(ids)[:10])
            self.state.refused = sorted(set(self.state.refused) | ids)[-MAX_REFUSED:]

    def sync(self, omero: Omero) -> list[CodeLink]:
        """Adds the code links above the mark; returns them."""
        new: list[CodeLink] = []
        records: list[dict] = []
        mark = self.state.mark
        for space, namespace in self.namespaces.items():
            for page in omero.code_links(namespace, after=self.state.mark, page=PAGE):
                for link in page:
                    mark = max(mark, link.link)
                    rec = record(link, space)
                    if rec is not None:
                        records.append(rec)
                        new.append(link)
        self._add(records)
        self.state.mark = mark
        self.state.generation = self._generation()
        if records:
            log.info("code index: %d new code link(s) added", len(records))
        return new

    def reconcile(self, omero: Omero) -> tuple[int, int]:
        """Merges the server's live code links with the index's rows; removes rows whose link
        is gone, reads again links the index lacks or holds with another group or owner.
        Returns (removed, added)."""
        started = time.monotonic()
        live = heapq.merge(*(self._live(omero, space, ns) for space, ns in self.namespaces.items()))
        rows = ((int(r["id"]), r.get("code", "files"), int(r["group"]), int(r["owner"])) for r in self.index.rows())
        gone: list[int] = []
        missing: dict[str, list[int]] = {space: [] for space in self.namespaces}
        refused = set(self.state.refused)
        server = next(live, None)
        row = next(rows, None)
        while server is not None or row is not None:
            if row is None or (server is not None and server[0] < row[0]):
                if server[0] not in refused:
                    missing[server[1]].append(server[0])
                server = next(live, None)
            elif server is None or row[0] < server[0]:
                gone.append(row[0])
                row = next(rows, None)
            else:
                if server != row:  # another space, group or owner: read again
                    missing[server[1]].append(server[0])
                server, row = next(live, None), next(rows, None)
        if gone:
            self.index.remove(gone)
        added = 0
        for space, ids in missing.items():
            if ids:
                links = omero.code_links_of(self.namespaces[space], link_ids=ids)
                records = [r for r in (record(link, space) for link in links) if r is not None]
                self._add(records)
                added += len(records)
        self.state.generation = self._generation()
        self.state.polls_since_reconcile = 0
        log.info(
            "code index: reconciled with the server in %.1f s: %d row(s) removed, %d added or updated",
            time.monotonic() - started,
            len(gone),
            added,
        )
        return len(gone), added

    @staticmethod
    def _live(omero: Omero, space: str, namespace: str) -> Iterator[tuple[int, str, int, int]]:
        last = None
        for page in omero.live_code_links(namespace, CODE_KEYS[space], page=PAGE):
            for link, group, owner in page:
                if link != last:  # a map with the key twice gives its link twice
                    last = link
                    yield (link, space, group, owner)

    def maybe_compact(self) -> None:
        stats = self.index.stats()
        on_disk = stats["codes"] + stats["dead"]
        if stats["segments"] > COMPACT_SEGMENTS or (on_disk and stats["dead"] > COMPACT_DEAD_SHARE * on_disk):
            started = time.monotonic()
            self.index.compact()
            self.state.generation = self._generation()
            log.info(
                "code index: %d segment(s), %d removed row(s): merged in %.1f s",
                stats["segments"],
                stats["dead"],
                time.monotonic() - started,
            )

    def step(self, omero: Omero, full: bool = True) -> list[CodeLink]:
        """Once per poll: rebuilds the index if it must, else adds the new code links, and
        every ``reconcile_polls`` polls reconciles it; returns the code links added (all of
        them after a rebuild: none are new to a reader then). ``full=False`` (a script's poll,
        within its time budget): only the incremental step; a rebuild or reconciliation due
        is left to the scheduler (``IndexFailure`` when the index cannot be carried on)."""
        why = self._why_rebuild()
        if why is not None and not full:
            raise IndexFailure(f"the index needs a rebuild ({why}): left to the scheduler")
        if why is not None:
            log.info("code index: rebuilding %s: %s", self.index.dir, why)
            self.rebuild(omero)
            return []
        new = self.sync(omero)
        self.state.polls_since_reconcile += 1
        due = self.reconcile_polls and self.state.polls_since_reconcile >= self.reconcile_polls
        if full and (due or self.must_reconcile):
            self.reconcile(omero)
            self.must_reconcile = False
        if full:
            self.maybe_compact()
        self._synced()
        return new


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {space} code(s)" for space, n in counts.items())


# -- reading it (find, duplicates) --------------------------------------------------------------


def open_kept(state_dir: str | None, worker: str, namespaces: dict[str, str], clock=time.time) -> CodeIndex | None:
    """The scheduler's index, if it keeps one in ``state_dir`` for these namespaces, it was
    built whole, and it was brought up to date recently enough to answer from; else ``None``
    (the caller reads the server). Never raises for an index it cannot use."""
    if not state_dir:
        return None
    try:
        st = load_state(state_dir)
    except OSError:
        return None
    index = CodeIndex(worker, os.path.join(state_dir, INDEX_DIR))
    if not st.complete or st.synced_at is None or not index.exists():
        return None
    if any(st.namespaces.get(space) != ns for space, ns in namespaces.items()):
        return None
    age = clock() - st.synced_at
    if age > st.fresh_for:
        log.info("code index: last brought up to date %.0f s ago: reading the server instead", age)
        return None
    return index
