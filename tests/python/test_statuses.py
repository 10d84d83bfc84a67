"""The helper's exit statuses mirror the worker's: each is checked against what the real
worker binary returns in the same situation."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from omero_iscc.statuses import ExitStatus


def _dead_pipe() -> int:
    read, write = os.pipe()
    os.close(read)
    return write


def test_exit_statuses_are_the_workers(worker: str, tmp_path: Path):
    (tmp_path / "f").write_bytes(b"bytes")

    def status(*args: str, stdout=subprocess.DEVNULL) -> int:
        return subprocess.run(
            [worker, *args], cwd=tmp_path, stdout=stdout, stderr=subprocess.DEVNULL, check=False
        ).returncode

    assert status("sum", "f") == ExitStatus.SUCCESS
    assert status("sum", "f", "missing") == ExitStatus.FAILURE
    assert status("sum", "--groups", "-") == ExitStatus.USAGE
    dead = _dead_pipe()
    try:
        assert status("selftest", stdout=dead) == ExitStatus.INCOMPLETE
    finally:
        os.close(dead)
    # 4 (BUDGET) is the worker's --time-budget status; 5 (NO_SERVER) is the helper's own
    # (tested in test_host_safety.py against a server that does not answer).
    assert [s.value for s in ExitStatus] == [0, 1, 2, 3, 4, 5]
