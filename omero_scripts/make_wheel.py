#!/usr/bin/env python3
"""Builds the omero-iscc wheel with the standard library alone, for install.sh.

An OMERO server's Python often has no build tools (old setuptools, no ``wheel``), and nothing
may be downloaded on the server. The distribution is pure Python, so its wheel is a zip of
the packages named in ``pyproject.toml`` and a ``.dist-info`` (PEP 427). The result installs
with ``pip install --no-index --no-deps`` as the setuptools build does.

    python make_wheel.py OUTDIR    (prints the wheel's path)
"""

from __future__ import annotations

import base64
import hashlib
import re
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGES = ["omero_iscc", "omero/plugins"]


def _project() -> tuple[str, str, str, list[str]]:
    text = (HERE / "pyproject.toml").read_text(encoding="utf-8")

    def field(name: str) -> str:
        match = re.search(rf'^{name} = "(.*)"', text, re.M)
        if not match:
            sys.exit(f"make_wheel: no {name} in pyproject.toml")
        return match.group(1)

    deps = re.findall(r'"([^"]+)"', re.search(r"^dependencies = \[(.*)\]", text, re.M).group(1))
    return field("name"), field("version"), field("requires-python"), deps


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build(outdir: Path) -> Path:
    name, version, requires_python, deps = _project()
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    files: dict[str, bytes] = {}
    for package in PACKAGES:
        for path in sorted((HERE / package).glob("*.py")):
            files[f"{package}/{path.name}"] = path.read_bytes()
    metadata = [
        "Metadata-Version: 2.1",
        f"Name: {name}",
        f"Version: {version}",
        f"Requires-Python: {requires_python}",
    ] + [f"Requires-Dist: {d}" for d in deps]
    files[f"{info}/METADATA"] = ("\n".join(metadata) + "\n").encode()
    files[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: omero-iscc make_wheel\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    files[f"{info}/top_level.txt"] = b"omero\nomero_iscc\n"
    record = [_record_line(n, d) for n, d in files.items()] + [f"{info}/RECORD,,"]
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    outdir.mkdir(parents=True, exist_ok=True)
    wheel = outdir / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as z:
        for n, d in files.items():
            z.writestr(zipfile.ZipInfo(n, date_time=(2026, 1, 1, 0, 0, 0)), d)
    return wheel


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    print(build(Path(sys.argv[1])))
