"""A stand-in OMERO server under ``BlitzOmero``: the BlitzGateway services the helper calls
(query, update, admin, delete, RawFileStore, repositories, sudo), answering with real
``omero.model`` objects built from a light in-memory world.

It is worth what it refuses, so it refuses and counts what a real server does
(``../shared/reference/omero-server.md``):

- Queries are known by their text. Each answer's *rows* are counted as the database would
  fetch them: a collection ``join fetch`` (``usedFiles``, ``mapValue``) multiplies rows. A
  collection fetch together with paging is refused (Hibernate would page in memory after
  fetching every row). A list parameter binds one JDBC parameter per element unless it is
  written ``(:ids)``, and more than ``param_cap`` of them fail.
- Permissions per group type (private ``rw----``, read-only ``rwr---``, read-annotate
  ``rwra--``, read-write ``rwrw--``) and ownership decide what a session sees and may
  annotate; restricted administrators have only their privileges (``Sudo``, ``WriteOwned``,
  ``DeleteOwned``...). A save must name a group (``omero.group`` -1 is refused) and happen in
  its object's group; a link to an object the session may not annotate raises
  ``SecurityViolation``; Delete2 skips what the session may not delete.
- Every service call is counted; ``drop_connection_after`` makes a later call fail as a lost
  connection does.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
from dataclasses import dataclass, field

import fake_pixels
import Ice
import omero
import omero.clients  # noqa: F401 - registers the model classes
import omero.model
from omero.gateway import ServiceOptsDict
from omero.model import PermissionsI
from omero.rtypes import rlong, rstring

from omero_iscc import gateway as g

ALL_PRIVILEGES = frozenset(
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
#: The JDBC parameter cap of the lower pgjdbc versions.
PARAM_CAP = 32767


@dataclass
class User:
    id: int
    name: str
    groups: set
    admin: bool = False
    privileges: frozenset = frozenset()


@dataclass
class Group:
    id: int
    name: str
    perms: str  # "rw----", "rwr---", "rwra--", "rwrw--"


@dataclass
class FileRec:
    id: int
    name: str
    path: str
    size: int | None
    hash: str | None
    hasher: str | None
    disk: str
    group: int = 1


@dataclass
class ImageRec:
    id: int
    name: str
    owner: int
    group: int
    fileset: int | None


@dataclass
class AnnRec:
    id: int
    ns: str
    pairs: list
    owner: int
    group: int
    kind: str = "map"  # or "file"
    file_id: int | None = None  # a file annotation's original file
    file: tuple | None = None  # (name, data, mimetype) of a file annotation


@dataclass
class LinkRec:
    id: int
    parent_kind: str
    parent: int
    ann: int
    owner: int
    group: int


class ConnectionLost(Ice.ConnectionLostException):
    pass


@dataclass
class FakeServer:
    root: str | None
    ids: itertools.count = field(default_factory=lambda: itertools.count(1000))
    users: dict = field(default_factory=dict)
    groups: dict = field(default_factory=dict)
    images_: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)
    filesets: dict = field(default_factory=dict)  # id -> (template prefix, [file ids])
    legacy: dict = field(default_factory=dict)  # image id -> [file ids]
    anns: dict = field(default_factory=dict)
    links_: dict = field(default_factory=dict)
    containers: dict = field(default_factory=dict)  # (kind, id) -> [child ids]
    kinds: dict = field(default_factory=dict)  # kind -> {id: group}
    calls: dict = field(default_factory=dict)
    queries: list = field(default_factory=list)  # (hql, rows)
    drops: dict = field(default_factory=dict)
    fail_save_for: set = field(default_factory=set)
    pixels: dict = field(default_factory=dict)  # image id -> fake_pixels.PixelsRec
    max_plane: tuple = fake_pixels.MAX_PLANE
    uploads: dict = field(default_factory=dict)  # original file id -> (name, data, mimetype, owner)
    gone: set = field(default_factory=set)  # (kind, id) deleted since they were read
    fileset_owner: dict = field(default_factory=dict)
    blobs: dict = field(default_factory=dict)  # original file id -> bytes (uploaded files)
    written: dict = field(default_factory=lambda: {"map_annotations": 0, "rows": 0, "links": 0})
    param_cap: int = PARAM_CAP
    session_user: int = 2

    def __post_init__(self) -> None:
        self.groups.update(
            {
                1: Group(1, "group 1", "rwra--"),
                2: Group(2, "group 2", "rwra--"),
                3: Group(3, "lab 3", "rwr---"),
            }
        )
        self.users.update(
            {
                0: User(0, "root", {0, 1, 2, 3}, admin=True, privileges=ALL_PRIVILEGES),
                2: User(2, "scientist", {1, 2, 3}),
                9: User(9, "boss", {3}),
            }
        )

    # -- building the world -----------------------------------------------------------------
    def add_user(self, uid: int, name: str, groups: set, admin: bool = False, privileges=None) -> None:
        """A user; an administrator has every privilege unless ``privileges`` restricts them."""
        if privileges is None:
            privileges = ALL_PRIVILEGES if admin else frozenset()
        self.users[uid] = User(uid, name, set(groups), admin, frozenset(privileges))

    def add_group(self, gid: int, name: str, perms: str) -> None:
        self.groups[gid] = Group(gid, name, perms)

    def add_container(self, kind: str, cid: int, children: list[int], group: int = 1) -> None:
        self.kinds.setdefault(kind, {})[cid] = group
        self.containers[(kind, cid)] = list(children)

    def original_file(
        self, disk_path: str, repo_dir: str, name: str | None = None, hasher: str | None = "SHA1-160"
    ) -> int:
        fid = next(self.ids)
        name = name or os.path.basename(disk_path)
        size = digest = None
        if os.path.exists(disk_path):
            with open(disk_path, "rb") as f:
                data = f.read()
            size = len(data)
            digest = {"SHA1-160": hashlib.sha1, "MD5-128": hashlib.md5}.get(hasher or "", lambda b: None)(data)
            digest = digest.hexdigest() if digest is not None else None
        self.files[fid] = FileRec(fid, name, repo_dir, size, digest, hasher, disk_path)
        return fid

    def add_fileset(
        self,
        files: list[int],
        template_prefix: str,
        n_images: int = 1,
        group_id: int = 1,
        owner: int = 2,
        names: list[str] | None = None,
        can_annotate: bool = True,
    ) -> list[int]:
        if not can_annotate:  # someone else's image in a read-only group: readable, not annotatable
            group_id, owner = 3, 9
        fsid = next(self.ids)
        self.filesets[fsid] = (template_prefix, list(files))
        self.kinds.setdefault("Fileset", {})[fsid] = group_id
        self.fileset_owner[fsid] = owner
        for f in files:
            self.files[f].group = group_id
        ids = [self._image(group_id, owner, (names or [None] * n_images)[k], fsid) for k in range(n_images)]
        self.containers[("Fileset", fsid)] = ids
        return ids

    def add_legacy_image(self, files: list[int], group_id: int = 1, owner: int = 2) -> int:
        iid = self._image(group_id, owner, None, None)
        self.legacy[iid] = list(files)
        return iid

    def _image(self, group_id: int, owner: int, name: str | None, fileset: int | None) -> int:
        iid = next(self.ids)
        self.images_[iid] = ImageRec(iid, name or f"image {iid}", owner, group_id, fileset)
        self.kinds.setdefault("Image", {})[iid] = group_id
        return iid

    def add_annotation(self, image_id: int, pairs: list[list[str]], namespace: str, owner: int | None = None) -> int:
        image = self.images_[image_id]
        owner = image.owner if owner is None else owner
        aid = next(self.ids)
        self.anns[aid] = AnnRec(aid, namespace, [list(p) for p in pairs], owner, image.group)
        lid = next(self.ids)
        self.links_[lid] = LinkRec(lid, "Image", image_id, aid, owner, image.group)
        self.kinds.setdefault("Annotation", {})[aid] = image.group
        return aid

    # -- permissions ------------------------------------------------------------------------
    def can_read(self, uid: int, owner: int, group: int) -> bool:
        user = self.users[uid]
        if user.admin or owner == uid:
            return True
        return group in user.groups and self.groups[group].perms[2] == "r"

    def can_annotate(self, uid: int, owner: int, group: int) -> bool:
        user = self.users[uid]
        if owner == uid or (user.admin and "WriteOwned" in user.privileges):
            return True
        return group in user.groups and self.groups[group].perms in ("rwra--", "rwrw--")

    def can_delete(self, uid: int, owner: int) -> bool:
        user = self.users[uid]
        return owner == uid or (user.admin and "DeleteOwned" in user.privileges)

    # -- the session ------------------------------------------------------------------------
    def access(self, user: int | None = None):
        """The helper's OMERO access for a session of ``user`` (default: ``session_user``)."""
        return g.BlitzOmero(FakeConn(self, self.session_user if user is None else user))

    def call(self, method: str) -> None:
        self.calls[method] = self.calls.get(method, 0) + 1
        if self.drops.get(method) == self.calls[method]:
            del self.drops[method]
            raise ConnectionLost()

    def drop_connection_after(self, method: str, calls: int) -> None:
        """The ``calls``-th next call of ``method`` raises ConnectionLostException."""
        self.drops[method] = self.calls.get(method, 0) + calls

    @property
    def rows(self) -> int:
        return sum(r for _, r in self.queries)

    # -- assertions' helpers ----------------------------------------------------------------
    def iscc_anns(self, image_id: int, namespace: str = "org.iscc.omero.sum") -> list[AnnRec]:
        return [
            self.anns[link.ann]
            for link in self.links_.values()
            if link.parent_kind == "Image" and link.parent == image_id and self.anns[link.ann].ns == namespace
        ]

    def _by_image(self, keep) -> dict:
        out: dict = {}
        for link in sorted(self.links_.values(), key=lambda lk: lk.ann):
            ann = self.anns[link.ann]
            if link.parent_kind == "Image" and ann.kind == "map" and keep(ann.ns):
                out.setdefault(link.parent, []).append(self.model_map_annotation(ann.id))
        return out

    @property
    def annotations(self) -> dict:
        """Image id -> its ISCC MapAnnotations (model objects), whoever may see them."""
        return self._by_image(lambda ns: ns == "org.iscc.omero.sum")

    @property
    def other_annotations(self) -> dict:
        return self._by_image(lambda ns: ns != "org.iscc.omero.sum")

    @property
    def saved_groups(self) -> list:
        """(image id, group) of every ISCC annotation."""
        return [
            (link.parent, self.anns[link.ann].group)
            for link in self.links_.values()
            if self.anns[link.ann].ns == "org.iscc.omero.sum"
        ]

    def owner_of_iscc(self, image_id: int) -> tuple[int, int]:
        """(annotation owner, link owner) of an image's one ISCC annotation."""
        [link] = [
            lk for lk in self.links_.values() if lk.parent == image_id and self.anns[lk.ann].ns == "org.iscc.omero.sum"
        ]
        return self.anns[link.ann].owner, link.owner

    def hide(self, image_id: int) -> None:
        """Moves the image, with its links and annotations, into another user's private group
        the session user is not in: from then on it cannot see any of them."""
        if 99 not in self.groups:
            self.add_group(99, "private lab", "rw----")
            self.add_user(98, "stranger", {99})
        image = self.images_[image_id]
        image.owner, image.group = 98, 99
        self.kinds["Image"][image_id] = 99
        for link in self.links_.values():
            if link.parent == image_id:
                link.owner, link.group = 98, 99
                self.anns[link.ann].owner, self.anns[link.ann].group = 98, 99

    def pairs(self, image_id: int) -> list[list[str]]:
        anns = self.iscc_anns(image_id)
        assert len(anns) == 1, f"image {image_id} has {len(anns)} ISCC annotations"
        return [list(p) for p in anns[0].pairs]

    @property
    def attachments(self) -> list:
        out = []
        for link in self.links_.values():
            ann = self.anns[link.ann]
            if ann.kind == "file":
                name, data, mimetype = ann.file
                out.append((link.parent_kind, link.parent, name, data, ann.ns, mimetype))
        return out

    def orphans(self) -> list[int]:
        """File annotations linked to nothing."""
        linked = {link.ann for link in self.links_.values()}
        return [a.id for a in self.anns.values() if a.kind == "file" and a.id not in linked]

    # -- model objects for answers ------------------------------------------------------------
    def model_group(self, gid: int):
        grp = omero.model.ExperimenterGroupI(gid, True)
        grp.setName(rstring(self.groups[gid].name))
        return grp

    def model_user(self, uid: int):
        exp = omero.model.ExperimenterI(uid, True)
        exp.setOmeName(rstring(self.users[uid].name))
        return exp

    def model_file(self, fid: int):
        rec = self.files[fid]
        of = omero.model.OriginalFileI(fid, True)
        of.setName(rstring(rec.name))
        of.setPath(rstring(rec.path))
        if rec.size is not None:
            of.setSize(rlong(rec.size))
        if rec.hash is not None:
            of.setHash(rstring(rec.hash))
        if rec.hasher:
            algo = omero.model.ChecksumAlgorithmI(1, True)
            algo.setValue(rstring(rec.hasher))
            of.setHasher(algo)
        return of

    def model_image(self, iid: int, uid: int):
        rec = self.images_[iid]
        image = omero.model.ImageI(iid, True)
        image.setName(rstring(rec.name))
        details = image.getDetails()
        details.setOwner(self.model_user(rec.owner))
        details.setGroup(self.model_group(rec.group))
        perms = PermissionsI(self.groups[rec.group].perms)
        if not self.can_annotate(uid, rec.owner, rec.group):
            import omero.constants.permissions as ocp

            restrictions = [False] * 8
            restrictions[ocp.ANNOTATERESTRICTION] = True
            perms._restrictions = restrictions
        details.setPermissions(perms)
        if rec.fileset is not None:
            fs = omero.model.FilesetI(rec.fileset, True)
            fs.setTemplatePrefix(rstring(self.filesets[rec.fileset][0]))
            fs.unloadUsedFiles()
            image.setFileset(fs)
        return image

    def model_map_annotation(self, aid: int):
        rec = self.anns[aid]
        ann = omero.model.MapAnnotationI(aid, True)
        ann.setNs(rstring(rec.ns))
        ann.setMapValue([omero.model.NamedValue(k, v) for k, v in rec.pairs])
        ann.getDetails().setOwner(self.model_user(rec.owner))
        return ann


