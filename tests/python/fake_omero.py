"""An in-memory stand-in for the OMERO calls the helper makes (``omero_iscc.gateway.Omero``),
built from real ``omero.model`` objects: images with Fileset, FilesetEntry, OriginalFile and
ChecksumAlgorithm, owners and groups with permissions, MapAnnotations with NamedValues and
their links. The RawFileStore reads the bytes of real files on disk.

It can also act as a server that goes away: ``drop_connection_after(method, n)`` makes the
n-th later call of a method raise Ice's ConnectionLostException, as a real session would.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from dataclasses import dataclass, field

import Ice
import omero
import omero.clients  # noqa: F401 - registers the model classes
import omero.model
from omero.model import PermissionsI
from omero.rtypes import rlong, rstring


def _perms(can_annotate: bool) -> PermissionsI:
    perms = PermissionsI("rwra--")
    if not can_annotate:
        import omero.constants.permissions as ocp

        restrictions = [False] * 8
        restrictions[ocp.ANNOTATERESTRICTION] = True
        perms._restrictions = restrictions
    return perms


@dataclass
class FakeOmero:
    root: str | None
    ids: itertools.count = field(default_factory=lambda: itertools.count(1000))
    images_by_id: dict = field(default_factory=dict)
    hidden: set = field(default_factory=set)  # images this user cannot see
    links: dict = field(default_factory=dict)  # (kind, parent id) -> [child ids]
    kinds: dict = field(default_factory=dict)  # kind -> set of ids
    legacy: dict = field(default_factory=dict)  # image id -> [OriginalFileI]
    file_paths: dict = field(default_factory=dict)  # original file id -> path on disk
    annotations: dict = field(default_factory=dict)  # image id -> [MapAnnotationI]
    other_annotations: dict = field(default_factory=dict)  # image id -> [annotations in other ns]
    attachments: list = field(default_factory=list)
    saved_groups: list = field(default_factory=list)
    calls: dict = field(default_factory=dict)
    drops: dict = field(default_factory=dict)
    fail_save_for: set = field(default_factory=set)
    admin: bool = True

    # -- building the world -----------------------------------------------------------------
    def group(self, gid: int, name: str) -> omero.model.ExperimenterGroupI:
        g = omero.model.ExperimenterGroupI(gid, True)
        g.setName(rstring(name))
        return g

    def add_container(self, kind: str, cid: int, children: list[int]) -> None:
        self.kinds.setdefault(kind, set()).add(cid)
        self.links[(kind, cid)] = list(children)

    def original_file(
        self, disk_path: str, repo_dir: str, name: str | None = None, hasher: str | None = "SHA1-160"
    ) -> omero.model.OriginalFileI:
        fid = next(self.ids)
        of = omero.model.OriginalFileI(fid, True)
        name = name or os.path.basename(disk_path)
        of.setName(rstring(name))
        of.setPath(rstring(repo_dir))
        if os.path.exists(disk_path):
            with open(disk_path, "rb") as f:
                data = f.read()
            of.setSize(rlong(len(data)))
            if hasher == "SHA1-160":
                of.setHash(rstring(hashlib.sha1(data).hexdigest()))
            elif hasher == "MD5-128":
                of.setHash(rstring(hashlib.md5(data).hexdigest()))
        if hasher:
            algo = omero.model.ChecksumAlgorithmI(next(self.ids), True)
            algo.setValue(rstring(hasher))
            of.setHasher(algo)
        self.file_paths[fid] = disk_path
        return of

    def add_fileset(
        self,
        files: list,
        template_prefix: str,
        n_images: int = 1,
        group_id: int = 1,
        can_annotate: bool = True,
        names: list[str] | None = None,
    ) -> list[int]:
        fs = omero.model.FilesetI(next(self.ids), True)
        fs.setTemplatePrefix(rstring(template_prefix))
        for of in files:
            entry = omero.model.FilesetEntryI()
            entry.setOriginalFile(of)
            entry.setClientPath(rstring(of.getName().val))
            fs.addFilesetEntry(entry)
        ids = []
        for k in range(n_images):
            image = self._image(group_id, can_annotate, (names or [None] * n_images)[k])
            image.setFileset(fs)
            ids.append(image.getId().val)
        self.add_container("Fileset", fs.getId().val, ids)
        return ids

    def add_legacy_image(self, files: list, group_id: int = 1) -> int:
        image = self._image(group_id, True, None)
        self.legacy[image.getId().val] = files
        return image.getId().val

    def _image(self, group_id: int, can_annotate: bool, name: str | None) -> omero.model.ImageI:
        iid = next(self.ids)
        image = omero.model.ImageI(iid, True)
        image.setName(rstring(name or f"image {iid}"))
        details = image.getDetails()
        owner = omero.model.ExperimenterI(2, True)
        owner.setOmeName(rstring("scientist"))
        details.setOwner(owner)
        details.setGroup(self.group(group_id, f"group {group_id}"))
        details.setPermissions(_perms(can_annotate))
        self.images_by_id[iid] = image
        self.kinds.setdefault("Image", set()).add(iid)
        return image

    def add_annotation(self, image_id: int, pairs: list[list[str]], namespace: str):
        ann = omero.model.MapAnnotationI(next(self.ids), True)
        ann.setNs(rstring(namespace))
        ann.setMapValue([omero.model.NamedValue(k, v) for k, v in pairs])
        target = self.annotations if namespace == "org.iscc.omero.sum" else self.other_annotations
        target.setdefault(image_id, []).append(ann)
        return ann

    # -- failure injection ------------------------------------------------------------------
    def drop_connection_after(self, method: str, calls: int) -> None:
        """The ``calls``-th next call of ``method`` raises ConnectionLostException."""
        self.drops[method] = self.calls.get(method, 0) + calls

    def _call(self, method: str) -> None:
        self.calls[method] = self.calls.get(method, 0) + 1
        if self.drops.get(method) == self.calls[method]:
            del self.drops[method]
            raise Ice.ConnectionLostException()

    # -- the Omero interface ----------------------------------------------------------------
    def repository_root(self) -> str | None:
        self._call("repository_root")
        return self.root

    def is_admin(self) -> bool:
        return self.admin

    def children(self, kind: str, ids: list[int]) -> list[int]:
        self._call("children")
        out = []
        for i in ids:
            out.extend(c for c in self.links.get((kind, i), []) if c not in self.hidden)
        return out

    def existing_ids(self, kind: str, ids: list[int]) -> list[int]:
        self._call("existing_ids")
        return [i for i in ids if i in self.kinds.get(kind, set()) and i not in self.hidden]

    def images(self, ids: list[int]) -> list:
        self._call("images")
        return [self.images_by_id[i] for i in sorted(set(ids)) if i in self.images_by_id and i not in self.hidden]

    def legacy_files(self, image_id: int) -> list:
        self._call("legacy_files")
        return list(self.legacy.get(image_id, []))

    def iscc_annotations(self, image_ids: list[int], namespace: str) -> dict[int, list]:
        self._call("iscc_annotations")
        return {i: [a for a in self.annotations.get(i, []) if a.getNs().val == namespace] for i in image_ids}

    def annotated_images(self, namespace: str, limit: int | None = None) -> list:
        links = []
        for image_id, anns in sorted(self.annotations.items()):
            if image_id in self.hidden:
                continue  # the server never returns what the user cannot see
            for ann in anns:
                link = omero.model.ImageAnnotationLinkI()
                link.setParent(self.images_by_id[image_id])
                link.setChild(ann)
                links.append(link)
        links.sort(key=lambda link: -link.getChild().getId().val)
        return links[:limit] if limit else links

    def save_map_annotation(self, image, pairs: list[list[str]], namespace: str):
        self._call("save_map_annotation")
        image_id = image.getId().val
        if image_id in self.fail_save_for:
            raise omero.SecurityViolation(None, None, "not allowed")
        if not image.getDetails().getPermissions().canAnnotate():
            raise omero.SecurityViolation(None, None, "cannot annotate")
        self.saved_groups.append((image_id, image.getDetails().getGroup().getId().val))
        return self.add_annotation(image_id, pairs, namespace)

    def delete_annotations(self, annotation_ids: list[int]) -> None:
        self._call("delete_annotations")
        for anns in self.annotations.values():
            anns[:] = [a for a in anns if a.getId().val not in annotation_ids]

    def read_file(self, original_file_id: int, chunk_size: int):
        self._call("read_file")
        path = self.file_paths.get(original_file_id)
        if path is None or not os.path.exists(path):
            raise omero.ResourceError(None, None, f"file {original_file_id} is missing from the repository")
        with open(path, "rb") as f:
            while True:
                block = f.read(chunk_size)
                if not block:
                    return
                yield block

    def unannotated_images(self, namespace: str, limit: int, exclude: list[int] = ()) -> list[int]:
        self._call("unannotated_images")
        free = [
            i
            for i in sorted(self.images_by_id)
            if i not in self.hidden
            and i not in exclude
            and not any(a.getNs().val == namespace for a in self.annotations.get(i, []))
        ]
        return free[:limit]

    def attach_file(self, kind: str, obj_id: int, name: str, data: bytes, namespace: str, mimetype: str):
        self._call("attach_file")
        ann = omero.model.FileAnnotationI(next(self.ids), True)
        ann.setNs(rstring(namespace))
        self.attachments.append((kind, obj_id, name, data, namespace, mimetype))
        return ann

    # -- helpers for assertions ---------------------------------------------------------------
    def pairs(self, image_id: int) -> list[list[str]]:
        anns = self.annotations.get(image_id, [])
        assert len(anns) == 1, f"image {image_id} has {len(anns)} ISCC annotations"
        return [[nv.name, nv.value] for nv in anns[0].getMapValue()]
