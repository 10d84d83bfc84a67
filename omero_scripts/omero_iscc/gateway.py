"""Everything that talks to an OMERO server, in one place.

``Omero`` is the small interface the rest of the package uses; ``BlitzOmero`` implements it
over a ``BlitzGateway`` connection. Methods return real ``omero.model`` objects (images with
their owner, group and Fileset; original files; MapAnnotations with their values), so the
logic elsewhere reads the same objects whether they come from a server or, in the tests,
from the stand-in server built from the same classes.

What a real server charges for, and how this module keeps it bounded:

- Images and their files are loaded by separate queries: a collection fetch (``usedFiles``)
  multiplies rows, images x files, before the server pages or de-duplicates them.
- Long id lists go in pages of ``ID_PAGE`` ids: a list binds one JDBC parameter per element
  (PostgreSQL rewrites nothing, ``(:ids)`` included), up to the driver's cap, and no single
  answer grows without bound.
- No query pages over a collection fetch; server-wide reads page by id over projected values.
- Annotations are saved one call per batch of images of one owner and group.

Reads span all groups (``omero.group = -1``); writes happen in the object's group (a new
object saved with group -1 is refused). An annotation made for another user's image is the
owner's, so that the owner sees it even in a private group: a full administrator sets the
owner of the new objects directly; with ``Sudo`` (or as a leader of the group) they are saved
in a session of the owner (the owner's and the group's NAMES), one per owner and group,
renewed before its lifetime ends; anyone else the image lets annotate (a member of a
read-annotate or read-write group) annotates in their own name. Deletes (``Delete2``) are one
transaction each: they are submitted per owner, in a session that may delete, waited for to
their end, and a refused one is retried object by object so that one refusal keeps only its
own object.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

#: Ids per query for id lists (through ``(:ids)``).
ID_PAGE = 1000
#: Images per save call.
SAVE_BATCH = 500
#: Rows per page of server-wide reads.
READ_PAGE = 5000
#: A sudo session's whole lifetime (ms): the server ends it then, whatever it is doing.
SUDO_TTL_MS = 600_000
#: A cached sudo session is replaced once this share of its lifetime has passed.
SUDO_RENEW_AFTER = 0.5
#: Bytes per RawFileStore write of an upload (omero-py's helpers write 10,000).
UPLOAD_BLOCK = 1 << 20
#: Every privilege of a full administrator (OMERO's ``LightAdminPrivileges``): a full
#: administrator sets the owner of new objects directly instead of opening sessions as them.
FULL_ADMIN = frozenset(
    {
        "Chgrp",
        "Chown",
        "DeleteFile",
        "DeleteManagedRepo",
        "DeleteOwned",
        "DeleteScriptRepo",
        "ModifyGroup",
        "ModifyGroupMembership",
        "ModifyUser",
        "ReadSession",
        "Sudo",
        "WriteFile",
        "WriteManagedRepo",
        "WriteOwned",
        "WriteScriptRepo",
    }
)
#: How long a Delete2 request is waited for: loops of DELETE_POLL_MS (a request given up on
#: is cancelled by the server, and what it was to delete stays).
DELETE_WAIT_LOOPS = 1200
DELETE_POLL_MS = 500

#: Containers that can be expanded, and what they contain: (child kind, HQL of
#: [parent id, child id] rows for the parents in ``:ids``).
CHILD_QUERIES = {
    "Project": ("Dataset", "select l.parent.id, l.child.id from ProjectDatasetLink l where l.parent.id in (:ids)"),
    "Dataset": ("Image", "select l.parent.id, l.child.id from DatasetImageLink l where l.parent.id in (:ids)"),
    "Screen": ("Plate", "select l.parent.id, l.child.id from ScreenPlateLink l where l.parent.id in (:ids)"),
    "Plate": ("Image", "select ws.well.plate.id, ws.image.id from WellSample ws where ws.well.plate.id in (:ids)"),
    "Fileset": ("Image", "select i.fileset.id, i.id from Image i where i.fileset.id in (:ids)"),
}

Q_EXISTING = "select o.id from {kind} o where o.id in (:ids)"
#: Who owns objects, to delete each in a session that may: id, owner id and name, group id and name.
Q_OWNERS = (
    "select o.id, o.details.owner.id, o.details.owner.omeName, o.details.group.id, o.details.group.name"
    " from {kind} o where o.id in (:ids)"
)
Q_IMAGES = (
    "select i from Image i join fetch i.details.owner join fetch i.details.group"
    " left outer join fetch i.fileset where i.id in (:ids) order by i.id"
)
#: The entries of Filesets with their files, in each Fileset's import order (``usedFiles`` is a
#: list: ``index(e)``), paged by rows.
Q_FILESET_ENTRIES = (
    "select e from Fileset f join f.usedFiles e join fetch e.originalFile o left outer join fetch o.hasher"
    " where f.id in (:ids) order by f.id, index(e)"
)
#: The files of images imported before OMERO 5, many images per query.
Q_LEGACY_FILES = (
    "select m from PixelsOriginalFileMap m join fetch m.parent o left outer join fetch o.hasher"
    " join fetch m.child p where p.image.id in (:ids) order by o.id"
)
#: ``distinct``: the fetch over ``mapValue`` returns a row per pair (and the link once per row).
Q_ANNOTATION_LINKS = (
    "select distinct l from ImageAnnotationLink l join fetch l.child a left outer join fetch a.mapValue"
    " where a.ns = :ns and l.parent.id in (:ids) order by a.id"
)
Q_UNANNOTATED = (
    "select i.id from Image i where i.id > :after and not exists ("
    " select l from ImageAnnotationLink l where l.parent = i and l.child.ns = :ns) order by i.id"
)
Q_FILESET_IMAGES = (
    "select i.id from Image i where i.fileset.id in ("
    " select j.fileset.id from Image j where j.id in (:ids)) order by i.id"
)
#: One row per (image link, key) of the annotations in a namespace: link id, image id, key,
#: value; paged by link id (``:after``). An annotation shared by a Fileset's images has a row
#: set per image.
Q_CODES_PAGE = (
    "select l.id, l.parent.id, mv.name, mv.value from ImageAnnotationLink l join l.child a join a.mapValue mv"
    " where a.ns = :ns and l.id > :after and mv.name in ('iscc:sum', 'iscc:datahash', 'iscc:timestamp')"
    " order by l.id"
)
Q_NEWEST_CODES = (
    "select l.id, l.parent.id, mv.name, mv.value from ImageAnnotationLink l join l.child a join a.mapValue mv"
    " where a.ns = :ns and a.id in (:ids) and mv.name in ('iscc:sum', 'iscc:datahash', 'iscc:timestamp')"
    " order by l.id desc"
)
Q_NEWEST_ANNOTATIONS = "select a.id from MapAnnotation a where a.ns = :ns order by a.id desc"
Q_ANNOTATION_IMAGES = "select l.id, l.parent.id, l.child.id from ImageAnnotationLink l where l.child.id in (:ids)"
Q_FILE_OF_ANNOTATION = "select a.file.id from FileAnnotation a where a.id = :id"
#: The pixels of images: image id, pixels id, sizes X Y Z C T, pixel type, image name, the
#: reader's format (may be missing), group id, Fileset id (missing before OMERO 5 and for images
#: registered without files). An image has one Pixels in practice; if it had more, the first is
#: its primary one.
Q_PIXELS = (
    "select i.id, p.id, p.sizeX, p.sizeY, p.sizeZ, p.sizeC, p.sizeT, t.value, i.name, f.value, i.details.group.id,"
    " fs.id from Pixels p join p.image i join p.pixelsType t left outer join i.format f left outer join i.fileset fs"
    " where i.id in (:ids) order by i.id, p.id"
)
#: Pixel codes of images, like ``Q_CODES_PAGE``.
Q_PIXEL_CODES_PAGE = (
    "select l.id, l.parent.id, mv.name, mv.value from ImageAnnotationLink l join l.child a join a.mapValue mv"
    " where a.ns = :ns and l.id > :after and mv.name in ('iscc:pixels', 'iscc:datahash', 'iscc:dimensions',"
    " 'iscc:pixel_type') order by l.id"
)


#: The code index: one row per (image link, key) of code annotations in a namespace: link id,
#: image id, annotation id, the image's group and owner ids, key, value. Paged by link id.
_CODE_LINK_SELECT = (
    "select l.id, i.id, a.id, i.details.group.id, i.details.owner.id, mv.name, mv.value"
    " from ImageAnnotationLink l join l.parent i join l.child a join a.mapValue mv"
    " where a.ns = :ns and mv.name in ('iscc:sum', 'iscc:pixels', 'iscc:datahash')"
)
Q_CODE_LINKS = _CODE_LINK_SELECT + " and l.id > :after order by l.id"
Q_CODE_LINKS_OF_IMAGES = _CODE_LINK_SELECT + " and i.id in (:ids) order by l.id"
Q_CODE_LINKS_BY_ID = _CODE_LINK_SELECT + " and l.id in (:ids) order by l.id"
#: One short row per image link of an annotation that has the code's key: link id, the
#: image's group and owner ids (a reconciliation's view of the server).
Q_LIVE_CODE_LINKS = (
    "select l.id, i.details.group.id, i.details.owner.id from ImageAnnotationLink l join l.parent i"
    " join l.child a join a.mapValue mv where a.ns = :ns and mv.name = :key and l.id > :after order by l.id"
)
Q_LINK_IMAGES = "select l.id, l.parent.id, l.child.id from ImageAnnotationLink l where l.id in (:ids)"


class Omero(Protocol):
    """The OMERO calls the helper makes."""

    def repository_root(self) -> str | None: ...
    def is_admin(self) -> bool: ...
    def privileges(self) -> set[str]: ...
    def may_act_as_owner(self, group_id: int) -> bool: ...
    def user_id(self) -> int: ...
    def script_timeout(self) -> float: ...
    def children(self, kind: str, ids: list[int]) -> list[int]: ...
    def existing_ids(self, kind: str, ids: list[int]) -> list[int]: ...
    def images(self, ids: list[int]) -> list: ...
    def fileset_files(self, fileset_ids: list[int]) -> dict[int, list]: ...
    def legacy_files(self, image_ids: list[int]) -> dict[int, list]: ...
    def repository_template(self) -> str | None: ...
    def iscc_annotations(self, image_ids: list[int], namespace: str) -> dict[int, list]: ...
    def save_shared_annotations(self, units: list, namespace: str, pairs_of, attachment_of) -> dict[int, object]: ...
    def annotation_images(self, annotation_ids: list[int]) -> list[tuple[int, int, int]]: ...
    def unlink(self, link_ids: list[int]) -> list[int]: ...
    def file_annotation_bytes(self, annotation_id: int) -> bytes: ...
    def delete_annotations(self, annotation_ids: list[int]) -> list[int]: ...
    def read_file(self, original_file_id: int, chunk_size: int) -> Iterator[bytes]: ...
    def unannotated_images(self, namespace: str, limit: int, after: int = 0) -> list[int]: ...
    def fileset_images(self, image_ids: list[int]) -> list[int]: ...
    def attach_file(
        self, kind: str, obj_id: int, name: str, data: bytes, namespace: str, mimetype: str, owner: int | None = None
    ): ...
    def upload_file(self, name: str, data: bytes, mimetype: str, group_id: int | None = None): ...
    def place_of(self, kind: str, obj_id: int) -> tuple[int, int] | None: ...
    def own_place(self) -> tuple[int, int]: ...
    def seen_by_readers(self, group_id: int, owner_id: int, image_ids: list[int]) -> set[int]: ...
    def administrators_group(self) -> int: ...
    def annotated_codes(self, namespace: str, page: int = READ_PAGE) -> Iterator[list[tuple[int, dict]]]: ...
    def newest_codes(self, namespace: str, limit: int) -> list[tuple[int, dict]]: ...
    def close_sudo_sessions(self) -> None: ...
    def pixels_of(self, image_ids: list[int]) -> list[list]: ...
    def open_pixels(self, pixels_id: int, group_id: int) -> PixelReader: ...
    def max_plane_size(self) -> tuple[int, int]: ...
    def annotated_pixel_codes(self, namespace: str, page: int = READ_PAGE) -> Iterator[list[tuple[int, dict]]]: ...
    # -- the code index (codeindex.py, notices.py) ----------------------------------------------
    def code_links(self, namespace: str, after: int = 0, page: int = READ_PAGE) -> Iterator[list[CodeLink]]: ...
    def code_links_of(self, namespace: str, image_ids: list[int] | None = None, link_ids=None) -> list[CodeLink]: ...
    def live_code_links(self, namespace: str, key: str, page: int = READ_PAGE) -> Iterator[list[tuple]]: ...
    def link_images(self, link_ids: list[int]) -> dict[int, tuple[int, int]]: ...
    def session_view(self) -> dict: ...
    def owner_session(self, image) -> Omero: ...


class NotPermitted(Exception):
    """The session may not do this for this object; the message names the privilege it needs."""


def pages(items: list, size: int = ID_PAGE) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _val(x):
    return None if x is None else getattr(x, "val", x)


class BlitzOmero:
    """``Omero`` over a ``BlitzGateway`` connection (the script's or the scheduler's)."""

    def __init__(self, conn) -> None:
        self.conn = conn
        conn.SERVICE_OPTS.setOmeroGroup(-1)
        self._sudo: dict[tuple[int, int], tuple[BlitzOmero, float]] = {}
        self._privileges: frozenset | None = None
        self._members: dict[int, set[int]] = {}

    # -- reading ---------------------------------------------------------------------------
    @staticmethod
    def _params(limit: int | None = None, offset: int = 0, **values):
        """Query parameters, the one place they are built: per name an id, a list of ids or a
        string; ``limit``: at most that many rows, from row ``offset``."""
        from omero.rtypes import rstring
        from omero.sys import ParametersI

        p = ParametersI()
        for name, value in values.items():
            if isinstance(value, str):
                p.add(name, rstring(value))
            elif isinstance(value, (list, tuple)):
                p.addLongs(name, list(value))
            else:
                p.addLong(name, value)
        if limit:
            p.page(offset, limit)
        return p

    def _query(self, hql: str, limit: int | None = None, offset: int = 0, **values) -> list:
        return list(
            self.conn.getQueryService().findAllByQuery(
                hql, self._params(limit, offset, **values), self.conn.SERVICE_OPTS
            )
        )

    def _rows(self, hql: str, limit: int | None = None, **values) -> list[list]:
        rows = self.conn.getQueryService().projection(hql, self._params(limit, **values), self.conn.SERVICE_OPTS)
        return [[_val(x) for x in row] for row in rows if row]

    def _paged(self, hql: str, ids: list[int], query=None, **values) -> list:
        """Runs ``hql`` (with ``(:ids)``) once per page of ``ids``."""
        query = query or self._query
        out: list = []
        for page in pages(list(ids)):
            out.extend(query(hql, ids=page, **values))
        return out

    def repository_root(self) -> str | None:
        repos = self.conn.c.sf.sharedResources().repositories()
        for desc, proxy in zip(repos.descriptions, repos.proxies):
            if proxy is not None and proxy.ice_isA("::omero::grid::ManagedRepository"):
                return os.path.join(desc.path.val, desc.name.val)
        return None

    def is_admin(self) -> bool:
        return bool(self.conn.isAdmin())

    def privileges(self) -> set[str]:
        """The session's administrator privileges (read once: they belong to the session)."""
        if self._privileges is None:
            admin = self.conn.getAdminService()
            self._privileges = frozenset(_val(p.getValue()) for p in admin.getCurrentAdminPrivileges())
        return set(self._privileges)

    def is_full_admin(self) -> bool:
        return self.privileges() >= FULL_ADMIN

    def led_groups(self) -> set[int]:
        """The groups this session's user leads (who may open sessions of their members)."""
        return {int(g) for g in self.conn.getEventContext().leaderOfGroups}

    def may_act_as_owner(self, group_id: int) -> bool:
        """Whether annotations for another user's image in ``group_id`` can be made theirs:
        a full administrator sets the owner; ``Sudo`` or leading the group opens their session."""
        return self.is_full_admin() or "Sudo" in self.privileges() or group_id in self.led_groups()

    def user_id(self) -> int:
        return int(self.conn.getUserId())

    def script_timeout(self) -> float:
        """Seconds this session may live: ``omero.scripts.timeout`` (a script's session lives
        exactly that long, ``InteractiveProcessorI``), and the session's own time to live
        where it is shorter or the setting cannot be read; OMERO's default hour otherwise."""
        import omero

        known = []
        try:
            value = (self.conn.getConfigService().getConfigValue("omero.scripts.timeout") or "").strip()
            if value.isdigit() and int(value) > 0:
                known.append(int(value))
        except omero.ServerError:
            pass  # not readable for this user: the session's lifetime says the same
        try:
            session = self.conn.getSessionService().getSession(self.conn.c.getSessionId())
            ttl = _val(session.getTimeToLive())
            if ttl:
                known.append(int(ttl))
        except omero.ServerError:
            pass
        return min(known) / 1000 if known else 3600.0

    def children(self, kind: str, ids: list[int]) -> list[int]:
        """The children of the parents in ``ids``, parent by parent in the given order."""
        by_parent: dict[int, list[int]] = {}
        for parent, child in self._paged(CHILD_QUERIES[kind][1], ids, query=self._rows):
            by_parent.setdefault(parent, []).append(child)
        return [c for p in ids for c in sorted(by_parent.get(p, []))]

    def existing_ids(self, kind: str, ids: list[int]) -> list[int]:
        return [row[0] for row in self._paged(Q_EXISTING.format(kind=kind), ids, query=self._rows)]

    def images(self, ids: list[int]) -> list:
        return self._paged(Q_IMAGES, sorted(set(ids)))

    def fileset_files(self, fileset_ids: list[int]) -> dict[int, list]:
        """Each Fileset's entries, with their original files, in import order; read in pages of
        ``READ_PAGE`` rows, so that no answer holds a whole 100,000-file Fileset."""
        out: dict[int, list] = {i: [] for i in fileset_ids}
        for page in pages(sorted(set(fileset_ids))):
            offset = 0
            while True:
                rows = self._query(Q_FILESET_ENTRIES, offset=offset, limit=READ_PAGE, ids=page)
                for entry in rows:
                    out.setdefault(entry.getFileset().getId().val, []).append(entry)
                if len(rows) < READ_PAGE:
                    break
                offset += len(rows)
        return out

    def legacy_files(self, image_ids: list[int]) -> dict[int, list]:
        """The original files of images imported before OMERO 5, by image (paged queries)."""
        out: dict[int, list] = {i: [] for i in image_ids}
        for m in self._paged(Q_LEGACY_FILES, sorted(set(image_ids))):
            out.setdefault(m.getChild().getImage().getId().val, []).append(m.getParent())
        return out

    def repository_template(self) -> str | None:
        """The server's repository template (``omero.fs.repo.path``), where this session may
        read it; ``None`` otherwise."""
        if not hasattr(self, "_template"):
            import omero

            try:
                self._template = self.conn.getConfigService().getConfigValue("omero.fs.repo.path") or None
            except omero.ServerError:
                self._template = None
        return self._template

    def iscc_annotations(self, image_ids: list[int], namespace: str) -> dict[int, list]:
        """Per image its MapAnnotations in ``namespace`` (a file annotation in the namespace,
        such as the simprints, is not one)."""
        import omero.model

        out: dict[int, list] = {i: [] for i in image_ids}
        for link in self._paged(Q_ANNOTATION_LINKS, sorted(set(image_ids)), ns=namespace):
            if isinstance(link.getChild(), omero.model.MapAnnotation):
                out.setdefault(link.getParent().getId().val, []).append(link.getChild())
        return out

    def unannotated_images(self, namespace: str, limit: int, after: int = 0) -> list[int]:
        """Images without an annotation in ``namespace``, by ascending id after ``after``."""
        return [row[0] for row in self._rows(Q_UNANNOTATED, limit=limit, ns=namespace, after=after)]

    def fileset_images(self, image_ids: list[int]) -> list[int]:
        """Every image that shares a Fileset with one of ``image_ids``."""
        return sorted({row[0] for row in self._paged(Q_FILESET_IMAGES, image_ids, query=self._rows)})

    def annotated_codes(
        self, namespace: str, page: int = READ_PAGE, query: str = Q_CODES_PAGE
    ) -> Iterator[list[tuple[int, dict]]]:
        """Every annotation in ``namespace`` the session can see, page by page of projected
        key-value rows: ``[(image id, {key: value})]`` per page, oldest first."""
        after = 0
        while True:
            rows = self._rows(query, limit=page, ns=namespace, after=after)
            if not rows:
                return
            # A full page may end inside one link's rows: keep whole links only.
            last = rows[-1][0]
            whole = [r for r in rows if r[0] != last] if len(rows) == page else rows
            whole = whole or rows
            yield _grouped(whole)
            after = whole[-1][0]

    def annotated_pixel_codes(self, namespace: str, page: int = READ_PAGE) -> Iterator[list[tuple[int, dict]]]:
        """``annotated_codes`` of the pixel annotations."""
        return self.annotated_codes(namespace, page, Q_PIXEL_CODES_PAGE)

    def pixels_of(self, image_ids: list[int]) -> list[list]:
        """``Q_PIXELS`` rows of the images, the first Pixels of each."""
        seen: set[int] = set()
        out = []
        for row in self._paged(Q_PIXELS, sorted(set(image_ids)), query=self._rows):
            if row[0] not in seen:
                seen.add(row[0])
                out.append(row)
        return out

    def open_pixels(self, pixels_id: int, group_id: int) -> PixelReader:
        """A reader of the full-resolution planes of ``pixels_id``; close it after use."""
        return PixelReader(self.conn, pixels_id, group_id)

    def max_plane_size(self) -> tuple[int, int]:
        """The server's maximum plane width and height (``omero.pixeldata.max_plane_width`` and
        ``_height``; omero-py reads them once per connection)."""
        width, height = self.conn.getMaxPlaneSize()
        return int(width), int(height)

    def newest_codes(self, namespace: str, limit: int) -> list[tuple[int, dict]]:
        """The ``limit`` newest annotations in ``namespace`` (for ``doctor --test list``)."""
        ids = [row[0] for row in self._rows(Q_NEWEST_ANNOTATIONS, limit=limit, ns=namespace)]
        if not ids:
            return []
        return _grouped(self._rows(Q_NEWEST_CODES, ns=namespace, ids=ids))

    def read_file(self, original_file_id: int, chunk_size: int) -> Iterator[bytes]:
        store = self.conn.c.sf.createRawFileStore()
        try:
            store.setFileId(original_file_id, {"omero.group": "-1"})
            size = store.size()
            offset = 0
            while offset < size:
                block = store.read(offset, min(chunk_size, size - offset))
                if not block:
                    raise OSError(f"RawFileStore returned no bytes at offset {offset} of {size}")
                offset += len(block)
                yield block
        finally:
            store.close()

    # -- writing ---------------------------------------------------------------------------
    @staticmethod
    def _group_ctx(group_id: int) -> dict:
        return {"omero.group": str(group_id)}

    def _as_owner(self, owner_id: int, owner_name: str, group_id: int, group_name: str) -> BlitzOmero:
        """This session, or one of the image's owner in the image's group (``_sudo_conn``, which
        needs the ``Sudo`` privilege or to lead the group), reused until part of its lifetime has passed."""
        if owner_id == self.user_id():
            return self
        key = (owner_id, group_id)
        cached = self._sudo.pop(key, None)
        if cached is not None:
            if time.monotonic() - cached[1] < SUDO_TTL_MS / 1000 * SUDO_RENEW_AFTER:
                self._sudo[key] = cached
                return cached[0]
            with contextlib.suppress(Exception):  # the old session ends on its own anyway
                cached[0].conn.close()
        if "Sudo" not in self.privileges() and group_id not in self.led_groups():
            raise NotPermitted(
                f"annotating another user's image as its owner needs the Sudo privilege (owner: {owner_name})"
            )
        import omero

        try:
            conn = self._sudo_conn(owner_name, group_name)
        except omero.SecurityViolation as exc:
            raise NotPermitted(f"cannot open a session as {owner_name} in group {group_name}: {exc.message}") from exc
        if conn is None or not conn.isConnected():
            raise NotPermitted(f"cannot open a session as {owner_name} in group {group_name}")
        self._sudo[key] = (BlitzOmero(conn), time.monotonic())
        return self._sudo[key][0]

    def _sudo_conn(self, owner_name: str, group_name: str):
        """A gateway on a new session of ``owner_name`` in ``group_name``, living
        ``SUDO_TTL_MS``: what omero-py's ``suConn`` does, which returns nothing for a group
        leader (it asks ``isAdmin()`` first) though the server lets leaders open sessions of
        their groups' members (``SessionBean.createSessionWithTimeouts``)."""
        import omero

        principal = omero.sys.Principal()
        principal.name = owner_name
        principal.group = group_name  # a string: the group's name, never its id
        principal.eventType = "User"
        created = self.conn.getSessionService().createSessionWithTimeout(principal, SUDO_TTL_MS)
        conn = self.conn.clone()
        conn.connect(sUuid=created.getUuid().val)
        return conn

    def _writer(self, owner_id: int, owner_name: str, group_id: int, group_name: str) -> tuple[BlitzOmero, int | None]:
        """Who saves the annotations of an image of this owner and group: this session (with
        the owner to set on the new objects, ``None`` for its own user), or one of the owner.

        - the session's own image: this session;
        - a full administrator: this session, the new objects set to the owner (ome
          ``OmeroInterceptor.newTransientDetails`` lets an administrator name the owner, and
          ``evaluateLinkages`` lets the owner's new link reach the owner's image in a private
          group, ticket:8979): no session and no communicator per owner;
        - ``Sudo``, or a leader of the group: a session of the owner (``_sudo_conn``);
        - anyone else the image lets annotate (a member of a read-annotate or read-write group,
          a restricted administrator with ``WriteOwned``): this session, in its own name.
        """
        if owner_id == self.user_id():
            return self, None
        if self.is_full_admin():
            self._check_owner(owner_id, owner_name, group_id, group_name)
            return self, owner_id
        if "Sudo" in self.privileges() or group_id in self.led_groups():
            return self._as_owner(owner_id, owner_name, group_id, group_name), None
        return self, None

    def _check_owner(self, owner_id: int, owner_name: str, group_id: int, group_name: str) -> None:
        """What a sudo session would have refused (``SessionManagerImpl``): an owner who is not
        active (in the system group ``user``) or no longer in the image's group."""
        import omero

        admin = self.conn.getAdminService()
        if -1 not in self._members:
            self._members[-1] = {admin.lookupGroup("user").getId().val}
        if owner_id not in self._members:
            self._members[owner_id] = set(admin.getMemberOfGroupIds(omero.model.ExperimenterI(owner_id, False)))
        groups = self._members[owner_id]
        if not self._members[-1] & groups:
            raise NotPermitted(f"the image's owner {owner_name} is not an active user")
        if group_id not in groups:
            raise NotPermitted(f"the image's owner {owner_name} is no longer a member of group {group_name}")

    def close_sudo_sessions(self) -> None:
        """Closes the sessions opened as image owners."""
        for omero, _started in self._sudo.values():
            omero.conn.close()
        self._sudo.clear()

    def save_shared_annotations(self, units: list, namespace: str, pairs_of, attachment_of) -> dict[int, object]:
        """Saves one MapAnnotation per unit ``(images, fileset id or None, record)``, linked to
        each of its images and to its Fileset, owned by the images' owner. ``pairs_of(record)``
        gives the key-value pairs; ``attachment_of(images, fileset id, record)`` the
        ``layout.Attachment`` that goes with it (a large Fileset's file list, an image's
        simprints: uploaded first as a file annotation, its id then set on the record), or
        ``None``. Per owner and group, a batch of units takes one call for the annotations and
        one per page of links. Returns per image id the saved annotation, or the exception
        that refused its unit; a unit that fails leaves nothing behind."""
        import omero.model
        from omero.rtypes import rstring

        batches: dict[tuple[int, str, int, str], list] = {}
        for images, fileset_id, record in units:
            details = images[0].getDetails()
            owner, group = details.getOwner(), details.getGroup()
            key = (owner.getId().val, _val(owner.getOmeName()) or "", group.getId().val, _val(group.getName()) or "")
            batches.setdefault(key, []).append((images, fileset_id, record))
        out: dict[int, object] = {}

        def fail(unit, exc) -> None:
            out.update({image.getId().val: exc for image in unit[0]})

        for (owner_id, owner_name, group_id, group_name), batch in batches.items():
            try:
                session, as_owner = self._writer(owner_id, owner_name, group_id, group_name)
            except NotPermitted as exc:
                for unit in batch:
                    fail(unit, exc)
                continue
            ctx = self._group_ctx(group_id)
            update = session.conn.getUpdateService()
            owned = _owned_by(as_owner)
            for chunk in pages(batch, SAVE_BATCH):
                ready, uploaded = [], []
                for unit in chunk:
                    attachment = attachment_of(*unit)
                    if attachment is not None:
                        try:
                            ann = session.attach_file(
                                attachment.kind,
                                attachment.obj_id,
                                attachment.name,
                                attachment.data,
                                namespace,
                                attachment.mimetype,
                                owner=as_owner,
                            )
                        except Exception as exc:  # noqa: BLE001 - this unit's failure (or a lost connection)
                            fail(unit, exc)
                            continue
                        attachment.saved(ann.getId().val)
                        uploaded.append(ann.getId().val)
                    ready.append(unit)
                if not ready:
                    continue
                anns = []
                for _images, _fileset, record in ready:
                    ann = owned(omero.model.MapAnnotationI())
                    ann.setNs(rstring(namespace))
                    ann.setMapValue([omero.model.NamedValue(k, v) for k, v in pairs_of(record)])
                    anns.append(ann)
                saved: list = []
                try:
                    saved = update.saveAndReturnArray(anns, ctx)
                    links = []
                    for (images, fileset_id, _record), ann in zip(ready, saved):
                        ref = omero.model.MapAnnotationI(ann.getId().val, False)
                        for image in images:
                            link = owned(omero.model.ImageAnnotationLinkI())
                            link.setParent(omero.model.ImageI(image.getId().val, False))
                            link.setChild(ref)
                            links.append(link)
                        if fileset_id is not None:
                            link = owned(omero.model.FilesetAnnotationLinkI())
                            link.setParent(omero.model.FilesetI(fileset_id, False))
                            link.setChild(ref)
                            links.append(link)
                    for page in pages(links, SAVE_BATCH):
                        update.saveAndReturnArray(page, ctx)
                except Exception as exc:  # noqa: BLE001 - the caller judges each image (a lost connection too)
                    leftovers = [a.getId().val for a in saved] + uploaded
                    with contextlib.suppress(Exception):  # the save's error is the one to report
                        session.delete_annotations(leftovers)
                    for unit in ready:
                        fail(unit, exc)
                    continue
                for (images, _fileset, _record), ann in zip(ready, saved):
                    out.update({image.getId().val: ann for image in images})
        return out

    def annotation_images(self, annotation_ids: list[int]) -> list[tuple[int, int, int]]:
        """The image links of the annotations: (link id, image id, annotation id)."""
        return [tuple(row) for row in self._paged(Q_ANNOTATION_IMAGES, annotation_ids, query=self._rows)]

    def unlink(self, link_ids: list[int]) -> list[int]:
        """Removes image-annotation links (the annotation stays for its other images);
        returns the link ids still there."""
        return self._delete("ImageAnnotationLink", link_ids)

    def file_annotation_bytes(self, annotation_id: int) -> bytes:
        rows = self._rows(Q_FILE_OF_ANNOTATION, id=annotation_id)
        if not rows:
            raise LookupError(f"file annotation {annotation_id} not found")
        return b"".join(self.read_file(rows[0][0], 1 << 20))

    def delete_annotations(self, annotation_ids: list[int]) -> list[int]:
        """Deletes the annotations this session may delete; returns the ids still there."""
        return self._delete("Annotation", annotation_ids)

    def _delete(self, kind: str, ids: list[int]) -> list[int]:
        """Deletes the objects, each owner's in a session that may delete them (this one, or
        one of their owner); returns the ids still there, read back rather than trusted."""
        if not ids:
            return []
        by_session: dict[int, tuple[BlitzOmero, list[int]]] = {}
        for oid, owner_id, owner_name, group_id, group_name in self._paged(
            Q_OWNERS.format(kind=kind), sorted(set(ids)), query=self._rows
        ):
            session = self._deleter(owner_id, owner_name, group_id, group_name)
            by_session.setdefault(id(session), (session, []))[1].append(oid)
        for session, batch in by_session.values():
            # One refusal rolls back a whole request: then each object alone.
            if not session._submit_delete(kind, batch) and len(batch) > 1:
                for oid in batch:
                    session._submit_delete(kind, [oid])
        return self.existing_ids(kind, list(ids))

    def _deleter(self, owner_id: int, owner_name: str, group_id: int, group_name: str) -> BlitzOmero:
        """A session that may delete an object of this owner: this one when it owns it or may
        delete others' objects (``DeleteOwned``), else one of the owner (``Sudo``)."""
        privileges = self.privileges()
        if owner_id == self.user_id() or "DeleteOwned" in privileges or "Sudo" not in privileges:
            return self
        try:
            return self._as_owner(owner_id, owner_name, group_id, group_name)
        except NotPermitted:
            return self

    def _submit_delete(self, kind: str, ids: list[int]) -> bool:
        """One Delete2 request, waited for to its end and its answer read: True when the
        server deleted the objects (an error or a request given up on deletes nothing)."""
        import omero
        from omero.cmd import Delete2

        handle = self.conn.c.sf.submit(Delete2(targetObjects={kind: list(ids)}), self.conn.SERVICE_OPTS)
        try:
            callback = self.conn.c.waitOnCmd(
                handle, loops=DELETE_WAIT_LOOPS, ms=DELETE_POLL_MS, failonerror=True, failontimeout=True
            )
            callback.close(False)
            return True
        except (omero.CmdError, omero.LockTimeout):
            return False
        finally:
            with contextlib.suppress(Exception):  # closing a finished request changes nothing
                handle.close()

    def _upload(self, name: str, data: bytes, mimetype: str, group_id: int, owner: int | None = None):
        """``data`` as a new OriginalFile in ``group_id`` (a new object saved with group -1 is
        refused), written in blocks of ``UPLOAD_BLOCK`` bytes; ``owner``: set as its owner."""
        import omero
        from omero.rtypes import rlong, rstring

        ctx = self._group_ctx(group_id)
        f = _owned_by(owner)(omero.model.OriginalFileI())
        f.setName(rstring(name))
        f.setPath(rstring(""))
        f.setMimetype(rstring(mimetype))
        f.setSize(rlong(len(data)))
        f = self.conn.getUpdateService().saveAndReturnObject(f, ctx)
        store = self.conn.c.sf.createRawFileStore()
        try:
            store.setFileId(f.getId().val, ctx)
            for offset in range(0, len(data), UPLOAD_BLOCK):
                block = data[offset : offset + UPLOAD_BLOCK]
                store.write(block, offset, len(block), ctx)
            return store.save(ctx)
        finally:
            with contextlib.suppress(Exception):  # closing a finished store changes nothing
                store.close()

    def place_of(self, kind: str, obj_id: int) -> tuple[int, int] | None:
        """(group id, owner id) of an object this session can see; ``None`` if it cannot."""
        rows = self._rows(Q_OWNERS.format(kind=kind), ids=[obj_id])
        return (rows[0][3], rows[0][1]) if rows else None

    def own_place(self) -> tuple[int, int]:
        """(group id, user id) of this session: where an upload without a target goes."""
        ctx = self.conn.getEventContext()
        return int(ctx.groupId), int(ctx.userId)

    def seen_by_readers(self, group_id: int, owner_id: int, image_ids: list[int]) -> set[int]:
        """The images of ``image_ids`` that everyone who may read an object of ``owner_id`` in
        ``group_id`` may see (``BasicACLVoter.allowLoad``): in a group whose members read each
        other's data, the group's images; in a private group, the owner's own images there."""
        perms = self.conn.getAdminService().getGroup(group_id).getDetails().getPermissions()
        group_read = bool(perms.isGroupRead())
        rows = self._paged(Q_OWNERS.format(kind="Image"), sorted(set(image_ids)), query=self._rows)
        return {i for i, owner, _name, gid, _gname in rows if gid == group_id and (group_read or owner == owner_id)}

    def administrators_group(self) -> int:
        """The id of the group "system": its members are the administrators, and only they
        read what is in it."""
        return int(self.conn.getAdminService().lookupGroup("system").getId().val)

    def upload_file(self, name: str, data: bytes, mimetype: str, group_id: int | None = None):
        """Uploads ``data`` as an OriginalFile in ``group_id``, by default the session's own
        group (a script's ``File`` output: OMERO.web offers it for download)."""
        group = self.conn.getEventContext().groupId if group_id is None else group_id
        return self._upload(name, data, mimetype, group)

    def attach_file(
        self, kind: str, obj_id: int, name: str, data: bytes, namespace: str, mimetype: str, owner: int | None = None
    ):
        """Uploads ``data`` as a file annotation linked to the object, in the object's group
        (``owner``: the owner of the new file, annotation and link, for a full administrator).
        If anything is refused (a read-only object, or one gone), what was made is deleted
        again and the error raised: nothing is left orphaned."""
        import omero
        from omero.rtypes import rstring

        target = self.conn.getObject(kind, obj_id)
        if target is None:
            raise LookupError(f"{kind} {obj_id} not found")
        group_id = target.getDetails().getGroup().getId()
        ctx = self._group_ctx(group_id)
        owned = _owned_by(owner)
        update = self.conn.getUpdateService()
        f = self._upload(name, data, mimetype, group_id, owner)
        try:
            ann = owned(omero.model.FileAnnotationI())
            ann.setNs(rstring(namespace))
            ann.setFile(omero.model.OriginalFileI(f.getId().val, False))
            ann = update.saveAndReturnObject(ann, ctx)
        except Exception:
            with contextlib.suppress(Exception):  # the refusal is the error to report
                self._delete("OriginalFile", [f.getId().val])
            raise
        try:
            link = owned(getattr(omero.model, f"{kind}AnnotationLinkI")())
            link.setParent(getattr(omero.model, f"{kind}I")(obj_id, False))
            link.setChild(omero.model.FileAnnotationI(ann.getId().val, False))
            update.saveAndReturnObject(link, ctx)
        except Exception:
            self.delete_annotations([ann.getId().val])
            raise
        return ann

    # -- the code index (codeindex.py, notices.py) ----------------------------------------------
    def code_links(self, namespace: str, after: int = 0, page: int = READ_PAGE) -> Iterator[list[CodeLink]]:
        """Every image link of a code annotation in ``namespace`` above link id ``after``, by
        link id, page by page of whole links (a page of ``Q_CODE_LINKS`` rows, 2 per link)."""
        while True:
            rows = self._rows(Q_CODE_LINKS, limit=page, ns=namespace, after=after)
            if not rows:
                return
            last = rows[-1][0]
            whole = [r for r in rows if r[0] != last] if len(rows) == page else rows
            whole = whole or rows
            yield _code_links(whole)
            after = whole[-1][0]

    def code_links_of(
        self, namespace: str, image_ids: list[int] | None = None, link_ids: list[int] | None = None
    ) -> list[CodeLink]:
        """The code links in ``namespace`` of these images, or these links, by link id."""
        if image_ids is not None:
            rows = self._paged(Q_CODE_LINKS_OF_IMAGES, sorted(set(image_ids)), query=self._rows, ns=namespace)
        else:
            rows = self._paged(Q_CODE_LINKS_BY_ID, sorted(set(link_ids or [])), query=self._rows, ns=namespace)
        return sorted(_code_links(rows), key=lambda c: c.link)

    def live_code_links(self, namespace: str, key: str, page: int = READ_PAGE) -> Iterator[list[tuple]]:
        """(link id, image's group id, image's owner id) of every image link of an annotation
        in ``namespace`` that has ``key``, by link id, page by page: what a reconciliation
        compares with the index (one short row per link)."""
        after = 0
        while True:
            rows = self._rows(Q_LIVE_CODE_LINKS, limit=page, ns=namespace, key=key, after=after)
            if not rows:
                return
            yield [tuple(r) for r in rows]
            after = rows[-1][0]

    def link_images(self, link_ids: list[int]) -> dict[int, tuple[int, int]]:
        """Link id -> (image id, annotation id) of the image links this session may read."""
        rows = self._paged(Q_LINK_IMAGES, sorted(set(link_ids)), query=self._rows)
        return {link: (image, ann) for link, image, ann in rows}

    def session_view(self) -> dict:
        """What this session's user may read: ``admin``, ``user``, ``member_of``,
        ``leader_of`` (group ids) and ``group_read`` (group id -> whether its members read
        each other's data), from the event context and each group's permissions."""
        ec = self.conn.getAdminService().getEventContext()
        member = sorted({int(g) for g in ec.memberOfGroups})
        admin = self.conn.getAdminService()
        group_read = {}
        for gid in member:
            perms = admin.getGroup(gid).getDetails().getPermissions()
            group_read[gid] = bool(perms is not None and perms.isGroupRead())
        return {
            "admin": bool(ec.isAdmin),
            "user": int(ec.userId),
            "member_of": member,
            "leader_of": sorted({int(g) for g in ec.leaderOfGroups}),
            "group_read": group_read,
        }

    def owner_session(self, image) -> BlitzOmero:
        """A session of the image's owner in the image's group (this one when it owns the
        image; else ``suConn``, needing ``Sudo``), as annotations are saved."""
        details = image.getDetails()
        owner, group = details.getOwner(), details.getGroup()
        return self._as_owner(
            owner.getId().val, _val(owner.getOmeName()) or "", group.getId().val, _val(group.getName()) or ""
        )