class FakeConn:
    """The BlitzGateway surface ``BlitzOmero`` uses, for one user's session."""

    def __init__(self, server: FakeServer, user: int) -> None:
        self.server = server
        self.user = user
        self.SERVICE_OPTS = ServiceOptsDict()
        self.c = _Client(server, self)
        self.closed = False

    def getQueryService(self):  # noqa: N802 - BlitzGateway's API
        return _Query(self)

    def getUpdateService(self):  # noqa: N802
        return _Update(self)

    def getAdminService(self):  # noqa: N802
        return _Admin(self)

    def isAdmin(self) -> bool:  # noqa: N802
        return self.server.users[self.user].admin

    def getUserId(self) -> int:  # noqa: N802
        return self.user

    def close(self) -> None:
        self.closed = True

    def suConn(self, username: str, group=None, ttl=60000):  # noqa: N802
        self.server.call("suConn")
        me = self.server.users[self.user]
        if not me.admin:
            return None
        if "Sudo" not in me.privileges:
            raise omero.SecurityViolation(None, None, "creating a session for another user needs Sudo")
        target = next(u for u in self.server.users.values() if u.name == username)
        return FakeConn(self.server, target.id)

    def deleteObjects(self, kind, ids, wait=False, **_kw):  # noqa: N802
        self.server.call("deleteObjects")
        refused = []
        if kind.endswith("AnnotationLink"):
            for lid in ids:
                link = self.server.links_.get(lid)
                if link is None:
                    continue
                if not self.server.can_delete(self.user, link.owner):
                    refused.append(lid)
                    continue
                del self.server.links_[lid]
            if refused:
                raise omero.CmdError(None)
            return
        for aid in ids:
            rec = self.server.anns.get(aid)
            if rec is None:
                continue
            if not self.server.can_delete(self.user, rec.owner):
                refused.append(aid)
                continue
            del self.server.anns[aid]
            self.server.kinds.get("Annotation", {}).pop(aid, None)
            for lid in [lid for lid, link in self.server.links_.items() if link.ann == aid]:
                del self.server.links_[lid]
        if refused:
            raise omero.CmdError(None)  # Delete2's error response, surfaced by waitOnCmd

    def getObject(self, kind: str, oid: int):  # noqa: N802
        self.server.call("getObject")
        group = self.server.kinds.get(kind, {}).get(oid)
        if group is None or (kind, oid) in self.server.gone:
            return None
        owner = (
            self.server.images_[oid].owner
            if kind == "Image"
            else self.server.fileset_owner.get(oid, 2)
            if kind == "Fileset"
            else 2
        )
        if not self.server.can_read(self.user, owner, group):
            return None
        return _Wrapper(self, kind, oid, owner, group)

    def createOriginalFileFromLocalFile(self, path, mimetype=None, **_kw):  # noqa: N802
        self.server.call("createOriginalFileFromLocalFile")
        with open(path, "rb") as f:
            data = f.read()
        fid = next(self.server.ids)
        self.server.uploads[fid] = (os.path.basename(path), data, mimetype, self.user)
        return _FileWrapper(fid)

    def createFileAnnfromLocalFile(self, path, mimetype=None, ns=None, **_kw):  # noqa: N802
        self.server.call("createFileAnnfromLocalFile")
        group = int(self.SERVICE_OPTS.getOmeroGroup())
        if group < 0:
            raise omero.ApiUsageException(None, None, "saving needs a group: omero.group is -1")
        with open(path, "rb") as f:
            data = f.read()
        fid = next(self.server.ids)
        self.server.files[fid] = FileRec(fid, os.path.basename(path), "", len(data), None, None, path, group)
        self.server.blobs[fid] = data
        aid = next(self.server.ids)
        self.server.anns[aid] = AnnRec(
            aid, ns, [], self.user, group, kind="file", file=(os.path.basename(path), data, mimetype), file_id=fid
        )
        self.server.kinds.setdefault("Annotation", {})[aid] = group
        return _AnnWrapper(aid)


