"""What the calibrated profiles imply beyond the calibration points themselves (those, fitted and held
out, are checked point by point in tests/test_calibration.py from tests/data/calibration.yaml)."""

from __future__ import annotations

from netsim.hardware.cost import decode_tokens_per_s
from netsim.hardware.profile import load_profile
from netsim.lm.geometry import ModelGeometry

PAST = 128


def test_small_models_on_big_accelerators_are_overhead_bound() -> None:
    """DESIGN.md: a bandwidth term alone does not fit; SmolLM2-135M on an A100 is > 90% overhead."""
    smollm2 = ModelGeometry(architecture="llama", n_layers=30, hidden_size=576, n_heads=9, n_kv_heads=3,
                            head_dim=64, vocab_size=49152, intermediate_size=1536, n_params=134_515_008,
                            tied_embeddings=True, dtype="bfloat16")
    a100 = load_profile("nvidia-a100-80gb")
    t = 1.0 / decode_tokens_per_s(a100, smollm2, PAST)
    assert a100.overhead_per_call_s / t > 0.9
