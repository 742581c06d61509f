"""Packaging: `python -m build` gives an sdist and a portable wheel that works in a fresh venv with the pinned
torch, and `pip install .` works with pip's default build isolation.

Slow (two C++ builds, two venvs) the first time; everything is cached under build/pkgtest/, keyed by a hash of
the sources that go into the package, so a second run with unchanged sources only repeats the checks and the smoke
test (tests/packaging_smoke.py) in both venvs. The venvs hold no system site packages: torch comes from the pin.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

import spatten

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "build" / "pkgtest"
TORCH_PIN = "torch==2.13.0"  # the release tests run against; pyproject.toml pins torch==2.13.* to build
PACKAGED = ("pyproject.toml", "CMakeLists.txt", "README.md", "csrc", "hwsim", "spatten")  # what the build reads

pytestmark = pytest.mark.slow


def _digest(paths) -> str:
    h = hashlib.sha256()
    for path in paths:
        h.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _packaged_files() -> list[Path]:
    files = []
    for name in PACKAGED:
        path = ROOT / name
        found = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        files += [p for p in found if "__pycache__" not in p.parts and p.suffix not in (".so", ".pyc")]
    return files


def _run(*args, cwd: Path | None = None, env: dict | None = None) -> str:
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(map(str, args))} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


def _clean_env() -> dict:
    """The environment without the developer venv's activation, so a child venv sees only itself."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if not p.startswith(sys.prefix))
    return env


def _venv_with_torch(name: str) -> Path:
    """A venv (no system site packages) holding the pinned torch; kept between runs, keyed by the dependencies."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    key = hashlib.sha256(f"{sys.version}{TORCH_PIN}{sorted(deps)}".encode()).hexdigest()[:12]
    path = CACHE / f"venv-{name}-{key}"
    python = path / "bin" / "python"
    if not (path / ".torch-ok").exists():
        for old in [*CACHE.glob(f"venv-{name}-*"), path]:  # ~1.5 GB each: keep only the current one
            shutil.rmtree(old, ignore_errors=True)
        venv.create(path, with_pip=True, system_site_packages=False)
        _run(python, "-m", "pip", "install", "-q", TORCH_PIN, env=_clean_env())
        (path / ".torch-ok").touch()
    return python


def _install_once(python: Path, source_hash: str, *pip_args, cwd: Path) -> None:
    """`pip install <pip_args>` into a cached venv unless this source was installed there already."""
    done = python.parent.parent / f".installed-{source_hash}"
    if not done.exists():
        for old in python.parent.parent.glob(".installed-*"):  # an older build of the same version
            _run(python, "-m", "pip", "uninstall", "-q", "-y", "spatten", env=_clean_env())
            old.unlink()
        _run(python, "-m", "pip", "install", "-q", *pip_args, cwd=cwd, env=_clean_env())
        done.touch()


def _smoke(python: Path, tmp_path: Path) -> str:
    # Run outside the source tree so `import spatten` is the installed package, and with the CLIs of that venv.
    env = _clean_env()
    env["PATH"] = f"{python.parent}{os.pathsep}{env['PATH']}"
    return _run(python, ROOT / "tests" / "packaging_smoke.py", cwd=tmp_path, env=env)


@pytest.fixture(scope="module")
def source_hash():
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one packaging run at a time shares the cache
        yield _digest(_packaged_files())


@pytest.fixture(scope="module")
def dist(source_hash) -> Path:
    """sdist and wheel from `python -m build` (isolated, like a release build), built once per source hash."""
    out = CACHE / f"dist-{source_hash}"
    if not (out / ".ok").exists():
        for old in CACHE.glob("dist-*"):
            shutil.rmtree(old)
        _run(sys.executable, "-m", "build", "--outdir", out, ROOT, cwd=ROOT)
        (out / ".ok").touch()
    return out


def _one(directory: Path, pattern: str) -> Path:
    found = list(directory.glob(pattern))
    assert len(found) == 1, f"expected one {pattern} in {directory}, found {found}"
    return found[0]


def test_pins_agree():
    """The build-time torch (isolated build env) and the runtime torch are the same minor release."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    build = [r for r in pyproject["build-system"]["requires"] if r.startswith("torch")]
    run = [r for r in pyproject["project"]["dependencies"] if r.startswith("torch")]
    assert build == ["torch==2.13.*"] and run == ["torch>=2.13,<2.14"]
    assert TORCH_PIN.startswith(build[0].rstrip("*"))