class _FileWrapper:
    def __init__(self, fid: int) -> None:
        self._obj = omero.model.OriginalFileI(fid, False)


class _AnnWrapper:
    def __init__(self, aid: int) -> None:
        self.id = aid
        self._obj = omero.model.FileAnnotationI(aid, False)

    def getId(self) -> int:  # noqa: N802
        return self.id


class _Wrapper:
    def __init__(self, conn: FakeConn, kind: str, oid: int, owner: int, group: int) -> None:
        self.conn, self.kind, self.oid, self.owner, self.group = conn, kind, oid, owner, group

    def getDetails(self):  # noqa: N802
        conn = self

        class Details:
            def getGroup(self):  # noqa: N802
                return type("G", (), {"getId": lambda _s: conn.group})()

        return Details()

    def linkAnnotation(self, ann):  # noqa: N802
        server = self.conn.server
        server.call("linkAnnotation")
        if not server.can_annotate(self.conn.user, self.owner, self.group):
            raise omero.SecurityViolation(None, None, f"cannot annotate {self.kind} {self.oid}")
        lid = next(server.ids)
        server.links_[lid] = LinkRec(lid, self.kind, self.oid, ann.getId(), self.conn.user, self.group)
        return ann


class _Client:
    def __init__(self, server: FakeServer, conn: FakeConn) -> None:
        self.sf = _Session(server, conn)


