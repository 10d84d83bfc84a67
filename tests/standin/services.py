"""The stand-in's servants: subclasses of the classes omero-py generates from the server's
Slice, so that Ice marshals every argument and answer exactly as it does against a server.

Every operation of a served interface is dispatched through ``_dispatch``: it finds the
session, refuses a session that has ended (``SessionTimeoutException`` past its time-to-live,
as ome ``SessionCache.getDataNullOrThrowOnTimeout`` words it) or a call over a connection the
session is not bound to (Glacier2 routes nothing else: ``ObjectNotExistException``), counts the
call on the world, applies an injected fault, and maps the stand-in's errors to the server's
exceptions. An operation a servant does not implement answers ``ApiUsageException("... is not
served by the stand-in")``: never a silent ``None`` or a call that never returns (an AMD
operation without an ``_async`` method would never answer).
"""

from __future__ import annotations

import functools
import re
import threading
import traceback
import uuid

import Glacier2
import Ice
import omero
import omero.api
import omero.cmd
import omero.grid
import omero.model
from omero.rtypes import rlong, robject, rstring

from . import convert, hql, model
from . import pixels as pixels_mod

_OPERATION = re.compile(r"(\w+)\._op_(\w+) = IcePy\.Operation\('(\w+)', [^,]+, [^,]+, (True|False)")


@functools.cache
def operations(iface: type) -> dict[str, bool]:
    """Operation name -> whether it is AMD, for a generated interface and its bases (read from
    the generated code: ``IcePy.Operation(name, mode, mode, amd, ...)``)."""
    out: dict[str, bool] = {}
    for klass in reversed(iface.__mro__):
        if not hasattr(klass, "ice_staticId") or klass is Ice.Object:
            continue
        block = model.definitions().get(klass.ice_staticId(), ("", ""))[0]
        for _cls, _op, name, amd in _OPERATION.findall(block):
            out[name] = amd == "True"
    return out


class Refused(Exception):
    """Carries the server exception an operation answers with."""

    def __init__(self, exc: Exception) -> None:
        super().__init__(str(exc))
        self.exc = exc


def server_error(cls, message: str):
    return cls(None, None, message)


def serves(iface: type):
    """Class decorator: routes every operation of ``iface`` through ``_dispatch``; an operation
    the class does not define answers 'not served'."""

    def wrap(cls):
        for name, amd in operations(iface).items():
            impl = cls.__dict__.get(name) or next(
                (getattr(b, name) for b in cls.__mro__[1:] if name in b.__dict__ and b.__module__ == __name__), None
            )
            if amd:
                setattr(cls, name + "_async", _amd(name, impl, iface.__name__))
            else:
                setattr(cls, name, _sync(name, impl, iface.__name__))
        return cls

    return wrap


def _amd(name: str, impl, service: str):
    def method(self, cb, *args):
        current = args[-1]
        try:
            cb.ice_response(*_result(self._dispatch(service, name, impl, args[:-1], current)))
        except Refused as r:
            cb.ice_exception(r.exc)
        except Ice.Exception as exc:
            cb.ice_exception(exc)

    return method


def _result(value) -> tuple:
    return value if isinstance(value, _Many) else (value,) if value is not _NONE else ()


class _Many(tuple):
    """An operation's several return values (``out`` parameters)."""


_NONE = object()


def _sync(name: str, impl, service: str):
    def method(self, *args):
        current = args[-1]
        try:
            value = self._dispatch(service, name, impl, args[:-1], current)
        except Refused as r:
            raise r.exc from None
        return None if value is _NONE else value

    return method


