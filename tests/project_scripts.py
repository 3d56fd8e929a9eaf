"""The project's scripts/ as modules, so tests run the very code the scripts run (scripts/ is no package)."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from netsim.paths import PROJECT_ROOT


def load_script(name: str) -> ModuleType:
    """scripts/<name>.py, executed once per call under the module name `name`."""
    spec = importlib.util.spec_from_file_location(name, PROJECT_ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module
