"""Calibration check: the profiles reproduce the published decode/prefill speeds they were fitted to,
and predict held-out measurements they were not fitted to (docs/hardware.md, "Calibration").

Fitted points must come back within 2% (the YAML rounds the fitted factors to 3 significant digits).
Held-out points carry their own stated tolerance. Decode is charged at past_len = 128, the middle of a
short benchmark generation; the KV term is < 1% of the weight bytes there for every anchor model.
"""

from __future__ import annotations

import pytest

from netsim.hardware.cost import decode_tokens_per_s, prefill_tokens_per_s
from netsim.hardware.profile import load_profile
from netsim.lm.geometry import ModelGeometry

PAST = 128

# Public model geometries (model cards / config.json of each release).
TINYLLAMA_1B = dict(architecture="llama", n_layers=22, hidden_size=2048, n_heads=32, n_kv_heads=4,
                    head_dim=64, vocab_size=32000, intermediate_size=5632, n_params=1_100_048_384)
LLAMA32_1B = dict(architecture="llama", n_layers=16, hidden_size=2048, n_heads=32, n_kv_heads=8,
                  head_dim=64, vocab_size=128256, intermediate_size=8192, n_params=1_235_814_400,
                  tied_embeddings=True)
LLAMA32_3B = dict(architecture="llama", n_layers=28, hidden_size=3072, n_heads=24, n_kv_heads=8,
                  head_dim=128, vocab_size=128256, intermediate_size=8192, n_params=3_212_749_824,
                  tied_embeddings=True)
LLAMA2_7B = dict(architecture="llama", n_layers=32, hidden_size=4096, n_heads=32, n_kv_heads=32,
                 head_dim=128, vocab_size=32000, intermediate_size=11008, n_params=6_738_415_616)
LLAMA2_13B = dict(architecture="llama", n_layers=40, hidden_size=5120, n_heads=40, n_kv_heads=40,
                  head_dim=128, vocab_size=32000, intermediate_size=13824, n_params=13_015_864_320)
LLAMA2_70B = dict(architecture="llama", n_layers=80, hidden_size=8192, n_heads=64, n_kv_heads=8,
                  head_dim=128, vocab_size=32000, intermediate_size=28672, n_params=68_976_648_192)


def geom(arch: dict[str, object], dtype: str) -> ModelGeometry:
    return ModelGeometry(**arch, dtype=dtype)  # type: ignore[arg-type]


# (profile, model, dtype, measured decode tok/s, tolerance, source)
DECODE = [
    ("raspberry-pi-5", TINYLLAMA_1B, "int8", 9.0, 0.02, "justine.lol/matmul, Q8_0 (fit)"),
    ("oneplus-12", LLAMA32_1B, "bfloat16", 19.2, 0.02, "executorch llama README (fit)"),
    ("oneplus-12", LLAMA32_3B, "bfloat16", 7.6, 0.02, "executorch llama README (fit)"),
    ("jetson-agx-orin", LLAMA2_7B, "int4", 22.5, 0.02, "holohub#170 (fit)"),
    ("jetson-agx-orin", LLAMA2_70B, "int4", 3.0, 0.02, "holohub#170 (fit)"),
    ("jetson-agx-orin", LLAMA2_13B, "int4", 13.3, 0.05, "holohub#170 (hold-out)"),
    ("nvidia-a100-80gb", LLAMA2_7B, "float16", 73.83, 0.02, "XiongjieDai, llama.cpp F16 (fit)"),
    ("nvidia-a100-80gb", LLAMA2_7B, "int4", 136.24, 0.15, "XiongjieDai, llama.cpp Q4_0 (hold-out)"),
    ("macbook-air-m2", LLAMA2_7B, "int4", 20.79, 0.15,
     "XiongjieDai, M3 10-core GPU (same 100 GB/s, same runtime) Q4_0 (hold-out)"),
]

