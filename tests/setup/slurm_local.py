"""A one-node Slurm cluster started by hand (no systemd), for the backlog tests and benchmark.

    with LocalSlurm(tmp_dir) as cluster:   # munged, slurmctld, slurmd; SLURM_CONF exported
        ...                                # sbatch, squeue, scancel work
    # the daemons started here are stopped by their process ids

The Debian packages (slurmctld, slurmd, slurm-client, munge) are installed by
tests/setup/slurm.sh. ``LocalSlurm`` raises ``SlurmUnavailable`` with the reason when the
cluster cannot be started: the tests that need it fail with that reason, never skip.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path


class SlurmUnavailable(RuntimeError):
    pass


CONF = """\
ClusterName=omeroiscc
SlurmctldHost=localhost
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MailProg=/bin/true
ReturnToService=2
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd.log
MinJobAge=300
NodeName=localhost CPUs={cpus} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalSlurm:
    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.procs: list[subprocess.Popen] = []
        self.conf = self.dir / "slurm.conf"
        self._old_conf = os.environ.get("SLURM_CONF")

    def __enter__(self) -> LocalSlurm:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _need(self, *names: str) -> None:
        missing = [n for n in names if not (shutil.which(n) or os.path.exists(f"/usr/sbin/{n}"))]
        if missing:
            raise SlurmUnavailable(f"not installed: {', '.join(missing)} (tests/setup/slurm.sh installs them)")

    def start(self) -> None:
        self._need("slurmctld", "slurmd", "sbatch", "squeue", "munged", "munge")
        if os.geteuid() != 0:
            raise SlurmUnavailable("starting slurmd by hand needs root")
        for sub in ("state", "spool"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self.conf.write_text(
            CONF.format(dir=self.dir, cpus=os.cpu_count() or 1, ctld_port=_free_port(), d_port=_free_port())
        )
        os.environ["SLURM_CONF"] = str(self.conf)
        self._start_munge()
        self.procs.append(self._daemon(["slurmctld", "-D", "-i", "-f", str(self.conf)], "slurmctld"))
        self.procs.append(self._daemon(["slurmd", "-D", "-N", "localhost", "-f", str(self.conf)], "slurmd"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, check=False)
            if out.returncode == 0 and out.stdout.strip() in ("idle", "mixed", "allocated"):
                return
            for p in self.procs:
                if p.poll() is not None:
                    raise SlurmUnavailable(f"{p.args[0]} exited with {p.returncode}: {self._log_tail()}")
            time.sleep(0.3)
        raise SlurmUnavailable(f"the node did not become idle in 30 s: {self._log_tail()}")

    def _start_munge(self) -> None:
        ok = subprocess.run("munge -n | unmunge", shell=True, capture_output=True, check=False)
        if ok.returncode == 0:
            return  # a munged is already running (another test run's, or the system's)
        run_dir = Path("/run/munge")
        run_dir.mkdir(parents=True, exist_ok=True)
        munge = pwd.getpwnam("munge")
        os.chown(run_dir, munge.pw_uid, munge.pw_gid)
        self.procs.append(self._daemon(["runuser", "-u", "munge", "--", "/usr/sbin/munged", "--foreground"], "munged"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if subprocess.run("munge -n | unmunge", shell=True, capture_output=True, check=False).returncode == 0:
                return
            time.sleep(0.2)
        raise SlurmUnavailable("munged did not start (munge -n | unmunge fails)")

    def _daemon(self, args: list[str], name: str) -> subprocess.Popen:
        log = open(self.dir / f"{name}.stderr", "wb")  # noqa: SIM115 - kept open for the daemon's life
        return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def _log_tail(self) -> str:
        tails = []
        for name in ("slurmctld.log", "slurmd.log", "slurmctld.stderr", "slurmd.stderr", "munged.stderr"):
            path = self.dir / name
            if path.exists():
                tails.append(f"{name}: " + " | ".join(path.read_text(errors="replace").splitlines()[-3:]))
        return "; ".join(tails) or "no logs"

    def stop(self) -> None:
        """Stops the daemons this object started, by process id (never by name)."""
        for p in reversed(self.procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
        self.procs.clear()
        if self._old_conf is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = self._old_conf
