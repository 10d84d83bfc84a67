"""Configuration of the scheduler (and the few settings the scripts read).

Precedence: command line > environment (``OMERO_ISCC_*``) > JSON file (``--config PATH``,
else ``/etc/omero-iscc/config.json`` when it exists) > defaults. Values are validated after
merging; the effective configuration is logged with the password masked (and the webhook
URL, often a secret token, reduced to its scheme and host).

There are no default credentials: the scheduler logs in with ``username``/``password`` or
joins ``session_key``, and refuses install.sh's placeholder with a message that says what to
set.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from . import DUPLICATES_NAMESPACE, NAMESPACE, PIXELS_NAMESPACE
from .errors import InputError
from .worker import Limits

DEFAULT_CONFIG_FILE = "/etc/omero-iscc/config.json"
ENV_PREFIX = "OMERO_ISCC_"
LOG_LEVELS = ("debug", "info", "warning", "error")
SECRET_KEYS = ("password", "session_key")
#: What install.sh writes for the credentials: refused until an administrator replaces it.
PLACEHOLDER = "CHANGE-ME"


class ConfigError(InputError, ValueError):
    """The configuration cannot be used (exit status 2)."""


def default_state_dir() -> str:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "omero-iscc")


@dataclass
class Config:
    host: str = "localhost"
    port: int = 4064
    #: The account the scheduler logs in as (a restricted administrator with ``Sudo``:
    #: docs/install.md), or ``session_key``. No default: see :meth:`credentials_problem`.
    username: str | None = None
    password: str | None = None
    session_key: str | None = None
    poll_interval: float = 60.0
    batch_size: int = 100
    chunk_size: int = 1 << 20
    namespace: str = NAMESPACE
    log_level: str = "info"
    webhook_url: str | None = None
    repository: str | None = None
    worker: str | None = None
    state_dir: str = dataclasses.field(default_factory=default_state_dir)
    #: Directories outside the repository that its entries may link to (in-place imports).
    allowed_roots: list = dataclasses.field(default_factory=list)
    #: Seconds a script (ISCC_Annotate, ISCC_Verify, ISCC_Annotate_New_Images) may run before
    #: it stops taking new images: below OMERO's script timeout (omero.scripts.timeout, 1 h by
    #: default). The worker is given what is left of it.
    script_time_budget: float = 2700.0
    #: Seconds one scheduler poll may hash for (the worker is given what is left), so that
    #: one huge file cannot hold the lock for hours; ``null``: no limit.
    time_budget: float | None = 3600.0
    #: Files larger than this many bytes are not hashed (an error for their image, which is
    #: retried and then listed by ``status``); ``null``: no ceiling.
    max_file_size: int | None = None
    #: Seconds a script waits for another omero-iscc script on this host to finish hashing
    #: (one at a time per host) before it gives up and says so.
    script_wait: float = 300.0
    #: The codes the scheduler gives images: ``files`` (the original files' code); add
    #: ``pixels`` for the pixel code too (it makes the server decode every plane). Images that
    #: have one code and lack another get the missing one.
    codes: list = dataclasses.field(default_factory=lambda: ["files"])
    pixels_namespace: str = PIXELS_NAMESPACE
    #: The backlog (``python -m omero_iscc backlog``, docs/backlog.md): its work directory on
    #: storage the cluster shares (default: ``state_dir/backlog``), the bounds of a shard, and
    #: the Slurm arrays: partition, time limit per task, tasks running at once, other sbatch
    #: options (flags the backlog sets itself are refused).
    backlog_dir: str | None = None
    shard_bytes: int = 256 << 30
    shard_files: int = 50_000
    slurm_partition: str | None = None
    slurm_time: str | None = "12:00:00"
    slurm_throttle: int = 32
    slurm_options: list = dataclasses.field(default_factory=list)
    #: Seconds between two looks at the queue of ``backlog ingest --wait``.
    backlog_poll_interval: float = 30.0
    #: Seconds the probe job may take to start and end before the submission is given up.
    probe_wait: float = 900.0
    #: The Slurm commands over SSH on a login node: a destination (``user@login1``, or a Host
    #: of the SSH configuration) and options for ssh (``-i KEY``...); unset: on this host.
    slurm_ssh: str | None = None
    slurm_ssh_options: list = dataclasses.field(default_factory=list)
    #: The repository, the static worker and the work directory as the nodes (and the login
    #: node) see them (default: as here).
    cluster_root: str | None = None
    cluster_worker: str | None = None
    cluster_backlog_dir: str | None = None
    #: Only for an ingest job on the nodes (``backlog --ingest-job``): the Python there that has
    #: omero-py and omero_iscc, this configuration file as the nodes see it, the job's time limit
    #: and its own sbatch options.
    cluster_python: str | None = None
    cluster_config: str | None = None
    slurm_ingest_time: str = "4:00:00"
    slurm_ingest_options: list = dataclasses.field(default_factory=list)
    #: Keep the code index in ``state_dir/index`` (find and duplicates answer from it) and
    #: write a duplicates notice on each image the scheduler annotates (docs/index.md).
    index: bool = True
    #: Polls between two reconciliations of the index with the server (0: never).
    index_reconcile_polls: int = 10
    #: Data-Code bits apart for a near duplicate in the notice (64-bit codes; doubled when both
    #: codes are wide), as ``omero iscc duplicates``.
    duplicates_threshold: int = 12
    duplicates_namespace: str = DUPLICATES_NAMESPACE
    #: The configuration file the values came from (for messages; not a configuration key).
    source: str | None = dataclasses.field(default=None, compare=False, metadata={"internal": True})

    def masked(self) -> dict[str, Any]:
        """The configuration as a dict, secrets replaced by ``***`` and the webhook URL by
        its scheme and host."""
        out = dataclasses.asdict(self)
        for key in SECRET_KEYS:
            if out.get(key):
                out[key] = "***"
        if out.get("webhook_url"):
            out["webhook_url"] = mask_url(out["webhook_url"])
        return out

    def credentials_problem(self) -> str | None:
        """Why the scheduler cannot log in with this configuration, or ``None``."""
        if self.session_key:
            return None
        where = f"in {self.source}" if self.source else "in the configuration"
        if PLACEHOLDER in (self.username, self.password):
            return (
                f"username and password {where} are still install.sh's placeholder {PLACEHOLDER!r}: set the "
                "account the scheduler logs in as (a restricted administrator with the Sudo privilege, see "
                "docs/install.md), or a session_key"
            )
        if not self.username or not self.password:
            return (
                f"no OMERO credentials {where}: set username and password (a restricted administrator with "
                "the Sudo privilege, see docs/install.md) or session_key, or OMERO_ISCC_USERNAME and "
                "OMERO_ISCC_PASSWORD in the environment"
            )
        return None

    def require_credentials(self) -> None:
        """Raises ``ConfigError`` when :meth:`credentials_problem` has something to say."""
        problem = self.credentials_problem()
        if problem:
            raise ConfigError(problem)


FIELD_TYPES = {f.name: f.type for f in fields(Config) if not f.metadata.get("internal")}


def mask_url(url: str) -> str:
    """``scheme://host[:port]/***``: what a log may say of a URL whose path, query or user
    part may be a secret (webhook tokens usually are)."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "***"
    return f"{parts.scheme}://{host}{port}/***"


