"""install.sh into a throwaway OMERO.server-shaped directory with its own venv."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TOP


def listing(root: Path) -> list[tuple[str, int, int, bytes]]:
    out = []
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        out.append(
            (str(p.relative_to(root)), stat.S_IMODE(st.st_mode), st.st_mtime_ns, p.read_bytes() if p.is_file() else b"")
        )
    return out


@pytest.fixture
def site(tmp_path: Path) -> dict:
    server = tmp_path / "opt" / "omero" / "server"
    (server / "OMERO.server" / "lib" / "scripts" / "omero").mkdir(parents=True)
    # A server venv as OMERO's docs make it: with pip (from the interpreter's bundled wheel, offline).
    subprocess.run([sys.executable, "-m", "venv", str(server / "venv3")], check=True)
    return {
        "root": tmp_path,
        "args": [
            "--prefix",
            str(tmp_path / "usr"),
            "--omero-dir",
            str(server / "OMERO.server"),
            "--python",
            str(server / "venv3" / "bin" / "python"),
            "--config-dir",
            str(tmp_path / "etc"),
            "--cron-dir",
            str(tmp_path / "cron.d"),
            "--systemd-dir",
            str(tmp_path / "systemd"),
            "--schedule",
            "*/5 * * * *",
        ],
        "venv": server / "venv3",
        "scripts": server / "OMERO.server" / "lib" / "scripts" / "iscc",
    }


def install(site, worker, *extra) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "OMERODIR"}
    return subprocess.run(
        ["bash", str(TOP / "install.sh"), "--binary", worker, *site["args"], *extra],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def test_install_is_complete_idempotent_dry_runnable_and_uninstallable(site, worker):
    root = site["root"]
    before = listing(root)
    dry = install(site, worker, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would run" in dry.stdout and "selftest passed" in dry.stdout
    assert listing(root) == before, "--dry-run changed something"

    first = install(site, worker)
    assert first.returncode == 0, first.stdout + first.stderr
    python = site["venv"] / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    installed = {
        root / "usr" / "bin" / "omero-iscc": 0o755,
        site["venv"] / "bin" / "omero-iscc": 0o755,
        Path(purelib) / "omero_iscc" / "__init__.py": 0o644,
        Path(purelib) / "omero" / "plugins" / "iscc.py": 0o644,
        site["scripts"] / "ISCC_Annotate.py": 0o644,
        site["scripts"] / "ISCC_Verify.py": 0o644,
        site["scripts"] / "ISCC_Annotate_New_Images.py": 0o644,
        site["scripts"] / "ISCC_Find_Duplicates.py": 0o644,
        root / "cron.d" / "omero-iscc": 0o644,
        root / "etc" / "config.json": 0o600,
    }
    for path, mode in installed.items():
        assert path.is_file(), path
        assert stat.S_IMODE(path.stat().st_mode) == mode, path
    cron = (root / "cron.d" / "omero-iscc").read_text()
    assert (
        "*/5 * * * * " in cron and f"{python} -m omero_iscc --config {root / 'etc' / 'config.json'} run --once" in cron
    )
    # The installed helper works in the server's Python and finds the worker next to it.
    probe = subprocess.run(
        [str(python), "-c", "from omero_iscc.worker import find_worker; print(find_worker())"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert probe.stdout.strip() == str(site["venv"] / "bin" / "omero-iscc"), probe.stderr
    # Installed as a distribution (pip knows it, and removes it), never as an `omero` package.
    shown = subprocess.run(
        [str(python), "-m", "pip", "show", "omero-iscc"], capture_output=True, text=True, check=False
    )
    assert "Version: 0.1.0" in shown.stdout, shown.stderr
    assert not (Path(purelib) / "omero" / "__init__.py").exists()

    after_first = listing(root)
    second = install(site, worker)
    assert second.returncode == 0
    assert "install:" not in second.stdout and "create:" not in second.stdout
    assert listing(root) == after_first, "the second run changed something"

    gone = install(site, worker, "--uninstall")
    assert gone.returncode == 0, gone.stderr
    for path in installed:
        assert not path.exists(), path
    leftovers = [p for p, *_ in listing(root) if "omero" in p.split("/")[-1] and "iscc" in p]
    assert leftovers == []


def test_systemd_units_and_cli_only_install(site, worker, tmp_path):
    result = install(site, worker, "--systemd")
    assert result.returncode == 0, result.stderr
    service = (tmp_path / "systemd" / "omero-iscc.service").read_text()
    assert "KillMode=mixed" in service and "run --once" in service
    assert "OnCalendar=*:0/5" in (tmp_path / "systemd" / "omero-iscc.timer").read_text()
    env = {k: v for k, v in os.environ.items() if k != "OMERODIR"}
    env["PATH"] = "/usr/bin:/bin"
    cli_only = subprocess.run(
        ["bash", str(TOP / "install.sh"), "--binary", worker, "--prefix", str(tmp_path / "p2")],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert cli_only.returncode == 0, cli_only.stderr
    assert "installed the CLI only" in cli_only.stdout
    assert (tmp_path / "p2" / "bin" / "omero-iscc").is_file()


def test_bad_options_are_refused(site, worker):
    result = install(site, worker, "--frobnicate")
    assert result.returncode == 2 and "unknown option" in result.stderr


def test_a_python_older_than_3_9_is_refused(site, worker, tmp_path):
    # A stand-in for an old server Python: answers the two questions install.sh asks it.
    old = tmp_path / "python3.8"
    old.write_text(
        '#!/bin/sh\ncase "$2" in\n  *version_info*) exit 1 ;;\n  *python_version*) echo 3.8.18 ;;\n'
        "  *) exit 99 ;;\nesac\n"
    )
    old.chmod(0o755)
    args = list(site["args"])
    args[args.index("--python") + 1] = str(old)
    site = dict(site, args=args)
    result = install(site, worker)
    assert result.returncode != 0
    assert "is Python 3.8.18: omero-iscc needs Python 3.9 or newer" in result.stderr, result.stderr
    assert not (site["root"] / "usr" / "bin" / "omero-iscc").exists()


def test_upload_stores_the_scripts_under_iscc_and_replaces_them_on_a_second_run(site, worker, tmp_path):
    # A stand-in for the `omero` CLI next to the server's Python: a session exists when the
    # file `session` does; uploaded scripts are remembered with their ids; every call is logged.
    state = tmp_path / "cli"
    state.mkdir()
    cli = site["venv"] / "bin" / "omero"
    cli.write_text(
        f"""#!/bin/bash