class Servant:
    """What every stand-in servant shares: its server, world and session."""

    def __init__(self, server, world, session) -> None:
        self.server, self.world, self.session = server, world, session

    def _dispatch(self, service: str, name: str, impl, args: tuple, current):
        world, session = self.world, self.session
        if session is not None:
            session.check(world, current)
        if world is not None and world.call(service, name):
            current.con.close(True)  # an injected fault: the connection is lost mid-call
            raise Ice.ConnectionLostException()
        if impl is None:
            raise Refused(server_error(omero.ApiUsageException, f"{service}.{name} is not served by the stand-in"))
        lock = world.lock if world is not None else threading.RLock()
        with lock:
            try:
                value = impl(self, *args, current=current)
            except Refused:
                raise
            except (omero.ServerError, Ice.Exception, Glacier2.CannotCreateSessionException) as exc:
                raise Refused(exc) from None
            except hql.HqlError as exc:
                raise Refused(server_error(omero.QueryException, f"Illegal query:{args[0]}\n{exc}")) from None
            except hql.ParamError as exc:
                raise Refused(server_error(omero.ApiUsageException, str(exc))) from None
            except (hql.DriverError, hql.NotEvaluated) as exc:
                raise Refused(server_error(omero.InternalException, f"{type(exc).__name__}: {exc}")) from None
            except Exception as exc:  # noqa: BLE001 - a stand-in bug: the server's catch-all
                traceback.print_exc()
                raise Refused(server_error(omero.InternalException, f"stand-in failure: {exc!r}")) from None
        return _NONE if value is None else value

    def ctx_group(self, current) -> int:
        """The call's group context: ``omero.group`` if given, else the session's group; a member
        check as the server makes it (ome ``BasicSecurityWrapper`` / ``SessionManagerImpl``:
        a non-member gets ``SecurityViolation``)."""
        value = current.ctx.get("omero.group")
        group = self.session.group if value in (None, "") else int(value)
        user = self.world.users[self.session.user]
        if group >= 0 and not user.admin and group not in user.groups:
            raise Refused(server_error(omero.SecurityViolation, f"Current user is not member of group {group}"))
        return group


def _unwrap_params(params) -> tuple[dict, int | None, int]:
    values = {}
    for name, v in (params.map or {}).items() if params is not None else ():
        inner = getattr(v, "val", v)
        values[name] = [getattr(x, "val", x) for x in inner] if isinstance(inner, list) else inner
    limit, offset = None, 0
    f = getattr(params, "theFilter", None)
    if f is not None:
        limit = f.limit.val if f.limit is not None else None
        offset = f.offset.val if f.offset is not None else 0
    return values, limit, offset


def fetch_plan(query: hql.Query) -> dict:
    """Per alias, the tree of properties fetched beneath it (``convert.Builder.build``'s
    ``tree``): a fetched reference is ``prop -> subtree``, a fetched collection ``prop ->
    ("coll", (alias, prop), subtree)``."""
    nodes: dict[str, dict] = {query.alias: {}}
    for n, join in enumerate(query.joins):
        node = nodes.setdefault(join.path.alias, {})
        *through, last = join.path.props
        for prop in through:  # details.owner: the details node, then the owner
            node = node.setdefault(prop, {})
        child: dict = {}
        if join.fetch and join.collection:
            node[last] = ("coll", (join.path.alias, last), child)
        elif join.fetch:
            child = node.setdefault(last, {})
        nodes[join.alias or f"#{n}"] = child
    return nodes