#: Booleans as the environment spells them.
_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _coerce(name: str, value: Any) -> Any:
    kind = FIELD_TYPES[name]
    optional = "None" in str(kind)
    kind = str(kind).replace(" | None", "")
    if kind == "bool":
        if isinstance(value, str) and value.strip().lower() in _BOOLS:
            return _BOOLS[value.strip().lower()]
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: {value!r} is not true or false")
        return value
    if kind == "list":
        if isinstance(value, str):  # from the environment: paths separated like PATH
            value = [p for p in value.split(os.pathsep) if p]
        if not isinstance(value, list) or not all(isinstance(p, str) and p for p in value):
            raise ConfigError(f"{name}: {value!r} is not a list of names")
        return value
    if value is None or value == "":
        if optional:
            return None
        raise ConfigError(f"{name}: a value is required")
    try:
        if kind == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: {value!r} is not a number") from None
    if not isinstance(value, str):
        raise ConfigError(f"{name}: {value!r} is not a string")
    return value


def from_file(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read the configuration file {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise ConfigError(f"the configuration file {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"the configuration file {path} must hold a JSON object")
    unknown = sorted(set(data) - set(FIELD_TYPES))
    if unknown:
        raise ConfigError(f"unknown key(s) in {path}: {', '.join(unknown)} (known: {', '.join(FIELD_TYPES)})")
    return data


def from_env(env: Mapping[str, str]) -> dict[str, Any]:
    out = {}
    for name in FIELD_TYPES:
        key = ENV_PREFIX + name.upper()
        if key in env:
            out[name] = env[key]
    return out


def validate(cfg: Config) -> Config:
    if not 0 < cfg.port < 65536:
        raise ConfigError(f"port: {cfg.port} is not a TCP port")
    if not cfg.poll_interval > 0:
        raise ConfigError(f"poll_interval: {cfg.poll_interval} must be greater than 0 seconds")
    if cfg.batch_size < 1:
        raise ConfigError(f"batch_size: {cfg.batch_size} must be at least 1")
    if cfg.chunk_size < 4096:
        raise ConfigError(f"chunk_size: {cfg.chunk_size} must be at least 4096 bytes")
    if cfg.log_level.lower() not in LOG_LEVELS:
        raise ConfigError(f"log_level: {cfg.log_level!r} is not one of {', '.join(LOG_LEVELS)}")
    cfg.log_level = cfg.log_level.lower()
    if not cfg.namespace:
        raise ConfigError("namespace: must not be empty")
    if not cfg.script_time_budget > 0:
        raise ConfigError(f"script_time_budget: {cfg.script_time_budget} must be greater than 0 seconds")
    if cfg.shard_bytes < 1:
        raise ConfigError(f"shard_bytes: {cfg.shard_bytes} must be at least 1")
    if cfg.slurm_throttle < 1:
        raise ConfigError(f"slurm_throttle: {cfg.slurm_throttle} must be at least 1")
    if cfg.shard_files < 1:
        raise ConfigError(f"shard_files: {cfg.shard_files} must be at least 1")
    if not cfg.backlog_poll_interval > 0 or not cfg.probe_wait > 0:
        raise ConfigError("backlog_poll_interval and probe_wait must be greater than 0 seconds")
    unknown = [c for c in cfg.codes if c not in ("files", "pixels")]
    if unknown or not cfg.codes:
        raise ConfigError(f"codes: {cfg.codes!r} must be one or both of files, pixels")
    if not cfg.pixels_namespace or cfg.pixels_namespace == cfg.namespace:
        raise ConfigError("pixels_namespace: must not be empty nor the files' namespace")
    relative = [p for p in cfg.allowed_roots if not os.path.isabs(p)]
    if relative:
        raise ConfigError(f"allowed_roots: {', '.join(relative)} must be absolute paths")
    if cfg.webhook_url:
        try:
            parts = urllib.parse.urlsplit(cfg.webhook_url)
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            parts = None
        usable = parts is not None and parts.scheme in ("http", "https") and parts.hostname
        if not usable or _CONTROL.search(cfg.webhook_url):
            raise ConfigError(f"webhook_url: {mask_url(cfg.webhook_url)} is not an http(s) URL with a host")
    if cfg.time_budget is not None and not cfg.time_budget > 0:
        raise ConfigError(f"time_budget: {cfg.time_budget} must be greater than 0 seconds (or null: no limit)")
    if cfg.max_file_size is not None and cfg.max_file_size < 1:
        raise ConfigError(f"max_file_size: {cfg.max_file_size} must be at least 1 byte (or null: no ceiling)")
    if cfg.index_reconcile_polls < 0:
        raise ConfigError(f"index_reconcile_polls: {cfg.index_reconcile_polls} must be 0 (never) or more")
    if not 0 <= cfg.duplicates_threshold <= 64:
        raise ConfigError(f"duplicates_threshold: {cfg.duplicates_threshold} must be 0 to 64 bits")
    if cfg.duplicates_namespace in ("", cfg.namespace, cfg.pixels_namespace):
        raise ConfigError("duplicates_namespace: must not be empty nor a code's namespace")
    if not cfg.script_wait >= 0:
        raise ConfigError(f"script_wait: {cfg.script_wait} must be 0 seconds or more")
    for name in ("state_dir", "backlog_dir", "worker", "repository", "cluster_root", "cluster_worker"):
        value = getattr(cfg, name)
        if value is not None and (not value or _CONTROL.search(value)):
            raise ConfigError(f"{name}: {value!r} is not a usable path (empty, or a control character in it)")
    return cfg


#: Control characters (a newline above all): never part of a path or URL the helper accepts.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def load(
    cli: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None, config_file: str | None = None
) -> Config:
    """Merges defaults, file, environment and command line (``None`` = not given)."""
    env = os.environ if env is None else env
    merged: dict[str, Any] = {}
    path = config_file or env.get(ENV_PREFIX + "CONFIG")
    if path:
        merged.update(from_file(path))
    elif os.path.exists(DEFAULT_CONFIG_FILE):
        merged.update(from_file(DEFAULT_CONFIG_FILE))
    merged.update(from_env(env))
    merged.update({k: v for k, v in (cli or {}).items() if v is not None})
    values = {name: _coerce(name, value) for name, value in merged.items()}
    source = path or (DEFAULT_CONFIG_FILE if os.path.exists(DEFAULT_CONFIG_FILE) else None)
    return validate(Config(**values, source=source))


@dataclass(frozen=True)
class WorkerLimits:
    """What one job's worker runs may take: until ``deadline`` (``time.monotonic()``; each
    run is given what is left of it), and files of at most ``max_file_size`` bytes."""

    deadline: float | None = None
    max_file_size: int | None = None

    def time_budget(self) -> float | None:
        """Seconds left for a run starting now (at least one), or ``None``: no budget."""
        return None if self.deadline is None else max(1.0, self.deadline - time.monotonic())


def worker_limits(limits: WorkerLimits | None) -> dict:
    """The keyword arguments of ``compute`` and ``run_pixels`` that give the worker run about
    to start its share of a job's limits (what is left of the time budget, the size ceiling)."""
    if limits is None:
        return {}
    return {"limits": Limits(time_budget=limits.time_budget(), max_file_size=limits.max_file_size)}


def script_budget(timeout: float) -> float:
    """Seconds a script may take new work for under a script timeout of ``timeout`` seconds:
    a tenth of it, at least a minute, is kept for the last saves and the report."""
    return max(0.0, timeout - max(60.0, timeout / 10))


@dataclass
class ScriptSettings:
    """What the OMERO scripts (and ``omero iscc``) take from the configuration file."""

    worker: str | None = None
    repository: str | None = None
    chunk_size: int = 1 << 20
    allowed_roots: tuple = ()
    #: Where the scripts' one-per-host slot is kept (``state_dir``); ``None``: no slot (only
    #: for settings made by hand, as tests do; :func:`script_settings` always sets it).
    state_dir: str | None = None
    #: Seconds a script waits for the slot before it gives up and says so.
    script_wait: float = 300.0
    #: Seconds a script may run, from ``started``; the worker is given what is left.
    script_time_budget: float = 2700.0
    #: Files larger than this are not hashed (``None``: no ceiling).
    max_file_size: int | None = None
    started: float = dataclasses.field(default_factory=time.monotonic)
    #: OMERO's script timeout in seconds, where the script read it (:meth:`within`).
    script_timeout: float | None = None

    def time_left(self) -> float:
        """Seconds left of the script's time budget (at least one: a run given none would
        hash nothing and say so)."""
        return max(1.0, self.started + self.script_time_budget - time.monotonic())

    def limits(self) -> WorkerLimits:
        """The worker's limits for this script: what is left of its budget, its size ceiling."""
        return WorkerLimits(self.started + self.script_time_budget, self.max_file_size)

    def out_of_time(self) -> bool:
        """Whether the script's time budget is spent: it starts no new work then."""
        return time.monotonic() >= self.started + self.script_time_budget

    def within(self, timeout: float) -> ScriptSettings:
        """These settings with the time budget cut to end before OMERO's script timeout
        (``timeout`` seconds, ``omero.scripts.timeout``: the script session's whole lifetime,
        past which every call fails)."""
        budget = min(self.script_time_budget, script_budget(timeout))
        return dataclasses.replace(self, script_time_budget=budget, script_timeout=timeout)

    def slot(self, name: str):
        """``with settings.slot("ISCC_Annotate.py"):`` one omero-iscc script hashing per host
        at a time (``state.script_slot``); waits up to ``script_wait`` seconds."""
        if self.state_dir is None:
            return contextlib.nullcontext(0.0)
        from .state import script_slot

        return script_slot(self.state_dir, name, self.script_wait)


def _number(data: dict, key: str, default, minimum):
    value = data.get(key, default)
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        return default
    return value


def script_settings(path: str = DEFAULT_CONFIG_FILE) -> ScriptSettings:
    """What the OMERO scripts take from the configuration file, if it is there and readable
    (the defaults otherwise): the worker's path, a repository root override, the stream chunk
    size, allowed roots, and the budgets and slot of a script run."""
    try:
        data = from_file(path)
    except ConfigError:
        data = {}
    chunk = data.get("chunk_size")
    state_dir = data.get("state_dir")
    ceiling = data.get("max_file_size")
    return ScriptSettings(
        worker=data.get("worker") or None,
        repository=data.get("repository") or None,
        chunk_size=chunk if isinstance(chunk, int) and chunk >= 4096 else 1 << 20,
        allowed_roots=tuple(p for p in data.get("allowed_roots") or [] if isinstance(p, str) and os.path.isabs(p)),
        state_dir=state_dir if isinstance(state_dir, str) and os.path.isabs(state_dir) else default_state_dir(),
        script_wait=float(_number(data, "script_wait", 300.0, 0)),
        script_time_budget=float(_number(data, "script_time_budget", 2700.0, 1)),
        max_file_size=ceiling if isinstance(ceiling, int) and not isinstance(ceiling, bool) and ceiling > 0 else None,
    )