s={state}
echo "$PWD :: $*" >> $s/log
case "$1 $2" in
  "sessions key") [ -f $s/session ] && echo KEY || exit 1 ;;
  "script list") n=0; while read -r p; do n=$((n+1)); echo " $n | $p"; done < <(cat $s/scripts 2>/dev/null) ;;
  "script upload") [ -f "$4" ] && echo "$4" >> $s/scripts ;;
  "script replace") ;;
esac
"""
    )
    cli.chmod(0o755)
    result = install(site, worker, "--upload")
    assert result.returncode == 2 and "no OMERO session to upload with: run" in result.stderr, result.stderr
    assert "login" in result.stderr
    (state / "session").touch()
    result = install(site, worker, "--upload")
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in (TOP / "omero_scripts").glob("ISCC_*.py"))
    assert (state / "scripts").read_text().split() == [f"iscc/{n}" for n in names]
    assert not site["scripts"].exists() or not list(site["scripts"].glob("ISCC_*.py"))
    log = (state / "log").read_text()
    assert log.count("script upload --official iscc/") == len(names)
    result = install(site, worker, "--upload")
    assert result.returncode == 0, result.stderr
    log = (state / "log").read_text()
    assert log.count("script upload --official iscc/") == len(names), "nothing uploaded twice"
    assert log.count("script replace ") == len(names)
