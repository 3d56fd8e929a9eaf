"""netsim: discrete-event simulation of collaborative LLM inference over networks.

    import netsim
    results = netsim.run(netsim.load_scenario("scenarios/quickstart.yaml"))
    results.requests    # polars DataFrame, one row per request
    results.write("runs/quickstart")

The public names load on first use (PEP 562), so `import netsim` stays cheap and subpackages can import
`netsim.paths` or `netsim.units` without pulling in the runtime.
"""

from __future__ import annotations

from typing import Any

from netsim.version import __version__

__all__ = ["Results", "Scenario", "__version__", "load_scenario", "run"]

_PUBLIC = {"run": "netsim.simulation", "Results": "netsim.results", "Scenario": "netsim.scenario",
           "load_scenario": "netsim.scenario"}


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'netsim' has no attribute {name!r}")
