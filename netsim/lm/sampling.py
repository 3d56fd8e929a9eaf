"""Choosing the next token from logits: greedy, or seeded sampling with temperature, top-k and top-p.

The order of the filters is the usual one (Hugging Face `generate`, Holtzman et al. 2020 "The Curious
Case of Neural Text Degeneration" §3.1): scale by 1/T, keep the k most likely tokens, then keep the
smallest set whose probability reaches p, renormalise. Policies that verify drafts (speculative
sampling, Leviathan et al. 2023 Alg. 1) need the distribution itself, so `probabilities` is public.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

TEMPERATURE_MIN = 0.01
"""Smallest non-zero temperature. At 0.01 logits a tenth apart already differ e¹⁰ ≈ 22,000× in
probability, so lower values only approach greedy (write 0 for that), while a subnormal temperature
makes logits / T overflow to inf, whose differences are NaN probabilities."""


class SamplingSpec(BaseModel):
    """How a model picks its next token; temperature 0 means greedy (argmax, no randomness used)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    temperature: float = Field(
        0.0, ge=0.0, le=100.0,
        description="softmax temperature: 0 = greedy, else 0.01 to 100 (at 100, logits 30 apart give "
                    "probabilities only 26% apart: uniform sampling in all but name)")
    top_k: int | None = Field(
        None, ge=1, le=1_000_000,
        description="keep only the k most likely tokens: 1 to 1e6 (vocabularies reach ~256k)")
    top_p: float | None = Field(
        None, gt=0.0, le=1.0, description="nucleus: smallest set with mass ≥ p, above 0 to 1")

    @field_validator("temperature")
    @classmethod
    def _greedy_or_usable(cls, value: float) -> float:
        if 0.0 < value < TEMPERATURE_MIN:
            raise ValueError(f"must be 0 (greedy) or at least {TEMPERATURE_MIN}, got {value:g}")
        return value

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def probabilities(logits: np.ndarray, spec: SamplingSpec) -> np.ndarray:
    """The distribution `sample` draws from, shape (V,), float64, summing to 1.

    Greedy is the one-hot vector of the argmax (first index on ties, as `np.argmax`).
    """
    logits = np.asarray(logits)
    if spec.greedy:
        onehot = np.zeros(logits.shape[-1], dtype=np.float64)
        onehot[int(np.argmax(logits))] = 1.0
        return onehot
    # 1. temperature: p ∝ exp(z / T), shifted by the max for stability
    scaled = logits.astype(np.float64) / spec.temperature
    # 2. top-k: everything below the k-th largest logit is dropped
    if spec.top_k is not None and spec.top_k < scaled.shape[-1]:
        keep = np.zeros(scaled.shape[-1], dtype=bool)
        keep[np.argpartition(scaled, -spec.top_k)[-spec.top_k:]] = True
        weights = np.where(keep, np.exp(scaled - scaled[keep].max()), 0.0)
    else:  # every token kept: the same numbers without a mask (the per-token path of a fleet)
        weights = np.exp(scaled - scaled.max())
    probs = weights / weights.sum()
    # 3. top-p: most likely first (stable, so ties keep index order); keep up to the token that reaches p
    if spec.top_p is not None and spec.top_p < 1.0:
        order = np.argsort(-probs, kind="stable")
        cumulative = np.cumsum(probs[order])
        n_keep = int(np.searchsorted(cumulative, spec.top_p, side="left")) + 1
        dropped = order[n_keep:]
        probs[dropped] = 0.0
        probs /= probs.sum()
    return probs


def sample(logits: np.ndarray, spec: SamplingSpec, rng: np.random.Generator) -> int:
    """One token id. Greedy consumes no random numbers; otherwise exactly one uniform draw per call,
    so a sequence's RNG stream advances the same way whatever the logits are."""
    if spec.greedy:
        return int(np.argmax(logits))
    probs = probabilities(logits, spec)
    cumulative = np.cumsum(probs)
    # inverse-CDF draw; `side="right"` never lands on a zero-probability token
    index = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
    return min(index, probs.shape[-1] - 1)
