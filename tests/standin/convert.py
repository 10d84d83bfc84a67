"""Model objects for answers: a world row becomes the ``omero.model`` object the server would
send, loaded as far as the query fetched it and no further.

- An object the query returns is loaded; its references are unloaded proxies (``ImageI(id,
  False)``) unless the query fetched them (``join fetch i.fileset``); collections are unloaded
  unless fetched, and a fetched collection holds the elements the query's rows joined.
- ``details``: owner and group (unloaded unless fetched), the creation event, and the group's
  permissions with the restrictions the session has on the object (ome
  ``BasicACLVoter.postProcess``: link, edit, delete, annotate, computed per object and caller),
  which omero-py reads as ``canAnnotate()``, ``canDelete()``...
- ``mapValue`` is always sent (omero-py's own wrappers read it from objects their queries did not
  fetch it for).

One ``Builder`` makes one answer: objects met twice in it are sent once (Ice marshals a shared
instance once), as the server's answers share them.
"""

from __future__ import annotations

import functools

import omero
import omero.model
from omero.rtypes import rlong, rstring, rtime

from . import model

_RESTRICTIONS = ("link", "edit", "delete", "annotate")


@functools.cache
def _plan(cls: str) -> tuple:
    """Per class: (scalars, value lists, references, collections) as (name, field) pairs."""
    kinds: dict[str, list] = {"scalar": [], "values": [], "ref": [], "coll": []}
    for name, f in model.fields(cls).items():
        if f.kind in kinds:
            kinds[f.kind].append((name, f))
    return tuple(tuple(kinds[k]) for k in ("scalar", "values", "ref", "coll"))


@functools.cache
def _perm1(perms: str) -> int:
    return omero.model.PermissionsI(perms)._perm1


@functools.cache
def _template(cls: str) -> tuple[type, dict]:
    """A loaded, empty instance's attributes: new objects are copies (the generated
    constructors set every field through a checking ``__setattr__``, slowly)."""
    klass = model.implementation(cls)
    proto = klass(None, True)
    return klass, {k: v for k, v in proto.__dict__.items() if k != "_details"}


def new_object(cls: str, oid: int):
    klass, template = _template(cls)
    out = klass.__new__(klass)
    out.__dict__.update(template)
    out.__dict__["_id"] = rlong(oid)
    out.__dict__["_details"] = omero.model.DetailsI()
    return out


def _set(obj, name: str, value) -> None:
    obj.__dict__[name] = value  # the generated classes' __setattr__ checks names, slowly


class Builder:
    def __init__(self, world, session, fetched: dict | None = None) -> None:
        self.world, self.session, self.fetched = world, session, fetched or {}
        self.memo: dict = {}
        self.refs: dict = {}
        self.allowed: dict = {}

    def unloaded(self, cls: str, oid: int):
        key = (cls, oid)
        found = self.refs.get(key)
        if found is None:
            found = self.refs[key] = model.implementation(cls)(oid, False)
        return found

    def build(self, obj, tree: dict | None = None):
        """The model object of ``obj``: ``tree`` says which properties were fetched (property
        -> subtree, collections as ``("coll", key, subtree)``)."""
        key = (obj.cls, obj.id, id(tree))
        found = self.memo.get(key)
        if found is not None:
            return found
        tree = tree or {}
        world = self.world
        out = new_object(obj.cls, obj.id)
        self.memo[key] = out
        scalars, values, refs, colls = _plan(obj.cls)
        v = obj.v
        for name, f in scalars:
            value = v.get(name)
            if value is not None:
                _set(out, "_" + name, _wrap(f, value))
        for name, _f in values:
            _set(out, "_" + name, [omero.model.NamedValue(k, val) for k, val in v.get(name) or []])
        for name, f in refs:
            target = world.deref(obj, f)
            if target is None:
                continue
            if name in tree and world.readable(self.session, target):
                _set(out, "_" + name, self.build(target, tree[name]))
            else:
                _set(out, "_" + name, self.unloaded(target.cls, target.id))
        for name, _f in colls:
            spec = tree.get(name)
            if spec is None:
                _set(out, "_" + name + "Seq", [])
                _set(out, "_" + name + "Loaded", False)
            else:
                _, coll_key, subtree = spec
                elements = self.fetched.get(coll_key, {}).get(obj.id, [])
                _set(out, "_" + name + "Seq", [self.build(e.value, subtree) for e in elements])
                _set(out, "_" + name + "Loaded", True)
        self._details(obj, out, tree.get("details", {}))
        return out

    def _restrictions(self, obj) -> list:
        key = (obj.owner, obj.group, obj.cls)
        found = self.allowed.get(key)
        if found is None:
            uid = self.session.user
            found = self.allowed[key] = [not self.world.allowed(uid, obj, s) for s in _RESTRICTIONS] + [True, True]
        return found

    def _details(self, obj, out, tree: dict) -> None:
        details = out.getDetails()
        world = self.world
        if obj.owner is not None:
            owner = world.users.get(obj.owner)
            if "owner" in tree and owner is not None:
                details.__dict__["_owner"] = self.memo.setdefault(("owner", owner.id), user_object(owner))
            else:
                details.__dict__["_owner"] = self.unloaded("Experimenter", obj.owner)
        if obj.group is not None:
            group = world.groups.get(obj.group)
            if "group" in tree and group is not None:
                details.__dict__["_group"] = self.memo.setdefault(("group", group.id), group_object(group))
            else:
                details.__dict__["_group"] = self.unloaded("ExperimenterGroup", obj.group)
            perms = omero.model.PermissionsI()
            perms._perm1 = _perm1(group.perms if group else "rw----")
            perms._restrictions = self._restrictions(obj)
            details.__dict__["_permissions"] = perms
        if obj.event is not None and obj.cls not in ("Event", "Experimenter", "ExperimenterGroup"):
            if "creationEvent" in tree:
                event = self.memo.get(("event", obj.event.id))
                if event is None:
                    event = self.memo[("event", obj.event.id)] = omero.model.EventI(obj.event.id, True)
                    event.setTime(rtime(obj.event.v["time"]))
            else:
                event = self.unloaded("Event", obj.event.id)
            details.__dict__["_creationEvent"] = event
            details.__dict__["_updateEvent"] = self.unloaded("Event", obj.event.id)


def build(world, session, obj, tree: dict | None = None, fetched: dict | None = None, memo=None):
    """One object of an answer (a builder of its own)."""
    return Builder(world, session, fetched).build(obj, tree)


def bare(world, obj, session=None):
    """A loaded object with nothing fetched (the world's own view, for tests)."""
    return build(world, session or _Everyone(), obj)


class _Everyone:
    user = 0
    context_group = -1


def _wrap(f, value):
    if f.wrapper is omero.rtypes.rtime:
        return rtime(value)
    if f.wrapper is omero.rtypes.rlong:
        return rlong(value)
    return f.wrapper(value)


def user_object(user):
    exp = omero.model.ExperimenterI(user.id, True)
    exp.setOmeName(rstring(user.name))
    exp.setFirstName(rstring(user.v.get("firstName") or user.name))
    exp.setLastName(rstring(user.v.get("lastName") or ""))
    return exp


def group_object(group):
    grp = omero.model.ExperimenterGroupI(group.id, True)
    grp.setName(rstring(group.name))
    grp.getDetails().setPermissions(omero.model.PermissionsI(group.perms))
    return grp
