"""Saving new objects (``IUpdate.save*``), one call one transaction, with the server's rules:

- a new object is saved in the call's group: ``omero.group`` -1 is refused with
  ``ApiUsageException`` (openmicroscopy ``test_permissions.py::testSaveWithNegOneNotExplicit``;
  with an explicit group it is refused too, ``testSaveWithNegOneExplicit`` is marked broken);
- the session's user must be a member of that group (or an administrator): ``SecurityViolation``;
- the owner is the session's user; an administrator with ``Chown`` may name another owner in
  ``details.owner`` (ome ``OmeroInterceptor.newTransientDetails``);
- every object a new one refers to must be readable; a link's parent must be one the session may
  link to and annotate (ome ``BasicACLVoter.allowUpdateOrDelete``, ``LINK``/``ANNOTATE``:
  ``SecurityViolation``) and lie in the link's group, as must its child (ome
  ``OmeroInterceptor.throwIfGroupsDontMatch``: "MIXED GROUP", ``GroupSecurityViolation``);
- ``OriginalFile.repo`` cannot be set through the ORM (ome ``BasicACLVoter.throwCreationViolation``).

Saving an existing (loaded, changed) object is not served: the helper never does it.
"""

from __future__ import annotations

import omero
import omero.model

from . import convert, model


def save(world, session, group: int, objects: list) -> list:
    from .services import Refused, server_error

    if group < 0:
        raise Refused(
            server_error(omero.ApiUsageException, "Cannot save a new object with omero.group=-1: set the target group")
        )
    user = world.users[session.user]
    if group not in user.groups and not user.admin:
        raise Refused(server_error(omero.SecurityViolation, f"Current user is not member of group {group}"))
    view = session.with_context(group)
    plan: list = []
    seen: dict = {}
    made = [_plan(world, view, user, group, obj, plan, seen) for obj in objects]
    # All checked: apply (one transaction).
    world.event = world._new_event()
    for step in plan:
        step()
    builder = convert.Builder(world, view)
    return [builder.build(world.get(cls, oid)) for cls, oid in made]


def _plan(world, view, user, group: int, obj, plan: list, seen: dict) -> tuple[str, int]:
    """Checks ``obj`` (and new objects it refers to) and queues its creation; returns
    (class, id) it will have."""
    from .services import Refused, server_error

    if id(obj) in seen:
        return seen[id(obj)]
    cls = type(obj).ice_staticId().rsplit("::", 1)[1]
    if obj.getId() is not None:
        found = world.get(cls, obj.getId().val)
        # A referenced object is looked up whatever its group; a link across groups is then
        # refused as MIXED GROUP.
        if found is None or not world.readable(view.session.with_context(-1), found):
            raise Refused(
                server_error(
                    omero.ValidationException, f"No row with the given identifier exists: {cls}:{obj.getId().val}"
                )
            )
        if obj.isLoaded() and _changed(world, view, found, obj):
            raise Refused(server_error(omero.ApiUsageException, "the stand-in does not update existing objects"))
        seen[id(obj)] = (found.cls, found.id)
        return seen[id(obj)]
    oid = next(world.ids)
    seen[id(obj)] = (cls, oid)
    values: dict = {}
    owner = user.id
    details = obj.getDetails()
    if details is not None and details.getOwner() is not None and details.getOwner().getId().val != user.id:
        if not (user.admin and "Chown" in user.privileges):
            raise Refused(
                server_error(omero.SecurityViolation, "only administrators may set the owner of a new object")
            )
        owner = details.getOwner().getId().val
    if details is not None and details.getGroup() is not None and details.getGroup().getId().val != group:
        raise Refused(server_error(omero.SecurityViolation, "details.group differs from the call's group"))
    for name, f in model.fields(cls).items():
        if f.kind == "scalar":
            value = getattr(obj, "_" + name, None)
            if value is not None:
                values[name] = value.val if hasattr(value, "val") else value
        elif f.kind == "values":
            values[name] = [(nv.name, nv.value) for nv in getattr(obj, "_" + name, None) or []]
        elif f.kind == "ref":
            ref = getattr(obj, "_" + name, None)
            if ref is not None:
                values[name] = _plan(world, view, user, group, ref, plan, seen)[1]
    if cls == "OriginalFile" and values.get("repo"):
        raise Refused(server_error(omero.SecurityViolation, f"cannot set repo property of {cls}:{oid} via ORM"))
    if "parent" in values and "child" in values and cls.endswith("Link"):
        _check_link(world, view, user, group, cls, values)

    def create() -> None:
        world.add(_row(cls, oid, owner, group, values))
        if cls == "MapAnnotation":
            world.written["map_annotations"] += 1
            world.written["rows"] += len(values.get("mapValue") or [])
        if cls.endswith("AnnotationLink"):
            world.written["links"] += 1

    plan.append(create)
    return seen[id(obj)]


def _row(cls: str, oid: int, owner: int, group: int, values: dict):
    from .world import Ann, Obj

    klass = Ann if model.root(cls) == "Annotation" else Obj
    return klass(cls, oid, owner, group, **values)


def _changed(world, view, found, obj) -> bool:
    for name, f in model.fields(found.cls).items():
        if f.kind == "scalar":
            value = getattr(obj, "_" + name, None)
            if value is not None and getattr(value, "val", value) != found.v.get(name):
                return True
    return False


def _check_link(world, view, user, group: int, cls: str, values: dict) -> None:
    from .services import Refused, server_error

    fields = model.fields(cls)
    parent = world.table(fields["parent"].target).get(values["parent"])
    child = world.table(fields["child"].target).get(values["child"])
    for end in (parent, child):
        if end is None:
            raise Refused(server_error(omero.ValidationException, f"{cls}: a linked object does not exist"))
        if not world.readable(view.session.with_context(-1), end):
            raise Refused(server_error(omero.SecurityViolation, f"Cannot read {end.cls}:Id_{end.id}"))
    if parent.id in world.fail_save_for and parent.cls == "Image":
        raise Refused(
            server_error(omero.SecurityViolation, f"saving a link to Image {parent.id} refused (injected fault)")
        )
    for scope in ("link", "annotate"):
        if not world.allowed(user.id, parent, scope):
            raise Refused(server_error(omero.SecurityViolation, f"Cannot link to {parent.cls}:Id_{parent.id}"))
    for end in (parent, child):
        if end.group is not None and end.group != group:
            raise Refused(
                server_error(
                    omero.GroupSecurityViolation,
                    f"MIXED GROUP: {cls}(group={group}) and {end.cls}:Id_{end.id}(group={end.group}) cannot be linked.",
                )
            )
