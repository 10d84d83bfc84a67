"""Which files make up an image, and which images share them.

Images of one Fileset (a multi-series file, a plate) are hashed once and annotated alike.
A Fileset's files are hashed in the order of its entries, the order OMERO imported them;
images imported before OMERO 5 have no Fileset and are read through the RawFileStore.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .gateway import _val
from .provenance import DEFAULT_TEMPLATE, Judgement, Owner, Trust, judge


@dataclass
class SourceFile:
    """One original file: where it lies in the ManagedRepository, and what OMERO recorded."""

    id: int
    repo_path: str  # OriginalFile.path + name, relative to the repository root
    name: str
    size: int | None
    hash: str | None
    hasher: str | None
    #: The repository OMERO's import wrote the row for (``None``: a row saved through the API,
    #: or a file of an image imported before OMERO 5).
    repo: str | None = None
    #: (owner id, group id) of the file's row, and of the FilesetEntry that names it.
    rows: tuple = ()


@dataclass
class Unit:
    """Images hashed together: one Fileset, or one image without a Fileset."""

    key: str
    images: list = field(default_factory=list)
    files: list[SourceFile] = field(default_factory=list)
    fileset_id: int | None = None
    template_prefix: str = ""
    #: (owner id, group id) of the Fileset's row.
    fileset_row: tuple | None = None
    #: Whether the rows say the files are where OMERO put them (``provenance.judge``); set
    #: by ``plan`` for a Fileset and by ``resolve_files`` for an image without one.
    judgement: Judgement = Judgement(Trust.TRUSTED)

    def relative(self, f: SourceFile) -> str:
        """A file's path relative to the fileset directory."""
        prefix = self.template_prefix
        if prefix and f.repo_path.startswith(prefix):
            return f.repo_path[len(prefix) :].lstrip("/")
        return f.repo_path

    @property
    def source_file(self) -> str:
        return self.files[0].name if self.files else ""

    @property
    def trust(self) -> Trust:
        return self.judgement.trust

    def row_owners(self) -> set[tuple[int, int]]:
        """(owner id, group id) of every row of the unit: images, Fileset, entries, files."""
        out = {_owner_group(im) for im in self.images}
        if self.fileset_row is not None:
            out.add(self.fileset_row)
        for f in self.files:
            out.update(f.rows)
        return out

    def owner(self) -> Owner:
        """The image's owner and group, as the repository template names them."""
        details = self.images[0].getDetails()
        user, group = details.getOwner(), details.getGroup()
        perms = group.getDetails().getPermissions() if group.isLoaded() and group.getDetails() else None
        return Owner(
            user.getId().val,
            (_val(user.getOmeName()) or "") if user.isLoaded() else "",
            group.getId().val,
            (_val(group.getName()) or "") if group.isLoaded() else "",
            str(perms) if perms is not None else "",
        )

    def judge(self, templates) -> None:
        self.judgement = judge(self, self.owner(), templates)


def _owner_group(obj) -> tuple[int, int]:
    details = obj.getDetails()
    owner, group = details.getOwner(), details.getGroup()
    return (owner.getId().val if owner is not None else -1, group.getId().val if group is not None else -1)


def source_file(original_file, entry=None) -> SourceFile:
    """A file's row (and the FilesetEntry's that names it) as the hashing needs it."""
    path = _val(original_file.getPath()) or ""
    name = _val(original_file.getName()) or ""
    hasher = original_file.getHasher()
    hasher_name = _val(hasher.getValue()) if hasher is not None and hasher.isLoaded() else None
    return SourceFile(
        id=original_file.getId().val,
        repo_path=(path.rstrip("/") + "/" + name).lstrip("/") if path else name,
        name=name,
        size=_val(original_file.getSize()),
        hash=_val(original_file.getHash()),
        hasher=hasher_name,
        repo=_val(original_file.getRepo()),
        rows=tuple({_owner_group(original_file)} | ({_owner_group(entry)} if entry is not None else set())),
    )


def templates_of(omero) -> tuple[str, ...]:
    """The repository templates a Fileset's directory may follow: the server's
    ``omero.fs.repo.path`` where the session may read it, and OMERO's default."""
    found = getattr(omero, "repository_template", lambda: None)()
    return tuple(dict.fromkeys(t for t in (found, DEFAULT_TEMPLATE) if t))


def plan(omero, images: list) -> list[Unit]:
    """Groups loaded images into units, in the order of their first image; the files of all
    their Filesets come from one (paged) query, not one per image. Each Fileset's unit is
    judged from its rows (``provenance``) before anything reads its files."""
    fileset_ids = sorted({im.getFileset().getId().val for im in images if im.getFileset() is not None})
    files = omero.fileset_files(fileset_ids) if fileset_ids else {}
    templates = templates_of(omero) if fileset_ids else ()
    units: dict[str, Unit] = {}
    for image in images:
        fileset = image.getFileset()
        if fileset is not None:
            key = f"fileset:{fileset.getId().val}"
            unit = units.get(key)
            if unit is None:
                unit = Unit(
                    key=key,
                    fileset_id=fileset.getId().val,
                    template_prefix=(_val(fileset.getTemplatePrefix()) or "") if fileset.isLoaded() else "",
                    fileset_row=_owner_group(fileset) if fileset.isLoaded() else None,
                    files=[source_file(e.getOriginalFile(), e) for e in files.get(fileset.getId().val, [])],
                )
                units[key] = unit
        else:
            key = f"image:{image.getId().val}"
            unit = units.setdefault(key, Unit(key=key))
        unit.images.append(image)
    for unit in units.values():
        if unit.fileset_id is not None:
            unit.judge(templates)
    return list(units.values())


def resolve_files(omero, units: list[Unit]) -> dict[str, tuple[Unit, str]]:
    """Loads the original files of units without a Fileset (images imported before OMERO 5,
    whose files are in ``PixelsOriginalFileMap``: one paged query for all of them) and judges
    them; returns the units that have no file at all, with why."""
    empty: dict[str, tuple[Unit, str]] = {}
    legacy = [u for u in units if u.fileset_id is None]
    found = omero.legacy_files([u.images[0].getId().val for u in legacy]) if legacy else {}
    templates = templates_of(omero) if legacy else ()
    for unit in units:
        if unit.fileset_id is None:
            unit.files = [source_file(f) for f in found.get(unit.images[0].getId().val, [])]
            unit.judge(templates)
            if not unit.files:
                empty[unit.key] = (unit, "no original files are stored for this image")
        elif not unit.files:
            empty[unit.key] = (unit, "the fileset has no files")
    return empty
