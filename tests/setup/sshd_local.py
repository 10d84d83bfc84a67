"""An OpenSSH server on 127.0.0.1 started by hand, standing for a cluster's login node.

    with LocalSshd(tmp_dir, env={"SLURM_CONF": ...}) as sshd:
        sshd.destination, sshd.options    # what ssh needs: user@127.0.0.1, -p, -i, known hosts

It listens on a free port with a host key made here, lets in the current user with a key made
here (and nothing else: no password), gives the sessions ``env`` (the login node's own
settings, such as its Slurm configuration), and is stopped by its process id. The package is
installed by tests/setup/slurm.sh; ``SshdUnavailable`` says why it cannot start (the tests
fail with it, never skip).
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from slurm_local import free_port


class SshdUnavailable(RuntimeError):
    pass


CONFIG = """\
Port {port}
ListenAddress 127.0.0.1
HostKey {dir}/host_key
PidFile {dir}/sshd.pid
AuthorizedKeysFile {dir}/authorized_keys
AllowUsers {user}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PrintMotd no
LogLevel VERBOSE
"""


class LocalSshd:
    def __init__(self, directory: Path, env: Mapping[str, str] | None = None) -> None:
        self.dir = Path(directory)
        self.env = dict(env or {})
        self.port = free_port()
        self.user = getpass.getuser()
        self.proc: subprocess.Popen | None = None

    @property
    def destination(self) -> str:
        return f"{self.user}@127.0.0.1"

    @property
    def options(self) -> list[str]:
        return [
            "-p",
            str(self.port),
            "-i",
            str(self.dir / "client_key"),
            "-o",
            f"UserKnownHostsFile={self.dir / 'known_hosts'}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "IdentitiesOnly=yes",
        ]

    def __enter__(self) -> LocalSshd:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        sshd = shutil.which("sshd") or "/usr/sbin/sshd"
        if not os.path.exists(sshd) or not shutil.which("ssh-keygen") or not shutil.which("ssh"):
            raise SshdUnavailable("openssh-server or openssh-client is not installed (tests/setup/slurm.sh)")
        self.dir.mkdir(parents=True, exist_ok=True)
        for key in ("host_key", "client_key"):
            subprocess.run(
                [
                    "ssh-keygen",
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    f"omero-iscc test {key}",
                    "-f",
                    str(self.dir / key),
                ],
                check=True,
            )
        host_pub = (self.dir / "host_key.pub").read_text().split()
        (self.dir / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {host_pub[0]} {host_pub[1]}\n")
        (self.dir / "authorized_keys").write_text((self.dir / "client_key.pub").read_text())
        config = CONFIG.format(port=self.port, dir=self.dir, user=self.user)
        config += "".join(f"SetEnv {k}={v}\n" for k, v in self.env.items())
        (self.dir / "sshd_config").write_text(config)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # its privilege separation directory
        log = open(self.dir / "sshd.log", "wb")  # noqa: SIM115 - kept open for the daemon's life
        self.proc = subprocess.Popen(
            [sshd, "-D", "-e", "-f", str(self.dir / "sshd_config")],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SshdUnavailable(f"sshd exited with {self.proc.returncode}: {self.log_tail()}")
            probe = subprocess.run(
                ["ssh", "-o", "BatchMode=yes", *self.options, self.destination, "true"],
                capture_output=True,
                check=False,
                timeout=20,
            )
            if probe.returncode == 0:
                return
            time.sleep(0.3)
        raise SshdUnavailable(f"no ssh login within 20 s: {self.log_tail()}")

    def log_tail(self) -> str:
        path = self.dir / "sshd.log"
        return " | ".join(path.read_text(errors="replace").splitlines()[-5:]) if path.exists() else "no log"

    def stop(self) -> None:
        """Stops the sshd started here, by its process id (and the sessions it forked)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None
