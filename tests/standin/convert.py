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
"""

from __future__ import annotations

import omero
import omero.model
from omero.rtypes import rlong, rstring, rtime

from . import model

_RESTRICTIONS = ("link", "edit", "delete", "annotate")


def unloaded(cls: str, oid: int):
    return model.implementation(cls)(oid, False)


def build(world, session, obj, tree: dict | None = None, fetched: dict | None = None, memo: dict | None = None):
    """The model object of ``obj``: ``tree`` says which properties were fetched (property ->
    subtree, collections as ``("coll", key, subtree)``), ``fetched`` gives the elements of
    fetched collections by (key, owner id)."""
    memo = {} if memo is None else memo
    key = (obj.cls, obj.id, id(tree))
    if key in memo:
        return memo[key]
    tree = tree or {}
    out = model.implementation(obj.cls)(obj.id, True)
    memo[key] = out
    fields = model.fields(obj.cls)
    for name, f in fields.items():
        if f.kind == "scalar":
            value = obj.v.get(name)
            if value is not None:
                setattr(out, "_" + name, _wrap(f, value))
        elif f.kind == "values":
            setattr(out, "_" + name, [omero.model.NamedValue(k, v) for k, v in obj.v.get(name) or []])
        elif f.kind == "ref":
            target = world.deref(obj, f)
            if target is None:
                continue
            if name in tree and world.readable(session, target):
                setattr(out, "_" + name, build(world, session, target, tree[name], fetched, memo))
            else:
                setattr(out, "_" + name, unloaded(target.cls, target.id))
        elif f.kind == "coll":
            spec = tree.get(name)
            if spec is None:
                _unload(out, name)
            else:
                _, coll_key, subtree = spec
                elements = (fetched or {}).get(coll_key, {}).get(obj.id, [])
                items = [build(world, session, e.value, subtree, fetched, memo) for e in elements]
                _set_collection(out, name, items)
    _details(world, session, obj, out, tree.get("details", {}))
    return out


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


def _unload(out, name: str) -> None:
    getattr(out, "unload" + name[0].upper() + name[1:])()


def _set_collection(out, name: str, items: list) -> None:
    setattr(out, "_" + name + "Seq", list(items))
    setattr(out, "_" + name + "Loaded", True)


def _details(world, session, obj, out, tree: dict) -> None:
    details = out.getDetails()
    if obj.owner is not None:
        owner = world.users.get(obj.owner)
        details.setOwner(_user(owner) if "owner" in tree and owner else omero.model.ExperimenterI(obj.owner, False))
    if obj.group is not None:
        group = world.groups.get(obj.group)
        details.setGroup(
            _group(group) if "group" in tree and group else omero.model.ExperimenterGroupI(obj.group, False)
        )
        perms = omero.model.PermissionsI(group.perms if group else "rw----")
        perms._restrictions = [not world.allowed(session.user, obj, s) for s in _RESTRICTIONS] + [True, True]
        details.setPermissions(perms)
    if obj.event is not None and obj.cls not in ("Event", "Experimenter", "ExperimenterGroup"):
        event = omero.model.EventI(obj.event.id, "creationEvent" in tree)
        if "creationEvent" in tree:
            event.setTime(rtime(obj.event.v["time"]))
        details.setCreationEvent(event)
        details.setUpdateEvent(omero.model.EventI(obj.event.id, False))


def _user(user):
    exp = omero.model.ExperimenterI(user.id, True)
    exp.setOmeName(rstring(user.name))
    exp.setFirstName(rstring(user.v.get("firstName") or user.name))
    exp.setLastName(rstring(user.v.get("lastName") or ""))
    return exp


def _group(group):
    grp = omero.model.ExperimenterGroupI(group.id, True)
    grp.setName(rstring(group.name))
    grp.getDetails().setPermissions(omero.model.PermissionsI(group.perms))
    return grp


def user_object(user):
    return _user(user)


def group_object(group):
    return _group(group)
