"""What the OMERO model says a class has, read from the classes omero-py ships, so that the
stand-in checks every property a query names the way the server's query parser does.

Two sources, both generated from the server's own Slice and mapping files:

- ``omero.model.<Class>I._field_info``: the HQL property names of a class (``fileset``,
  ``usedFiles``, ``annotationLinks``, ``mapValue``, ``details``...) and, for scalars, the rtype
  that wraps their values;
- the Slice definitions in the generated ``omero_model_<Class>_ice.py``: the class a reference
  points to (``_fileset`` is a ``Fileset``) and the element class of a collection
  (``_usedFilesSeq`` is a ``FilesetUsedFilesSeq`` of ``FilesetEntry``).

Nothing here is a list of known classes or properties: a property that is not in the model is
not a property.
"""

from __future__ import annotations

import functools
import importlib
import os
import re
from dataclasses import dataclass

import omero
import omero.clients  # noqa: F401 - registers every model class under omero.model
import omero.model

#: A member of a generated class definition: ``('_name', (), _M_omero.model._t_Fileset, ...``.
_MEMBER = re.compile(r"\('_(\w+)', \(\), _M_([\w.]+)\._t_(\w+), (?:False|True), \d+\)")
_DEFINE = re.compile(r"IcePy\.defineClass\('(::[\w:]+)'")
_SEQUENCE = re.compile(r"_t_(\w+) = IcePy\.defineSequence\('[^']+', \(\), _M_[\w.]+\._t_(\w+)\)")


@dataclass(frozen=True)
class Field:
    """One HQL property of a model class."""

    name: str
    #: ``id``, ``scalar``, ``ref`` (many-to-one), ``coll`` (one-to-many or many-to-many),
    #: ``values`` (a list of name-value components: ``mapValue``), ``details``.
    kind: str
    #: The class a reference points to, or of a collection's elements.
    target: str | None = None
    #: The rtype constructor of a scalar (``omero.rtypes.rstring``...).
    wrapper: object = None


class ModelError(Exception):
    """A class or property the model does not have (the server's query parser refuses it)."""


def is_class(name: str) -> bool:
    """Whether ``name`` is a mapped model class (``Image``; not ``ImageI``, omero-py's own)."""
    cls = getattr(omero.model, name, None)
    return (
        isinstance(cls, type)
        and issubclass(cls, omero.model.IObject)
        and cls.ice_staticId() == "::omero::model::" + name
    )


def model_class(name: str) -> type:
    if not is_class(name):
        raise ModelError(f"{name} is not mapped")
    return getattr(omero.model, name)


def implementation(name: str) -> type:
    """``omero.model.ImageI`` for ``Image`` (abstract classes' modules are imported on demand)."""
    if not hasattr(omero.model, name + "I"):
        importlib.import_module(f"omero_model_{name}I")
    return getattr(omero.model, name + "I")


def is_subclass(name: str, of: str) -> bool:
    return issubclass(model_class(name), model_class(of))


@functools.cache
def root(name: str) -> str:
    """The top of a class's hierarchy below IObject (``MapAnnotation`` -> ``Annotation``): the
    classes that share one id sequence and one table in the server's database."""
    cls = model_class(name)
    while True:
        parents = [b for b in cls.__bases__ if b is not omero.model.IObject and issubclass(b, omero.model.IObject)]
        if not parents:
            return cls.__name__
        cls = parents[0]


@functools.cache
def definitions() -> dict[str, tuple[str, str]]:
    """Slice type id -> (the generated code that defines it and its operations, the whole file
    it is in), for every generated module omero-py and Ice ship."""
    import omero_API_ice

    out: dict[str, tuple[str, str]] = {}
    directory = os.path.dirname(omero_API_ice.__file__)
    for name in sorted(os.listdir(directory)):
        if not name.endswith("_ice.py"):
            continue
        with open(os.path.join(directory, name)) as f:
            text = f.read()
        starts = [(m.start(), m.group(1)) for m in _DEFINE.finditer(text)]
        for n, (start, type_id) in enumerate(starts):
            end = starts[n + 1][0] if n + 1 < len(starts) else len(text)
            out[type_id] = (text[start:end], text)
    return out


def _definition(klass: type) -> tuple[str, str]:
    return definitions().get(klass.ice_staticId(), ("", ""))


@functools.cache
def _slice_members(name: str) -> dict[str, str]:
    """Slice member name -> type name of the class and its model ancestors."""
    cls = model_class(name)
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not (isinstance(klass, type) and issubclass(klass, omero.model.IObject)) or klass is omero.model.IObject:
            continue
        block = _definition(klass)[0].split("._ice_type = ", 1)[0]
        for member, _module, type_name in _MEMBER.findall(block):
            out[member] = type_name
    return out


