"""The privacy rewrite of FedRefine ("LLMs will perform inference with rephrased input tokens to ensure
privacy protection without any intent leakage"), done by a base language model.

The bundled models continue text; they do not follow "rephrase this". The rewrite is therefore model-based
token substitution: reading left to right, each input token is, with probability `fraction`, replaced by a
token the model proposes for that position given the rewritten text so far — drawn from its REPHRASE_SAMPLING
distribution with the original token excluded, so a chosen position always changes. The exact wording
(what leaks intent) changes in about `fraction` of the positions while the rest and the model's sense of
what fits stay; the accuracy this costs is measured in docs/policies/c2c.md. The start token is kept.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from netsim.lm.memo import LanguageModel
from netsim.lm.sampling import SamplingSpec, probabilities

REPHRASE_SAMPLING = SamplingSpec(temperature=1.0, top_k=20)
"""How the rewriting model picks a replacement: among its 20 most likely tokens, at temperature 1."""


def rephrase_ids(lm: LanguageModel, ids: Sequence[int], fraction: float, rng: np.random.Generator,
                 *, keep: int = 0) -> tuple[list[int], int]:
    """`ids` with about `fraction` of the positions after the first `keep` rewritten; returns the new ids
    and how many changed. One uniform draw per position, then one replacement draw per rewritten position,
    all from `rng` in order, so a seed fixes the rewrite."""
    out = [int(t) for t in ids[:keep]]
    changed = 0
    for token in ids[keep:]:
        token = int(token)
        if rng.random() < fraction and out:
            p = probabilities(lm.next_logits(out), REPHRASE_SAMPLING).astype(np.float64)
            p[token] = 0.0
            if p.sum() > 0:
                token = int(rng.choice(p.size, p=p / p.sum()))
                changed += 1
        out.append(token)
    return out, changed


def rephrase_text(lm: LanguageModel, text: str, fraction: float, rng: np.random.Generator
                  ) -> tuple[str, int, int]:
    """`text` rewritten by `lm`: (new text, tokens changed, tokens of the input)."""
    tokenizer = lm.tokenizer
    start = tokenizer.bos_id if tokenizer.bos_id is not None else tokenizer.eos_id
    ids = tokenizer.encode(text, add_special_tokens=False)
    head = [] if start is None else [start]
    out, changed = rephrase_ids(lm, head + ids, fraction, rng, keep=len(head))
    return tokenizer.decode(out[len(head):]), changed, len(ids)