@serves(omero.api.IQuery)
class QueryService(Servant, omero.api.IQuery):
    def _run(self, text: str, params, current):
        world = self.world
        query = hql.parse(text)
        values, limit, offset = _unwrap_params(params)
        session = self.session.with_context(self.ctx_group(current))
        evaluator = hql.Evaluator(world, session, values, world.param_cap)
        evaluator.bind(query)
        result = evaluator.run(query, limit=limit, offset=offset)
        world.queries.append((text, result.db_rows))
        return query, session, result

    def _objects(self, query, session, result) -> list:
        if len(result.rows and result.rows[0]) != 1 and result.rows:
            raise Refused(server_error(omero.ApiUsageException, "findAllByQuery needs one object per row"))
        nodes = fetch_plan(query)
        tree = nodes.get(query.select[0].alias, {}) if query.select else nodes[query.alias]
        if query.select and query.select[0].props:
            tree = {}
        builder = convert.Builder(self.world, session, result.fetches)
        return [None if obj is None else builder.build(obj, tree) for (obj,) in result.rows]

    def findAllByQuery(self, text, params, current=None):  # noqa: N802 - OMERO's API
        query, session, result = self._run(text, params, current)
        return self._objects(query, session, result)

    def findByQuery(self, text, params, current=None):  # noqa: N802
        query, session, result = self._run(text, params, current)
        found = self._objects(query, session, result)
        if len(found) > 1:
            raise Refused(server_error(omero.ApiUsageException, "findByQuery returned more than one result"))
        return found[0] if found else None

    def projection(self, text, params, current=None):
        query, session, result = self._run(text, params, current)
        builder = convert.Builder(self.world, session)
        return [[self._rtype(builder, e, v) for e, v in zip(query.select, values)] for values in result.rows]

    def _rtype(self, builder, expr, value):
        if value is None:
            return None
        if hasattr(value, "cls"):
            return robject(builder.build(value))
        if isinstance(expr, hql.Path) and expr.steps:
            last = expr.steps[-1]
            if last.kind == "id":
                return rlong(value)
            if last.wrapper is not None:
                return convert._wrap(last, value)
        if isinstance(value, bool):
            return omero.rtypes.rbool(value)
        if isinstance(value, int):
            return rlong(value)
        if isinstance(value, float):
            return omero.rtypes.rdouble(value)
        return rstring(value)

    def get(self, cls, oid, current=None):
        found = self.find(cls, oid, current=current)
        if found is None:
            raise Refused(
                server_error(omero.ValidationException, f"No row with the given identifier exists: {cls}:{oid}")
            )
        return found

    def find(self, cls, oid, current=None):
        # blitz's IceMapper.omeroClass accepts "omero.model.ImageI", "ImageI" and "Image".
        cls = cls.rsplit(".", 1)[-1]
        if not model.is_class(cls) and cls.endswith("I"):
            cls = cls[:-1]
        if not model.is_class(cls):
            raise Refused(server_error(omero.ApiUsageException, f"Unknown class: {cls}"))
        session = self.session.with_context(self.ctx_group(current))
        obj = self.world.get(cls, oid)
        if obj is None or not self.world.readable(session, obj):
            return None
        return convert.build(self.world, session, obj)


@serves(omero.api.IUpdate)
class UpdateService(Servant, omero.api.IUpdate):
    """Saves of new objects (the helper and omero-py save nothing else)."""

    def saveAndReturnArray(self, objects, current=None):  # noqa: N802
        return self._save(list(objects), current)

    def saveAndReturnObject(self, obj, current=None):  # noqa: N802
        return self._save([obj], current)[0]

    def saveObject(self, obj, current=None):  # noqa: N802
        self._save([obj], current)

    def saveArray(self, objects, current=None):  # noqa: N802
        self._save(list(objects), current)

    def saveCollection(self, objects, current=None):  # noqa: N802
        self._save(list(objects), current)

    def saveAndReturnIds(self, objects, current=None):  # noqa: N802
        return [o.getId().val for o in self._save(list(objects), current)]

    def _save(self, objects: list, current) -> list:
        from .saving import save

        group = self.ctx_group(current)
        return save(self.world, self.session, group, objects)