class PyramidPending(Exception):
    """``setPixelsId`` answered ``MissingPyramidException``: the server is still building the
    image's pyramid. Nothing is wrong with the image; it is read once the pyramid exists."""

    def __init__(self, pixels_id: int) -> None:
        super().__init__(f"waiting for its pyramid: the server is still building it (pixels {pixels_id})")


class PixelReader:
    """A RawPixelsStore on one image's pixels, at full resolution: OMERO numbers resolution
    levels from the smallest, so the last level is set explicitly rather than trusting the
    store's default. Planes come big-endian, rows in order, as the server decodes them.
    :meth:`switch` moves the same store on to other pixels of the group."""

    def __init__(self, conn, pixels_id: int, group_id: int) -> None:
        self.ctx = {"omero.group": str(group_id)}
        self.group_id = group_id
        self.store = conn.c.sf.createRawPixelsStore()
        try:
            self.switch(pixels_id)
        except BaseException:
            self.close()
            raise

    def switch(self, pixels_id: int) -> None:
        """Reads ``pixels_id`` from now on, at full resolution. A refusal (such as
        ``MissingPyramidException``) leaves the store without pixels, ready for others."""
        import omero

        try:
            self.store.setPixelsId(pixels_id, True, self.ctx)
        except omero.MissingPyramidException as exc:
            raise PyramidPending(pixels_id) from exc
        levels = self.store.getResolutionLevels(self.ctx)
        self.store.setResolutionLevel(levels - 1, self.ctx)

    def tile_size(self) -> tuple[int, int]:
        """The largest region the pixel buffer serves at once (``getTileSize``)."""
        width, height = self.store.getTileSize(self.ctx)
        return int(width), int(height)

    def plane(self, z: int, c: int, t: int) -> bytes:
        return self.store.getPlane(z, c, t, self.ctx)

    def tile(self, z: int, c: int, t: int, x: int, y: int, w: int, h: int) -> bytes:
        return self.store.getTile(z, c, t, x, y, w, h, self.ctx)

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a dead store is not an error of the image
            self.store.close()


