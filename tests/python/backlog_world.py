"""What the backlog tests share: a synthetic ManagedRepository under the OMERO stand-in, each
image's code as one direct `omero-iscc sum --groups` run gives it, a configuration file, a
worker for the nodes that can be held on chosen shards, and the checks every test makes
(one annotation per image, with the direct code; the work directory its owner's only)."""

from __future__ import annotations

import json
import os
import random
import stat
import subprocess
import time
from pathlib import Path

from fake_server import FakeServer

from omero_iscc import backlog as backlog_mod

NS = "org.iscc.omero.sum"


def synthetic(tmp_path: Path, filesets: int, per: int = 2, seed: int = 7, legacy: int = 2):
    """A repository of ``filesets`` Filesets of ``per`` random files (100 B to 3 KB); every
    25th Fileset has two images (a multi-series file), and ``legacy`` images have no Fileset.
    Returns the server, the repository and, per Fileset, (image ids, repository paths)."""
    repo = tmp_path / "ManagedRepository"
    server = FakeServer(root=str(repo))
    groups, _legacy = grow(server, repo, 0, filesets, per, seed, legacy)
    return server, repo, groups


def grow(server: FakeServer, repo: Path, first: int, filesets: int, per: int = 2, seed: int = 7, legacy: int = 0):
    """Adds Filesets ``first`` to ``first + filesets - 1`` (as :func:`synthetic` makes them)
    and ``legacy`` images without a Fileset; returns the Filesets and the legacy image ids."""
    rng = random.Random(seed * 1000 + first)
    groups = []
    for k in range(first, first + filesets):
        d = f"user_2/2026-12/01/{k // 100:03d}/{k:05d}/"
        (repo / d).mkdir(parents=True)
        names = []
        for j in range(per):
            name = f"part{j}.ome.tif" if j == 0 else f"part{j}.bin"
            (repo / d / name).write_bytes(rng.randbytes(rng.randint(100, 3000)))
            names.append(name)
        files = [server.original_file(str(repo / d / n), d) for n in names]
        images = server.add_fileset(files, d, n_images=2 if k % 25 == 0 else 1)
        groups.append((images, [d + n for n in names]))
    legacy_dir = repo.parent / f"legacy-{first}"
    legacy_dir.mkdir(exist_ok=True)
    legacy_ids = []
    for n in range(legacy):
        path = legacy_dir / f"old{n}.tif"
        path.write_bytes(rng.randbytes(500))
        legacy_ids.append(server.add_legacy_image([server.original_file(str(path), "/legacy/")]))
    return groups, legacy_ids


def direct_codes(worker: str, repo: Path, groups: list, tmp_path: Path) -> dict[int, str]:
    """Each image's code as one direct `omero-iscc sum --groups` run gives it."""
    listing = tmp_path / "all-groups.jsonl"
    listing.write_text(
        "".join(json.dumps({"id": str(n), "files": files}) + "\n" for n, (_, files) in enumerate(groups))
    )
    out = subprocess.run(
        [worker, "sum", "--json", "--root", str(repo), "--groups", str(listing)], capture_output=True, check=True
    )
    codes = {}
    for line in out.stdout.splitlines():
        record = json.loads(line)
        for image in groups[int(record["id"])][0]:
            codes[image] = record["iscc"]
    return codes


def config(tmp_path: Path, worker: str, repo: Path, name: str = "config.json", **extra) -> Path:
    """A configuration file, its owner's only (it may hold a password)."""
    cfg = tmp_path / name
    values = {
        "worker": worker,
        "repository": str(repo),
        "state_dir": str(tmp_path / "state"),
        "backlog_dir": str(tmp_path / "backlog"),
        "backlog_poll_interval": 0.5,
        "probe_wait": 120,
        **extra,
    }
    cfg.write_text(json.dumps(values))
    cfg.chmod(0o600)
    return cfg


def wait_until(predicate, timeout: float = 120.0, what: str = "", every: float = 0.3) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def iscc_of(server: FakeServer, image: int) -> list[str]:
    return [dict(a.pairs)["iscc:sum"] for a in server.iscc_anns(image) if a.kind == "map"]


def twice(server: FakeServer, groups: list) -> list[int]:
    """Images with more than one ISCC annotation."""
    return [i for images, _ in groups for i in images if len(server.iscc_anns(i)) > 1]


def assert_annotated_once(server: FakeServer, groups: list, direct: dict[int, str], skip=()) -> None:
    skipped = {i for images in skip for i in images}
    assert twice(server, groups) == []
    for images, _ in groups:
        for image in images:
            expected = [] if image in skipped else [direct[image]]
            assert iscc_of(server, image) == expected, image


def holding_worker(tmp_path: Path, worker: str) -> tuple[str, Path]:
    """The real worker, for the nodes, held on shard N for as long as ``HOLDS/hold-N`` exists,
    and failing (status 3) while ``HOLDS/fail-N`` does (N as in the shard's file name, five
    digits). Returns the wrapper and HOLDS."""
    holds = tmp_path / "holds"
    holds.mkdir()
    wrapper = tmp_path / "worker-on-the-nodes"
    wrapper.write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do case "$a" in */shards/shard-*.jsonl) s=${a##*/shard-}; s=${s%.jsonl};; esac; done\n'
        f'while [ -n "$s" ] && [ -e "{holds}/hold-$s" ]; do sleep 0.2; done\n'
        f'if [ -n "$s" ] && [ -e "{holds}/fail-$s" ]; then echo "failing on purpose" >&2; exit 3; fi\n'
        f'exec "{worker}" "$@"\n'
    )
    wrapper.chmod(0o755)
    return str(wrapper), holds


def hold(holds: Path, *shards: int) -> None:
    for n in shards:
        (holds / f"hold-{n:05d}").touch()


def fail(holds: Path, *shards: int) -> None:
    for n in shards:
        (holds / f"fail-{n:05d}").touch()


def release(holds: Path, *shards: int) -> None:
    for n in shards:
        (holds / f"hold-{n:05d}").unlink(missing_ok=True)
        (holds / f"fail-{n:05d}").unlink(missing_ok=True)


def fileset_key(work: backlog_mod.Workdir, image: int) -> str:
    """The plan's key of the Fileset that holds ``image``."""
    for n in range(work.shard_count):
        for key, ids in work.units(n).items():
            if image in ids:
                return key
    raise KeyError(image)


def assert_private(root: Path) -> None:
    """The work directory and everything in it: no permission for group or others."""
    exposed = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
            mode = os.lstat(name).st_mode
            if not stat.S_ISLNK(mode) and mode & 0o077:
                exposed.append(f"{name} {stat.filemode(mode)}")
    assert exposed == [], exposed


def queue(job: str) -> dict[str, str]:
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T"], capture_output=True, text=True, check=True).stdout
    return dict(line.split() for line in out.splitlines() if line.startswith((f"{job}_", f"{job} ")))


def my_queue() -> list[str]:
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True, check=True).stdout
    return out.split()