@serves(omero.api.IAdmin)
class AdminService(Servant, omero.api.IAdmin):
    def getEventContext(self, current=None):  # noqa: N802
        return self.session.event_context(self.world)

    def getCurrentAdminPrivileges(self, current=None):  # noqa: N802
        user = self.world.users[self.session.user]
        out = []
        for name in sorted(user.privileges if user.admin else ()):
            p = omero.model.AdminPrivilegeI()
            p.setValue(rstring(name))
            out.append(p)
        return out

    def lookupGroup(self, name, current=None):  # noqa: N802
        group = next((g for g in self.world.groups.values() if g.name == name), None)
        if group is None:
            raise Refused(server_error(omero.ApiUsageException, f"No group found with name: {name}"))
        return convert.group_object(group)

    def getGroup(self, gid, current=None):  # noqa: N802
        group = self.world.groups.get(gid)
        if group is None:
            raise Refused(server_error(omero.ApiUsageException, f"No group found with id: {gid}"))
        return convert.group_object(group)

    def lookupExperimenter(self, name, current=None):  # noqa: N802
        user = next((u for u in self.world.users.values() if u.name == name), None)
        if user is None:
            raise Refused(server_error(omero.ApiUsageException, f"No such experimenter: {name}"))
        return convert.user_object(user)

    def getExperimenter(self, uid, current=None):  # noqa: N802
        user = self.world.users.get(uid)
        if user is None:
            raise Refused(server_error(omero.ApiUsageException, f"No such experimenter: {uid}"))
        return convert.user_object(user)

    def getMemberOfGroupIds(self, exp, current=None):  # noqa: N802
        return sorted(self.world.users[exp.getId().val].groups)

    def getLeaderOfGroupIds(self, exp, current=None):  # noqa: N802
        uid = exp.getId().val
        return sorted(g.id for g in self.world.groups.values() if uid in g.leaders)

    def _need(self, privilege: str) -> None:
        user = self.world.users[self.session.user]
        if not user.admin or privilege not in user.privileges:
            raise Refused(server_error(omero.SecurityViolation, f"{privilege} privilege needed"))

    def createGroup(self, group, current=None):  # noqa: N802
        self._need("ModifyGroup")
        perms = str(group.getDetails().getPermissions()) if group.getDetails().getPermissions() else "rw----"
        gid = next(self.world.ids)
        self.world.add_group(gid, group.getName().val, perms)
        return gid

    def createRestrictedSystemUserWithPassword(self, exp, privileges, password, current=None):  # noqa: N802
        # A restricted (light) administrator: in the system group, with only these privileges.
        self._need("ModifyUser")
        uid = next(self.world.ids)
        names = {p.getValue().val for p in privileges}
        user = self.world.add_user(uid, exp.getOmeName().val, set(), admin=True, privileges=names)
        user.password = password.val if password is not None else None
        return uid

    def addGroups(self, exp, groups, current=None):  # noqa: N802
        self._need("ModifyGroupMembership")
        self.world.users[exp.getId().val].groups.update(g.getId().val for g in groups)

    def removeGroups(self, exp, groups, current=None):  # noqa: N802
        # Removing a user from the system group "user" disables them (ome Roles: "user" is
        # the group of active users).
        self._need("ModifyGroupMembership")
        self.world.users[exp.getId().val].groups.difference_update(g.getId().val for g in groups)

    def addGroupOwners(self, group, owners, current=None):  # noqa: N802
        self._need("ModifyGroupMembership")
        self.world.groups[group.getId().val].leaders.update(e.getId().val for e in owners)

    def createExperimenterWithPassword(self, exp, password, default_group, groups, current=None):  # noqa: N802
        self._need("ModifyUser")
        uid = next(self.world.ids)
        member = {g.getId().val for g in [default_group, *groups]}
        user = self.world.add_user(uid, exp.getOmeName().val, member)
        user.password = password.val if password is not None else None
        user.default_group = default_group.getId().val
        return uid


@serves(omero.api.IConfig)
class ConfigService(Servant, omero.api.IConfig):
    def getConfigValue(self, key, current=None):  # noqa: N802
        if key == "omero.router.insecure":
            return f"OMERO.Glacier2/router:tcp -p {self.server.tcp_port} -h @omero.host@"
        return self.world.config.get(key, "")

    def getClientConfigValues(self, current=None):  # noqa: N802
        return {k: v for k, v in self.world.config.items() if k.startswith("omero.client")}

    def getClientConfigDefaults(self, current=None):  # noqa: N802
        return {}

    def getVersion(self, current=None):  # noqa: N802
        return self.world.config["omero.version"]

    def getDatabaseUuid(self, current=None):  # noqa: N802
        return self.world.config["omero.db.uuid"]


class _Stateful(Servant):
    """A stateful service (created per use, closed by the client or when its session ends)."""

    def __init__(self, server, world, session, identity) -> None:
        super().__init__(server, world, session)
        self.identity = identity

    def close(self, current=None):
        self.session.forget(self)
        self.server.remove(self.identity)

    def activate(self, current=None):
        return None

    def passivate(self, current=None):
        return None


