"""Emulated hardware: device profiles, the roofline cost of a model call, and a node's compute resource.

The names below load on first use (PEP 562), so importing a profile schema does not pull in SimPy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from netsim.hardware.batching import BatchingCompute
    from netsim.hardware.compute import Compute, radio_energy_j
    from netsim.hardware.cost import (
        Cost,
        batched_cost,
        call_time_s,
        decode_cost,
        decode_tokens_per_s,
        prefill_cost,
        prefill_tokens_per_s,
    )
    from netsim.hardware.profile import DeviceProfile, list_profiles, load_profile, memory_needed_bytes

_PUBLIC = {
    "BatchingCompute": "batching", "batched_cost": "cost",
    "Compute": "compute", "radio_energy_j": "compute", "Cost": "cost", "call_time_s": "cost",
    "decode_cost": "cost", "decode_tokens_per_s": "cost", "prefill_cost": "cost",
    "prefill_tokens_per_s": "cost", "DeviceProfile": "profile", "list_profiles": "profile",
    "load_profile": "profile", "memory_needed_bytes": "profile",
}
__all__ = [
    "BatchingCompute",
    "Compute",
    "Cost",
    "DeviceProfile",
    "batched_cost",
    "call_time_s",
    "decode_cost",
    "decode_tokens_per_s",
    "list_profiles",
    "load_profile",
    "memory_needed_bytes",
    "prefill_cost",
    "prefill_tokens_per_s",
    "radio_energy_j",
]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(f"netsim.hardware.{_PUBLIC[name]}"), name)
    raise AttributeError(f"module 'netsim.hardware' has no attribute {name!r}")