def test_sdist_holds_the_sources_and_no_build_output(dist):
    with tarfile.open(_one(dist, "spatten-*.tar.gz")) as sdist:
        names = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
    assert {"pyproject.toml", "CMakeLists.txt", "csrc/CMakeLists.txt", "csrc/build_info.py.in",
            "hwsim/cli/spatten_sim.cpp", "spatten/__init__.py", "PKG-INFO"} <= names
    assert not [n for n in names if n.startswith("build/") or n.endswith((".so", "/_build_info.py"))]


def test_wheel_contents_version_and_isa(dist, tmp_path):
    wheel = _one(dist, "spatten-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        zf.extractall(tmp_path)
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = zf.read(f"{dist_info}/METADATA").decode()
        entry_points = zf.read(f"{dist_info}/entry_points.txt").decode()
    assert f"Version: {spatten.__version__}\n" in metadata
    assert re.search(r"Requires-Dist: torch(<2.14,>=2.13|>=2.13,<2.14)", metadata)
    assert "spatten = spatten.cli:main" in entry_points and "spatten-sim = spatten.hwsim.cli:main" in entry_points
    binaries = [tmp_path / "spatten" / "spatten-sim"] + [tmp_path / n for n in names if n.endswith(".so")]
    assert {b.name.split(".")[0] for b in binaries} == {"spatten-sim", "_C", "_hwsim"}
    assert {"spatten/_build_info.py", "spatten/ops.py", "spatten/testing.py"} <= names
    presets = {p.name for p in (ROOT / "hwsim" / "presets").glob("*.yaml")}
    assert presets and {f"spatten/presets/{p}" for p in presets} <= names
    # Portable: no AVX/AVX-512 register anywhere in the compiled code (a -march=native build on this machine has).
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("objdump (binutils) is needed for the ISA check")
    for binary in binaries:
        disassembly = _run(objdump, "-d", "--no-show-raw-insn", binary)
        wide = re.findall(r"%[yz]mm\d+", disassembly)
        assert not wide, f"{binary.name} uses AVX registers ({len(wide)}x, e.g. {wide[0]}): not a baseline build"


def test_wheel_works_in_a_fresh_venv(dist, source_hash, tmp_path):
    python = _venv_with_torch("wheel")
    wheel = _one(dist, "spatten-*.whl")
    # Replace an older build of the same version, then install as a user does (pulls the dependencies).
    _run(python, "-m", "pip", "install", "-q", "--force-reinstall", "--no-deps", wheel, env=_clean_env())
    _run(python, "-m", "pip", "install", "-q", wheel, env=_clean_env())
    assert "smoke test passed" in _smoke(python, tmp_path)


def test_pip_install_source_tree_with_build_isolation(source_hash, tmp_path):
    """`pip install .` exactly as typed, in a venv that has the pinned torch (the build env gets its own)."""
    python = _venv_with_torch("source")
    _install_once(python, source_hash, ".", cwd=ROOT)
    assert "smoke test passed" in _smoke(python, tmp_path)


def test_build_without_torch_says_so_first(tmp_path):
    """--no-build-isolation in an env without torch stops at CMake's first check with one sentence."""
    path = CACHE / "venv-notorch"
    python = path / "bin" / "python"
    if not (path / ".ok").exists():
        shutil.rmtree(path, ignore_errors=True)
        venv.create(path, with_pip=True)
        _run(python, "-m", "pip", "install", "-q", "scikit-build-core>=0.10", "pybind11>=2.12", env=_clean_env())
        (path / ".ok").touch()
    proc = subprocess.run([python, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "."], cwd=ROOT,
                          env=_clean_env(), capture_output=True, text=True)
    output = " ".join((proc.stdout + proc.stderr).split())  # CMake wraps its message over several lines
    assert proc.returncode != 0
    assert f"but {python} cannot import torch. Install the supported torch first (pip install torch==2.13.0)" in output
