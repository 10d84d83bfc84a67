"""The platform wheel as an OMERO host gets it: built by maturin from pyproject.toml
(tests/run.sh, offline), checked by auditwheel, installed with `pip install --no-index` into a
fresh environment of this test's Python beside the omero-py release that Python's servers run
(3.11 with omero-py 5.23, 3.9 with 5.21.3, from a local wheelhouse), used there with no Rust
toolchain anywhere on PATH, and uninstalled without a trace."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import TOP

sys.path.insert(0, str(TOP / "omero_scripts"))
import make_wheel  # noqa: E402

VERSION = re.search(r'^version = "(.*)"', (TOP / "Cargo.toml").read_text(), re.M).group(1)
TAG = "py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64"


@pytest.fixture(scope="session")
def wheel() -> Path:
    path = Path(os.environ.get("OMERO_ISCC_WHEEL", "/nonexistent"))
    assert path.is_file(), "the platform wheel is built by tests/run.sh (maturin build): run it"
    return path


def names(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as z:
        return sorted(n for n in z.namelist() if ".dist-info/" not in n)


def test_the_wheel_holds_the_static_worker_the_helper_the_scripts_and_the_plugin(wheel, worker, tmp_path):
    from omero_iscc import __version__

    assert wheel.name == f"omero_iscc-{VERSION}-{TAG}.whl" and __version__ == VERSION
    inside = names(wheel)
    assert f"omero_iscc-{VERSION}.data/scripts/omero-iscc" in inside
    assert "omero/plugins/iscc.py" in inside and "omero/__init__.py" not in inside
    assert "omero_iscc/jobs.py" in inside and "omero_iscc/scripts/ISCC_Annotate.py" in inside
    assert not any(n.endswith((".rs", ".toml")) for n in inside)
    with zipfile.ZipFile(wheel) as z:
        binary = z.read(f"omero_iscc-{VERSION}.data/scripts/omero-iscc")
        info = z.read(f"omero_iscc-{VERSION}.dist-info/WHEEL").decode()
        metadata = z.read(f"omero_iscc-{VERSION}.dist-info/METADATA").decode()
        mode = z.getinfo(f"omero_iscc-{VERSION}.data/scripts/omero-iscc").external_attr >> 16
    make_wheel.check_static_x86_64(binary, "the wheel's worker")
    assert mode & 0o111, "the worker is stored executable"
    assert "Root-Is-Purelib: false" in info
    assert sorted(re.findall(r"^Tag: (.*)$", info, re.M)) == sorted(f"py3-none-{t}" for t in make_wheel.PLATFORM_TAGS)
    assert f"Version: {VERSION}" in metadata and "Requires-Dist: omero-py>=5.6" in metadata
    assert "Requires-Python: >=3.9" in metadata
    # install.sh's standard-library build of the same wheel around the same worker: same files.
    made = make_wheel.build(tmp_path, Path(worker))
    assert made.name == wheel.name and names(made) == inside


def test_auditwheel_finds_nothing_the_tag_would_hide(wheel):
    tools = Path(os.environ.get("OMERO_ISCC_WHEEL_TOOLS", "/nonexistent"))
    assert (tools / "bin" / "auditwheel").is_file(), "auditwheel comes with tests/setup/wheel.sh: run tests/run.sh"
    shown = subprocess.run(
        [str(tools / "bin" / "auditwheel"), "show", str(wheel)], capture_output=True, text=True, check=True
    ).stdout
    text = " ".join(shown.split())
    assert "The wheel requires no external shared libraries" in text, text
    assert "references no external versioned symbols" in text, text
    # The tag it finds the wheel consistent with asks no more of the host than ours does.
    found = re.search(r'consistent with the following platform tag: "manylinux_(\d+)_(\d+)_x86_64"', text)
    assert found and (int(found.group(1)), int(found.group(2))) <= (2, 17), text


def base_python() -> str:
    """The interpreter this test environment was made from (3.11 or 3.9)."""
    return getattr(sys, "_base_executable", None) or sys.executable


def wheelhouse() -> Path:
    var = "OMERO_ISCC_WHEELHOUSE39" if sys.version_info < (3, 10) else "OMERO_ISCC_WHEELHOUSE"
    path = Path(os.environ.get(var, "/nonexistent"))
    assert (path / ".complete").is_file(), f"{var}: the omero-py wheelhouse comes with tests/setup/wheel.sh"
    return path


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if "__pycache__" not in p.parts)


def files(root: Path) -> list[str]:
    return [p for p in tree(root) if (root / p).is_file() or (root / p).is_symlink()]


def server_environment(tmp_path: Path) -> tuple[Path, dict]:
    """A fresh environment as an OMERO server has it (this test's Python, omero-py of the
    release for it, from local wheels only), and an environment for commands with no Rust
    toolchain reachable: PATH is the environment's and the system's, and that is checked."""
    venv = tmp_path / "venv"
    subprocess.run([base_python(), "-m", "venv", str(venv)], check=True)
    pin = "omero-py==5.21.3" if sys.version_info < (3, 10) else "omero-py==5.23.0"
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-index", "--no-cache-dir"]
    subprocess.run([*pip, "--find-links", str(wheelhouse()), pin], check=True)
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    for tool in ("cargo", "rustc", "rustup"):
        assert shutil.which(tool, path=env["PATH"]) is None, f"{tool} is on the stripped PATH"
    probe = subprocess.run(["sh", "-c", "command -v cargo || command -v rustc"], env=env, check=False)
    assert probe.returncode != 0, "a Rust toolchain is reachable from the install test"
    return venv, env


def test_installed_offline_beside_omero_py_it_works_without_rust_and_uninstalls_cleanly(wheel, tmp_path, samples):
    venv, env = server_environment(tmp_path)
    python = venv / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "--quiet", "--no-index", "--no-cache-dir"]
    before = tree(venv)

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), env=env, cwd=tmp_path, capture_output=True, text=True, check=check)

    run(*pip, str(wheel))
    installed = venv / "bin" / "omero-iscc"
    assert installed.is_file() and os.access(installed, os.X_OK)
    assert shutil.which("omero-iscc", path=env["PATH"]) == str(installed)
    ldd = run("ldd", str(installed), check=False)
    assert "statically linked" in ldd.stdout + ldd.stderr or "not a dynamic executable" in ldd.stdout + ldd.stderr
    assert run("omero-iscc", "selftest").returncode == 0
    assert run("omero-iscc", "--version").stdout.strip() == f"omero-iscc {VERSION}"
    helped = run("python", "-m", "omero_iscc", "--help")
    assert "scheduler" in helped.stdout and re.search(r"\{run,.*scripts\}", helped.stdout), helped.stdout
    # `omero` refuses to start as root (the tests' account); the CLI it starts is this.
    omero = ["python", "-c", "import sys; from omero.cli import argv; argv(['omero'] + sys.argv[1:])"]
    plugin = run(*omero, "iscc", "-h")
    for sub in ["annotate", "verify", "duplicates", "find", "status", "doctor", "run", "backlog", "scripts"]:
        assert re.search(rf"^\s+{sub}\s", plugin.stdout, re.M), (sub, plugin.stdout + plugin.stderr)

    # The plugin's doctor, through omero-py's CLI: it finds the wheel's worker next to the
    # Python, checks its version, and hashes a real file (no server needed for this check).
    repo = tmp_path / "ManagedRepository" / "user_2" / "2026-12"
    repo.mkdir(parents=True)
    shutil.copyfile(samples / "ome-tiff" / "neuron-4Ch.tiff", repo / "neuron-4Ch.tiff")
    cfg = tmp_path / "config.json"
    cfg.write_text(f'{{"repository": "{tmp_path / "ManagedRepository"}", "state_dir": "{tmp_path / "state"}"}}')
    doctor = run(*omero, "iscc", "doctor", "--test", "processing", "--config", str(cfg), check=False)
    out = doctor.stdout
    assert doctor.returncode == 0, out + doctor.stderr
    assert f"OK   worker found: {installed} (next to {python})" in out
    assert f"OK   worker version: {VERSION} (the helper's)" in out
    assert "OK   worker statically linked" in out and "OK   worker selftest" in out
    assert "OK   one real file hashed" in out
    server = tmp_path / "OMERO.server"
    (server / "lib" / "scripts").mkdir(parents=True)
    assert run(*omero, "iscc", "scripts", "install", "--omero-dir", str(server)).returncode == 0
    assert len(list((server / "lib" / "scripts" / "iscc").glob("ISCC_*.py"))) == 4

    run(str(python), "-m", "pip", "uninstall", "--quiet", "--yes", "omero-iscc")
    assert tree(venv) == before, "pip uninstall left something behind"


def test_the_scheduler_from_the_wheel_annotates_through_the_stand_in_over_the_wire(wheel, tmp_path, samples):
    """The installed wheel alone, as cron runs it: `python -I -m omero_iscc run --once` in the
    server's environment (no Rust on PATH, no checkout on sys.path) logs in to the stand-in
    over Ice, hashes a real file with the wheel's own worker and annotates the image as its
    owner, with the code iscc-core gives."""
    from conftest import reference
    from fake_server import FakeServer

    venv, env = server_environment(tmp_path)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-index", str(wheel)], check=True, env=env)
    repo = tmp_path / "ManagedRepository"
    repo.mkdir()
    server = FakeServer(root=str(repo))
    source = samples / "ome-tiff" / "neuron-4Ch.tiff"
    image = server.import_file(str(source), owner=2, group=1)
    host, port, user, password = server.login("root")
    cfg = tmp_path / "config.json"
    state = tmp_path / "state"
    cfg.write_text(
        f'{{"host": "{host}", "port": {port}, "username": "{user}", "password": "{password}", '
        f'"state_dir": "{state}", "repository": "{repo}"}}'
    )
    cfg.chmod(0o600)

    def once() -> subprocess.CompletedProcess:
        """One poll, as cron runs it: isolated from the working directory and the user's site."""
        command = [str(python), "-I", "-m", "omero_iscc", "--config", str(cfg), "run", "--once"]
        return subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False)

    done = once()
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    [ann] = [a for a in server.iscc_anns(image) if a.kind == "map"]
    pairs = dict(ann.pairs)
    expected = reference([source])
    assert (pairs["iscc:sum"], pairs["iscc:datahash"]) == (expected["iscc"], expected["datahash"])
    assert pairs["iscc:input"] == "managed-repository", pairs
    assert server.owner_of_iscc(image) == (2, 2), "annotated as the image's owner"
    # A second run finds nothing to do: the image is never annotated twice.
    again = once()
    assert again.returncode == 0 and len(server.iscc_anns(image)) == 1, again.stderr[-3000:]


