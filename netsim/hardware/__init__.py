"""Emulated hardware: device profiles, runtime profiles, the cost of a model call (roofline or a measured
latency table), and a node's compute resource.

The names below load on first use (PEP 562), so importing a profile schema does not pull in SimPy.
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "BatchingCompute": "batching", "batched_cost": "cost",
    "Compute": "compute", "radio_energy_j": "compute", "Cost": "cost", "call_time_s": "cost",
    "decode_cost": "cost", "decode_tokens_per_s": "cost", "prefill_cost": "cost",
    "prefill_tokens_per_s": "cost", "DeviceProfile": "profile", "list_profiles": "profile",
    "load_profile": "profile", "memory_needed_bytes": "profile", "load_device": "profile",
    "ComputeTable": "runtime", "RuntimeProfile": "runtime", "list_runtimes": "runtime",
    "load_runtime": "runtime",
}
__all__ = [
    "BatchingCompute",
    "Compute",
    "ComputeTable",
    "Cost",
    "DeviceProfile",
    "RuntimeProfile",
    "batched_cost",
    "call_time_s",
    "decode_cost",
    "decode_tokens_per_s",
    "list_profiles",
    "list_runtimes",
    "load_device",
    "load_profile",
    "load_runtime",
    "memory_needed_bytes",
    "prefill_cost",
    "prefill_tokens_per_s",
    "radio_energy_j",
]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(f"netsim.hardware.{_PUBLIC[name]}"), name)
    raise AttributeError(f"module 'netsim.hardware' has no attribute {name!r}")
