"""A one-node Slurm cluster started by hand (no systemd), for the backlog tests and benchmark.

    with LocalSlurm(tmp_dir) as cluster:                  # munged, slurmctld, slurmd
        ...                                               # sbatch, squeue, scancel work
    with LocalSlurm(tmp_dir, accounting=True,             # + MariaDB and slurmdbd: sacct,
                    max_array_size=10,                    #   sacctmgr; limits of its own
                    max_submit_jobs=25) as cluster:
        ...
    # SLURM_CONF is exported while it runs; the daemons started here (a munged of its own
    # included) are stopped by their process ids

The Debian packages (slurmctld, slurmd, slurmdbd, slurm-client, munge, mariadb-server) are
installed by tests/setup/slurm.sh. ``LocalSlurm`` raises ``SlurmUnavailable`` with the reason
when the cluster cannot be started: the tests that need it fail with that reason, never skip.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


class SlurmUnavailable(RuntimeError):
    pass


CONF = """\
ClusterName=omeroiscc
SlurmctldHost=localhost
AuthType=auth/munge
# A munged of its own (another cluster on this host may stop the system's); a requeued job
# may start again once its launch credential expired: after 31 s, not 121.
AuthInfo=cred_expire=30,socket={munge_socket}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
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
MinJobAge={min_job_age}
MaxArraySize={max_array_size}
MaxJobCount={max_job_count}
KillWait=5
# The node may claim more CPUs than the host has: tasks that wait (held on purpose) must not
# stop the others.
SlurmdParameters=config_overrides
NodeName=localhost CPUs={cpus} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""

NO_ACCOUNTING = "AccountingStorageType=accounting_storage/none\n"

ACCOUNTING = """\
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort={dbd_port}
# The munge socket for slurmdbd's connections (AuthInfo's is not used for them).
AccountingStoragePass={munge_socket}
AccountingStorageEnforce=associations,limits
"""

