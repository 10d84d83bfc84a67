"""Which files make up an image, and which images share them.

Images of one Fileset (a multi-series file, a plate) are hashed once and annotated alike.
A Fileset's files are hashed in the order of its entries, the order OMERO imported them;
images imported before OMERO 5 have no Fileset and are read through the RawFileStore.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .gateway import _val


@dataclass
class SourceFile:
    """One original file: where it lies in the ManagedRepository, and what OMERO recorded."""

    id: int
    repo_path: str  # OriginalFile.path + name, relative to the repository root
    name: str
    size: int | None
    hash: str | None
    hasher: str | None


@dataclass
class Unit:
    """Images hashed together: one Fileset, or one image without a Fileset."""

    key: str
    images: list = field(default_factory=list)
    files: list[SourceFile] = field(default_factory=list)
    fileset_id: int | None = None
    template_prefix: str = ""

    def relative(self, f: SourceFile) -> str:
        """A file's path relative to the fileset directory."""
        prefix = self.template_prefix
        if prefix and f.repo_path.startswith(prefix):
            return f.repo_path[len(prefix) :].lstrip("/")
        return f.repo_path

    @property
    def source_file(self) -> str:
        return self.files[0].name if self.files else ""


def source_file(original_file) -> SourceFile:
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
    )


def plan(omero, images: list) -> list[Unit]:
    """Groups loaded images into units, in the order of their first image; the files of all
    their Filesets come from one (paged) query, not one per image."""
    fileset_ids = sorted({im.getFileset().getId().val for im in images if im.getFileset() is not None})
    files = omero.fileset_files(fileset_ids) if fileset_ids else {}
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
                    files=[source_file(of) for of in files.get(fileset.getId().val, [])],
                )
                units[key] = unit
        else:
            key = f"image:{image.getId().val}"
            unit = units.setdefault(key, Unit(key=key))
        unit.images.append(image)
    return list(units.values())


def resolve_files(omero, units: list[Unit]) -> dict[str, tuple[Unit, str]]:
    """Loads the original files of units without a Fileset (images imported before OMERO 5,
    whose files are in ``PixelsOriginalFileMap``); returns the units that have no file at all,
    with why."""
    empty: dict[str, tuple[Unit, str]] = {}
    for unit in units:
        if unit.fileset_id is None:
            unit.files = [source_file(f) for f in omero.legacy_files(unit.images[0].getId().val)]
            if not unit.files:
                empty[unit.key] = (unit, "no original files are stored for this image")
        elif not unit.files:
            empty[unit.key] = (unit, "the fileset has no files")
    return empty
