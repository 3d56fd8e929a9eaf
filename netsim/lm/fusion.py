"""What a receiver LLM computes from other LLMs' KV caches (FedRefine eqs. 1-4): content, no simulated time.

The C2C policies charge the network and the hardware; this module answers the content questions they ask —
the fused cache of a shared input and the receiver's tokens decoded on it — with the real ONNX models and
the trained fusers, memoised exactly.

A fused cache is not a function of the receiver's prefix alone, so the receiver's own prefix memo cannot
hold it: the key here is (receiver model, receiver prefix, fusion mode, and per sender: fuser, sender model,
sender prefix). Everything in the key is pinned by content (sha256 of the model and fuser files, token
ids), so a hit is exactly what a recomputation would give, and two policies or two runs of a sweep asking
the same question get the same answer.

Several senders (eq. 4, C(F_j1i, M_j1) ∘ … ∘ C(F_jsi, M_js) ∘ C(M_i)) combine in one of the two ways
Cache-to-Cache's reference code offers for several sharers (`multi_source_fusion_mode` in thu-nics/C2C):
- `parallel`: every fuser reads the receiver's own cache, the one it was trained on, and the
  receiver cache moves by the sum of the fusers' corrections: fused = own + Σ_s (F_s(C_s, own) − own);
- `mean` (netsim's default): the same corrections averaged, fused = own + (1/s) Σ_s (F_s(C_s, own) − own):
  each fuser was trained to correct the receiver on its own, so s corrections added can overshoot
  (docs/policies/c2c.md measures it);
- `sequential`: each fuser reads the previous fuser's output: fused = F_sk(C_sk, … F_s1(C_s1, own) …).
The paper's ∘ is a sequence-wise concatenation; a receiver position holding s + 1 copies of every prompt
position would need position ids the exported models do not take, and neither C2C mode does it. With one
sender both modes are eq. 1.

When fusion happens (fuser.py's module doc): the fused cache covers the prompt without its last token; the
receiver feeds the last prompt token on top, so every generated token is conditioned on the fused cache.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from netsim.lm.fuser import Fuser, align_tokens, encode_with_ends
from netsim.lm.memo import LanguageModel
from netsim.lm.onnx_lm import KVCache
from netsim.lm.sampling import SamplingSpec, sample

FusionMode = Literal["parallel", "mean", "sequential"]

DEFAULT_FUSED_ENTRIES = 4096
"""Generations kept per process (token id tuples: a few kB each)."""
DEFAULT_CACHE_ENTRIES = 64
"""Fused caches kept per process (each the size of a receiver prompt cache)."""


@dataclass(frozen=True)
class SenderInput:
    """One sender's part of a fusion: the fuser into the receiver, the sender model, and its tokens of the
    shared input with the character offset where each ends (for the alignment of heterogeneous tokenizers)."""

    fuser: Fuser
    lm: LanguageModel
    ids: tuple[int, ...]
    ends: tuple[float, ...]

    @property
    def key(self) -> bytes:
        return _digest(self.fuser.manifest.sha256[self.fuser.manifest.files["fuser"]].encode(),
                       self.lm.sha256.encode(), np.asarray(self.ids, dtype="<i8").tobytes())


def tokens_with_ends(lm: LanguageModel, text: str) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """A model's tokens of `text` after its start token, and where each ends in `text` (fuser.py's rule)."""
    tokenizer = lm.tokenizer
    start = tokenizer.bos_id if tokenizer.bos_id is not None else tokenizer.eos_id
    ids, ends = encode_with_ends(tokenizer, text, start_id=start)
    return tuple(ids), tuple(float(e) for e in ends)


class FusionMemo:
    """Fused caches and the receiver's generations on them, for one process (held by the ModelStore)."""

    def __init__(self, *, max_generations: int = DEFAULT_FUSED_ENTRIES,
                 max_caches: int = DEFAULT_CACHE_ENTRIES) -> None:
        self._generated: OrderedDict[bytes, tuple[int, ...]] = OrderedDict()
        self._caches: OrderedDict[bytes, KVCache] = OrderedDict()
        self.max_generations = max_generations
        self.max_caches = max_caches
        self.n_fusions = 0
        """Fuser runs so far (what the memo saves; tests count them)."""

    def fused_cache(self, receiver: LanguageModel, receiver_ids: Sequence[int],
                    receiver_ends: Sequence[float], senders: Sequence[SenderInput],
                    mode: FusionMode = "mean") -> KVCache:
        """The receiver's cache of `receiver_ids[:-1]` with every sender's cache fused in (eqs. 1, 4)."""
        key = _fusion_key(receiver, receiver_ids, senders, mode)
        cache = self._caches.get(key)
        if cache is not None:
            self._caches.move_to_end(key)
            return cache
        own = receiver.kv_cache(receiver_ids[:-1])
        fused = own
        correction: list[np.ndarray] | None = None
        for sender in senders:
            alignment = align_tokens(receiver_ends[:-1], sender.ends)
            theirs = sender.lm.kv_cache(sender.ids)
            base = fused if mode == "sequential" else own
            out = sender.fuser.fuse(theirs, base, alignment)
            self.n_fusions += 1
            if mode == "sequential":
                fused = out
                continue
            delta = [o.astype(np.float32) - b.astype(np.float32)
                     for o, b in zip(out.flat(), own.flat(), strict=True)]
            correction = (delta if correction is None
                          else [c + d for c, d in zip(correction, delta, strict=True)])
        if mode != "sequential" and correction is not None:
            if mode == "mean":
                correction = [c / len(senders) for c in correction]
            dtype = own.layers[0][0].dtype
            fused = KVCache.from_present([(b + c).astype(dtype)
                                          for b, c in zip(own.flat(), correction, strict=True)])
        self._caches[key] = fused
        while len(self._caches) > self.max_caches:
            self._caches.popitem(last=False)
        return fused

    def generate(self, receiver: LanguageModel, receiver_ids: Sequence[int], receiver_ends: Sequence[float],
                 senders: Sequence[SenderInput], max_new_tokens: int, sampling: SamplingSpec,
                 seed: Sequence[int], mode: FusionMode = "mean", stop_at_eos: bool = True) -> list[int]:
        """Up to `max_new_tokens` tokens the receiver decodes on the fused cache; with no senders, on its own
        cache of the prompt — the same procedure, so "receiver alone" and C2C differ only by the fusion.

        The RNG comes from `seed` alone, as in LanguageModel.generate (common random numbers).
        """
        eos = receiver.tokenizer.eos_id if stop_at_eos else None
        key = _digest(_fusion_key(receiver, receiver_ids, senders, mode), sampling.model_dump_json().encode(),
                      np.asarray(list(seed), dtype="<i8").tobytes(), str((max_new_tokens, eos)).encode())
        done = self._generated.get(key)
        if done is None:
            cache = (self.fused_cache(receiver, receiver_ids, receiver_ends, senders, mode) if senders
                     else receiver.kv_cache(receiver_ids[:-1]))
            done = tuple(_decode(receiver, cache, int(receiver_ids[-1]), max_new_tokens, sampling, seed, eos))
            self._generated[key] = done
            while len(self._generated) > self.max_generations:
                self._generated.popitem(last=False)
        else:
            self._generated.move_to_end(key)
        return list(done)

    def continuation_nll(self, receiver: LanguageModel, receiver_ids: Sequence[int],
                         receiver_ends: Sequence[float], senders: Sequence[SenderInput],
                         continuation: Sequence[int], mode: FusionMode = "mean") -> float:
        """Summed −log p of `continuation` after the prompt, the receiver reading the fused cache (teacher
        forced): the quality measure of docs/policies/c2c.md."""
        cache = (self.fused_cache(receiver, receiver_ids, receiver_ends, senders, mode) if senders
                 else receiver.kv_cache(receiver_ids[:-1]))
        fed = [int(receiver_ids[-1]), *continuation[:-1]]
        logits, _ = receiver.lm.verify(fed, cache)
        shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
        logp = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
        return -float(logp[np.arange(len(continuation)), np.asarray(continuation)].sum())


def _decode(receiver: LanguageModel, cache: KVCache, last_prompt_token: int, max_new_tokens: int,
            sampling: SamplingSpec, seed: Sequence[int], eos: int | None) -> list[int]:
    """Feed the last prompt token on `cache`, then sample token by token (one model call per token)."""
    rng = np.random.default_rng(list(seed))
    lm = receiver.lm
    logits, cache = lm.verify([last_prompt_token], cache)
    out: list[int] = []
    for _ in range(max_new_tokens):
        token = sample(logits[-1], sampling, rng)
        out.append(token)
        if token == eos or len(out) == max_new_tokens:
            break
        logits, cache = lm.verify([token], cache)
    return out


def _fusion_key(receiver: LanguageModel, receiver_ids: Sequence[int], senders: Sequence[SenderInput],
                mode: FusionMode) -> bytes:
    return _digest(receiver.sha256.encode(), np.asarray(list(receiver_ids), dtype="<i8").tobytes(),
                   mode.encode(), *(s.key for s in senders))


def _digest(*parts: bytes) -> bytes:
    h = hashlib.blake2b(digest_size=20)
    for part in parts:
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.digest()
