"""install.sh on a sandboxed OMERO host (host_sandbox.py): a throwaway account plays the OMERO
account and owns OMERO.server and its Python; the installer runs as root, as it would.

Besides what an installation must do (complete, idempotent, dry-runnable, uninstallable), each
attack an account on a shared host could make is a test here: the OMERO account planting code
that root or a root-run scheduler would run, a dangling link in a directory it can write, a
newline in a schedule, an uninstall that takes other people's files with it."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import TOP
from host_sandbox import (
    Site,
    create_account,
    listing,
    make_site,
    make_template_venv,
    open_base,
    remove_account,
    remove_tree,
)

INSTALL = TOP / "install.sh"
SCRIPTS = sorted(p.name for p in (TOP / "omero_scripts" / "omero_iscc" / "scripts").glob("ISCC_*.py"))


@pytest.fixture(scope="module")
def account_and_template():
    base = open_base()
    account = create_account(base)
    try:
        yield account, make_template_venv(account, base)
    finally:
        remove_account(account)
        remove_tree(base)


@pytest.fixture
def site(account_and_template) -> Site:
    account, template = account_and_template
    base = open_base()
    try:
        yield make_site(base, account, template)
    finally:
        remove_tree(base)


def paths(site: Site) -> list[str]:
    b = site.base
    return [
        "--omero-dir",
        str(site.server),
        "--prefix",
        str(b / "usr"),
        "--config-dir",
        str(b / "etc" / "omero-iscc"),
        "--state-dir",
        str(b / "var" / "lib" / "omero-iscc"),
        "--log-dir",
        str(b / "var" / "log" / "omero-iscc"),
        "--cron-dir",
        str(b / "etc" / "cron.d"),
        "--systemd-dir",
        str(b / "etc" / "systemd"),
        "--logrotate-dir",
        str(b / "etc" / "logrotate.d"),
    ]


def install(site: Site, *extra: str, worker: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    args = ["bash", str(INSTALL)]
    if worker:
        args += ["--binary", worker]
    environment = {k: v for k, v in os.environ.items() if k != "OMERODIR"}
    environment.update(env or {})
    return subprocess.run(
        args + paths(site) + list(extra), capture_output=True, text=True, env=environment, timeout=300, check=False
    )


def test_install_is_complete_idempotent_dry_runnable_and_uninstallable(site, worker):
    b = site.base
    (b / "etc" / "logrotate.d").mkdir(parents=True)
    before = listing(b, skip=("python-uids.log",))
    dry = install(site, "--schedule", "*/5 * * * *", "--dry-run", worker=worker)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "would run as" in dry.stdout and "selftest passed" in dry.stdout
    assert listing(b, skip=("python-uids.log",)) == before, "--dry-run changed something"

    first = install(site, "--schedule", "*/5 * * * *", worker=worker)
    assert first.returncode == 0, first.stdout + first.stderr
    cfg = b / "etc" / "omero-iscc" / "config.json"
    installed = {
        b / "usr" / "bin" / "omero-iscc": (0o755, "root"),
        site.venv / "bin" / "omero-iscc": (0o755, site.account.name),
        site.purelib() / "omero_iscc" / "__init__.py": (0o644, site.account.name),
        site.purelib() / "omero" / "plugins" / "iscc.py": (0o644, site.account.name),
        **{site.scripts / name: (0o644, site.account.name) for name in SCRIPTS},
        b / "etc" / "cron.d" / "omero-iscc": (0o644, "root"),
        b / "etc" / "logrotate.d" / "omero-iscc": (0o644, "root"),
        cfg: (0o600, site.account.name),
        b / "etc" / "omero-iscc" / "install-manifest": (0o644, "root"),
    }
    for path, (mode, owner) in installed.items():
        assert path.is_file(), path
        assert (path.stat().st_mode & 0o7777, path.owner()) == (mode, owner), path
    assert (b / "var" / "lib" / "omero-iscc").owner() == site.account.name
    assert (b / "var" / "lib" / "omero-iscc").stat().st_mode & 0o777 == 0o700
    cron = (b / "etc" / "cron.d" / "omero-iscc").read_text().splitlines()
    assert cron[1] == (
        f"*/5 * * * * {site.account.name} nice -n 10 {site.python} -I -m omero_iscc --config {cfg} "
        f"--state-dir {b / 'var' / 'lib' / 'omero-iscc'} run --once "
        f">>{b / 'var' / 'log' / 'omero-iscc'}/scheduler.log 2>&1"
    )
    # No credentials: the scheduler refuses the placeholder and says what to set.
    assert '"username": "CHANGE-ME"' in cfg.read_text() and "omero" not in cfg.read_text().split('"password"')[1][:12]
    refused = site.account.run(
        [str(site.python), "-I", "-m", "omero_iscc", "--config", str(cfg), "run", "--once"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode == 2 and "still install.sh's placeholder 'CHANGE-ME'" in refused.stderr, refused.stderr
    # The installed helper finds the worker next to the server's Python; pip knows the distribution.
    probe = site.account.run(
        [str(site.python), "-I", "-c", "from omero_iscc.worker import find_worker; print(find_worker())"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert probe.stdout.strip() == str(site.venv / "bin" / "omero-iscc"), probe.stderr
    assert not (site.purelib() / "omero" / "__init__.py").exists()

    after_first = listing(b, skip=("python-uids.log",))
    second = install(site, "--schedule", "*/5 * * * *", worker=worker)
    assert second.returncode == 0, second.stderr
    assert "install:" not in second.stdout and "create:" not in second.stdout, second.stdout
    assert listing(b, skip=("python-uids.log",)) == after_first, "the second run changed something"

    # Uninstall removes what was installed, and nothing else: a site's own script beside
    # ours, another service's file in the configuration directory, a foreign cron entry.
    (site.scripts / "Site_Script.py").write_text("# the facility's own\n")
    os.chown(site.scripts / "Site_Script.py", site.account.uid, site.account.gid)
    (b / "etc" / "omero-iscc" / "other-service.json").write_text("{}")
    (b / "etc" / "cron.d" / "backup").write_text("0 3 * * * root /usr/local/bin/backup\n")
    cfg.write_text(cfg.read_text().replace("CHANGE-ME", "edited"))
    gone = install(site, "--uninstall")
    assert gone.returncode == 0, gone.stdout + gone.stderr
    manifest = b / "etc" / "omero-iscc" / "install-manifest"
    for path in installed:
        if path not in (cfg, manifest):
            assert not path.exists(), path
    assert "edited" in cfg.read_text(), "the configuration is kept without --purge"
    assert manifest.read_text().split("\n")[0] == f"config {cfg}", "and the manifest says install.sh made it"
    assert (site.scripts / "Site_Script.py").read_text() == "# the facility's own\n"
    assert (b / "etc" / "omero-iscc" / "other-service.json").exists()
    assert (b / "etc" / "cron.d" / "backup").exists()
    assert not (b / "usr").exists(), "directories the install made and left empty go"
    shown = site.account.run([str(site.python), "-I", "-m", "pip", "show", "omero-iscc"], capture_output=True)
    assert shown.returncode != 0, "pip uninstalled the distribution"
    # --purge also takes the configuration, but still nothing that is not install.sh's.
    again = install(site, "--schedule", "*/5 * * * *", worker=worker)
    assert again.returncode == 0, again.stderr
    purged = install(site, "--uninstall", "--purge")
    assert purged.returncode == 0, purged.stdout + purged.stderr
    assert not cfg.exists() and not manifest.exists()
    assert (b / "etc" / "omero-iscc" / "other-service.json").exists()


def test_no_python_of_the_omero_account_ever_runs_as_root(site, worker):
    """Attack: the OMERO account plants a .pth file (or anything) in its Python environment;
    whatever runs that Python as root hands it the host. Every step of the installer that
    starts it (checks, pip, the scripts, dry run, uninstall) must do so as the OMERO account."""
    for args in (["--dry-run"], [], ["--uninstall", "--dry-run"], ["--uninstall"]):
        result = install(site, "--schedule", "*/5 * * * *", *args, worker=None if "--uninstall" in args else worker)
        assert result.returncode == 0, (args, result.stdout + result.stderr)
    uids = site.python_uids()
    assert uids, "the spy .pth never ran: the test proves nothing"
    assert 0 not in uids, f"the OMERO account's Python ran as root: {site.uids.read_text()}"
    assert set(uids) == {site.account.uid}


def test_the_scheduler_never_runs_as_root_nor_through_files_others_can_write(site, worker, tmp_path):
    """Attack: OMERO.server is a link into a root-owned release directory (the usual layout),
    so the owner of the link's target is root; scheduling as root would run the account's
    Python and worker as root every five minutes."""
    release = site.base / "opt" / "omero" / "server" / "OMERO.server-5.6.16"
    site.server.rename(release)
    os.chown(release, 0, 0)
    site.server.symlink_to(release)
    before = listing(site.base, skip=("python-uids.log",))
    result = install(site, "--schedule", "*/5 * * * *", worker=worker)
    assert result.returncode == 2, result.stdout
    assert "belongs to root: name the account OMERO runs as with --user" in result.stderr, result.stderr
    assert listing(site.base, skip=("python-uids.log",)) == before, "a refused run changed something"

    as_root = install(site, "--schedule", "*/5 * * * *", "--user", "root", worker=worker)
    assert as_root.returncode == 2 and "is root" in as_root.stderr, as_root.stderr

    # A Python environment a third account may write is never scheduled.
    site.venv.chmod(0o777)
    before = listing(site.base, skip=("python-uids.log",))
    result = install(site, "--schedule", "*/5 * * * *", "--user", site.account.name, worker=worker)
    assert result.returncode == 2, result.stdout
    assert f"but {site.venv} may be written by another account than root and {site.account.name}" in result.stderr
    assert listing(site.base, skip=("python-uids.log",)) == before
    site.venv.chmod(0o755)
    result = install(site, "--schedule", "*/5 * * * *", "--user", site.account.name, worker=worker)
    assert result.returncode == 0, result.stdout + result.stderr
    cron = (site.base / "etc" / "cron.d" / "omero-iscc").read_text()
    assert f" {site.account.name} nice -n 10 {site.python} -I -m omero_iscc" in cron


def test_a_link_planted_in_a_directory_others_can_write_creates_nothing(site, worker):
    """Attack: in a configuration directory the OMERO account can write, a dangling
    config.json link made root create (and chown to the account) any file it named."""
    conf = site.base / "etc" / "omero-iscc"
    conf.mkdir(parents=True)
    os.chown(conf, site.account.uid, site.account.gid)
    target = site.base / "ld.so.preload"
    (conf / "config.json").symlink_to(target)
    result = install(site, "--schedule", "*/5 * * * *", worker=worker)
    assert result.returncode == 2, result.stdout
    assert f"{conf}: {conf} (owner uid {site.account.uid}" in result.stderr, result.stderr
    assert not target.exists() and not target.is_symlink(), "root followed the link"
    assert not (site.base / "etc" / "cron.d").exists() and not (site.venv / "bin" / "omero-iscc").exists()

    # The scripts directory is checked too (a link there would be written through).
    elsewhere = site.base / "elsewhere"
    elsewhere.mkdir()
    os.chown(elsewhere, site.account.uid, site.account.gid)
    site.scripts.symlink_to(elsewhere)
    result = install(site, "--config-dir", str(site.base / "etc2"), worker=worker)
    assert result.returncode == 2 and f"{site.scripts} is a symbolic link: refusing" in result.stdout + result.stderr
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--schedule", "*/5 * * * *\n* * * * * root /tmp/x", "is not a cron schedule"),
        ("--schedule", "*/5 * * * * ; rm", "is not a cron schedule"),
        ("--on-calendar", "*:0/5\nExecStartPre=/tmp/x", "is not a calendar specification"),
        ("--user", "omero\nExecStartPre=/tmp/x", "is not a user name"),
        ("--state-dir", "/var/lib/omero iscc", "characters a cron line or a systemd unit would mangle"),
        ("--config-dir", "/etc/omero-iscc%n", "characters a cron line or a systemd unit would mangle"),
    ],
)
def test_values_that_would_inject_lines_are_refused(site, worker, option, value, message):
    before = listing(site.base, skip=("python-uids.log",))
    extra = ["--systemd"] if option == "--on-calendar" else ["--schedule", "*/5 * * * *"]
    if option == "--schedule":
        extra = []
    result = install(site, *extra, option, value, worker=worker)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert listing(site.base, skip=("python-uids.log",)) == before


def fake_systemd(site: Site) -> tuple[Path, Path]:
    """systemctl and systemd-analyze stand-ins: the second lists the sandbox's unit directory
    as one systemd reads; the first logs its calls."""
    bin_dir = site.base / "fakebin"
    bin_dir.mkdir()
    log = site.base / "systemctl.log"
    (bin_dir / "systemctl").write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
    (bin_dir / "systemd-analyze").write_text(f'#!/bin/sh\n[ "$1" = unit-paths ] && echo {site.base}/etc/systemd\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    return bin_dir, log


def test_systemd_units_are_hardened_enabled_and_on_uninstall_disabled_and_reloaded(site, worker):
    bin_dir, log = fake_systemd(site)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    result = install(site, "--systemd", "--on-calendar", "*:0/10", worker=worker, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    service = (site.base / "etc" / "systemd" / "omero-iscc.service").read_text()
    state = site.base / "var" / "lib" / "omero-iscc"
    for line in [
        f"User={site.account.name}",
        f"ExecStart={site.python} -I -m omero_iscc --config {site.base}/etc/omero-iscc/config.json "
        f"--state-dir {state} run --once",
        "KillMode=mixed",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        f"ReadWritePaths={state}",
        "PrivateTmp=yes",
        "ProtectHome=yes",
        "CapabilityBoundingSet=",
    ]:
        assert line in service.splitlines(), (line, service)
    assert "OnCalendar=*:0/10" in (site.base / "etc" / "systemd" / "omero-iscc.timer").read_text()
    assert log.read_text().splitlines() == ["daemon-reload", "enable --now omero-iscc.timer"]
    # The unit parses (systemd's own checker, where it can run here).
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(site.base / "etc" / "systemd" / "omero-iscc.service")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "Unknown key" not in verify.stderr and "Invalid" not in verify.stderr, verify.stderr
    gone = install(site, "--uninstall", env=env)
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert log.read_text().splitlines()[2:] == [
        "disable --now omero-iscc.timer",
        "stop omero-iscc.service",
        "daemon-reload",
    ]
    assert not (site.base / "etc" / "systemd").exists()


def test_an_edited_file_is_kept_on_uninstall_and_said_so(site, worker):
    assert install(site, "--schedule", "*/5 * * * *", worker=worker).returncode == 0
    cron = site.base / "etc" / "cron.d" / "omero-iscc"
    cron.write_text(cron.read_text().replace("*/5", "*/15"))
    gone = install(site, "--uninstall")
    assert gone.returncode == 1
    assert f"kept: {cron} (changed since it was installed)" in gone.stdout
    assert cron.exists()


def test_a_run_that_cannot_finish_changes_nothing(site, worker):
    """Scheduling into a cron directory another account may write, or without a server: the
    refusal comes before the first change."""
    cron_dir = site.base / "etc" / "cron.d"
    cron_dir.mkdir(parents=True)
    cron_dir.chmod(0o777)
    before = listing(site.base, skip=("python-uids.log",))
    result = install(site, "--schedule", "*/5 * * * *", worker=worker)
    assert result.returncode == 2 and f"{cron_dir}: {cron_dir}" in result.stderr, result.stderr
    assert listing(site.base, skip=("python-uids.log",)) == before
    env = {k: v for k, v in os.environ.items() if k != "OMERODIR"}
    env["PATH"] = "/usr/bin:/bin"
    no_server = subprocess.run(
        ["bash", str(INSTALL), "--binary", worker, "--schedule", "*/5 * * * *", "--prefix", str(site.base / "p")],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert no_server.returncode == 2 and "no OMERO.server found" in no_server.stderr, no_server.stderr
    assert not (site.base / "p").exists()


def test_the_worker_alone_as_root_and_a_non_root_run_that_says_what_it_cannot_do(site, worker):
    env = {k: v for k, v in os.environ.items() if k != "OMERODIR"}
    env["PATH"] = "/usr/bin:/bin"
    cli_only = subprocess.run(
        [
            "bash",
            str(INSTALL),
            "--binary",
            worker,
            "--prefix",
            str(site.base / "p2"),
            "--config-dir",
            str(site.base / "etc2"),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert cli_only.returncode == 0, cli_only.stdout + cli_only.stderr
    assert "installed the worker for people only" in cli_only.stdout
    assert (site.base / "p2" / "bin" / "omero-iscc").is_file()
    # As the OMERO account itself, scheduling into root's directories: refused, with what to do.
    (site.base / "etc" / "cron.d").mkdir(parents=True)
    copy = site.base / "checkout"  # where the account can read it
    copy.mkdir()
    subprocess.run(["cp", "-r", str(TOP / "install.sh"), str(TOP / "omero_scripts"), str(copy)], check=True)
    subprocess.run(["chmod", "-R", "a+rX", str(copy)], check=True)
    staged_worker = site.base / "omero-iscc"
    subprocess.run(["install", "-m", "755", worker, str(staged_worker)], check=True)
    before = listing(site.base, skip=("python-uids.log",))
    result = site.account.run(
        ["bash", str(copy / "install.sh"), "--binary", str(staged_worker), *paths(site), "--schedule", "*/5 * * * *"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2, result.stdout
    assert f"{site.base}/etc/cron.d: not writable as {site.account.name} (run install.sh as root)" in result.stderr
    assert listing(site.base, skip=("python-uids.log",)) == before


def test_building_as_root_is_refused(site):
    """Building runs every crate's build script: never as root. A root-owned checkout is not
    built; --binary or --wheel is the way."""
    copy = site.base / "checkout"
    copy.mkdir()
    subprocess.run(["cp", "-r", str(TOP / "install.sh"), str(TOP / "omero_scripts"), str(copy)], check=True)
    result = subprocess.run(
        ["bash", str(copy / "install.sh"), *paths(site)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert "the checkout belongs to root, and building as root runs every crate's build script" in result.stderr


def test_a_python_older_than_3_9_is_refused(site, worker):
    # A stand-in for an old server Python: answers the two questions install.sh asks it.
    old = site.base / "python3.8"
    old.write_text(
        '#!/bin/sh\ncase "$3" in\n  *version_info*) exit 1 ;;\n  *python_version*) echo 3.8.18 ;;\n'
        "  *) exit 99 ;;\nesac\n"
    )
    old.chmod(0o755)
    result = install(site, "--python", str(old), worker=worker)
    assert result.returncode == 2
    assert "is Python 3.8.18: omero-iscc needs Python 3.9 or newer" in result.stderr, result.stderr
    assert not (site.base / "usr" / "bin" / "omero-iscc").exists()


def test_upload_runs_omero_as_the_account_with_its_session_and_uninstall_deletes(site, worker):
    # A stand-in for the `omero` CLI next to the server's Python: a session exists when the
    # file `session` does; every call is logged with the uid that made it.
    state = site.base / "cli"
    state.mkdir()
    state.chmod(0o777)
    cli = site.venv / "bin" / "omero"
    cli.write_text(
        f"""#!/bin/bash
