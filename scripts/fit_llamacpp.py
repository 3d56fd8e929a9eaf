"""Recompute the llama.cpp runtime's fitted efficiencies from the calibration points they were fitted to.

    python scripts/fit_llamacpp.py

Prints, per device entry of runtime_profiles/llama.cpp.yaml, the numbers its `sources` describe (two-point
fits t = o + bytes/(bw·η_m), an overhead from one decode point at a measured bandwidth ceiling, η_c from
one prompt-processing point, a format's η_m from one point) from tests/data/calibration.yaml's `fit`
points, with netsim's own cost functions (bytes of the real GGUF format at the measured context, GEMM
tiles on the device's SMs). Nothing here reads a hold-out.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import test_calibration as calib

from netsim.hardware.cost import decode_cost, prefill_cost, tiled_flops


def point(device: str, model: str, fmt: str, measure: str, sibling: str | None = None) -> dict[str, Any]:
    found = [p for p in calib.points() if p["runtime"] == "llama.cpp" and p["role"] == "fit"
             and p["device"] == device and p.get("sibling") == sibling and p["model"] == model
             and p.get("format") == fmt and p["measure"] == measure]
    assert len(found) == 1, (device, sibling, model, fmt, measure, found)
    return found[0]


def decode_bytes(p: dict[str, Any]) -> float:
    return decode_cost(calib.geometry(p), p.get("context", calib.DEFAULT_CONTEXT)).bytes_moved


def two_point(a: dict[str, Any], b: dict[str, Any]) -> tuple[float, float]:
    """(η_m, overhead s) of t = o + bytes/(bw·η_m) through two decode points of one device."""
    bw = calib.device(a).mem_bw_bytes_per_s
    ta, tb = 1 / a["measured"], 1 / b["measured"]
    slope = (tb - ta) / (decode_bytes(b) - decode_bytes(a))
    return 1 / (slope * bw), ta - decode_bytes(a) * slope


def overhead(p: dict[str, Any], eta_m: float) -> float:
    return 1 / p["measured"] - decode_bytes(p) / (calib.device(p).mem_bw_bytes_per_s * eta_m)


def eta_memory(p: dict[str, Any], o: float) -> float:
    return decode_bytes(p) / (calib.device(p).mem_bw_bytes_per_s * (1 / p["measured"] - o))


def eta_compute(p: dict[str, Any], o: float, dtype: str | None = None) -> float:
    profile = calib.device(p)
    cost = prefill_cost(calib.geometry(p), p["tokens"])
    t = p["tokens"] / p["measured"] - o
    return tiled_flops(profile, cost) / (t * profile.peak_flops_for(dtype or cost.dtype))


def fits() -> dict[str, dict[str, float]]:
    """The fitted numbers of each calibrated entry, by entry and field (Q4_0's η_m as `q4_0_eta_memory`)."""
    a100_7b = point("nvidia-a100-80gb", "llama-2-7b", "fp16", "decode")
    o_a100 = overhead(a100_7b, 0.88)
    o_h100 = overhead(point("nvidia-h100-sxm", "llama-2-7b", "fp16", "decode", "h100-pcie"), 0.88)
    eta_m2, o_m2 = two_point(point("macbook-air-m2", "llama-2-7b", "fp16", "decode", "m2-ultra"),
                             point("macbook-air-m2", "llama-2-70b", "fp16", "decode", "m2-ultra"))
    eta_orin, o_orin = two_point(point("jetson-agx-orin", "llama-2-7b", "Q4_0", "decode"),
                                 point("jetson-agx-orin", "llama-2-70b", "Q4_0", "decode"))
    o_pi = overhead(point("raspberry-pi-5", "tinyllama-1.1b", "Q8_0", "decode"), 0.668)
    o_4090 = overhead(point("rtx-4090", "llama-2-7b", "fp16", "decode"), 0.88)
    return {
        "nvidia-a100-80gb": {
            "eta_memory": 0.88, "overhead_per_call_s": o_a100,
            "eta_compute": eta_compute(point("nvidia-a100-80gb", "llama-2-7b", "fp16", "prefill"), o_a100),
            "q4_0_eta_memory": eta_memory(point("nvidia-a100-80gb", "llama-2-70b", "Q4_0", "decode"),
                                          o_a100)},
        "nvidia-h100-sxm": {
            "eta_memory": 0.88, "overhead_per_call_s": o_h100,
            "eta_compute": eta_compute(point("nvidia-h100-sxm", "llama-2-7b", "fp16", "prefill", "h100-pcie"),
                                       o_h100)},
        "macbook-air-m2": {
            "eta_memory": eta_m2, "overhead_per_call_s": o_m2,
            "eta_compute": eta_compute(point("macbook-air-m2", "llama-2-7b", "fp16", "prefill", "m2-ultra"),
                                       o_m2)},
        "jetson-agx-orin": {"eta_memory": eta_orin, "overhead_per_call_s": o_orin},
        "rtx-4090": {
            "eta_memory": 0.88, "overhead_per_call_s": o_4090,
            "eta_compute": eta_compute(point("rtx-4090", "llama-2-7b", "fp16", "prefill"), o_4090),
            "q4_0_eta_memory": eta_memory(point("rtx-4090", "llama-2-7b", "Q4_0", "decode"), o_4090)},
        "raspberry-pi-5": {
            "eta_memory": 0.668, "overhead_per_call_s": o_pi,
            "eta_compute": eta_compute(point("raspberry-pi-5", "tinyllama-1.1b", "Q8_0", "prefill"), o_pi,
                                       "int8")},
    }


def main() -> None:
    for name, fitted in fits().items():
        print(f"{name}: " + ", ".join(f"{k} {v * 1e3:.2f} ms" if k.startswith("overhead") else f"{k} {v:.3f}"
                                      for k, v in fitted.items()))


if __name__ == "__main__":
    main()
