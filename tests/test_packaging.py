"""The built distributions carry the bundled data, and an installed wheel runs from any directory.

A Dask worker or a container has the wheel and nothing else: no checkout, no working directory beside
device_profiles/. So this builds the sdist and, from it, the wheel (`python -m build`, as a packager
would), installs the wheel without `-e` into a fresh virtual environment and runs `netsim` there from an
unrelated directory. The venv sees this environment's runtime dependencies (`--system-site-packages`,
so no network is needed to install them) and the test checks that `netsim` itself comes from the venv,
not from the checkout. Building fetches the build backend (hatchling) as any build does.
"""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import polars as pl
import pytest

from netsim.paths import PROJECT_ROOT, cache_dir
from netsim.version import __version__

DATA_DIRS = ("device_profiles", "runtime_profiles", "models", "scenarios")
DATA_SUFFIXES = {".yaml", ".yml", ".onnx", ".json", ".md"}
WHERE = "import netsim, netsim.paths as p; print(netsim.__file__); print(p.data_root())"
"""Run in the venv: where the package and its bundled data come from."""


def _run(cmd: list[str | Path], cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run a command; on failure the assertion shows its output, which is where the reason is."""
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n{proc.stdout}\n" \
                                 f"{proc.stderr}"
    return proc.stdout


def _env(isolated: bool = True) -> dict[str, str]:
    """The test's environment, `isolated` from what would let the checkout leak into a venv; the corpus
    cache is shared so the quickstart's prompts need no download."""
    leaks = ("PYTHONPATH", "NETSIM_MODELS_PATH") if isolated else ()
    env = {k: v for k, v in os.environ.items() if k not in leaks}
    env["NETSIM_CACHE_DIR"] = str(cache_dir())
    return env


def _source_files(top: str) -> set[str]:
    root = PROJECT_ROOT / top
    return {p.relative_to(PROJECT_ROOT).as_posix() for p in root.rglob("*")
            if p.is_file() and p.suffix in DATA_SUFFIXES and "__pycache__" not in p.parts}


def _venv(path: Path) -> Path:
    """A fresh venv seeing this environment's packages; returns its site-packages.

    Inside a venv, `--system-site-packages` means the base interpreter's packages, not this env's, so
    those are added by a .pth listing; a .pth line only extends sys.path and does not run the .pth
    files found there, so an editable install of netsim in this env stays out of the new one.
    """
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", path], cwd=path.parent)
    query = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    purelib = Path(_run([path / "bin" / "python", "-c", query], cwd=path.parent).strip())
    if sys.prefix != sys.base_prefix:
        (purelib / "_test_parent_env.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return purelib


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--outdir", out, PROJECT_ROOT], cwd=out)
    return out


def test_the_sdist_keeps_the_folders_at_the_top(dist: Path) -> None:
    [sdist] = dist.glob("netsim-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for top in DATA_DIRS:
        assert _source_files(top) <= names, f"sdist misses files of {top}/"
    assert {"pyproject.toml", "README.md", "netsim/paths.py"} <= names
    assert not [n for n in names if n.endswith(".pyc") or "__pycache__" in n]


def test_the_wheel_carries_the_data_inside_the_package(dist: Path) -> None:
    [wheel] = dist.glob("netsim-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for top in DATA_DIRS:
        assert {f"netsim/_data/{n}" for n in _source_files(top)} <= names, f"wheel misses files of {top}/"
    assert {n.split("/")[0] for n in names} == {"netsim", f"netsim-{__version__}.dist-info"}
    assert not [n for n in names if n.endswith(".pyc") or "__pycache__" in n]


def test_the_installed_wheel_runs_the_quickstart_from_anywhere(dist: Path, tmp_path: Path) -> None:
    [wheel] = dist.glob("netsim-*.whl")
    purelib = _venv(tmp_path / "venv")
    python, netsim_cli = tmp_path / "venv" / "bin" / "python", tmp_path / "venv" / "bin" / "netsim"
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = _env()
    _run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", wheel], cwd=work, env=env)

    package, data = map(Path, _run([python, "-c", WHERE], cwd=work, env=env).split())
    assert package.is_relative_to(purelib), f"netsim imported from {package}, not the venv"
    assert data == purelib / "netsim" / "_data"
    scenarios = data / "scenarios"

    assert "oneplus-12" in _run([netsim_cli, "profiles", "list"], cwd=work, env=env)
    models = _run([netsim_cli, "models", "list"], cwd=work, env=env)
    assert "shakespeare-slm" in models and "bundled" in models and "qwen3-8b" in models

    _run([netsim_cli, "run", scenarios / "quickstart.yaml", "-o", "out"], cwd=work, env=env)
    requests = pl.read_parquet(work / "out" / "requests.parquet")
    assert requests["status"].to_list() == ["ok"] * 6

    # Same data, same numbers: the checkout's run of its own quickstart writes the same summary.
    _run([sys.executable, "-m", "netsim", "run", PROJECT_ROOT / "scenarios" / "quickstart.yaml",
          "-o", "ref"], cwd=work, env=_env(isolated=False))
    assert json.loads((work / "out" / "summary.json").read_text()) == \
        json.loads((work / "ref" / "summary.json").read_text())


def test_an_editable_install_serves_the_source_tree(tmp_path: Path) -> None:
    purelib = _venv(tmp_path / "venv")
    python = tmp_path / "venv" / "bin" / "python"
    env = _env()
    _run([python, "-m", "pip", "install", "--no-deps", "--quiet", "-e", PROJECT_ROOT], cwd=tmp_path, env=env)
    package, data = map(Path, _run([python, "-c", WHERE], cwd=tmp_path, env=env).split())
    assert package == PROJECT_ROOT / "netsim" / "__init__.py"
    assert data == PROJECT_ROOT
    # pip recorded an editable install of this checkout in the venv (PEP 610), not a copy of it
    [record] = purelib.glob("netsim-*.dist-info/direct_url.json")
    direct_url = json.loads(record.read_text())
    assert direct_url == {"url": PROJECT_ROOT.as_uri(), "dir_info": {"editable": True}}
    assert not (purelib / "netsim").exists()
