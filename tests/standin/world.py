"""The world the stand-in server serves: users, groups, images, filesets, files on disk,
annotations, links, containers, pixels; the permission rules the server applies to them; and
the building and assertion calls the tests use.

Every row is an ``Obj`` of a real model class (``Image``, ``FilesetEntry``, ``MapAnnotation``...)
whose values are keyed by the model's own property names, so that queries are evaluated over it
(``hql.py``) and answers are built from it (``convert.py``) without knowing any query.

Permission rules, each from the server's source:

- reading (ome ``BasicACLVoter.allowLoad``; light administrators read everything): an
  administrator or the owner reads an object; a member reads others' objects when the group is
  group-readable (``rwr---``, ``rwra--``, ``rwrw--``), not in a private group (``rw----``);
- the group context (``omero.group`` in the call context; without it the session's group) limits
  what a query sees to that group, ``-1`` to every group the user may read (openmicroscopy
  ``test_permissions.py::testSearchAllGroups``);
- linking, annotating, editing, deleting (ome ``BasicACLVoter.allowUpdateOrDelete``): a full
  administrator may, a restricted one only with ``WriteOwned`` (annotate, link, edit) or
  ``DeleteOwned`` (delete); a group leader may; the owner may with the group's user rights; a
  member with the group's group rights (annotate in ``rwra--`` and ``rwrw--``, write and delete
  only in ``rwrw--``); in a private group nobody, administrators and leaders included, may link
  or annotate an object that is not their own (``CurrentDetails.isGraphCritical``: "any form of
  admin modification is critical");
- a link joins objects of one group (ome ``OmeroInterceptor.throwIfGroupsDontMatch``: "MIXED
  GROUP: ... cannot be linked", ``GroupSecurityViolation``).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import secrets
import threading
import time
import weakref
from collections.abc import Mapping

from . import model

#: Every privilege of a full administrator (omero ``AdminPrivilege`` values).
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
#: The pgjdbc parameter cap of the drivers before 42.4.
PARAM_CAP = 32767
#: The id of the system group "user": every active user is in it (OMERO ``Roles``).
USER_GROUP = 99001
NS = "org.iscc.omero.sum"
#: Groups whose members read each other's objects (the ``r`` of the group triple).
_READ, _ANNOTATE, _WRITE = "r", "a", "w"
#: Classes every session may read (system types, enumerations, events).
SYSTEM_TYPES = {"Experimenter", "ExperimenterGroup", "Event", "PixelsType", "Format", "ChecksumAlgorithm"}


class Obj:
    """One row: ``cls`` (a model class name), ``id``, ``owner`` and ``group`` ids, and the
    model properties in ``v`` (a reference is the referenced id; ``mapValue`` a list of
    (name, value)). Other attributes are the stand-in's own (a file's path on disk...)."""

    def __init__(self, cls: str, oid: int, owner: int | None = None, group: int | None = None, **values) -> None:
        self.__dict__.update(cls=cls, id=oid, owner=owner, group=group, v=values, event=None)

    def __getattr__(self, name: str):
        values = self.__dict__.get("v")
        if values is not None and name in values:
            return values[name]
        raise AttributeError(name)

    def __setattr__(self, name: str, value) -> None:
        if name not in self.__dict__ and name in model.fields(self.cls):
            self.v[name] = value
        else:
            self.__dict__[name] = value

    def __repr__(self) -> str:
        return f"{self.cls}:{self.id}"


class User(Obj):
    def __init__(self, uid: int, name: str, groups, admin: bool = False, privileges=frozenset()) -> None:
        super().__init__("Experimenter", uid, omeName=name, firstName=name, lastName="")
        self.__dict__.update(groups=set(groups), admin=admin, privileges=frozenset(privileges), disabled=False)
        self.__dict__["password"] = None

    @property
    def name(self) -> str:
        return self.v["omeName"]


class Group(Obj):
    def __init__(self, gid: int, name: str, perms: str) -> None:
        super().__init__("ExperimenterGroup", gid, name=name)
        self.__dict__.update(perms=perms, leaders=set())

    @property
    def name(self) -> str:
        return self.v["name"]


class Ann(Obj):
    """An annotation row, with the names today's tests read."""

    @property
    def pairs(self) -> list:
        return [list(p) for p in self.v.get("mapValue") or []]

    @property
    def kind(self) -> str:
        return "map" if self.cls == "MapAnnotation" else "file"

    @property
    def file_id(self) -> int | None:
        return self.v.get("file")


