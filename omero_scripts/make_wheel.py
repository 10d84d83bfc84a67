#!/usr/bin/env python3
"""Builds omero-iscc's wheels and source distribution with the standard library alone.

An OMERO server's Python often has no build tools (an old setuptools, no ``wheel``) and may
download nothing. All of the distribution but the worker is Python, so a wheel is a zip of
the packages and a ``.dist-info`` (PEP 427), which this file writes:

- the pure-Python wheel (``py3-none-any``): the helper ``omero_iscc`` with the OMERO.scripts
  (``omero_iscc/scripts/``) and the ``omero iscc`` CLI plugin. This file is also the PEP 517
  build backend of ``omero_scripts/pyproject.toml`` (``backend-path``), so
  ``pip install ./omero_scripts`` fetches nothing;
- with ``--worker BIN``, the platform wheel: the same files and the static worker as
  ``omero_iscc-VERSION.data/scripts/omero-iscc``, which pip installs next to the
  environment's ``python``. It is laid out and tagged as maturin lays out the ``bin`` wheel
  of the repository's ``pyproject.toml`` (a test compares the two file by file), and is
  refused for a binary that needs a dynamic loader (the tag would promise what it cannot
  keep). install.sh uses it for a worker built on the host or given with ``--binary``.

    python make_wheel.py OUTDIR [--worker BIN]     (prints the wheel's path)
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import struct
import sys
import tarfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: Package directories of the distribution (``omero/plugins`` is a namespace shared with
#: omero-py: no ``omero/__init__.py`` here).
PACKAGES = ["omero_iscc", "omero/plugins"]
#: The platform wheel's tags, as maturin writes them for ``compatibility = "manylinux2014"``:
#: glibc 2.17 and kernel 3.2, the floor of Rust's x86_64-unknown-linux-gnu target. A static
#: binary needs no glibc symbol, so the tag asks for nothing more than the kernel it runs on.
PLATFORM_TAGS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64")
WORKER = "omero-iscc"
#: Every member's time stamp, so that the same sources give the same bytes.
EPOCH = (1980, 1, 1, 0, 0, 0)


def _license() -> bytes | None:
    """The repository's LICENSE (beside this folder), or the sdist's copy (in it)."""
    for path in (HERE.parent / "LICENSE", HERE / "LICENSE"):
        if path.is_file():
            return path.read_bytes()
    return None


class BuildError(Exception):
    """The wheel cannot be built as asked."""


def _project() -> dict:
    text = (HERE / "pyproject.toml").read_text(encoding="utf-8")

    def field(name: str) -> str:
        match = re.search(rf'^{name} = "(.*)"', text, re.M)
        if not match:
            raise BuildError(f"make_wheel: no {name} in pyproject.toml")
        return match.group(1)

    deps = re.search(r"^dependencies = \[(.*)\]", text, re.M)
    return {
        "name": field("name"),
        "version": field("version"),
        "summary": field("description"),
        "requires_python": field("requires-python"),
        "deps": re.findall(r'"([^"]+)"', deps.group(1)) if deps else [],
        "license": re.search(r'^license = \{ text = "(.*)" \}', text, re.M).group(1),
    }


def _sources() -> dict[str, bytes]:
    """The distribution's Python files by their path in the wheel, in a stable order."""
    files = {}
    for package in PACKAGES:
        for path in sorted((HERE / package).rglob("*.py")):
            if "__pycache__" not in path.parts:
                files[path.relative_to(HERE).as_posix()] = path.read_bytes()
    return files