class _Repo:
    def __init__(self, managed: bool) -> None:
        self.managed = managed

    def ice_isA(self, type_id: str) -> bool:  # noqa: N802 - Ice's API
        return self.managed and type_id == "::omero::grid::ManagedRepository"


class _Session:
    def __init__(self, server: FakeServer, conn: FakeConn) -> None:
        self.server, self.conn = server, conn

    def sharedResources(self):  # noqa: N802
        server = self.server

        class Shared:
            def repositories(self):
                descs, proxies = [], []
                for name, path, managed in [("", "/OMERO/", False)] + (
                    [(os.path.basename(server.root), os.path.dirname(server.root) + "/", True)] if server.root else []
                ):
                    d = omero.model.OriginalFileI(1, True)
                    d.setName(rstring(name))
                    d.setPath(rstring(path))
                    descs.append(d)
                    proxies.append(_Repo(managed))
                return type("Repos", (), {"descriptions": descs, "proxies": proxies})()

        return Shared()

    def createRawPixelsStore(self):  # noqa: N802
        self.server.call("createRawPixelsStore")
        return fake_pixels.RawPixelsStore(self.server, self.conn)

    def createRawFileStore(self):  # noqa: N802
        self.server.call("createRawFileStore")
        return _RawFileStore(self.server, self.conn)