@serves(omero.api.RawFileStore)
class RawFileStore(_Stateful, omero.api.RawFileStore):
    """Reads files of the repository (from disk) or uploaded ones (from memory); writes uploads."""

    file = None
    data: bytes | None = None
    written: bytearray | None = None

    def setFileId(self, fid, current=None):  # noqa: N802
        session = self.session.with_context(self.ctx_group(current))
        obj = self.world.files.get(fid)
        if obj is None or not self.world.readable(session, obj):
            raise Refused(server_error(omero.SecurityViolation, f"Cannot read ome.model.core.OriginalFile:Id_{fid}"))
        self.file = obj
        blob = obj.__dict__.get("blob")
        if blob is not None:
            self.data = blob
        elif obj.__dict__.get("disk") and _exists(obj.disk):
            with open(obj.disk, "rb") as f:
                self.data = f.read()
        elif obj.__dict__.get("disk"):
            raise Refused(server_error(omero.ResourceError, f"File {obj.disk} does not exist in the repository"))
        else:
            self.data = b""  # a new file, to be written

    def getFileId(self, current=None):  # noqa: N802
        return None if self.file is None else rlong(self.file.id)

    def size(self, current=None):
        self._need_file()
        return len(self.written) if self.written is not None else len(self.data)

    def read(self, position, length, current=None):
        self._need_file()
        return bytes(self.data[position : position + length])

    def exists(self, current=None):
        return self.file is not None and (self.data is not None)

    def write(self, buf, position, length, current=None):
        self._need_file()
        if not self.world.allowed(self.session.user, self.file, "edit"):
            raise Refused(server_error(omero.SecurityViolation, f"Cannot write {self.file}"))
        if self.written is None:
            self.written = bytearray(self.data or b"")
        end = position + length
        if len(self.written) < end:
            self.written.extend(b"\0" * (end - len(self.written)))
        self.written[position:end] = buf[:length]

    def save(self, current=None):
        self._need_file()
        if self.written is not None:
            self.file.blob = bytes(self.written)
            self.file.size = len(self.written)
            self.data = self.file.blob
        return convert.build(self.world, self.session, self.file)

    def _need_file(self) -> None:
        if self.file is None:
            raise Refused(server_error(omero.ApiUsageException, "no file id set: call setFileId first"))


def _exists(path: str) -> bool:
    import os

    return os.path.exists(path)


@serves(omero.api.RawPixelsStore)
class RawPixelsStore(_Stateful, omero.api.RawPixelsStore):
    """Planes and tiles of one image's pixels; see ``pixels.py`` for the rules."""

    reader = None

    def setPixelsId(self, pixels_id, bypass, current=None):  # noqa: N802
        session = self.session.with_context(self.ctx_group(current))
        self.reader = pixels_mod.open_reader(self.world, session, pixels_id)

    def _r(self):
        if self.reader is None:
            raise Refused(server_error(omero.ApiUsageException, "no pixels set: call setPixelsId first"))
        return self.reader

    def getPixelsId(self, current=None):  # noqa: N802
        return self._r().pixels.id

    def getResolutionLevels(self, current=None):  # noqa: N802
        return self._r().levels

    def getResolutionLevel(self, current=None):  # noqa: N802
        return self._r().level

    def setResolutionLevel(self, level, current=None):  # noqa: N802
        self._r().set_level(level)

    def getTileSize(self, current=None):  # noqa: N802
        return list(self._r().tile_size())

    def requiresPixelsPyramid(self, current=None):  # noqa: N802
        return self._r().levels > 1

    def getByteWidth(self, current=None):  # noqa: N802
        return self._r().bytes_per_pixel

    def getPlaneSize(self, current=None):  # noqa: N802
        return self._r().plane_size()

    def getPlane(self, z, c, t, current=None):  # noqa: N802
        return self._r().plane(z, c, t)

    def getTile(self, z, c, t, x, y, w, h, current=None):  # noqa: N802
        return self._r().tile(z, c, t, x, y, w, h)


@serves(omero.grid.ManagedRepository)
class ManagedRepository(Servant, omero.grid.ManagedRepository):
    """Answers ``ice_isA`` (the helper finds the ManagedRepository by type); nothing else."""