echo "$(id -u) $*" >> {state}/log
case "$1 $2" in
  "sessions key") [ -f {state}/session ] && echo KEY || exit 1 ;;
esac
exit 0
"""
    )
    cli.chmod(0o755)
    os.chown(cli, site.account.uid, site.account.gid)
    result = install(site, "--upload", worker=worker)
    assert result.returncode == 2 and "no OMERO session to upload with: run" in result.stderr, result.stderr
    assert "login' as " + site.account.name in result.stderr
    (state / "session").touch()
    result = install(site, "--upload", worker=worker)
    assert result.returncode == 0, result.stdout + result.stderr
    calls = (state / "log").read_text().splitlines()
    assert f"{site.account.uid} iscc scripts install --upload" in calls
    assert all(c.split()[0] == str(site.account.uid) for c in calls), calls
    assert not site.scripts.exists()
    gone = install(site, "--uninstall")
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert (state / "log").read_text().splitlines()[
        -1
    ] == f"{site.account.uid} iscc scripts install --upload --uninstall"


def test_a_wheel_built_elsewhere_installs_without_building(site, worker, tmp_path):
    made = subprocess.run(
        [sys.executable, str(TOP / "omero_scripts" / "make_wheel.py"), str(tmp_path), "--worker", worker],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    result = install(site, "--wheel", made)
    assert result.returncode == 0, result.stdout + result.stderr
    with zipfile.ZipFile(made) as z:
        inside = z.read("omero_iscc-0.1.0.data/scripts/omero-iscc")
    assert (site.base / "usr" / "bin" / "omero-iscc").read_bytes() == inside
    assert (site.venv / "bin" / "omero-iscc").read_bytes() == inside
    dynamic = site.base / "dynamic"
    dynamic.write_bytes(Path("/bin/sh").resolve().read_bytes())
    result = install(site, "--binary", str(dynamic))
    assert result.returncode == 2 and "is not a static x86-64 executable" in result.stderr