class _RawFileStore:
    def __init__(self, server: FakeServer, conn: FakeConn) -> None:
        self.server, self.conn, self.data = server, conn, None

    def setFileId(self, fid, ctx=None):  # noqa: N802
        self.server.call("read_file")
        rec = self.server.files.get(fid)
        if rec is None or not self.server.can_read(self.conn.user, -1, rec.group):
            raise omero.SecurityViolation(None, None, f"file {fid} is not readable")
        if fid in self.server.blobs:
            self.data = self.server.blobs[fid]
            return
        if not os.path.exists(rec.disk):
            raise omero.ResourceError(None, None, f"file {fid} is missing from the repository")
        with open(rec.disk, "rb") as f:
            self.data = f.read()

    def size(self) -> int:
        return len(self.data)

    def read(self, offset: int, n: int) -> bytes:
        return self.data[offset : offset + n]

    def close(self) -> None:
        self.data = None


class _Admin:
    def __init__(self, conn: FakeConn) -> None:
        self.conn = conn

    def getCurrentAdminPrivileges(self):  # noqa: N802
        user = self.conn.server.users[self.conn.user]
        out = []
        for name in sorted(user.privileges if user.admin else ()):
            p = omero.model.AdminPrivilegeI()
            p.setValue(rstring(name))
            out.append(p)
        return out


