"""Sampling against hand-computed distributions and empirical frequencies."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from netsim.lm.sampling import SamplingSpec, probabilities, sample

LOGITS = np.array([0.0, 1.0, 2.0, 3.0], dtype=np.float32)


def test_greedy_is_argmax_and_uses_no_randomness() -> None:
    rng = np.random.default_rng(1)
    state = rng.bit_generator.state
    logits = np.array([0.3, 2.5, -1.0, 2.5, 0.0], dtype=np.float32)
    assert sample(logits, SamplingSpec(), rng) == 1  # first index on ties, as np.argmax
    assert rng.bit_generator.state == state
    np.testing.assert_array_equal(probabilities(logits, SamplingSpec()), [0, 1, 0, 0, 0])


def test_temperature_scales_the_softmax() -> None:
    probs = probabilities(LOGITS, SamplingSpec(temperature=2.0))
    z = LOGITS.astype(np.float64) / 2.0
    expected = np.exp(z) / np.exp(z).sum()
    np.testing.assert_allclose(probs, expected, rtol=1e-12)


def test_top_k_keeps_the_k_largest_and_renormalises() -> None:
    probs = probabilities(LOGITS, SamplingSpec(temperature=1.0, top_k=2))
    z = math.e ** 2 + math.e ** 3
    np.testing.assert_allclose(probs, [0, 0, math.e ** 2 / z, math.e ** 3 / z], rtol=1e-12)


def test_top_p_keeps_the_smallest_set_reaching_p() -> None:
    logits = np.log(np.array([0.05, 0.5, 0.15, 0.3]))
    probs = probabilities(logits, SamplingSpec(temperature=1.0, top_p=0.75))
    np.testing.assert_allclose(probs, [0, 0.5 / 0.8, 0, 0.3 / 0.8], rtol=1e-12)
    probs = probabilities(logits, SamplingSpec(temperature=1.0, top_p=0.85))  # needs the 0.15 too
    np.testing.assert_allclose(probs, [0, 0.5 / 0.95, 0.15 / 0.95, 0.3 / 0.95], rtol=1e-12)
    probs = probabilities(logits, SamplingSpec(temperature=1.0, top_p=0.4))  # the top token alone
    np.testing.assert_array_equal(probs, [0, 1, 0, 0])


def test_top_k_then_top_p() -> None:
    logits = np.log(np.array([0.05, 0.5, 0.15, 0.3]))
    # top-2 leaves {0.5, 0.3} → renormalised 0.625, 0.375; p = 0.6 then keeps only the first
    probs = probabilities(logits, SamplingSpec(temperature=1.0, top_k=2, top_p=0.6))
    np.testing.assert_array_equal(probs, [0, 1, 0, 0])


def test_seeded_sampling_is_reproducible() -> None:
    spec = SamplingSpec(temperature=1.0)
    logits = np.random.default_rng(0).normal(size=64)
    draws = [[sample(logits, spec, rng) for _ in range(50)] for rng in
             (np.random.default_rng(7), np.random.default_rng(7), np.random.default_rng(8))]
    assert draws[0] == draws[1]
    assert draws[0] != draws[2]


@pytest.mark.parametrize("spec", [SamplingSpec(temperature=0.7), SamplingSpec(temperature=1.3, top_k=4),
                                  SamplingSpec(temperature=1.0, top_p=0.9)], ids=["T", "top_k", "top_p"])
def test_empirical_frequencies_match_the_distribution(spec: SamplingSpec) -> None:
    """40,000 draws: every token's frequency within 4.5 binomial standard deviations of its probability
    (a false alarm somewhere among the 6 tokens has probability < 1e-4), and filtered tokens never drawn."""
    logits = np.array([1.0, 0.2, -0.5, 2.0, 1.5, -3.0], dtype=np.float32)
    expected = probabilities(logits, spec)
    if spec.top_k is None and spec.top_p is None:
        softmax = np.exp(logits / spec.temperature) / np.exp(logits / spec.temperature).sum()
        np.testing.assert_allclose(expected, softmax, rtol=1e-6)
    rng = np.random.default_rng(2024)
    n = 40_000
    counts = np.bincount([sample(logits, spec, rng) for _ in range(n)], minlength=len(logits))
    sigma = np.sqrt(expected * (1 - expected) / n)
    assert np.all(np.abs(counts / n - expected) <= 4.5 * sigma + 1e-12)
    assert np.all(counts[expected == 0] == 0)


def test_spec_validation() -> None:
    with pytest.raises(ValidationError):
        SamplingSpec(temperature=-0.1)
    with pytest.raises(ValidationError):
        SamplingSpec(top_p=0.0)
    with pytest.raises(ValidationError):
        SamplingSpec(top_k=0)
    with pytest.raises(ValidationError):
        SamplingSpec.model_validate({"temperature": 1.0, "top_q": 0.5})
