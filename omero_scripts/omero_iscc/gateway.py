"""Everything that talks to an OMERO server, in one place.

``Omero`` is the small interface the rest of the package uses; ``BlitzOmero`` implements it
over a ``BlitzGateway`` connection. Methods return real ``omero.model`` objects (images with
their Fileset, its entries and original files loaded; MapAnnotations with their values), so
the logic elsewhere reads the same objects whether they come from a server or, in the tests,
from the in-memory stand-in built from the same classes.

Reads span all groups (``omero.group = -1``); each annotation is saved in its image's group.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from typing import Protocol

#: Containers that can be expanded, and what they contain.
CHILD_QUERIES = {
    "Project": ("Dataset", "select l.child.id from ProjectDatasetLink l where l.parent.id in (:ids)"),
    "Dataset": ("Image", "select l.child.id from DatasetImageLink l where l.parent.id in (:ids)"),
    "Screen": ("Plate", "select l.child.id from ScreenPlateLink l where l.parent.id in (:ids)"),
    "Plate": ("Image", "select ws.image.id from WellSample ws where ws.well.plate.id in (:ids)"),
    "Fileset": ("Image", "select i.id from Image i where i.fileset.id in (:ids)"),
}


class Omero(Protocol):
    """The OMERO calls the helper makes."""

    def repository_root(self) -> str | None: ...
    def is_admin(self) -> bool: ...
    def children(self, kind: str, ids: list[int]) -> list[int]: ...
    def existing_ids(self, kind: str, ids: list[int]) -> list[int]: ...
    def images(self, ids: list[int]) -> list: ...
    def legacy_files(self, image_id: int) -> list: ...
    def iscc_annotations(self, image_ids: list[int], namespace: str) -> dict[int, list]: ...
    def save_map_annotation(self, image, pairs: list[list[str]], namespace: str): ...
    def delete_annotations(self, annotation_ids: list[int]) -> None: ...
    def read_file(self, original_file_id: int, chunk_size: int) -> Iterator[bytes]: ...
    def unannotated_images(self, namespace: str, limit: int, exclude: list[int] = ()) -> list[int]: ...
    def attach_file(self, kind: str, obj_id: int, name: str, data: bytes, namespace: str, mimetype: str): ...
    def annotated_images(self, namespace: str, limit: int | None = None) -> list: ...


class BlitzOmero:
    """``Omero`` over a ``BlitzGateway`` connection (the script's or the scheduler's)."""

    def __init__(self, conn) -> None:
        self.conn = conn
        conn.SERVICE_OPTS.setOmeroGroup(-1)

    # -- reading ---------------------------------------------------------------------------
    @staticmethod
    def _params(limit: int | None = None, **values):
        """Query parameters, the one place they are built: per name an id, a list of ids or a
        string; ``limit``: at most that many rows."""
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
            p.page(0, limit)
        return p

    def _query(self, hql: str, **ids):
        return self.conn.getQueryService().findAllByQuery(hql, self._params(**ids), self.conn.SERVICE_OPTS)

    def _projection(self, hql: str, **ids) -> list[int]:
        rows = self.conn.getQueryService().projection(hql, self._params(**ids), self.conn.SERVICE_OPTS)
        return [row[0].val for row in rows if row and row[0] is not None]

    def repository_root(self) -> str | None:
        import omero.grid

        repos = self.conn.c.sf.sharedResources().repositories()
        for desc, proxy in zip(repos.descriptions, repos.proxies):
            if proxy is not None and omero.grid.ManagedRepositoryPrx.checkedCast(proxy) is not None:
                return os.path.join(desc.path.val, desc.name.val)
        return None

    def is_admin(self) -> bool:
        return bool(self.conn.isAdmin())

    def children(self, kind: str, ids: list[int]) -> list[int]:
        return self._projection(CHILD_QUERIES[kind][1], ids=ids) if ids else []

    def existing_ids(self, kind: str, ids: list[int]) -> list[int]:
        if not ids:
            return []
        return self._projection(f"select o.id from {kind} o where o.id in (:ids)", ids=ids)

    def images(self, ids: list[int]) -> list:
        if not ids:
            return []
        return list(
            self._query(
                "select distinct i from Image i"
                " join fetch i.details.owner join fetch i.details.group"
                " left outer join fetch i.fileset f"
                " left outer join fetch f.usedFiles u"
                " left outer join fetch u.originalFile o"
                " left outer join fetch o.hasher"
                " where i.id in (:ids) order by i.id",
                ids=ids,
            )
        )

    def legacy_files(self, image_id: int) -> list:
        return list(
            self._query(
                "select o from PixelsOriginalFileMap m join m.parent o left outer join fetch o.hasher"
                " where m.child.image.id = :id order by o.id",
                id=image_id,
            )
        )

    def iscc_annotations(self, image_ids: list[int], namespace: str) -> dict[int, list]:
        out: dict[int, list] = {i: [] for i in image_ids}
        if not image_ids:
            return out
        p = self._params(ids=list(image_ids), ns=namespace)
        links = self.conn.getQueryService().findAllByQuery(
            "select l from ImageAnnotationLink l join fetch l.child a left outer join fetch a.mapValue"
            " where a.ns = :ns and l.parent.id in (:ids) order by a.id",
            p,
            self.conn.SERVICE_OPTS,
        )
        for link in links:
            out.setdefault(link.getParent().getId().val, []).append(link.getChild())
        return out

    def annotated_images(self, namespace: str, limit: int | None = None) -> list:
        p = self._params(limit=limit, ns=namespace)
        return list(
            self.conn.getQueryService().findAllByQuery(
                "select l from ImageAnnotationLink l join fetch l.child a left outer join fetch a.mapValue"
                " join fetch l.parent i join fetch i.details.owner join fetch i.details.group"
                " where a.ns = :ns order by a.id desc",
                p,
                self.conn.SERVICE_OPTS,
            )
        )

    def unannotated_images(self, namespace: str, limit: int, exclude: list[int] = ()) -> list[int]:
        values = {"ns": namespace, **({"exclude": list(exclude)} if exclude else {})}
        p = self._params(limit=limit, **values)
        where = " and i.id not in (:exclude)" if exclude else ""
        rows = self.conn.getQueryService().projection(
            "select i.id from Image i where not exists ("
            " select l from ImageAnnotationLink l where l.parent = i and l.child.ns = :ns)" + where + " order by i.id",
            p,
            self.conn.SERVICE_OPTS,
        )
        return [row[0].val for row in rows]

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
    def _group_ctx(self, obj) -> dict:
        ctx = dict(self.conn.SERVICE_OPTS)
        ctx["omero.group"] = str(obj.getDetails().getGroup().getId().val)
        return ctx

    def save_map_annotation(self, image, pairs: list[list[str]], namespace: str):
        import omero.model
        from omero.rtypes import rstring

        ann = omero.model.MapAnnotationI()
        ann.setNs(rstring(namespace))
        ann.setMapValue([omero.model.NamedValue(k, v) for k, v in pairs])
        link = omero.model.ImageAnnotationLinkI()
        link.setParent(omero.model.ImageI(image.getId().val, False))
        link.setChild(ann)
        saved = self.conn.getUpdateService().saveAndReturnObject(link, self._group_ctx(image))
        return saved.getChild()

    def delete_annotations(self, annotation_ids: list[int]) -> None:
        if annotation_ids:
            self.conn.deleteObjects("Annotation", list(annotation_ids), wait=True)

    def attach_file(self, kind: str, obj_id: int, name: str, data: bytes, namespace: str, mimetype: str):
        target = self.conn.getObject(kind, obj_id)
        if target is None:
            raise LookupError(f"{kind} {obj_id} not found")
        self.conn.SERVICE_OPTS.setOmeroGroup(target.getDetails().getGroup().getId())
        try:
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, name)
                with open(path, "wb") as f:
                    f.write(data)
                ann = self.conn.createFileAnnfromLocalFile(path, mimetype=mimetype, ns=namespace)
            target.linkAnnotation(ann)
            return ann._obj
        finally:
            self.conn.SERVICE_OPTS.setOmeroGroup(-1)