@functools.cache
def _sequences(name: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for klass in model_class(name).__mro__:
        if isinstance(klass, type) and issubclass(klass, omero.model.IObject):
            out.update(dict(_SEQUENCE.findall(_definition(klass)[1])))
    return out


@functools.cache
def fields(name: str) -> dict[str, Field]:
    """The HQL properties of a model class: ``_field_info`` names, typed from the Slice. An
    abstract class whose ``I`` module omero-py ships broken (``AnnotationI``) is read from its
    Slice definition alone."""
    members = _slice_members(name)
    sequences = _sequences(name)
    try:
        info = implementation(name)._field_info
        props = [(p, getattr(info, p).wrapper) for p in info._fields]
    except (ImportError, NameError, AttributeError):
        props = [
            (m[:-3] if m.endswith("Seq") else m, None) for m in members if not m.endswith(("Loaded", "CountPerOwner"))
        ]
        props = [(p, w) for p, w in props if p != "version"] + [("details", None)]
    out = {"id": Field("id", "id", wrapper=omero.rtypes.rlong)}
    if "version" in members:
        out["version"] = Field("version", "scalar", wrapper=omero.rtypes.rint)
    for prop, wrapper in props:
        slice_type = members.get(prop)
        if prop == "details":
            out[prop] = Field(prop, "details")
        elif slice_type == "NamedValueList":
            out[prop] = Field(prop, "values")
        elif prop + "Seq" in members:
            out[prop] = Field(prop, "coll", target=sequences[members[prop + "Seq"]])
        elif slice_type is not None and is_class(slice_type):
            out[prop] = Field(prop, "ref", target=slice_type)
        else:
            out[prop] = Field(prop, "scalar", wrapper=wrapper or _RTYPES.get(slice_type))
    return out


_RTYPES = {
    "RString": omero.rtypes.rstring,
    "RLong": omero.rtypes.rlong,
    "RInt": omero.rtypes.rint,
    "RTime": omero.rtypes.rtime,
    "RBool": omero.rtypes.rbool,
    "RDouble": omero.rtypes.rdouble,
    "RFloat": omero.rtypes.rfloat,
}


def field(name: str, prop: str) -> Field:
    """A property of the class, or of one of its subclasses: Hibernate resolves a subclass's
    property through an alias of its superclass (``a.mapValue`` on an ``Annotation``), and the
    rows of other subclasses have no value there."""
    found = fields(name).get(prop)
    if found is None:
        for sub in subclasses(name):
            found = fields(sub).get(prop)
            if found is not None:
                break
    if found is None:
        raise ModelError(f"could not resolve property: {prop} of: ome.model.{name}")
    return found


@functools.cache
def subclasses(name: str) -> tuple[str, ...]:
    out = []
    for type_id in definitions():
        if type_id.startswith("::omero::model::"):
            sub = type_id.rsplit("::", 1)[1]
            if sub != name and is_class(sub) and is_subclass(sub, name):
                out.append(sub)
    return tuple(sorted(out))


@functools.cache
def details_fields() -> dict[str, Field]:
    """The properties of ``details`` (owner, group, creationEvent, updateEvent, permissions,
    externalInfo), from the Slice definition of ``Details``."""
    block = _definition(omero.model.Details)[0].split("._ice_type = ", 1)[0]
    out = {}
    for member, module, type_name in _MEMBER.findall(block):
        if module != "omero.model":
            continue  # the call context and event context are not mapped
        kind = "permissions" if type_name == "Permissions" else "ref"
        out[member] = Field(member, kind, target=None if kind == "permissions" else type_name)
    return out


@functools.cache
def back_pointer(owner: str, collection: str) -> str:
    """The property of a collection's element class that points back to the owner:
    ``Fileset.usedFiles`` -> ``FilesetEntry.fileset``, ``Image.datasetLinks`` ->
    ``DatasetImageLink.child``."""
    target = field(owner, collection).target
    candidates = [
        f.name
        for f in fields(target).values()
        if f.kind == "ref" and (is_subclass(owner, f.target) or is_subclass(f.target, owner))
    ]
    if len(candidates) > 1 and "parent" in candidates and collection == "annotationLinks":
        return "parent"
    if len(candidates) != 1:
        raise ModelError(f"the stand-in cannot tell which property of {target} holds {owner}.{collection}")
    return candidates[0]