class _Update:
    def __init__(self, conn: FakeConn) -> None:
        self.conn = conn

    def saveAndReturnArray(self, objects, ctx=None):  # noqa: N802
        """New MapAnnotations, or links (to images or filesets) whose child is a new
        MapAnnotation or one already saved; all or nothing."""
        server, user = self.conn.server, self.conn.user
        server.call("saveAndReturnArray")
        group = int((ctx or {}).get("omero.group", self.conn.SERVICE_OPTS.getOmeroGroup() or -1))
        if group < 0:
            raise omero.ApiUsageException(None, None, "saving needs a group: omero.group is -1")
        for obj in objects:  # check everything first: one transaction
            if isinstance(obj, omero.model.MapAnnotation):
                continue
            kind = "Fileset" if isinstance(obj, omero.model.FilesetAnnotationLink) else "Image"
            pid = obj.getParent().getId().val
            if kind == "Image":
                rec = server.images_.get(pid)
                if rec is None:
                    raise omero.ValidationException(None, None, f"Image {pid} does not exist")
                owner, pgroup = rec.owner, rec.group
            else:
                if pid not in server.filesets:
                    raise omero.ValidationException(None, None, f"Fileset {pid} does not exist")
                owner, pgroup = server.fileset_owner[pid], server.kinds["Fileset"][pid]
            if (kind == "Image" and pid in server.fail_save_for) or not server.can_annotate(user, owner, pgroup):
                raise omero.SecurityViolation(None, None, f"not allowed to annotate {kind} {pid}")
            if pgroup != group:
                raise omero.SecurityViolation(None, None, f"{kind} {pid} is in group {pgroup}, not {group}")
            child = obj.getChild()
            if not child.isLoaded() and child.getId().val not in server.anns:
                raise omero.ValidationException(None, None, f"Annotation {child.getId().val} does not exist")
        saved = []
        for obj in objects:
            if isinstance(obj, omero.model.MapAnnotation):
                saved.append(server.model_map_annotation(self._new_annotation(obj, group)))
                continue
            kind = "Fileset" if isinstance(obj, omero.model.FilesetAnnotationLink) else "Image"
            pid = obj.getParent().getId().val
            child = obj.getChild()
            aid = child.getId().val if not child.isLoaded() else self._new_annotation(child, group)
            lid = next(server.ids)
            server.links_[lid] = LinkRec(lid, kind, pid, aid, user, group)
            server.written["links"] += 1
            out = getattr(omero.model, f"{kind}AnnotationLinkI")(lid, True)
            out.setParent(getattr(omero.model, f"{kind}I")(pid, False))
            out.setChild(server.model_map_annotation(aid))
            saved.append(out)
        return saved

    def _new_annotation(self, ann, group: int) -> int:
        server = self.conn.server
        aid = next(server.ids)
        pairs = [[nv.name, nv.value] for nv in ann.getMapValue()]
        server.anns[aid] = AnnRec(aid, ann.getNs().val, pairs, self.conn.user, group)
        server.kinds.setdefault("Annotation", {})[aid] = group
        server.written["map_annotations"] += 1
        server.written["rows"] += len(pairs)
        return aid


# -- queries --------------------------------------------------------------------------------
COLLECTIONS = {"usedFiles", "mapValue", "annotationLinks", "wellSamples", "pixels"}


class _Query:
    def __init__(self, conn: FakeConn) -> None:
        self.conn = conn

    def findAllByQuery(self, hql, params, ctx=None):  # noqa: N802
        return self._run("findAllByQuery", hql, params)

    def projection(self, hql, params, ctx=None):
        return self._run("projection", hql, params)

    def _run(self, method: str, hql: str, params):
        server = self.conn.server
        server.call(method)
        values, limit = _unwrap(params)
        fetched = set(re.findall(r"join fetch \w+\.(\w+)", hql)) & COLLECTIONS
        if fetched and limit:
            raise omero.ApiUsageException(
                None, None, f"collection fetch ({', '.join(sorted(fetched))}) with paging: refused"
            )
        for name, value in values.items():
            if isinstance(value, list) and len(value) > server.param_cap and not (name == "ids" and "(:ids)" in hql):
                raise omero.InternalException(
                    None, None, f"{len(value)} parameters for :{name} exceed the driver's {server.param_cap}"
                )
        for pattern, handler in HANDLERS:
            m = re.fullmatch(pattern, hql)
            if m:
                results, rows = handler(server, self.conn.user, hql, values, m)
                if limit:
                    results, rows = results[:limit], min(rows, limit) if rows == len(results) else rows
                server.queries.append((hql, rows))
                return results
        raise AssertionError(f"the stand-in does not know this query: {hql}")


