"""BlitzOmero's RawFileStore reads against a recording store: whole files in chunks, the store
always closed, a short read an error. (Its queries and saves run against the stand-in server
in every other test, and test_server_rules.py holds it to what a server refuses.)"""

from __future__ import annotations

import omero
import omero.clients  # noqa: F401
import omero.model
import pytest
from omero.gateway import ServiceOptsDict

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
