"""Worker commands fed from a thread while their output is read (``worker.Streamed``), the
one way the helper streams codes into ``similar`` and the code index: a failure of the
codes' source (a lost connection while paging) reaches the caller instead of an answer over
the codes read so far, and a large input never stalls on a full pipe."""

from __future__ import annotations

import threading

import pytest

from omero_iscc import duplicates
from omero_iscc.codeindex import CodeIndex
from omero_iscc.worker import Streamed, sum_stream


class Lost(Exception):
    """Stands for the server going away in the middle of a read."""


@pytest.fixture(scope="module")
def code(worker) -> str:
    return sum_stream(worker, [b"the same bytes, twice"]).iscc


def test_a_source_that_fails_midway_fails_similar(worker, code):
    def codes():
        yield 1, {"iscc:sum": code}
        yield 2, {"iscc:sum": code}
        raise Lost("connection lost")

    with pytest.raises(Lost):
        duplicates._similar(worker, codes(), 12)
    # The same codes, whole: one group of two.
    [group] = duplicates._similar(worker, iter([(1, {"iscc:sum": code}), (2, {"iscc:sum": code})]), 12)
    assert sorted(int(m["id"]) for m in group["members"]) == [1, 2]


def test_a_source_that_fails_midway_fails_the_index_update(worker, code, tmp_path):
    """(What was read before the failure may be in the index: the next poll reads the same
    links again, from the same mark, and an add replaces a row of the same id.)"""
    index = CodeIndex(worker, str(tmp_path / "index"))
    index.rebuild([{"id": 1, "iscc": code, "group": 3, "owner": 4}])

    def records():
        yield {"id": 2, "iscc": code, "group": 3, "owner": 4}
        raise Lost("connection lost")

    with pytest.raises(Lost):
        index.add(records())
    assert 1 in [r["id"] for r in index.rows()]


def test_an_input_and_an_output_larger_than_a_pipe_do_not_stall(worker, code, tmp_path):
    """``index query`` answers each query as it reads it: written from the caller's thread,
    20,000 queries would fill the answers' pipe and both processes would wait for ever."""
    index = CodeIndex(worker, str(tmp_path / "index"))
    index.rebuild([{"id": 1, "iscc": code, "group": 3, "owner": 4}])
    lines = (f'{{"id": {i}, "iscc": "{code}"}}\n'.encode() for i in range(20_000))
    runs: list[Streamed] = []
    answers: list[bytes] = []

    def query() -> None:
        runs.append(Streamed([worker, "index", "query", index.dir, "--threshold", "0"], lines))
        answers.append(runs[0].read())

    asking = threading.Thread(target=query, daemon=True)
    asking.start()
    asking.join(60)
    if asking.is_alive():
        for run in runs:
            run.proc.kill()
        pytest.fail("the query stalled on a full pipe")
    run = runs[0]
    assert run.finish() == 0 and run.failure is None
    assert answers[0].count(b'"matches"') == 20_000
