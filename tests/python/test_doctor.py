"""`python -m omero_iscc doctor`: each check says OK or what to fix."""

from __future__ import annotations

from conftest import NS

from omero_iscc import doctor
from omero_iscc.config import Config
from omero_iscc.state import Lock


def run(cfg, connect, tests):
    lines = []
    status = doctor.run(cfg, connect, tests, out=lines.append)
    return status, lines


def test_all_checks_pass_on_a_healthy_setup(world, worker, tmp_path):
    cfg = Config(worker=worker, state_dir=str(tmp_path / "state"))
    world.server.add_annotation(world.single, [["iscc:sum", "ISCC:KUAX"], ["iscc:timestamp", "t"]], NS)
    status, lines = run(cfg, lambda c: (Closer(), world.omero), ["connection", "processing", "service", "list"])
    assert status == 0, lines
    text = "\n".join(lines)
    for check in [
        "connection",
        "worker found",
        "worker statically linked",
        "worker selftest",
        "file access",
        "one real file hashed",
        "state dir writable",
        "lock free",
    ]:
        assert f"OK   {check}:" in text, text
    assert f"image {world.single}: ISCC:KUAX" in text
    assert "files are read from the ManagedRepository at" in text


def test_a_host_without_the_repository_reads_through_omero_and_says_so(world, worker, tmp_path):
    cfg = Config(worker=worker, state_dir=str(tmp_path / "state"), repository=str(tmp_path / "not-mounted"))
    status, lines = run(cfg, lambda c: (Closer(), world.omero), ["processing"])
    assert status == 0, lines
    assert (
        f"OK   file access: {tmp_path / 'not-mounted'} is not mounted on this host: every file is read through"
        " OMERO (RawFileStore)" in lines
    )


def test_failures_say_what_to_fix(world, tmp_path):
    def refuse(cfg):
        raise ConnectionRefusedError("connection refused")

    cfg = Config(
        worker=str(tmp_path / "nowhere" / "omero-iscc"),
        state_dir=str(tmp_path / "state"),
        repository=str(tmp_path / "missing-repo"),
        webhook_url="http://127.0.0.1:9/hook",
    )
    with Lock(cfg.state_dir):
        status, lines = run(cfg, refuse, ["connection", "processing", "service"])
    assert status == 1
    text = "\n".join(lines)
    assert "FAIL connection: cannot log in" in text and "check host, port and credentials" in text
    assert "FAIL worker found: the configured worker" in text
    assert "FAIL lock free: a scheduler is running" in text
    assert "FAIL webhook answers:" in text


class Closer:
    def closeSession(self):
        pass


def test_the_worker_found_is_named_with_its_version_and_another_release_is_refused(tmp_path, worker):
    cfg = Config(worker=worker, state_dir=str(tmp_path / "state"), repository=str(tmp_path / "not-mounted"))
    status, lines = run(cfg, None, ["processing"])
    assert f"OK   worker found: {worker} (configured)" in lines
    assert "OK   worker version: 0.1.0 (the helper's)" in lines
    other = tmp_path / "omero-iscc"
    other.write_text(
        f'#!/bin/sh\n[ "$1" = --version ] && {{ echo "omero-iscc 0.0.9"; exit 0; }}\nexec "{worker}" "$@"\n'
    )
    other.chmod(0o755)
    status, lines = run(Config(worker=str(other), state_dir=str(tmp_path / "state")), None, ["processing"])
    assert status == 1
    assert "FAIL worker version: 0.0.9, but the helper is 0.1.0: install the worker of the same release" in (
        "\n".join(lines)
    )
    assert not any("selftest" in line for line in lines), "a worker of another release is not used further"


def test_the_webhook_url_is_masked_in_the_doctors_report(tmp_path):
    cfg = Config(state_dir=str(tmp_path / "state"), webhook_url="http://127.0.0.1:9/hooks/SECRET-TOKEN")
    status, lines = run(cfg, None, ["service"])
    assert status == 1
    text = "\n".join(lines)
    assert "FAIL webhook answers: http://127.0.0.1:9/***" in text and "SECRET-TOKEN" not in text