@serves(omero.grid.Repository)
class ScriptRepository(Servant, omero.grid.Repository):
    pass


@serves(omero.grid.SharedResources)
class SharedResources(Servant, omero.grid.SharedResources):
    def repositories(self, current=None):
        root = self.world.root
        descs, proxies = [], []
        entries = [("", "/OMERO/", "script")]
        if root:
            import os

            entries.append((os.path.basename(root.rstrip("/")), os.path.dirname(root.rstrip("/")) + "/", "managed"))
        for name, path, kind in entries:
            d = omero.model.OriginalFileI(next(self.world.ids), True)
            d.setName(rstring(name))
            d.setPath(rstring(path))
            descs.append(d)
            servant = ManagedRepository if kind == "managed" else ScriptRepository
            prx = self.session.servant(
                self.server, f"repo-{kind}", lambda s=servant: s(self.server, self.world, self.session)
            )
            proxies.append(omero.grid.RepositoryPrx.uncheckedCast(prx))
        return omero.grid.RepositoryMap(descs, proxies)

    def areTablesEnabled(self, current=None):  # noqa: N802
        return False


@serves(omero.api.ISession)
class SessionService(Servant, omero.api.ISession):
    def getSession(self, uuid_, current=None):  # noqa: N802
        found = self.server.session(uuid_)
        if found is None:
            raise Refused(server_error(omero.RemovedSessionException, f"No session with uuid: {uuid_}"))
        return found[1].model(found[0])

    def getReferenceCount(self, uuid_, current=None):  # noqa: N802
        found = self.server.session(uuid_)
        return 0 if found is None else 1

    def closeSession(self, sess, current=None):  # noqa: N802
        uuid_ = sess.getUuid().val
        found = self.server.session(uuid_)
        if found is None:
            raise Refused(server_error(omero.RemovedSessionException, f"No session with uuid: {uuid_}"))
        self.server.close_session(uuid_)
        return 0

    def createSessionWithTimeout(self, principal, ttl, current=None):  # noqa: N802
        from .sessions import sudo

        return sudo(self.server, self.world, self.session, principal, ttl).model(self.world)

    def createSessionWithTimeouts(self, principal, ttl, tti, current=None):  # noqa: N802
        from .sessions import sudo

        return sudo(self.server, self.world, self.session, principal, ttl, tti).model(self.world)

    def _env(self, uuid_):
        found = self.server.session(uuid_)
        if found is None:
            raise Refused(server_error(omero.RemovedSessionException, f"No session with uuid: {uuid_}"))
        return found[1]

    def getInputs(self, uuid_, current=None):  # noqa: N802
        return dict(self._env(uuid_).inputs)

    def getInput(self, uuid_, key, current=None):  # noqa: N802
        return self._env(uuid_).inputs.get(key)

    def getInputKeys(self, uuid_, current=None):  # noqa: N802
        return sorted(self._env(uuid_).inputs)

    def setInput(self, uuid_, key, value, current=None):  # noqa: N802
        self._env(uuid_).inputs[key] = value

    def getOutputs(self, uuid_, current=None):  # noqa: N802
        return dict(self._env(uuid_).outputs)

    def getOutput(self, uuid_, key, current=None):  # noqa: N802
        return self._env(uuid_).outputs.get(key)

    def getOutputKeys(self, uuid_, current=None):  # noqa: N802
        return sorted(self._env(uuid_).outputs)

    def setOutput(self, uuid_, key, value, current=None):  # noqa: N802
        self._env(uuid_).outputs[key] = value