#: Every world made in this process (the tests close their clients after each test).
WORLDS: weakref.WeakSet = weakref.WeakSet()


def close_all() -> None:
    """Closes every client opened into a world and forgets the worlds' sessions."""
    from . import server

    for world in list(WORLDS):
        world.close_clients()
        if server._server is not None and not world.keep:
            server._server.forget_world(world)
            WORLDS.discard(world)


class FakeServer:
    """The world of one test, and the server's rules over it. ``access(user)`` connects the
    helper to the stand-in server over Ice as that user."""

    def __init__(self, root: str | None = None, param_cap: int = PARAM_CAP, session_user: int = 2) -> None:
        self.root = root
        self.param_cap = param_cap
        self.session_user = session_user
        self.ids = itertools.count(1000)
        self.lock = threading.RLock()
        self.tables: dict[str, dict[int, Obj]] = {}
        self.version = 0
        self._cache: dict = {}
        self.password = secrets.token_hex(8)
        self.config = {
            "omero.pixeldata.max_plane_width": "3192",
            "omero.pixeldata.max_plane_height": "3192",
            "omero.pixeldata.tile_width": "256",
            "omero.pixeldata.tile_height": "256",
            "omero.scripts.timeout": "3600000",
            "omero.sessions.timeout": "600000",
            "omero.version": "5.6.10-standin",
            "omero.db.uuid": "standin-" + secrets.token_hex(4),
        }
        self.calls: dict[str, int] = {}
        self.calls_by_service: dict[str, int] = {}
        self.queries: list = []
        self.drops: dict = {}
        self.events: dict = {}
        self.fail_save_for: set = set()
        self.written = {"map_annotations": 0, "rows": 0, "links": 0}
        self.pixels: dict[int, Obj] = {}
        #: How long a Delete2 request takes on this server (seconds), and the requests made.
        self.delete_seconds = 0.0
        self.delete_jobs: list = []
        #: Seconds added to the wall clock (sessions' time-to-live is judged on it).
        self.clock_offset = 0.0
        self.sessions: dict = {}
        self.clients: list = []
        #: Kept registered across tests (a module's world).
        self.keep = False
        #: Official scripts: path -> (id, text); where the Processor's Python finds the helper.
        self.scripts: dict = {}
        self.processor_path: list = []
        self.processor_pythonpath: list = []
        self.event = self._new_event()
        WORLDS.add(self)
        self.groups[USER_GROUP] = Group(USER_GROUP, "user", "rwr---")
        for gid, name, perms in [(1, "group 1", "rwra--"), (2, "group 2", "rwra--"), (3, "lab 3", "rwr---")]:
            self.add_group(gid, name, perms)
        self.add_user(0, "root", {1, 2, 3}, admin=True)
        self.add_user(2, "scientist", {1, 2, 3})
        self.add_user(9, "boss", {3})

    def __getstate__(self) -> dict:
        """A world to hand to ``server.py --world``: its rows and settings, not its sessions."""
        state = dict(self.__dict__)
        for transient in ("lock", "clients", "sessions", "_cache", "delete_jobs", "events"):
            state.pop(transient, None)
        return state

    def __setstate__(self, state: dict) -> None:
        fresh = {
            "lock": threading.RLock(),
            "clients": [],
            "sessions": {},
            "_cache": {},
            "delete_jobs": [],
            "events": {},
        }
        self.__dict__.update(state, **fresh)
        WORLDS.add(self)

    # -- tables ------------------------------------------------------------------------------
    def table(self, cls: str) -> dict[int, Obj]:
        return self.tables.setdefault(model.root(cls), {})

    @property
    def users(self) -> dict[int, User]:
        return self.table("Experimenter")

    @property
    def groups(self) -> dict[int, Group]:
        return self.table("ExperimenterGroup")

    @property
    def images_(self) -> dict[int, Obj]:
        return self.table("Image")

    @property
    def files(self) -> dict[int, Obj]:
        return self.table("OriginalFile")

    @property
    def anns(self) -> dict[int, Ann]:
        return self.table("Annotation")

    @property
    def filesets(self) -> dict[int, Obj]:
        return self.table("Fileset")

    def changed(self) -> None:
        self.version += 1

    def add(self, obj: Obj) -> Obj:
        if obj.event is None:
            obj.event = self.event
        self.table(obj.cls)[obj.id] = obj
        self.changed()
        return obj

    def remove(self, cls: str, oid: int) -> None:
        self.table(cls).pop(oid, None)
        self.changed()

    def new(self, cls: str, owner: int | None = None, group: int | None = None, **values) -> Obj:
        klass = Ann if model.root(cls) == "Annotation" else Obj
        return self.add(klass(cls, next(self.ids), owner, group, **values))

    def get(self, cls: str, oid) -> Obj | None:
        obj = self.table(cls).get(oid)
        return obj if obj is not None and self.is_a(obj, cls) else None

    def is_a(self, obj: Obj, cls: str) -> bool:
        return obj.cls == cls or model.is_subclass(obj.cls, cls)

    def ids_of(self, cls: str) -> list[int]:
        key = ("ids", model.root(cls), self.version)
        if key not in self._cache:
            self._cache = {k: v for k, v in self._cache.items() if k[-1] == self.version}
            self._cache[key] = sorted(self.table(cls))
        return self._cache[key]

    def index(self, cls: str, prop: str) -> dict:
        key = ("index", model.root(cls), prop, self.version)
        if key not in self._cache:
            out: dict = {}
            for obj in self.table(cls).values():
                out.setdefault(obj.v.get(prop), []).append(obj)
            self._cache[key] = out
        return self._cache[key]

    # -- reading rows (for the query evaluator) ------------------------------------------------
    def deref(self, obj: Obj, field: model.Field) -> Obj | None:
        target = obj.v.get(field.name)
        return None if target is None else self.table(field.target).get(target)

    @staticmethod
    def scalar(obj: Obj, name: str):
        return obj.v.get(name)

    def details_of(self, obj: Obj, name: str):
        if name == "owner":
            return self.users.get(obj.owner)
        if name == "group":
            return self.groups.get(obj.group)
        if name in ("creationEvent", "updateEvent"):
            return obj.event
        if name == "permissions":
            return self.groups[obj.group].perms if obj.group in self.groups else None
        return None

    def collection(self, obj: Obj, field: model.Field) -> list:
        from .hql import Element

        if field.kind == "values":
            return [Element(obj, n, tuple(p)) for n, p in enumerate(obj.v.get(field.name) or [])]
        back = model.back_pointer(obj.cls, field.name)
        members = self.index(field.target, back).get(obj.id, [])
        members = [m for m in members if self.is_a(m, field.target)]
        members.sort(key=lambda m: (m.__dict__.get("position", 0), m.id))
        return [Element(obj, n, m) for n, m in enumerate(members)]

    # -- the rules -------------------------------------------------------------------------------
    def now(self) -> float:
        return time.time() + self.clock_offset

    def perms(self, gid: int | None) -> str:
        group = self.groups.get(gid)
        return group.perms if group is not None else "rw----"

    def member(self, uid: int, gid: int) -> bool:
        return gid in self.users[uid].groups

    def readable(self, session, obj: Obj) -> bool:
        """Whether a query of ``session`` returns ``obj`` (security filter and group context)."""
        if obj.cls in SYSTEM_TYPES or obj.group is None:
            return True
        group = session.context_group
        if group >= 0 and obj.group != group:
            return False
        return self.can_read(session.user, obj.owner, obj.group)

    def can_read(self, uid: int, owner: int | None, group: int | None) -> bool:
        # ome BasicACLVoter.allowLoad: admins (light ones too), leaders, owners, and members of
        # a group-readable group.
        user = self.users[uid]
        if user.admin or owner == uid or group is None:
            return True
        if uid in self.groups[group].leaders:
            return True
        return self.member(uid, group) and self.perms(group)[2] == _READ

    def allowed(self, uid: int, obj: Obj, scope: str) -> bool:
        """ome ``BasicACLVoter.allowUpdateOrDelete`` for one scope: ``link``, ``annotate``,
        ``edit`` or ``delete``."""
        user = self.users[uid]
        perms = self.perms(obj.group)
        owner = obj.owner == uid
        leader = uid in self.groups[obj.group].leaders if obj.group in self.groups else False
        if scope in ("link", "annotate") and not owner and perms[2] != _READ and (user.admin or leader):
            return False  # CurrentDetails.isGraphCritical: a private group
        if user.admin and user.privileges == ALL_PRIVILEGES:
            return True
        if user.admin and ("DeleteOwned" if scope == "delete" else "WriteOwned") in user.privileges:
            return True
        if leader:
            return True
        right = {"link": _ANNOTATE, "annotate": _ANNOTATE, "edit": _WRITE, "delete": _WRITE}[scope]
        user_rights, group_rights = perms[0:2], perms[2:4]
        if owner and _granted(user_rights, right):
            return True
        return self.member(uid, obj.group) and _granted(group_rights, right)

    def can_annotate(self, uid: int, owner: int, group: int) -> bool:
        return self.allowed(uid, Obj("Image", 0, owner, group), "annotate")

    def can_delete(self, uid: int, obj: Obj) -> bool:
        return self.allowed(uid, obj, "delete")

    # -- faults ------------------------------------------------------------------------------------
    def call(self, service: str, method: str) -> bool:
        """Counts a call; True when an injected fault says to drop the connection now."""
        self.calls[method] = self.calls.get(method, 0) + 1
        key = f"{service}.{method}"
        self.calls_by_service[key] = self.calls_by_service.get(key, 0) + 1
        action = self.events.pop((method, self.calls[method]), None)
        if action is not None:
            action()
        if self.drops.get(method) == self.calls[method]:
            del self.drops[method]
            return True
        return False

    def before_call(self, method: str, calls: int, action) -> None:
        """Runs ``action()`` just before the ``calls``-th next call of ``method`` (something
        another user does on the server meanwhile)."""
        self.events[(method, self.calls.get(method, 0) + calls)] = action

    def drop_connection_after(self, method: str, calls: int) -> None:
        """The ``calls``-th next call of ``method`` loses its connection (the server closes it)."""
        self.drops[method] = self.calls.get(method, 0) + calls

    @property
    def rows(self) -> int:
        return sum(r for _, r in self.queries)

    @property
    def max_plane(self) -> tuple:
        return (
            int(self.config["omero.pixeldata.max_plane_width"]),
            int(self.config["omero.pixeldata.max_plane_height"]),
        )

    @max_plane.setter
    def max_plane(self, size: tuple) -> None:
        self.config["omero.pixeldata.max_plane_width"] = str(size[0])
        self.config["omero.pixeldata.max_plane_height"] = str(size[1])

    def advance(self, seconds: float) -> None:
        """Moves this world's clock on (sessions expire by it)."""
        self.clock_offset += seconds

    # -- building the world ------------------------------------------------------------------------
    def _new_event(self) -> Obj:
        event = Obj("Event", next(self.ids), time=int(time.time() * 1000))
        self.table("Event")[event.id] = event
        return event

    def add_user(self, uid: int, name: str, groups, admin: bool = False, privileges=None) -> User:
        """A user; an administrator has every privilege unless ``privileges`` restricts them."""
        if privileges is None:
            privileges = ALL_PRIVILEGES if admin else frozenset()
        user = User(uid, name, set(groups) | {USER_GROUP}, admin, privileges)
        self.users[uid] = user
        self.changed()
        return user

    def add_group(self, gid: int, name: str, perms: str) -> Group:
        self.groups[gid] = Group(gid, name, perms)
        self.changed()
        return self.groups[gid]

    def enum(self, cls: str, value: str) -> int:
        for obj in self.table(cls).values():
            if obj.v.get("value") == value:
                return obj.id
        return self.add(Obj(cls, next(self.ids), value=value)).id

    def add_container(self, kind: str, cid: int, children: list[int], group: int = 1, owner: int = 2) -> None:
        """A Project, Dataset, Screen or Plate with its children (Datasets, Images, Plates;
        a Plate's children are images in wells)."""
        if self.get(kind, cid) is None:
            self.add(Obj(kind, cid, owner, group, name=f"{kind.lower()} {cid}"))
        self.add_to_container(kind, cid, children)

    def add_to_container(self, kind: str, cid: int, children: list[int]) -> None:
        parent = self.get(kind, cid)
        if kind == "Plate":
            for n, image in enumerate(children):
                well = self.new("Well", parent.owner, parent.group, plate=cid, row=n // 24, column=n % 24)
                self.new("WellSample", parent.owner, parent.group, well=well.id, image=image)
            return
        link, child = {"Project": ("ProjectDatasetLink", "Dataset"), "Dataset": ("DatasetImageLink", "Image"),
                       "Screen": ("ScreenPlateLink", "Plate")}[kind]  # fmt: skip
        for c in children:
            if self.get(child, c) is None:
                self.add(Obj(child, c, parent.owner, parent.group, name=f"{child.lower()} {c}"))
            self.new(link, parent.owner, parent.group, parent=cid, child=c)

    def original_file(
        self, disk_path: str, repo_dir: str, name: str | None = None, hasher: str | None = "SHA1-160"
    ) -> int:
        """An OriginalFile of the ManagedRepository: its path relative to the repository
        (``repo_dir``), its name, size and import checksum from the file on disk."""
        name = name or os.path.basename(disk_path)
        size = digest = None
        if os.path.exists(disk_path):
            with open(disk_path, "rb") as f:
                data = f.read()
            size = len(data)
            algo = {"SHA1-160": hashlib.sha1, "MD5-128": hashlib.md5}.get(hasher or "")
            digest = algo(data).hexdigest() if algo else None
        values = {"name": name, "path": repo_dir, "size": size, "hash": digest, "repo": "ManagedRepository"}
        if hasher:
            values["hasher"] = self.enum("ChecksumAlgorithm", hasher)
        obj = self.new("OriginalFile", 2, 1, **values)
        obj.disk = disk_path
        return obj.id

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
        """A Fileset of the files (in import order) and its images."""
        if not can_annotate:  # someone else's image in a read-only group: readable, not annotatable
            group_id, owner = 3, 9
        fileset = self.new("Fileset", owner, group_id, templatePrefix=template_prefix)
        for n, fid in enumerate(files):
            f = self.files[fid]
            f.owner, f.group = owner, group_id
            entry = self.new("FilesetEntry", owner, group_id, fileset=fileset.id, originalFile=fid, clientPath=f.name)
            entry.position = n
        return [self.add_image(group_id, owner, (names or [None] * n_images)[k], fileset.id) for k in range(n_images)]

    def add_image(self, group_id: int = 1, owner: int = 2, name: str | None = None, fileset: int | None = None) -> int:
        image = self.new("Image", owner, group_id, fileset=fileset)
        image.name = name or f"image {image.id}"
        return image.id

    _image = add_image

    def add_legacy_image(self, files: list[int], group_id: int = 1, owner: int = 2) -> int:
        """An image imported before OMERO 5: no Fileset, its files in PixelsOriginalFileMap."""
        iid = self.add_image(group_id, owner)
        pixels = self.new("Pixels", owner, group_id, image=iid, sizeX=1, sizeY=1, sizeZ=1, sizeC=1, sizeT=1)
        pixels.pixelsType = self.enum("PixelsType", "uint8")
        pixels.data = None
        pixels.broken = "the stand-in holds no pixel data for this image"
        for fid in files:
            self.files[fid].owner, self.files[fid].group = owner, group_id
            self.new("PixelsOriginalFileMap", owner, group_id, parent=fid, child=pixels.id)
        return iid

    def import_file(self, path: str, owner: int, group: int, pixels: tuple | None = None) -> int:
        """What ``omero import`` leaves on a server, made directly: the file copied into the
        ManagedRepository under the owner's directory (``%user%_%userId%/...``), its
        OriginalFile (with SHA1), a Fileset and an Image; ``pixels``: (sizes, pixel type, bytes
        per pixel, data) as the server would decode them."""
        import shutil

        user = self.users[owner]
        rel = f"{user.name}_{owner}/{time.strftime('%Y-%m/%d/%H-%M-%S')}.{next(self.ids)}/"
        dest = os.path.join(self.root, rel, os.path.basename(path))
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copyfile(path, dest)
        fid = self.original_file(dest, rel)
        [image] = self.add_fileset([fid], rel, group_id=group, owner=owner, names=[os.path.basename(path)])
        if pixels is not None:
            from .pixels import add_pixels

            add_pixels(self, image, *pixels)
        return image

    def add_annotation(self, image_id: int, pairs: list, namespace: str, owner: int | None = None) -> int:
        """A MapAnnotation in the image's group linked to it (owned by the image's owner unless
        ``owner``)."""
        image = self.images_[image_id]
        owner = image.owner if owner is None else owner
        ann = self.new("MapAnnotation", owner, image.group, ns=namespace, mapValue=[tuple(p) for p in pairs])
        self.new("ImageAnnotationLink", owner, image.group, parent=image_id, child=ann.id)
        return ann.id

    def hide(self, image_id: int) -> None:
        """Moves the image, with its links and annotations, into another user's private group
        the session user is not in: from then on it cannot see any of them."""
        if 99 not in self.groups:
            self.add_group(99, "private lab", "rw----")
            self.add_user(98, "stranger", {99})
        image = self.images_[image_id]
        image.owner, image.group = 98, 99
        for link in self.table("ImageAnnotationLink").values():
            if link.v["parent"] == image_id:
                link.owner, link.group = 98, 99
                ann = self.anns[link.v["child"]]
                ann.owner, ann.group = 98, 99
        self.changed()

    # -- the session ---------------------------------------------------------------------------------
    def access(self, user: int | None = None):
        """The helper's OMERO access (``BlitzOmero``) over a real ``BlitzGateway`` connected to
        the stand-in server over Ice, logged in as ``user`` (default: ``session_user``)."""
        from omero_iscc.gateway import BlitzOmero

        return BlitzOmero(self.gateway(self.session_user if user is None else user))

    def gateway(self, user: int):
        """A ``BlitzGateway`` logged in as ``user``, as the scheduler's ``connect`` makes one."""
        from .server import connect

        client = connect(self, self.users[user].name)
        from omero.gateway import BlitzGateway

        return BlitzGateway(client_obj=client)

    def login(self, name: str):
        """``(host, port, user, password)`` for a login as ``name`` into this world."""
        from .server import ensure_server

        server = ensure_server()
        server.register(self)
        return "127.0.0.1", server.port, name, self.password

    def close_clients(self) -> None:
        for client in self.clients:
            with contextlib.suppress(Exception):  # a client already closed or broken is fine here
                client.closeSession()
        self.clients.clear()

    # -- assertions' helpers ------------------------------------------------------------------------
    def _links(self, kind: str = "Image"):
        return self.table(f"{kind}AnnotationLink").values()

    def iscc_anns(self, image_id: int, namespace: str = NS) -> list[Ann]:
        return [
            self.anns[link.v["child"]]
            for link in sorted(self._links(), key=lambda lk: lk.id)
            if link.v["parent"] == image_id
            and link.v["child"] in self.anns
            and self.anns[link.v["child"]].v.get("ns") == namespace
        ]

    def _by_image(self, keep) -> _ByImage:
        return _ByImage(self, keep)

    @property
    def annotations(self) -> _ByImage:
        """Image id -> its ISCC MapAnnotations (model objects), whoever may see them."""
        return self._by_image(lambda ns: ns == NS)

    @property
    def other_annotations(self) -> _ByImage:
        return self._by_image(lambda ns: ns != NS)

    @property
    def saved_groups(self) -> list:
        """(image id, group) of every ISCC annotation."""
        return [
            (link.v["parent"], self.anns[link.v["child"]].group)
            for link in self._links()
            if self.anns[link.v["child"]].v.get("ns") == NS
        ]

    def owner_of_iscc(self, image_id: int) -> tuple[int, int]:
        """(annotation owner, link owner) of an image's one ISCC annotation."""
        [link] = [
            lk for lk in self._links() if lk.v["parent"] == image_id and self.anns[lk.v["child"]].v.get("ns") == NS
        ]
        return self.anns[link.v["child"]].owner, link.owner

    def pairs(self, image_id: int) -> list:
        anns = [a for a in self.iscc_anns(image_id) if a.cls == "MapAnnotation"]
        assert len(anns) == 1, f"image {image_id} has {len(anns)} ISCC annotations"
        return anns[0].pairs

    @property
    def attachments(self) -> list:
        """(parent kind, parent id, name, data, namespace, mimetype) of every file annotation
        linked to an object."""
        out = []
        for kind in ("Image", "Fileset", "Dataset", "Project", "Screen", "Plate"):
            for link in sorted(self._links(kind), key=lambda lk: lk.id):
                ann = self.anns.get(link.v["child"])
                if ann is not None and ann.cls == "FileAnnotation":
                    f = self.files[ann.v["file"]]
                    out.append((kind, link.v["parent"], f.name, f.blob, ann.v.get("ns"), f.v.get("mimetype")))
        return out

    @property
    def uploads(self) -> dict:
        """Uploaded original files no file annotation refers to: id -> (name, data, mimetype,
        owner) (a script's ``File`` output)."""
        used = {a.v.get("file") for a in self.anns.values() if a.cls == "FileAnnotation"}
        return {
            f.id: (f.name, f.blob, f.v.get("mimetype"), f.owner)
            for f in self.files.values()
            if f.__dict__.get("blob") is not None and f.id not in used
        }

    def orphans(self) -> list[int]:
        """File annotations linked to nothing."""
        linked = {
            link.v["child"]
            for kind in ("Image", "Fileset", "Dataset", "Project", "Screen", "Plate")
            for link in self._links(kind)
        }
        return [a.id for a in self.anns.values() if a.cls == "FileAnnotation" and a.id not in linked]

    def model_map_annotation(self, aid: int):
        from .convert import bare

        return bare(self, self.anns[aid])


class _ByImage(Mapping):
    """Image id -> its MapAnnotations (model objects) in the namespaces ``keep`` accepts,
    built only for the images asked for."""

    def __init__(self, world: FakeServer, keep) -> None:
        self.world, self.keep = world, keep

    def _anns(self, link):
        ann = self.world.anns.get(link.v["child"])
        return ann if ann is not None and ann.cls == "MapAnnotation" and self.keep(ann.v.get("ns")) else None

    def _index(self) -> dict:
        out: dict = {}
        for link in self.world.table("ImageAnnotationLink").values():
            ann = self._anns(link)
            if ann is not None:
                out.setdefault(link.v["parent"], []).append(ann.id)
        return out

    def __getitem__(self, image_id: int) -> list:
        links = self.world.index("ImageAnnotationLink", "parent").get(image_id, ())
        anns = sorted(a.id for a in (self._anns(link) for link in links) if a is not None)
        if not anns:
            raise KeyError(image_id)
        return [self.world.model_map_annotation(a) for a in anns]

    def __contains__(self, image_id: object) -> bool:
        index = self.world.index("ImageAnnotationLink", "parent")
        return any(self._anns(link) is not None for link in index.get(image_id, ()))

    def __iter__(self):
        return iter(sorted(self._index()))

    def __len__(self) -> int:
        return len(self._index())

    def __eq__(self, other: object) -> bool:
        return dict(self.items()) == other if isinstance(other, dict) else NotImplemented


def _granted(triple: str, right: str) -> bool:
    """A user or group pair of ``rwra--``: read ``r``, annotate ``a`` (or ``w``), write ``w``."""
    if right == _READ:
        return triple[0] == "r"
    if right == _ANNOTATE:
        return triple[1] in ("a", "w")
    return triple[1] == "w"
