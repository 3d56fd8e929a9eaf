"""Emulated hardware: device profiles, the roofline cost of a model call, and a node's compute resource."""

from netsim.hardware.compute import Compute, radio_energy_j
from netsim.hardware.cost import (
    Cost,
    call_time_s,
    decode_cost,
    decode_tokens_per_s,
    prefill_cost,
    prefill_tokens_per_s,
)
from netsim.hardware.profile import DeviceProfile, list_profiles, load_profile, memory_needed_bytes

__all__ = [
    "Compute",
    "Cost",
    "DeviceProfile",
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