def _owned_by(owner: int | None):
    """A function that sets ``details.owner`` of a new object to ``owner`` (when given)."""

    def owned(obj):
        if owner is not None:
            import omero

            obj.getDetails().setOwner(omero.model.ExperimenterI(owner, False))
        return obj

    return owned


def _grouped(rows: list[list]) -> list[tuple[int, dict]]:
    """[link, image, key, value] rows to [(image id, {key: value})], one per image link."""
    out: dict[int, tuple[int, dict]] = {}
    for link_id, image_id, key, value in rows:
        out.setdefault(link_id, (image_id, {}))[1].setdefault(key, value)
    return list(out.values())


@dataclass
class CodeLink:
    """An image's link to a code annotation, with the code: what the index keeps per row."""

    link: int
    image: int
    annotation: int
    group: int
    owner: int
    values: dict


def _code_links(rows: list[list]) -> list[CodeLink]:
    """``Q_CODE_LINKS`` rows to one ``CodeLink`` per link (the first value of a key wins)."""
    out: dict[int, CodeLink] = {}
    for link, image, ann, group, owner, key, value in rows:
        found = out.get(link)
        if found is None:
            found = out[link] = CodeLink(link, image, ann, group, owner, {})
        found.values.setdefault(key, value)
    return list(out.values())
