"""BlitzOmero, the only code that talks to a server, against a recording stand-in for the
BlitzGateway services: the calls it makes, their parameters and contexts, with real omero-py
parameter and model classes (no server can run here; the live suite covers a real one)."""

from __future__ import annotations

import omero
import omero.clients  # noqa: F401
import omero.model
import pytest
from omero.gateway import ServiceOptsDict
from omero.rtypes import rlong

from omero_iscc.gateway import BlitzOmero


class Recorder:
    def __init__(self, answers=None):
        self.calls = []
        self.answers = answers or {}

    def __getattr__(self, name):
        def call(*args):
            self.calls.append((name, args))
            return self.answers.get(name, [])

        return call


class Conn:
    def __init__(self, query_answers=None):
        self.SERVICE_OPTS = ServiceOptsDict()
        self.query = Recorder(query_answers)
        self.update = Recorder()
        self.deleted = []

    def getQueryService(self):
        return self.query

    def getUpdateService(self):
        return self.update

    def deleteObjects(self, kind, ids, wait=False):
        self.deleted.append((kind, ids, wait))


def image(iid=7, group=3):
    im = omero.model.ImageI(iid, True)
    im.getDetails().setGroup(omero.model.ExperimenterGroupI(group, False))
    return im


def test_reads_span_all_groups_and_pass_ids_as_parameters():
    conn = Conn({"projection": [[rlong(11)], [rlong(12)]]})
    g = BlitzOmero(conn)
    assert conn.SERVICE_OPTS.getOmeroGroup() == "-1"
    assert g.children("Plate", [5]) == [11, 12]
    name, (hql, params, ctx) = conn.query.calls[-1]
    assert name == "projection" and "WellSample" in hql and ctx is conn.SERVICE_OPTS
    assert [x.val for x in params.map["ids"].val] == [5]
    assert g.existing_ids("Image", []) == []  # no query for nothing
    g.images([1, 2])
    name, (hql, params, _) = conn.query.calls[-1]
    assert name == "findAllByQuery" and "fetch i.fileset" in hql and "usedFiles" in hql
    g.legacy_files(9)
    assert conn.query.calls[-1][1][1].map["id"].val == 9


def test_unannotated_images_page_and_exclude():
    conn = Conn({"projection": [[rlong(4)]]})
    g = BlitzOmero(conn)
    assert g.unannotated_images("org.iscc.omero.sum", 50, [1, 2]) == [4]
    _, (hql, params, _) = conn.query.calls[-1]
    assert "not in (:exclude)" in hql and "order by i.id" in hql
    assert params.map["ns"].val == "org.iscc.omero.sum"
    assert params.theFilter.limit.val == 50
    g.unannotated_images("ns", 5, [])
    assert "exclude" not in conn.query.calls[-1][1][0]


def test_annotations_by_image_and_saving_in_the_images_group():
    link = omero.model.ImageAnnotationLinkI()
    link.setParent(omero.model.ImageI(7, False))
    ann = omero.model.MapAnnotationI(70, True)
    link.setChild(ann)
    conn = Conn({"findAllByQuery": [link]})
    conn.update.answers["saveAndReturnObject"] = link
    g = BlitzOmero(conn)
    assert g.iscc_annotations([7, 8], "ns") == {7: [ann], 8: []}
    saved = g.save_map_annotation(image(7, group=3), [["iscc:sum", "ISCC:KUAX"]], "ns")
    assert saved is ann
    _, (new_link, ctx) = conn.update.calls[-1]
    assert ctx["omero.group"] == "3"
    assert conn.SERVICE_OPTS.getOmeroGroup() == "-1"  # the shared context is untouched
    child = new_link.getChild()
    assert child.getNs().val == "ns" and [(nv.name, nv.value) for nv in child.getMapValue()] == [
        ("iscc:sum", "ISCC:KUAX")
    ]
    assert new_link.getParent().getId().val == 7 and not new_link.getParent().isLoaded()
    g.delete_annotations([70])
    g.delete_annotations([])
    assert conn.deleted == [("Annotation", [70], True)]


def test_stream_reads_the_whole_file_in_chunks_and_closes_the_store():
    data = bytes(range(256)) * 40

    class Store:
        closed = False

        def setFileId(self, fid, ctx):
            assert (fid, ctx) == (5, {"omero.group": "-1"})

        def size(self):
            return len(data)

        def read(self, offset, n):
            return data[offset : offset + n]

        def close(self):
            Store.closed = True

    conn = Conn()
    conn.c = type("C", (), {"sf": type("SF", (), {"createRawFileStore": staticmethod(Store)})()})()
    chunks = list(BlitzOmero(conn).read_file(5, 4096))
    assert b"".join(chunks) == data and max(map(len, chunks)) == 4096 and Store.closed


def test_a_short_read_is_an_error_not_a_truncated_stream():
    class Store:
        def setFileId(self, fid, ctx):
            pass

        def size(self):
            return 100

        def read(self, offset, n):
            return b"x" * 10 if offset == 0 else b""

        def close(self):
            pass

    conn = Conn()
    conn.c = type("C", (), {"sf": type("SF", (), {"createRawFileStore": staticmethod(Store)})()})()
    with pytest.raises(OSError, match="no bytes at offset 10 of 100"):
        list(BlitzOmero(conn).read_file(1, 64))
