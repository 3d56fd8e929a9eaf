"""Network engine: topology graph, routes, shared media (wired links, wireless cells), transports.

The names below load on first use (PEP 562), so the scenario schema can import `netsim.network.spec`
without pulling in the engine.
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "Delivery": "delivery", "TransferFailed": "delivery", "Network": "network", "build_network": "network",
    "CellSpec": "spec", "LinkSpec": "spec", "MemberSpec": "spec", "OutageSpec": "spec",
    "TransportSpec": "spec", "build_graph": "topology",
}
__all__ = [
    "CellSpec",
    "Delivery",
    "LinkSpec",
    "MemberSpec",
    "Network",
    "OutageSpec",
    "TransferFailed",
    "TransportSpec",
    "build_graph",
    "build_network",
]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(f"netsim.network.{_PUBLIC[name]}"), name)
    raise AttributeError(f"module 'netsim.network' has no attribute {name!r}")
