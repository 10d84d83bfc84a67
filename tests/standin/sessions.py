"""Sessions of the stand-in: who is logged in, in which group, for how long, over which
connections; and sudo sessions.

- A session has a time-to-live and a time-to-idle (ms, 0 for none); a call after either ends
  fails with ``SessionTimeoutException`` worded as the server's (ome
  ``SessionCache.getDataNullOrThrowOnTimeout``: "Session (started=..., hits=..., last
  access=...) exceeded timeToLive (...) by ... ms"), whatever keep-alives were sent.
- ``ISession.createSessionWithTimeout(Principal, ttl)`` (ome ``SessionBean``,
  ``SessionManagerImpl.createFromRequest``/``validateSessionInputs``): allowed to
  administrators (a restricted one only with the ``Sudo`` privilege: omero-server.md) and to
  leaders of the principal's group; the principal's group is a group NAME (``Principal.group``
  is a Slice string: Ice refuses an int before sending); the user must exist, be active (in the
  ``user`` group) and be a member of that group, else ``SecurityViolation``; ``ttl`` is the new
  session's whole lifetime.
- Closing: ``ISession.closeSession`` drops the session (ome ``SessionManagerImpl.close``
  returns -2 when the last reference goes, -1 for an unknown session).
"""

from __future__ import annotations

import datetime
import uuid

import Ice
import omero
import omero.model
import omero.sys
from omero.rtypes import rlong, rstring, rtime


class Session:
    def __init__(self, user: int, group: int, ttl_ms: int = 0, tti_ms: int = 0, kind: str = "User") -> None:
        self.uuid = str(uuid.uuid4())
        self.id = 0
        self.user, self.group = user, group
        self.ttl_ms, self.tti_ms = ttl_ms, tti_ms
        self.kind = kind
        self.started = None
        self.last_access = None
        self.hits = 0
        self.connections: set = set()
        self.servants: dict = {}
        self.stateful: list = []
        self.callback = None
        self.detached = False
        self.closed = False
        self.inputs: dict = {}
        self.outputs: dict = {}
        self.sudoer: int | None = None

    # -- checks on every call -----------------------------------------------------------------
    def check(self, world, current) -> None:
        from .services import Refused, server_error

        if self.closed:
            raise Ice.ObjectNotExistException()
        if current.con is not None and current.con.toString() not in self.connections:
            raise Ice.ObjectNotExistException()  # Glacier2 routes only the session's own connections
        now = world.now()
        for why, limit, since in (
            ("timeToLive", self.ttl_ms, self.started),
            ("timeToIdle", self.tti_ms, self.last_access),
        ):
            if limit and (now - since) * 1000 > limit:
                started, last = _stamp(self.started), _stamp(self.last_access)
                reason = (
                    f"Session (started={started}, hits={self.hits}, last access={last})"
                    f" exceeded {why} ({limit}) by {int((now - since) * 1000 - limit)} ms"
                )
                raise Refused(server_error(omero.SessionTimeoutException, reason))
        self.hits += 1
        self.last_access = now

    def with_context(self, group: int):
        """A view of this session for one call: the user, and the call's group context."""
        view = _View()
        view.user, view.context_group, view.session = self.user, group, self
        return view

    # -- servants --------------------------------------------------------------------------------
    def servant(self, server, name: str, factory):
        """The proxy of this session's service ``name`` (made on first use)."""
        if name not in self.servants:
            identity = Ice.Identity(name, self.uuid)
            self.servants[name] = (identity, server.add(factory(), identity))
        return self.servants[name][1]

    def add_stateful(self, server, servant, identity):
        self.stateful.append(servant)
        return server.add(servant, identity)

    def forget(self, servant) -> None:
        if servant in self.stateful:
            self.stateful.remove(servant)

    # -- what the client reads -------------------------------------------------------------------
    def model(self, world):
        s = omero.model.SessionI(self.id or 1, True)
        s.setUuid(rstring(self.uuid))
        s.setTimeToLive(rlong(self.ttl_ms))
        s.setTimeToIdle(rlong(self.tti_ms))
        s.setStarted(rtime(int(self.started * 1000)))
        s.setUserAgent(rstring("standin"))
        s.setDefaultEventType(rstring(self.kind))
        s.getDetails().setOwner(omero.model.ExperimenterI(self.user, False))
        s.getDetails().setGroup(omero.model.ExperimenterGroupI(self.group, False))
        return s

    def event_context(self, world):
        user = world.users[self.user]
        group = world.groups[self.group]
        ec = omero.sys.EventContext()
        ec.shareId = -1
        ec.sessionId = self.id or 1
        ec.sessionUuid = self.uuid
        ec.userId = user.id
        ec.userName = user.name
        ec.sudoerId = None if self.sudoer is None else rlong(self.sudoer)
        ec.sudoerName = None if self.sudoer is None else rstring(world.users[self.sudoer].name)
        ec.groupId = group.id
        ec.groupName = group.name
        ec.isAdmin = user.admin
        ec.adminPrivileges = sorted(user.privileges) if user.admin else []
        ec.eventId = world.event.id
        ec.eventType = self.kind
        ec.memberOfGroups = sorted(user.groups)
        ec.leaderOfGroups = sorted(g.id for g in world.groups.values() if user.id in g.leaders)
        ec.groupPermissions = omero.model.PermissionsI(group.perms)
        return ec


class _View:
    user: int
    context_group: int
    session: Session


def _stamp(t) -> str:
    return datetime.datetime.fromtimestamp(t or 0).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def default_group(world, user) -> int:
    if user.__dict__.get("default_group") in user.groups:
        return user.default_group
    data_groups = sorted(g for g in user.groups if g in world.groups and world.groups[g].name != "user")
    return data_groups[0] if data_groups else next(iter(user.groups))


def group_by_name_or_id(world, value: str):
    for g in world.groups.values():
        if g.name == value or str(g.id) == value:
            return g
    return None


def sudo(server, world, caller: Session, principal, ttl: int, tti: int = 0) -> Session:
    """``ISession.createSessionWithTimeout(s)``: a session of ``principal.name`` in the group
    named ``principal.group``, living ``ttl`` ms."""
    from .services import Refused, server_error
    from .world import USER_GROUP

    me = world.users[caller.user]
    target = next((u for u in world.users.values() if u.name == principal.name), None)
    group = group_by_name_or_id(world, principal.group) if principal.group else None
    if not me.admin:
        leads = group is not None and me.id in group.leaders
        if not leads:
            raise Refused(server_error(omero.SecurityViolation, "Only administrators and group owners may sudo"))
    elif "Sudo" not in me.privileges:
        raise Refused(server_error(omero.SecurityViolation, f"Admin restrictions: creating a session for "
                                   f"{principal.name} needs the Sudo privilege"))  # fmt: skip
    if target is None:
        raise Refused(server_error(omero.ApiUsageException, f"No such experimenter: {principal.name}"))
    if target.disabled or USER_GROUP not in target.groups:
        raise Refused(server_error(omero.SecurityViolation, f"User {principal.name} is not active"))
    if principal.group and group is None:
        raise Refused(server_error(omero.ApiUsageException, f"No such group: {principal.group}"))
    gid = group.id if group is not None else default_group(world, target)
    if gid not in target.groups:
        raise Refused(server_error(omero.SecurityViolation, f"User {principal.name} is not a member of group {gid}"))
    session = server.new_session(world, target.id, gid, ttl_ms=ttl, tti_ms=tti, kind=principal.eventType or "User")
    session.sudoer = me.id
    return session
