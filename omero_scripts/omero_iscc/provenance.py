"""Whether a unit's rows say its files are where OMERO put them, before anything reads them.

The worker reads the ManagedRepository as the server's own system user, whoever started the
job, so the rows that name a file decide what it reads. Users write most of those rows: an
``OriginalFile`` (path, name, size, hash), a ``Fileset`` (``templatePrefix``), a
``FilesetEntry`` and an ``Image``, all through the ordinary API. A member could make rows that
name a colleague's file and annotate their own image with its code (a fingerprint of data they
may not read). A unit is therefore judged from its rows, and only from its rows, before any
byte is read:

- **refused**: a file row OMERO's import did not write (no ``repo``: rows saved through the API
  cannot set it, ome ``BasicACLVoter.allowCreation``); a path that is not a plain relative path
  (``..``, ``.``, empty or absolute parts); a file outside its Fileset's directory
  (``templatePrefix``); rows of the unit (images, Fileset, entries, files) of different owners
  or groups (an import, ``chown`` and ``chgrp`` keep them together);
- **gated**: files under the Fileset's directory, but that directory is not in the directory
  the repository template (``omero.fs.repo.path``, default ``%user%_%userId%/...``) gives the
  image's owner (data given to another user with ``chown`` stays where it was imported, and so
  does a Fileset whose rows were edited to point elsewhere). Such a unit is hashed only when
  every file has an import checksum OMERO recorded, and its code is kept only when every
  checksum matches the bytes read: a user cannot forge the checksum of a file they cannot read.
  Every way such a unit fails reads the same, so that nothing about the file it names (whether
  it exists, its size) reaches the caller;
- **trusted**: everything else.

An owner may edit their own ``OriginalFile`` and ``Fileset`` rows (ome ``BasicACLVoter``,
``EDIT`` for the owner), so none of this relies on a row that OMERO's import wrote staying as it
was written. Images imported before OMERO 5 have files without ``repo``: the server reads those
from its own ``Files/<id>``, whatever their path says, so they are trusted as long as they are
read through OMERO; one with ``repo`` set is judged like a Fileset's file.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass

#: OMERO hashers the worker can recompute (``ChecksumAlgorithm`` values).
SUPPORTED_HASHERS = {"SHA1-160", "MD5-128", "CRC-32", "Adler-32", "File-Size-64"}
#: OMERO's default repository template (``omero.fs.repo.path``).
DEFAULT_TEMPLATE = "%user%_%userId%/%year%-%month%/%day%/%time%"
#: Template variables that name who imported (the rest name when: they end the owner's part).
IDENTITY = {"user", "userId", "group", "groupId", "perms"}
_VARIABLE = re.compile(r"%([A-Za-z]+)%")

#: What a caller is told of a gated unit that failed, however it failed.
GATED_FAILURE = (
    "not annotated: its files lie outside the directory OMERO gives its owner's imports, and they could "
    "not be shown to be the files imported (every file's import checksum, matching the bytes read)"
)


class Trust(str, enum.Enum):
    TRUSTED = "trusted"
    GATED = "gated"
    REFUSED = "refused"


@dataclass(frozen=True)
class Judgement:
    trust: Trust
    #: Why (row facts only: nothing read from a file), for the caller and the administrator's log.
    reason: str = ""


@dataclass(frozen=True)
class Owner:
    """Who the repository template names: the image's owner and group."""

    user_id: int
    user_name: str
    group_id: int
    group_name: str
    perms: str = ""


def parts(path: str) -> tuple[str, ...] | None:
    """A repository-relative path as its parts, or ``None`` when it is not a plain relative
    path: absolute, or with an empty, ``.`` or ``..`` part, or a control character."""
    if not path or path.startswith("/") or any(ord(ch) < 32 or ord(ch) == 127 for ch in path):
        return None
    out = tuple(path.rstrip("/").split("/"))
    if any(p in ("", ".", "..") for p in out):
        return None
    return out


def owner_directory(template: str, owner: Owner) -> tuple[tuple[str, ...], bool]:
    """The leading parts of ``template`` that name who imported, rendered for ``owner``, and
    whether they name the user (not only the group). Stops at the first part with a variable
    of time or anything else unknown; empty parts (the ``//`` that ends the root-owned part)
    are skipped."""
    values = {
        "user": owner.user_name,
        "userId": str(owner.user_id),
        "group": owner.group_name,
        "groupId": str(owner.group_id),
        "perms": owner.perms,
    }
    out: list[str] = []
    names_user = False
    for part in template.split("/"):
        if not part:
            continue
        names = _VARIABLE.findall(part)
        if any(n not in IDENTITY for n in names):
            break
        names_user |= any(n in ("user", "userId") for n in names)
        out.append(_VARIABLE.sub(lambda m: values[m.group(1)], part))
    return tuple(out), names_user


def in_owner_directory(prefix: tuple[str, ...], owner: Owner, templates: Iterable[str]) -> bool:
    """Whether a Fileset directory lies in the directory one of ``templates`` gives ``owner``
    (a template that does not name the user cannot say)."""
    for template in templates:
        directory, names_user = owner_directory(template, owner)
        if names_user and directory and prefix[: len(directory)] == directory:
            return True
    return False


def judge(unit, owner: Owner, templates: Iterable[str]) -> Judgement:
    """The unit's judgement (``filesets.Unit`` with its images and files loaded)."""
    if not unit.files:
        return Judgement(Trust.TRUSTED)
    rows = unit.row_owners()
    if len(rows) > 1:
        shown = ", ".join(f"owner {o} in group {g}" for o, g in sorted(rows))
        return Judgement(Trust.REFUSED, f"its rows belong to different owners or groups ({shown})")
    if unit.fileset_id is None:
        in_repository = [f for f in unit.files if f.repo]
        if not in_repository:
            return Judgement(Trust.TRUSTED)  # read by the server from its own Files/<id>
        for f in in_repository:
            p = parts(f.repo_path)
            if p is None:
                return Judgement(Trust.REFUSED, f"file {f.id}'s path {f.repo_path!r} is not a plain relative path")
            if not in_owner_directory(p, owner, templates):
                return _gated(unit, f"file {f.id} lies outside the directory of its owner's imports")
        return Judgement(Trust.TRUSTED)
    prefix = parts(unit.template_prefix)
    if prefix is None:
        return Judgement(
            Trust.REFUSED, f"the Fileset's directory {unit.template_prefix!r} is not a plain relative path"
        )
    for f in unit.files:
        if not f.repo:
            return Judgement(Trust.REFUSED, f"file {f.id} was not written by OMERO's import (it has no repository)")
        p = parts(f.repo_path)
        if p is None:
            return Judgement(Trust.REFUSED, f"file {f.id}'s path {f.repo_path!r} is not a plain relative path")
        if len(p) <= len(prefix) or p[: len(prefix)] != prefix:
            return Judgement(Trust.REFUSED, f"file {f.id} lies outside its Fileset's directory")
    if not in_owner_directory(prefix, owner, templates):
        return _gated(unit, f"the Fileset's directory {unit.template_prefix!r} is not in the directory of its owner")
    return Judgement(Trust.TRUSTED)


def _gated(unit, why: str) -> Judgement:
    """Gated, if every file has an import checksum the worker can recompute; refused if not."""
    if all(f.hash and f.hasher in SUPPORTED_HASHERS for f in unit.files):
        return Judgement(Trust.GATED, why)
    return Judgement(Trust.REFUSED, f"{why}, and not every file has an import checksum to show it is the one imported")
