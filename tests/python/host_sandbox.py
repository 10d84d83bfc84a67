"""An OMERO host in a sandbox, for the installer's tests: a throwaway system account that plays
the OMERO account (made with useradd, removed with userdel), an OMERO.server-shaped directory
it owns, and the server's Python environment made by that account.

The tests run as root (as an installer does); what the OMERO account may do, it does as
itself through ``setpriv``. A ``.pth`` file planted in its environment records the uid of
every process that starts that Python: the proof that none of them is root."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

#: The Python an OMERO server's environment is made from here: the system's, which the
#: throwaway account can run (the test interpreters live under /root).
BASE_PYTHON = "/usr/bin/python3"


@dataclass
class Account:
    name: str
    uid: int
    gid: int
    home: Path

    def run(self, args: list[str], check: bool = False, **kw) -> subprocess.CompletedProcess:
        """Runs ``args`` as this account, with a clean environment, from its home."""
        env = {"PATH": "/usr/bin:/bin", "HOME": str(self.home), "LANG": "C.UTF-8", **kw.pop("env", {})}
        cmd = ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups", "--", *args]
        return subprocess.run(cmd, env=env, cwd=str(self.home), check=check, **kw)


def create_account(base: Path) -> Account:
    """A system account of its own (name unique to this process), home under ``base``."""
    assert os.geteuid() == 0, "the installer's tests run as root, as an installer does (they create an account)"
    name = f"iscct{os.getpid() % 100000}"
    home = base / "home"
    subprocess.run(["userdel", name], capture_output=True, check=False)
    subprocess.run(
        ["useradd", "--system", "--home-dir", str(home), "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        check=True,
    )
    import pwd

    pw = pwd.getpwnam(name)
    home.mkdir(mode=0o755)
    os.chown(home, pw.pw_uid, pw.pw_gid)
    return Account(name, pw.pw_uid, pw.pw_gid, home)


def remove_account(account: Account) -> None:
    subprocess.run(["userdel", account.name], capture_output=True, check=False)


def open_base() -> Path:
    """A fresh directory every account can walk into (the tests' own tmp_path is root's 0700)."""
    base = Path(tempfile.mkdtemp(prefix="omero-iscc-host-", dir="/tmp"))
    base.chmod(0o755)
    return base


def make_template_venv(account: Account, where: Path) -> Path:
    """The server's Python environment as OMERO's docs make it (``python3 -m venv``, pip from
    the interpreter's bundled wheel, offline), made once by the account and copied per test."""
    venv = where / "venv3"
    venv.mkdir()
    os.chown(venv, account.uid, account.gid)
    account.run([BASE_PYTHON, "-m", "venv", str(venv)], check=True, capture_output=True)
    return venv


@dataclass
class Site:
    """One sandboxed OMERO host."""

    base: Path
    account: Account
    server: Path  # .../OMERO.server
    venv: Path
    uids: Path  # one line per start of the venv's Python: "uid argv..."

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def scripts(self) -> Path:
        return self.server / "lib" / "scripts" / "iscc"

    def purelib(self) -> Path:
        out = self.account.run(
            [str(self.python), "-I", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        )
        return Path(out.stdout.strip())

    def python_uids(self) -> list[int]:
        return [int(line.split()[0]) for line in self.uids.read_text().splitlines() if line.strip()]


def make_site(base: Path, account: Account, template: Path) -> Site:
    """``base/opt/omero/server/{OMERO.server,venv3}`` owned by the account, with the spy
    ``.pth`` in the environment."""
    top = base / "opt" / "omero" / "server"
    server = top / "OMERO.server"
    (server / "lib" / "scripts" / "omero").mkdir(parents=True)
    for p in [base / "opt", base / "opt" / "omero", top, server, server / "lib", server / "lib" / "scripts"]:
        p.chmod(0o755)
    subprocess.run(["cp", "-a", str(template), str(top / "venv3")], check=True)
    for p in [top, *top.rglob("*")]:
        if not p.is_symlink() and p.owner() != account.name:
            os.chown(p, account.uid, account.gid)
    uids = base / "python-uids.log"
    uids.touch()
    uids.chmod(0o666)
    site = Site(base, account, server, top / "venv3", uids)
    spy = site.purelib() / "zz_uid_spy.pth"
    spy.write_text(
        f"import os, sys; open({str(uids)!r}, 'a').write(str(os.getuid()) + ' ' + ' '.join(sys.argv) + chr(10))\n"
    )
    os.chown(spy, account.uid, account.gid)
    return site


def listing(root: Path, skip: tuple[str, ...] = ()) -> list[tuple[str, int, int, int, bytes]]:
    """Every path under ``root`` with its mode, owner, mtime and content: what "changed
    nothing" compares."""
    out = []
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if any(rel.startswith(s) for s in skip) or "__pycache__" in p.parts:
            continue
        st = p.lstat()
        data = p.read_bytes() if stat.S_ISREG(st.st_mode) else b""
        out.append((rel, st.st_mode, st.st_uid, st.st_mtime_ns, data))
    return out


def remove_tree(base: Path) -> None:
    shutil.rmtree(base, ignore_errors=True)