def _unwrap(params):
    values = {}
    for name, v in (params.map or {}).items():
        inner = v.val
        values[name] = [x.val for x in inner] if isinstance(inner, list) else inner
    limit = None
    f = getattr(params, "theFilter", None)
    if f is not None and f.limit is not None:
        limit = f.limit.val
    return values, limit


def _visible_images(server, uid, ids):
    return [
        i for i in ids if i in server.images_ and server.can_read(uid, server.images_[i].owner, server.images_[i].group)
    ]


def _visible_links(server, uid):
    for link in server.links_.values():
        if (
            link.parent_kind == "Image"
            and link.parent in server.images_
            and server.can_read(uid, link.owner, link.group)
        ):
            yield link


def _h_children(server, uid, hql, v, m):
    kind = {"ProjectDataset": "Project", "DatasetImage": "Dataset", "ScreenPlate": "Screen"}.get(m.group(1) or "")
    kind = kind or ("Plate" if "WellSample" in hql else "Fileset")
    rows = []
    for parent in v["ids"]:
        for child in server.containers.get((kind, parent), []):
            if kind in ("Dataset", "Plate", "Fileset") and not _visible_images(server, uid, [child]):
                continue
            rows.append([rlong(parent), rlong(child)])
    return rows, len(rows)


def _h_existing(server, uid, hql, v, m):
    kind = m.group(1)
    table = server.kinds.get(kind, {})
    found = [i for i in v["ids"] if i in table]
    if kind == "Image":
        found = _visible_images(server, uid, found)
    if kind == "Annotation":
        found = [i for i in found if server.can_read(uid, server.anns[i].owner, server.anns[i].group)]
    return [[rlong(i)] for i in found], len(found)


def _h_images(server, uid, hql, v, m):
    ids = sorted(set(_visible_images(server, uid, v["ids"])))
    per_image = [
        max(1, len(server.filesets[server.images_[i].fileset][1]))
        if "usedFiles" in hql and server.images_[i].fileset is not None
        else 1
        for i in ids
    ]
    return [server.model_image(i, uid) for i in ids], sum(per_image)


def _h_entries(server, uid, hql, v, m):
    out = []
    for fsid in sorted(v["ids"]):
        if fsid not in server.filesets:
            continue
        for fid in server.filesets[fsid][1]:
            e = omero.model.FilesetEntryI(next(server.ids), True)
            e.setOriginalFile(server.model_file(fid))
            e.setFileset(omero.model.FilesetI(fsid, False))
            out.append(e)
    return out, len(out)


def _h_legacy(server, uid, hql, v, m):
    files = [server.model_file(f) for f in server.legacy.get(v["id"], [])]
    return files, len(files)


def _h_links(server, uid, hql, v, m):
    wanted = set(v["ids"]) if "ids" in v else None
    out, rows = [], 0
    for link in sorted(_visible_links(server, uid), key=lambda lk: lk.ann):
        ann = server.anns[link.ann]
        # Every annotation type in the namespace: a file annotation (simprints) comes too.
        if (wanted is None or link.parent in wanted) and ann.ns == v["ns"]:
            lk = omero.model.ImageAnnotationLinkI(link.id, True)
            lk.setParent(omero.model.ImageI(link.parent, False))
            if ann.kind == "map":
                lk.setChild(server.model_map_annotation(ann.id))
            else:
                child = omero.model.FileAnnotationI(ann.id, True)
                child.setNs(rstring(ann.ns))
                lk.setChild(child)
            out.append(lk)
            rows += max(1, len(ann.pairs))
    return out, rows


def _h_unannotated(server, uid, hql, v, m):
    annotated = {link.parent for link in _visible_links(server, uid) if server.anns[link.ann].ns == v["ns"]}
    after = v.get("after", 0)
    exclude = set(v.get("exclude", []))
    ids = [
        i
        for i in sorted(_visible_images(server, uid, server.images_))
        if i > after and i not in annotated and i not in exclude
    ]
    return [[rlong(i)] for i in ids], len(ids)


def _h_fileset_images(server, uid, hql, v, m):
    filesets = {server.images_[i].fileset for i in _visible_images(server, uid, v["ids"])} - {None}
    ids = sorted(i for i in _visible_images(server, uid, server.images_) if server.images_[i].fileset in filesets)
    return [[rlong(i)] for i in ids], len(ids)