def _metadata(project: dict, license_file: bool = False) -> bytes:
    lines = [
        "Metadata-Version: 2.4" if license_file else "Metadata-Version: 2.1",
        f"Name: {project['name']}",
        f"Version: {project['version']}",
        f"Summary: {project['summary']}",
        f"License: {project['license']}",
        f"Requires-Python: {project['requires_python']}",
    ]
    lines += ["License-File: LICENSE"] if license_file else []
    lines += [f"Requires-Dist: {d}" for d in project["deps"]]
    return ("\n".join(lines) + "\n").encode()


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def check_static_x86_64(data: bytes, name: str) -> None:
    """Refuses anything but an x86-64 ELF executable without a program interpreter (one that
    runs without the dynamic loader, hence on any x86-64 Linux whatever its libc)."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise BuildError(f"{name} is not a 64-bit little-endian ELF executable")
    e_type, e_machine = struct.unpack_from("<HH", data, 16)
    if e_machine != 62 or e_type not in (2, 3):  # EM_X86_64; ET_EXEC or ET_DYN (static-pie)
        raise BuildError(f"{name} is not an x86-64 executable")
    (e_phoff,) = struct.unpack_from("<Q", data, 32)
    e_phentsize, e_phnum = struct.unpack_from("<HH", data, 54)
    for i in range(e_phnum):
        (p_type,) = struct.unpack_from("<I", data, e_phoff + i * e_phentsize)
        if p_type == 3:  # PT_INTERP
            raise BuildError(
                f"{name} is dynamically linked (it names a program interpreter): build it with "
                "`cargo build --release --locked` (static, see .cargo/config.toml)"
            )


def build(outdir: Path, worker: Path | None = None) -> Path:
    """Writes the wheel into ``outdir``; the platform wheel when ``worker`` is given."""
    project = _project()
    dist = project["name"].replace("-", "_")
    version = project["version"]
    info = f"{dist}-{version}.dist-info"
    files = _sources()
    modes = dict.fromkeys(files, 0o644)
    if worker is not None:
        data = worker.read_bytes()
        check_static_x86_64(data, str(worker))
        name = f"{dist}-{version}.data/scripts/{WORKER}"
        files[name], modes[name] = data, 0o755
        tags = [f"py3-none-{t}" for t in PLATFORM_TAGS]
        purelib = "false"
    else:
        tags = ["py3-none-any"]
        purelib = "true"
    license_text = _license()
    if license_text is not None:
        files[f"{info}/licenses/LICENSE"] = license_text
    files[f"{info}/METADATA"] = _metadata(project, license_text is not None)
    files[f"{info}/WHEEL"] = (
        "Wheel-Version: 1.0\nGenerator: omero-iscc make_wheel\n"
        f"Root-Is-Purelib: {purelib}\n" + "".join(f"Tag: {t}\n" for t in tags)
    ).encode()
    record = [_record_line(n, d) for n, d in files.items()] + [f"{info}/RECORD,,"]
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    outdir.mkdir(parents=True, exist_ok=True)
    platform = tags[0].split("-", 2)[2] if worker is None else ".".join(PLATFORM_TAGS)
    wheel = outdir / f"{dist}-{version}-py3-none-{platform}.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as z:
        for n, d in files.items():
            member = zipfile.ZipInfo(n, date_time=EPOCH)
            member.external_attr = (0o100000 | modes.get(n, 0o644)) << 16
            member.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(member, d)
    return wheel


def sdist(outdir: Path) -> Path:
    """The source distribution: the packages, ``pyproject.toml``, this backend and
    ``PKG-INFO``; builds the same pure-Python wheel."""
    project = _project()
    base = f"{project['name'].replace('-', '_')}-{project['version']}"
    license_text = _license()
    members = {"PKG-INFO": _metadata(project, license_text is not None)}
    members.update({n: (HERE / n).read_bytes() for n in ("pyproject.toml", "make_wheel.py")})
    if license_text is not None:
        members["LICENSE"] = license_text
    members.update(_sources())
    outdir.mkdir(parents=True, exist_ok=True)
    path = outdir / f"{base}.tar.gz"
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for n, d in members.items():
            member = tarfile.TarInfo(f"{base}/{n}")
            member.size, member.mode, member.mtime = len(d), 0o644, 315532800
            tar.addfile(member, io.BytesIO(d))
    return path


# -- PEP 517: the build backend of omero_scripts/pyproject.toml ------------------------------
def get_requires_for_build_wheel(config_settings=None) -> list[str]:
    return []


def get_requires_for_build_sdist(config_settings=None) -> list[str]:
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None) -> str:
    return build(Path(wheel_directory)).name


def build_sdist(sdist_directory, config_settings=None) -> str:
    return sdist(Path(sdist_directory)).name


def main(argv: list[str]) -> int:
    args = list(argv)
    worker = None
    if "--worker" in args:
        i = args.index("--worker")
        if i + 1 >= len(args):
            print(__doc__, file=sys.stderr)
            return 2
        worker = Path(args.pop(i + 1))
        args.pop(i)
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        print(build(Path(args[0]), worker))
    except (BuildError, OSError) as exc:
        print(f"make_wheel: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