# (profile, model, dtype, prompt tokens, measured prefill tok/s, tolerance, source)
PREFILL = [
    ("raspberry-pi-5", TINYLLAMA_1B, "int8", 512, 35.0, 0.02, "justine.lol/matmul (fit)"),
    ("oneplus-12", LLAMA32_1B, "bfloat16", 64, 60.3, 0.02, "executorch README (fit)"),
    ("oneplus-12", LLAMA32_3B, "bfloat16", 64, 21.2, 0.05, "executorch README (hold-out)"),
    ("nvidia-a100-80gb", LLAMA2_7B, "float16", 512, 5105.77, 0.02, "XiongjieDai pp (fit)"),
]


@pytest.mark.parametrize(("name", "arch", "dtype", "measured", "tol", "source"), DECODE,
                         ids=[f"{d[0]}-{d[3]}tok/s" for d in DECODE])
def test_decode_speed_matches_measurement(name: str, arch: dict[str, object], dtype: str, measured: float,
                                          tol: float, source: str) -> None:
    predicted = decode_tokens_per_s(load_profile(name), geom(arch, dtype), PAST)
    assert predicted == pytest.approx(measured, rel=tol), f"{name}: {predicted:.2f} vs {measured} ({source})"


@pytest.mark.parametrize(("name", "arch", "dtype", "n", "measured", "tol", "source"), PREFILL,
                         ids=[f"{p[0]}-{p[4]}tok/s" for p in PREFILL])
def test_prefill_speed_matches_measurement(name: str, arch: dict[str, object], dtype: str, n: int,
                                           measured: float, tol: float, source: str) -> None:
    predicted = prefill_tokens_per_s(load_profile(name), geom(arch, dtype), n)
    assert predicted == pytest.approx(measured, rel=tol), f"{name}: {predicted:.2f} vs {measured} ({source})"


def test_sibling_parts_reproduce_the_measurements_their_factors_came_from() -> None:
    """Some profiles borrow factors from a sibling part with a measurement; swap the sibling's
    bandwidth and peak back in and the sibling's numbers must come out."""
    # M2 Ultra (800 GB/s, 76-core GPU 27.2 TFLOPS), llama.cpp Metal, XiongjieDai LLaMA-2 table
    m2_ultra = load_profile("macbook-air-m2").model_copy(update={
        "mem_bw_bytes_per_s": 800e9, "peak_flops": {"float32": 27.2e12, "float16": 27.2e12}})
    assert decode_tokens_per_s(m2_ultra, geom(LLAMA2_7B, "float16"), PAST) == pytest.approx(40.68, rel=0.02)
    assert decode_tokens_per_s(m2_ultra, geom(LLAMA2_70B, "float16"), PAST) == pytest.approx(4.81, rel=0.02)
    assert prefill_tokens_per_s(m2_ultra, geom(LLAMA2_7B, "float16"), 512) == pytest.approx(1379.54, rel=0.02)
    # H100 PCIe (2.0 TB/s, 756 TFLOPS dense FP16), llama.cpp CUDA, XiongjieDai LLaMA-2 table
    h100_pcie = load_profile("nvidia-h100-sxm").model_copy(update={
        "mem_bw_bytes_per_s": 2000e9, "peak_flops": {"float32": 51e12, "float16": 756e12}})
    assert decode_tokens_per_s(h100_pcie, geom(LLAMA2_7B, "float16"), PAST) == pytest.approx(83.32, rel=0.02)
    assert prefill_tokens_per_s(h100_pcie, geom(LLAMA2_7B, "float16"), 512) == pytest.approx(7367, rel=0.02)


def test_small_models_on_big_accelerators_are_overhead_bound() -> None:
    """DESIGN.md: a bandwidth term alone does not fit; SmolLM2-135M on an A100 is > 90% overhead."""
    smollm2 = ModelGeometry(architecture="llama", n_layers=30, hidden_size=576, n_heads=9, n_kv_heads=3,
                            head_dim=64, vocab_size=49152, intermediate_size=1536, n_params=134_515_008,
                            tied_embeddings=True, dtype="bfloat16")
    a100 = load_profile("nvidia-a100-80gb")
    t = 1.0 / decode_tokens_per_s(a100, smollm2, PAST)
    assert a100.overhead_per_call_s / t > 0.9
