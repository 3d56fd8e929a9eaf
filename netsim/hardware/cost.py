"""Work of one forward call (FLOPs, bytes moved) and its duration on a device (roofline + overhead).

The cost of a call is a property of the model geometry and the call's shape only; the device enters
only in `call_time_s`. Derivation of every term is in docs/hardware.md ("Cost of a forward call").

Notation (per call): L layers, H query heads, d head dim, V vocab, D hidden, b bytes/element,
P_body = matmul parameters of the transformer blocks, P_head = V·D (the LM head; tied or not it is one
V×D matmul per token that needs logits), n new tokens per sequence, p cached tokens per sequence,
B sequences in the batch, k_kv = KV bytes per token (2·L·kv_heads·d·b).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from netsim.lm.geometry import ModelGeometry

if TYPE_CHECKING:
    from netsim.hardware.profile import DeviceProfile


@dataclass(frozen=True)
class Cost:
    """Work of one forward call: `flops` arithmetic, `bytes_moved` DRAM traffic, in `dtype`.

    `n_tokens` new tokens per sequence and `batch` sequences are kept for records and reports; the
    time model uses only flops, bytes_moved and dtype.
    """

    flops: float
    bytes_moved: float
    dtype: str
    n_tokens: int
    batch: int

    def __add__(self, other: Cost) -> Cost:
        """Two pieces of work fused into one call (e.g. a fuser after a model) share one overhead."""
        if self.dtype != other.dtype:
            raise ValueError(f"cannot fuse calls of different dtypes: {self!r} + {other!r}")
        return Cost(self.flops + other.flops, self.bytes_moved + other.bytes_moved, self.dtype,
                    self.n_tokens, max(self.batch, other.batch))


def attention_context_sum(n_tokens: int, past_len: int) -> int:
    """Σ over the n new tokens of the context each attends to (causal): Σ_{i=1..n} (p + i).

    = n·p + n(n+1)/2. Token i of the call sees the p cached tokens and the i new tokens up to itself.
    """
    return n_tokens * past_len + n_tokens * (n_tokens + 1) // 2


def forward_cost(geom: ModelGeometry, n_tokens: int, past_len: int, batch: int, n_logits: int) -> Cost:
    """One forward call over `n_tokens` new tokens per sequence, producing logits for `n_logits` of them.

    FLOPs (multiply-add = 2 FLOPs, Kaplan et al. 2020 eq. 2.1 "C_forward ≈ 2N + 2·n_layer·n_ctx·d_attn"):
      1. block matmuls:  2 · P_body · n                       per sequence
      2. LM head:        2 · P_head · n_logits                per sequence
      3. attention:      4 · L · H · d · Σ_i (p + i)          per sequence
         (QKᵀ: 2·H·d FLOPs per (query, key) pair per layer; softmax·V: the same again)
    Bytes moved (DRAM ↔ chip; weights are streamed once per call and shared by the whole batch):
      4. weights:        (P_body + P_head) · b                once per call
      5. embedding rows: B · n · D · b                        input lookups
      6. KV read:        B · p · k_kv                         cached keys/values attended to
      7. KV write:       B · n · k_kv                         new keys/values appended
    Activations are left out: at decode they are O(B·n·D) ≪ weights, and where they grow (long
    prefill) the call is compute-bound, so they do not change the max() in `call_time_s`.
    """
    if n_tokens < 1 or past_len < 0 or batch < 1 or not 0 <= n_logits <= n_tokens:
        raise ValueError(f"bad call shape: n_tokens={n_tokens}, past_len={past_len}, batch={batch}, "
                         f"n_logits={n_logits}")
    p_head = geom.vocab_size * geom.hidden_size
    p_body = geom.n_non_embedding_params - p_head
    b = geom.bytes_per_element
    kv_per_token = geom.kv_bytes_per_token
    flops_per_seq = (
        2.0 * p_body * n_tokens
        + 2.0 * p_head * n_logits
        + 4.0 * geom.n_layers * geom.n_heads * geom.head_dim * attention_context_sum(n_tokens, past_len)
    )
    bytes_moved = (
        (p_body + p_head) * b
        + batch * n_tokens * geom.hidden_size * b
        + batch * past_len * kv_per_token
        + batch * n_tokens * kv_per_token
    )
    return Cost(flops=batch * flops_per_seq, bytes_moved=float(bytes_moved), dtype=geom.dtype,
                n_tokens=n_tokens, batch=batch)


def prefill_cost(geom: ModelGeometry, n_tokens: int, past_len: int = 0, batch: int = 1) -> Cost:
    """Prompt processing: logits only for the last position, as llama.cpp, vLLM and TensorRT-LLM
    (`gather_last_token_logits`) do, so the LM head runs once per sequence, not n times."""
    return forward_cost(geom, n_tokens, past_len, batch, n_logits=1)


def decode_cost(geom: ModelGeometry, past_len: int, n_tokens: int = 1, batch: int = 1) -> Cost:
    """One decode step; `n_tokens` > 1 is a speculative-decoding verify step, which needs logits at
    every one of the n positions."""
    return forward_cost(geom, n_tokens, past_len, batch, n_logits=n_tokens)


def call_time_s(profile: DeviceProfile, cost: Cost) -> float:
    """Roofline with a fixed per-call cost (Williams et al., CACM 2009; DESIGN.md "Hardware"):

        t = overhead + max( flops / (peak[dtype] · η_c),  bytes_moved / (bw · η_m) )
    """
    compute_s = cost.flops / (profile.peak_flops_for(cost.dtype) * profile.eta_compute)
    memory_s = cost.bytes_moved / (profile.mem_bw_bytes_per_s * profile.eta_memory)
    return profile.overhead_per_call_s + max(compute_s, memory_s)


def decode_tokens_per_s(profile: DeviceProfile, geom: ModelGeometry, past_len: int) -> float:
    """Steady decode speed at batch 1 — the number published benchmarks report (llama-bench `tg`)."""
    return 1.0 / call_time_s(profile, decode_cost(geom, past_len))


def prefill_tokens_per_s(profile: DeviceProfile, geom: ModelGeometry, n_tokens: int) -> float:
    """Prompt speed of one call over `n_tokens` (llama-bench `pp`, ExecuTorch "prefill tokens/s")."""
    return n_tokens / call_time_s(profile, prefill_cost(geom, n_tokens))