@serves(omero.cmd.Handle)
class Handle(Servant, omero.cmd.Handle):
    """A Delete2 request running on the server (``deleting.py``)."""

    def __init__(self, server, world, session, request, job, identity) -> None:
        super().__init__(server, world, session)
        self.request, self.job, self.identity = request, job, identity

    def addCallback(self, cb, current=None):  # noqa: N802
        self.job.add_callback(current.con.createProxy(cb.ice_getIdentity()))

    def removeCallback(self, cb, current=None):  # noqa: N802
        self.job.remove_callback(cb.ice_getIdentity())

    def getRequest(self, current=None):  # noqa: N802
        return self.request

    def getResponse(self, current=None):  # noqa: N802
        return self.job.response

    def getStatus(self, current=None):  # noqa: N802
        return self.job.status(omero.cmd.HandlePrx.uncheckedCast(current.adapter.createProxy(self.identity)))

    def cancel(self, current=None):
        return self.job.cancel()

    def close(self, current=None):
        # ome HandleI.close: a request that has not finished is cancelled (rolled back).
        self.job.cancel()
        self.session.forget(self)
        self.server.remove(self.identity)


@serves(omero.api.ServiceFactory)
class ServiceFactory(Servant, omero.api.ServiceFactory):
    """The session: hands out the services (one per session, stateful ones per call)."""

    def _service(self, name: str, cls, prx_cls):
        prx = self.session.servant(self.server, name, lambda: cls(self.server, self.world, self.session))
        return prx_cls.uncheckedCast(prx)

    def getQueryService(self, current=None):  # noqa: N802
        return self._service("IQuery", QueryService, omero.api.IQueryPrx)

    def getUpdateService(self, current=None):  # noqa: N802
        return self._service("IUpdate", UpdateService, omero.api.IUpdatePrx)

    def getAdminService(self, current=None):  # noqa: N802
        return self._service("IAdmin", AdminService, omero.api.IAdminPrx)

    def getConfigService(self, current=None):  # noqa: N802
        return self._service("IConfig", ConfigService, omero.api.IConfigPrx)

    def getSessionService(self, current=None):  # noqa: N802
        return self._service("ISession", SessionService, omero.api.ISessionPrx)

    def getScriptService(self, current=None):  # noqa: N802
        from .scriptservice import ScriptService

        return self._service("IScript", ScriptService, omero.api.IScriptPrx)

    def sharedResources(self, current=None):  # noqa: N802
        return self._service("SharedResources", SharedResources, omero.grid.SharedResourcesPrx)

    def _stateful(self, cls, prx_cls):
        identity = Ice.Identity(str(uuid.uuid4()), self.session.uuid)
        servant = cls(self.server, self.world, self.session, identity)
        return prx_cls.uncheckedCast(self.session.add_stateful(self.server, servant, identity))

    def createRawFileStore(self, current=None):  # noqa: N802
        return self._stateful(RawFileStore, omero.api.RawFileStorePrx)

    def createRawPixelsStore(self, current=None):  # noqa: N802
        return self._stateful(RawPixelsStore, omero.api.RawPixelsStorePrx)

    def submit(self, request, current=None):
        from .deleting import start

        group = self.ctx_group(current)
        job = start(self.server, self.world, self.session, request, group)
        identity = Ice.Identity(str(uuid.uuid4()), self.session.uuid)
        servant = Handle(self.server, self.world, self.session, request, job, identity)
        return omero.cmd.HandlePrx.uncheckedCast(self.session.add_stateful(self.server, servant, identity))

    def setCallback(self, cb, current=None):  # noqa: N802
        self.session.callback = cb

    def keepAlive(self, prx, current=None):  # noqa: N802
        return True

    def keepAllAlive(self, proxies, current=None):  # noqa: N802
        return []

    def detachOnDestroy(self, current=None):  # noqa: N802
        self.session.detached = True

    def closeOnDestroy(self, current=None):  # noqa: N802
        self.session.detached = False

    def activeServices(self, current=None):  # noqa: N802
        return [s.identity.name for s in self.session.stateful]

    def getSecurityContexts(self, current=None):  # noqa: N802
        return [convert.group_object(self.world.groups[self.session.group])]

    def setSecurityContext(self, obj, current=None):  # noqa: N802
        gid = obj.getId().val
        user = self.world.users[self.session.user]
        if gid not in user.groups and not user.admin:
            raise Refused(server_error(omero.SecurityViolation, f"not a member of group {gid}"))
        self.session.group = gid
        return convert.group_object(self.world.groups[gid])

    def destroy(self, current=None):
        self.server.detach(self.session, current.con)
