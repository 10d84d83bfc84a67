"""What the helper lets the worker take of the host, against the real worker binary (no OMERO
stand-in): a low priority and a capped thread count by default, the sizes OMERO recorded
(a file of another size is not hashed), a time budget that stops a huge file, and a ceiling
on file sizes; and what the helper makes of the records that come back."""

from __future__ import annotations

import os
import subprocess
import time
from unittest import mock

import pytest

from omero_iscc import worker as worker_mod
from omero_iscc.compute import UnitResult, _hash_in_repository
from omero_iscc.filesets import SourceFile, Unit
from omero_iscc.statuses import Problem
from omero_iscc.worker import EXIT_OUT_OF_TIME, Limits, PixelJob, default_threads, run_groups, run_pixels


@pytest.fixture
def popen_args():
    """The argument lists of every worker started, while the worker still runs for real."""
    seen: list[list[str]] = []
    real = subprocess.Popen

    def spy(args, **kw):
        seen.append(list(args))
        return real(args, **kw)

    with mock.patch.object(worker_mod.subprocess, "Popen", spy):
        yield seen


def _option(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def test_every_worker_runs_at_low_priority_on_half_the_cores_unless_told(tmp_path, worker, popen_args):
    (tmp_path / "f").write_bytes(b"x" * 100)
    [result] = run_groups(worker, str(tmp_path), [("g", ["f"])])
    assert result.ok
    run_pixels(worker, [PixelJob("1", 1, 3, [b"abc"])])
    worker_mod.sum_streams(worker, [[b"abc"]])
    assert len(popen_args) == 3
    for args in popen_args:
        assert _option(args, "--priority") == "low", args
        assert _option(args, "--threads") == str(default_threads()), args
    assert default_threads() == max(1, (os.cpu_count() or 2) // 2)
    popen_args.clear()
    list(run_groups(worker, str(tmp_path), [("g", ["f"])], limits=Limits(priority="normal", threads=3)))
    list(run_groups(worker, str(tmp_path), [("g", ["f"])], threads=2))
    assert (_option(popen_args[0], "--priority"), _option(popen_args[0], "--threads")) == ("normal", "3")
    assert (_option(popen_args[1], "--priority"), _option(popen_args[1], "--threads")) == ("low", "2")
    assert "--time-budget" not in popen_args[0] and "--max-file-size" not in popen_args[0]


def test_recorded_sizes_go_with_the_paths_and_a_file_of_another_size_is_not_hashed(tmp_path, worker):
    (tmp_path / "a").write_bytes(b"a" * 1000)
    (tmp_path / "b").write_bytes(b"b" * 2000)
    groups = [
        ("right", [("a", 1000), ("b", 2000)]),
        ("unknown", [("a", None), "b"]),
        ("wrong", [("a", 999), ("b", 2000)]),
    ]
    right, unknown, wrong = run_groups(worker, str(tmp_path), groups)
    assert right.ok and unknown.ok and right.iscc == unknown.iscc
    assert wrong.error_kind == "size_mismatch"
    assert wrong.files[0].error_kind == "size_mismatch" and "999" in (wrong.files[0].error or "")
    assert wrong.files[1].ok


def test_a_time_budget_stops_a_huge_file_and_the_run_still_counts(tmp_path, worker):
    (tmp_path / "small").write_bytes(b"s" * 100)
    with open(tmp_path / "huge", "wb") as f:
        f.truncate(4 << 40)  # 4 TiB of holes
    started = time.monotonic()
    results = list(
        run_groups(
            worker,
            str(tmp_path),
            [("first", ["small"]), ("huge", ["huge"]), ("after", ["small"])],
            limits=Limits(threads=1, time_budget=1.0),
        )
    )
    took = time.monotonic() - started
    assert [r.error_kind for r in results] == [None, "budget", "budget"]
    assert took < 6, f"the budget of 1 s ended the run only after {took:.1f} s"
    # The status the worker ended with says so; run_groups accepts it.
    proc = subprocess.run(
        [worker, "sum", "--json", "--time-budget", "0.5", "--threads", "1", str(tmp_path / "huge")],
        capture_output=True,
        check=False,
    )
    assert proc.returncode == EXIT_OUT_OF_TIME


def test_files_above_the_size_ceiling_are_not_read(tmp_path, worker):
    (tmp_path / "small").write_bytes(b"s" * 100)
    (tmp_path / "large").write_bytes(b"l" * 5000)
    small, large = run_groups(
        worker, str(tmp_path), [("s", ["small"]), ("l", ["large"])], limits=Limits(max_file_size=4096)
    )
    assert small.ok
    assert large.error_kind == "too_large"


def _unit(key: str, *files: tuple[str, int | None]) -> Unit:
    return Unit(
        key=key,
        fileset_id=1,
        files=[SourceFile(id=n, repo_path=p, name=p, size=s, hash=None, hasher=None) for n, (p, s) in enumerate(files)],
    )


def test_the_helper_sends_omeros_sizes_and_sorts_the_new_records(tmp_path, worker):
    (tmp_path / "a.tif").write_bytes(b"a" * 1000)
    with open(tmp_path / "huge.raw", "wb") as f:
        f.truncate(4 << 40)
    units = [
        _unit("fileset:1", ("a.tif", 1000)),
        _unit("fileset:2", ("a.tif", 1001)),
        _unit("fileset:3", ("a.tif", None)),
        _unit("fileset:4", ("huge.raw", 4 << 40)),
    ]
    out: dict[str, UnitResult] = {}
    to_stream = _hash_in_repository(
        units, worker, str(tmp_path), False, [], out, limits=Limits(threads=1, time_budget=1.0)
    )
    assert to_stream == {}
    assert out["fileset:1"].ok and out["fileset:3"].ok
    assert out["fileset:2"].problem == Problem.SIZE_MISMATCH
    assert "1001" in (out["fileset:2"].message or "")
    assert out["fileset:4"].problem == Problem.BUDGET


def test_without_recorded_sizes_every_file_is_read(tmp_path, worker):
    """Verify's way: a file of another size is hashed (and then found changed by its code)."""
    (tmp_path / "a.tif").write_bytes(b"a" * 1000)
    units = [_unit("fileset:1", ("a.tif", 999))]
    out: dict[str, UnitResult] = {}
    _hash_in_repository(units, worker, str(tmp_path), False, [], out, recorded_sizes=False)
    assert out["fileset:1"].ok
    assert out["fileset:1"].files[0].filesize == 1000