DBD_CONF = """\
AuthType=auth/munge
AuthInfo=socket={munge_socket}
DbdHost=localhost
DbdPort={dbd_port}
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={db_port}
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
PidFile={dir}/slurmdbd.pid
LogFile={dir}/slurmdbd.log
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _binary(name: str) -> str | None:
    for candidate in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


class LocalSlurm:
    """The cluster: ``accounting`` adds slurmdbd over a MariaDB of its own (``sacct``,
    limits enforced); ``max_submit_jobs`` is then the root user's MaxSubmitJobs. ``cpus``:
    what the node claims to have (default: the host's)."""

    def __init__(
        self,
        directory: Path,
        accounting: bool = False,
        max_array_size: int = 1001,
        max_job_count: int = 10000,
        max_submit_jobs: int | None = None,
        min_job_age: int = 300,
        cpus: int | None = None,
    ) -> None:
        self.dir = Path(directory)
        self.accounting = accounting
        self.max_array_size, self.max_job_count = max_array_size, max_job_count
        self.max_submit_jobs, self.min_job_age = max_submit_jobs, min_job_age
        self.cpus = cpus or os.cpu_count() or 1
        self.procs: list[subprocess.Popen] = []
        self.conf = self.dir / "slurm.conf"
        self._old_conf = os.environ.get("SLURM_CONF")
        self.munge_dir: Path | None = None

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
        missing = [n for n in names if _binary(n) is None]
        if missing:
            raise SlurmUnavailable(f"not installed: {', '.join(missing)} (tests/setup/slurm.sh installs them)")

    def start(self) -> None:
        self._need("slurmctld", "slurmd", "sbatch", "squeue", "munged", "munge", "unmunge", "runuser")
        if self.accounting:
            self._need("slurmdbd", "sacct", "sacctmgr", "mariadbd", "mariadb-install-db", "mariadb")
        if os.geteuid() != 0:
            raise SlurmUnavailable("starting slurmd by hand needs root")
        for sub in ("state", "spool"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self._start_munge()
        dbd_port = free_port()
        conf = CONF.format(
            munge_socket=self.munge_socket,
            dir=self.dir,
            cpus=self.cpus,
            ctld_port=free_port(),
            d_port=free_port(),
            min_job_age=self.min_job_age,
            max_array_size=self.max_array_size,
            max_job_count=self.max_job_count,
        )
        conf += (
            ACCOUNTING.format(dbd_port=dbd_port, munge_socket=self.munge_socket) if self.accounting else NO_ACCOUNTING
        )
        self.conf.write_text(conf)
        os.environ["SLURM_CONF"] = str(self.conf)
        if self.accounting:
            self._start_accounting(dbd_port)
        self.procs.append(self._daemon(["slurmctld", "-D", "-i", "-f", str(self.conf)], "slurmctld"))
        self.procs.append(self._daemon(["slurmd", "-D", "-N", "localhost", "-f", str(self.conf)], "slurmd"))
        self._until(lambda: self._sinfo() in ("idle", "mixed", "allocated"), 30, "the node to become idle")

    def _sinfo(self) -> str:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, check=False)
        return out.stdout.strip() if out.returncode == 0 else ""

    def _until(self, predicate, seconds: float, what: str) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if predicate():
                return
            for p in self.procs:
                if p.poll() is not None:
                    raise SlurmUnavailable(f"{p.args[0]} exited with {p.returncode}: {self._log_tail()}")
            time.sleep(0.3)
        raise SlurmUnavailable(f"timed out waiting for {what} ({seconds:.0f} s): {self._log_tail()}")

    @property
    def munge_socket(self) -> Path:
        assert self.munge_dir is not None
        return self.munge_dir / "munge.socket"

    def _start_munge(self) -> None:
        """A munged of this cluster's own, on a socket in a directory of its own under /run
        (owned by the munge user, as munged requires), with the host's key."""
        munge = pwd.getpwnam("munge")
        self.munge_dir = Path(tempfile.mkdtemp(prefix="omero-iscc-munge-", dir="/run"))
        os.chown(self.munge_dir, munge.pw_uid, munge.pw_gid)
        self.munge_dir.chmod(0o755)
        d = self.munge_dir
        args = ["runuser", "-u", "munge", "--", _binary("munged") or "/usr/sbin/munged", "--foreground"]
        args += [f"--socket={d}/munge.socket", f"--pid-file={d}/munged.pid", f"--seed-file={d}/munged.seed"]
        args += [f"--log-file={d}/munged.log", "--num-threads=4"]
        self.procs.append(self._daemon(args, "munged"))
        check = f"munge -n -S {d}/munge.socket | unmunge -S {d}/munge.socket"
        self._until(
            lambda: subprocess.run(check, shell=True, capture_output=True, check=False).returncode == 0,
            10,
            "munged (munge -n | unmunge)",
        )

    def _start_accounting(self, dbd_port: int) -> None:
        """MariaDB in a directory of its own, a user for slurmdbd, slurmdbd, the cluster and
        the root user's association (with ``max_submit_jobs``)."""
        data, sock, db_port = self.dir / "mysql", self.dir / "mysql.sock", free_port()
        init = subprocess.run(
            [
                "mariadb-install-db",
                "--no-defaults",
                f"--datadir={data}",
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if init.returncode != 0:
            raise SlurmUnavailable(f"mariadb-install-db failed: {init.stderr.strip()[-500:]}")
        self.procs.append(
            self._daemon(
                [
                    _binary("mariadbd") or "mariadbd",
                    "--no-defaults",
                    f"--datadir={data}",
                    "--user=root",
                    f"--socket={sock}",
                    f"--port={db_port}",
                    "--bind-address=127.0.0.1",
                    f"--pid-file={self.dir / 'mariadb.pid'}",
                    "--innodb-buffer-pool-size=32M",
                ],
                "mariadbd",
            )
        )
        sql = "CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm'; "
        sql += "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
        self._until(lambda: self._sql(sock, "SELECT 1"), 60, "MariaDB")
        if not self._sql(sock, sql):
            raise SlurmUnavailable("MariaDB refused the user for slurmdbd")
        dbd_conf = self.dir / "slurmdbd.conf"
        dbd_conf.write_text(
            DBD_CONF.format(dir=self.dir, dbd_port=dbd_port, db_port=db_port, munge_socket=self.munge_socket)
        )
        dbd_conf.chmod(0o600)
        self.procs.append(self._daemon([_binary("slurmdbd") or "slurmdbd", "-D"], "slurmdbd"))
        self._until(lambda: self._sacctmgr("show", "cluster") is not None, 60, "slurmdbd")
        if self._sacctmgr("add", "cluster", "omeroiscc") is None:
            raise SlurmUnavailable(f"sacctmgr could not add the cluster: {self._log_tail()}")
        limit = f"MaxSubmitJobs={self.max_submit_jobs}"
        if self.max_submit_jobs is not None and self._sacctmgr("modify", "user", "root", "set", limit) is None:
            raise SlurmUnavailable("sacctmgr could not set the root user's MaxSubmitJobs")

    def _sql(self, sock: Path, sql: str) -> bool:
        out = subprocess.run(
            ["mariadb", "--no-defaults", f"--socket={sock}", "-u", "root", "-e", sql], capture_output=True, check=False
        )
        return out.returncode == 0

    def _sacctmgr(self, *args: str) -> str | None:
        out = subprocess.run(["sacctmgr", "-i", *args], capture_output=True, text=True, check=False, timeout=60)
        return out.stdout if out.returncode == 0 else None

    def _daemon(self, args: list[str], name: str) -> subprocess.Popen:
        log = open(self.dir / f"{name}.stderr", "wb")  # noqa: SIM115 - kept open for the daemon's life
        return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def _log_tail(self) -> str:
        tails = []
        for name in (
            "slurmctld.log",
            "slurmd.log",
            "slurmdbd.log",
            "slurmctld.stderr",
            "slurmd.stderr",
            "slurmdbd.stderr",
            "munged.stderr",
            "mariadbd.stderr",
        ):
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
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
        self.procs.clear()
        if self.munge_dir is not None:
            shutil.rmtree(self.munge_dir, ignore_errors=True)
            self.munge_dir = None
        if self._old_conf is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = self._old_conf
