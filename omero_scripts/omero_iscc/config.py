"""Configuration of the scheduler (and the few settings the scripts read).

Precedence: command line > environment (``OMERO_ISCC_*``) > JSON file (``--config PATH``,
else ``/etc/omero-iscc/config.json`` when it exists) > defaults. Values are validated after
merging; the effective configuration is logged with the password masked.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from . import NAMESPACE, PIXELS_NAMESPACE
from .errors import InputError

DEFAULT_CONFIG_FILE = "/etc/omero-iscc/config.json"
ENV_PREFIX = "OMERO_ISCC_"
LOG_LEVELS = ("debug", "info", "warning", "error")
SECRET_KEYS = ("password", "session_key")


class ConfigError(InputError, ValueError):
    """The configuration cannot be used (exit status 2)."""


def default_state_dir() -> str:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "omero-iscc")


@dataclass
class Config:
    host: str = "localhost"
    port: int = 4064
    username: str = "root"
    password: str = "omero"
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
    #: Seconds a script's poll (ISCC_Annotate_New_Images) may run before it stops taking new
    #: images: below OMERO's script timeout (omero.scripts.timeout, 1 h by default).
    script_time_budget: float = 2700.0
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

    def masked(self) -> dict[str, Any]:
        """The configuration as a dict, secrets replaced by ``***``."""
        out = dataclasses.asdict(self)
        for key in SECRET_KEYS:
            if out.get(key):
                out[key] = "***"
        return out


FIELD_TYPES = {f.name: f.type for f in fields(Config)}


def _coerce(name: str, value: Any) -> Any:
    kind = FIELD_TYPES[name]
    if kind == "list":
        if isinstance(value, str):  # from the environment: paths separated like PATH
            value = [p for p in value.split(os.pathsep) if p]
        if not isinstance(value, list) or not all(isinstance(p, str) and p for p in value):
            raise ConfigError(f"{name}: {value!r} is not a list of names")
        return value
    if value is None or value == "":
        if "None" in str(kind):
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
    if cfg.webhook_url and not cfg.webhook_url.startswith(("http://", "https://")):
        raise ConfigError(f"webhook_url: {cfg.webhook_url!r} is not an http(s) URL")
    return cfg


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
    return validate(Config(**values))


@dataclass
class ScriptSettings:
    worker: str | None = None
    repository: str | None = None
    chunk_size: int = 1 << 20
    allowed_roots: tuple = ()


def script_settings(path: str = DEFAULT_CONFIG_FILE) -> ScriptSettings:
    """What the OMERO scripts take from the configuration file, if it is there and readable:
    the worker's path, a repository root override and the stream chunk size."""
    try:
        data = from_file(path)
    except ConfigError:
        return ScriptSettings()
    chunk = data.get("chunk_size")
    return ScriptSettings(
        worker=data.get("worker") or None,
        repository=data.get("repository") or None,
        chunk_size=chunk if isinstance(chunk, int) and chunk >= 4096 else 1 << 20,
        allowed_roots=tuple(p for p in data.get("allowed_roots") or [] if isinstance(p, str) and os.path.isabs(p)),
    )