def _code_rows(server, uid, v, keep, hql):
    rows = []
    keys = set(re.findall(r"'([^']+)'", re.search(r"mv\.name in \(([^)]*)\)", hql).group(1)))
    for link in sorted(_visible_links(server, uid), key=lambda lk: lk.id):
        ann = server.anns[link.ann]
        if ann.ns != v["ns"] or not keep(link):
            continue
        rows.extend([rlong(link.id), rlong(link.parent), rstring(k), rstring(val)] for k, val in ann.pairs if k in keys)
    return rows


def _h_codes_page(server, uid, hql, v, m):
    rows = _code_rows(server, uid, v, lambda link: link.id > v["after"], hql)
    return rows, len(rows)


def _h_newest_codes(server, uid, hql, v, m):
    wanted = set(v["ids"])
    rows = _code_rows(server, uid, v, lambda link: link.ann in wanted, hql)[::-1]
    return rows, len(rows)


def _h_newest_annotations(server, uid, hql, v, m):
    ids = sorted(
        {link.ann for link in _visible_links(server, uid) if server.anns[link.ann].ns == v["ns"]}, reverse=True
    )
    return [[rlong(i)] for i in ids], len(ids)


def _h_annotation_images(server, uid, hql, v, m):
    wanted = set(v["ids"])
    rows = [[rlong(lk.id), rlong(lk.parent), rlong(lk.ann)] for lk in _visible_links(server, uid) if lk.ann in wanted]
    return rows, len(rows)


def _h_file_of_annotation(server, uid, hql, v, m):
    ann = server.anns.get(v["id"])
    if ann is None or ann.kind != "file" or not server.can_read(uid, ann.owner, ann.group):
        return [], 0
    return [[rlong(ann.file_id)]], 1


def _h_existing_links(server, uid, hql, v, m):
    found = [
        i
        for i in v["ids"]
        if i in server.links_ and server.can_read(uid, server.links_[i].owner, server.links_[i].group)
    ]
    return [[rlong(i)] for i in found], len(found)


HANDLERS = [
    (re.escape(g.Q_ANNOTATION_IMAGES), _h_annotation_images),
    (re.escape(g.Q_FILE_OF_ANNOTATION), _h_file_of_annotation),
    (r"select o\.id from ImageAnnotationLink o where o\.id in \(:ids\)", _h_existing_links),
    (
        r"select l\.parent\.id, l\.child\.id from (ProjectDataset|DatasetImage|ScreenPlate)Link l"
        r" where l\.parent\.id in \(:ids\)",
        _h_children,
    ),
    (
        r"select ws\.well\.plate\.id, ws\.image\.id from WellSample ws where ws\.well\.plate\.id in \(:ids\)()",
        _h_children,
    ),
    (r"select i\.fileset\.id, i\.id from Image i where i\.fileset\.id in \(:ids\)()", _h_children),
    (r"select o\.id from (\w+) o where o\.id in \(:ids\)", _h_existing),
    (
        r"select (?:distinct )?i from Image i join fetch i\.details\.owner join fetch i\.details\.group"
        r" left outer join fetch i\.fileset.* where i\.id in \(:ids\) order by i\.id",
        _h_images,
    ),
    (re.escape(g.Q_FILESET_ENTRIES), _h_entries),
    (re.escape(g.Q_LEGACY_FILES), _h_legacy),
    (re.escape(g.Q_ANNOTATION_LINKS), _h_links),
    # The scheduler's backlog query, by id, and its older form with an exclusion list.
    (
        r"select i\.id from Image i where (?:i\.id > :after and )?not exists \("
        r" select l from ImageAnnotationLink l where l\.parent = i and l\.child\.ns = :ns\)"
        r"(?: and i\.id not in \(:exclude\))? order by i\.id",
        _h_unannotated,
    ),
    (re.escape(g.Q_FILESET_IMAGES), _h_fileset_images),
    (re.escape(g.Q_CODES_PAGE), _h_codes_page),
    (re.escape(g.Q_PIXEL_CODES_PAGE), _h_codes_page),
    (re.escape(g.Q_PIXELS), fake_pixels.h_pixels),
    (re.escape(g.Q_NEWEST_CODES), _h_newest_codes),
    (re.escape(g.Q_NEWEST_ANNOTATIONS), _h_newest_annotations),
    # The older server-wide read: every link with its values, paged. Refused above (collection
    # fetch with paging) whenever it is paged.
    (
        r"select l from ImageAnnotationLink l join fetch l\.child a left outer join fetch a\.mapValue"
        r" join fetch l\.parent i join fetch i\.details\.owner join fetch i\.details\.group"
        r" where a\.ns = :ns order by a\.id desc",
        _h_links,
    ),
]