def test_pip_install_of_the_source_folder_and_its_sdist_need_no_network(tmp_path):
    """`pip install ./omero_scripts` on a server without a network: the folder's own build
    backend (make_wheel.py, standard library) needs nothing downloaded, isolation or not."""
    venv = tmp_path / "venv"
    subprocess.run([base_python(), "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    files_before = files(venv)
    src = tmp_path / "src"
    shutil.copytree(TOP / "omero_scripts", src, ignore=shutil.ignore_patterns("__pycache__"))
    pip = [python, "-m", "pip", "install", "--quiet", "--no-index", "--no-cache-dir", "--no-deps"]
    subprocess.run([*pip, str(src)], check=True)
    assert sorted(p.name for p in (site / "omero_iscc" / "scripts").glob("ISCC_*.py")) == [
        "ISCC_Annotate.py",
        "ISCC_Annotate_New_Images.py",
        "ISCC_Find_Duplicates.py",
        "ISCC_Verify.py",
    ]
    assert (site / "omero" / "plugins" / "iscc.py").is_file() and not (site / "omero" / "__init__.py").exists()
    assert not (venv / "bin" / "omero-iscc").exists(), "the pure-Python distribution carries no worker"
    helped = subprocess.run([python, "-m", "omero_iscc", "--help"], capture_output=True, text=True, check=False)
    assert helped.returncode == 0 and "scheduler" in helped.stdout, helped.stderr
    subprocess.run([python, "-m", "pip", "uninstall", "--quiet", "--yes", "omero-iscc"], check=True)
    # Every file goes; pip leaves the namespace folder omero/ (omero-py's, on a server).
    assert files(venv) == files_before
    sdist = make_wheel.sdist(tmp_path / "dist")
    assert sdist.name == f"omero_iscc-{VERSION}.tar.gz"
    subprocess.run([*pip, str(sdist)], check=True)
    assert (site / "omero_iscc" / "scripts" / "ISCC_Verify.py").is_file()
    subprocess.run([python, "-m", "pip", "uninstall", "--quiet", "--yes", "omero-iscc"], check=True)
    assert files(venv) == files_before
