"""Work of one forward call (FLOPs, bytes moved) and its duration on a device (roofline + overhead).

The cost of a call is a property of the model geometry and the call's shape only; the device enters
only in `call_time_s`. Derivation of every term is in docs/hardware.md ("Cost of a forward call").

Notation (per call): L layers, H query heads, d head dim, V vocab, D hidden, b bytes/element,
P_body = matmul parameters of the transformer blocks, P_head = V·D (the LM head; tied or not it is one
V×D matmul per token that needs logits), n new tokens per sequence, p cached tokens per sequence,
B sequences in the batch, k_kv = KV bytes per token (2·L·kv_heads·d·b_kv, b_kv the KV cache dtype's
bytes — bf16/fp16 for an int4 model unless configured). With a weight format (quant.py) the weights
are its real bytes (scales, tensors kept wider) instead of P·b.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, NamedTuple

from netsim.lm.geometry import ModelGeometry

if TYPE_CHECKING:
    from netsim.hardware.profile import DeviceProfile
    from netsim.hardware.runtime import ComputeTable, Phase


class CallShape(NamedTuple):
    """The shape of the sequences of one model call: `batch` sequences of `n_tokens` new tokens each on
    `past_len` cached ones, with logits at `n_logits` positions. A measured latency table (runtime.py)
    charges a call by its shapes, and the per-token overhead counts its logits rows."""

    n_tokens: int
    past_len: int
    n_logits: int
    batch: int

    @property
    def phase(self) -> Phase:
        """verify: logits at several positions (a speculative verify step); prefill: several tokens for
        one logits row; decode: one token."""
        if self.n_logits > 1:
            return "verify"
        return "prefill" if self.n_tokens > 1 else "decode"


class Gemm(NamedTuple):
    """The matrix multiplies of one kind in a call: `rows` input rows (tokens of all sequences) times
    weights with `width` output features, `flops` in all (summed over layers). `kind` keeps the decoder's
    and the LM head's GEMMs apart when a batching server merges sequences (`batched_cost`)."""

    kind: str
    rows: int
    width: int
    flops: float


GEMM_TILE = 128
"""Output tile (rows × columns) of the GEMM kernels prompt-sized matmuls run on: cuBLAS/CUTLASS's large
tensor-core kernels compute 128×128 (or larger) tiles, one thread block per SM at a time."""


def wave_efficiency(rows: int, width: int, units: int) -> float:
    """Useful fraction of the tiles a GPU computes for a rows × width output (tile and wave quantisation,
    NVIDIA "Matrix Multiplication Background User's Guide", §§ 2.3-2.4): the output is cut into
    ⌈rows/T⌉·⌈width/T⌉ tiles of T×T, scheduled on `units` SMs in ⌈tiles/units⌉ waves, each wave as long
    as a full one; efficiency = rows·width / (waves·units·T²). A 494-token prompt through a 4096-wide
    projection on an A100 (108 SMs): 4·32 = 128 tiles, 2 waves, 0.57; 13,824 wide: 432 tiles, 4 full
    waves, 0.96. Below T rows (decode, short verify steps) the kernels are matrix-vector or small-tile
    ones and the call is bandwidth-bound anyway: 1."""
    if rows < GEMM_TILE:
        return 1.0
    tiles = math.ceil(rows / GEMM_TILE) * math.ceil(width / GEMM_TILE)
    waves = math.ceil(tiles / units)
    return rows * width / (waves * units * GEMM_TILE * GEMM_TILE)


@dataclass(frozen=True)
class Cost:
    """Work of one forward call: `flops` arithmetic, `bytes_moved` DRAM traffic, in `dtype`.

    `n_tokens` new tokens per sequence and `batch` sequences are kept for records and reports; the
    time model uses only flops, bytes_moved and dtype. `weight_bytes` is the part of `bytes_moved` that
    is the model's weights: a batching server (`batched_cost`) streams it once for all the sequences of
    a step, so it must be known apart from the per-sequence bytes. 0 means nothing is shared.
    """

    flops: float
    bytes_moved: float
    dtype: str
    n_tokens: int
    batch: int
    weight_bytes: float = 0.0
    shapes: tuple[CallShape, ...] = ()
    """The sequences' shapes (one per call batched into this one); () for work not shaped like a model
    call, which a latency table cannot charge."""
    format: str | None = None
    """The weights' format (quant.py): a runtime may run its kernels at their own η (`Efficiency.formats`)."""
    gemms: tuple[Gemm, ...] = ()
    """The part of `flops` that is weight GEMMs, by kind and width (tile/wave quantisation on GPUs)."""

    @property
    def sampled_tokens(self) -> int:
        """Logits rows over all sequences: what the per-token overhead is charged on."""
        return sum(s.n_logits * s.batch for s in self.shapes)

    def __add__(self, other: Cost) -> Cost:
        """Two pieces of work fused into one call (e.g. a fuser after a model) share one overhead."""
        if self.dtype != other.dtype:
            raise ValueError(f"cannot fuse calls of different dtypes: {self!r} + {other!r}")
        return Cost(self.flops + other.flops, self.bytes_moved + other.bytes_moved, self.dtype,
                    self.n_tokens, max(self.batch, other.batch), self.weight_bytes + other.weight_bytes,
                    self.shapes + other.shapes, self.format if self.format == other.format else None,
                    self.gemms + other.gemms)


def attention_context_sum(n_tokens: int, past_len: int) -> int:
    """Σ over the n new tokens of the context each attends to (causal): Σ_{i=1..n} (p + i).

    = n·p + n(n+1)/2. Token i of the call sees the p cached tokens and the i new tokens up to itself.
    """
    return n_tokens * past_len + n_tokens * (n_tokens + 1) // 2


@lru_cache(maxsize=256)
def _layer_widths(hidden: int, q: int, kv: int, ffn: int) -> tuple[tuple[int, float], ...]:
    """(output width, share of the layer's weights) of one decoder layer's matmuls, Llama/Qwen layout:
    q, k+v, o, gate+up, down. Only the proportions are used, to split the block FLOPs by width."""
    weights = [(q, hidden * q), (kv, 2 * hidden * kv), (hidden, q * hidden), (ffn, 2 * hidden * ffn),
               (hidden, ffn * hidden)]
    total = sum(w for _, w in weights)
    return tuple((width, w / total) for width, w in weights)


def _gemms(geom: ModelGeometry, rows: int, logits_rows: int, p_body: int, p_head: int) -> tuple[Gemm, ...]:
    """The block FLOPs 2·P_body·rows split over the layer's widths by weight share, and the head's."""
    widths = _layer_widths(geom.hidden_size, geom.n_heads * geom.head_dim, geom.n_kv_heads * geom.head_dim,
                           geom.intermediate_size)
    body = [Gemm("body", rows, width, 2.0 * p_body * rows * share) for width, share in widths]
    head = [Gemm("head", logits_rows, geom.vocab_size, 2.0 * p_head * logits_rows)] if logits_rows else []
    return (*body, *head)


def forward_cost(geom: ModelGeometry, n_tokens: int, past_len: int, batch: int, n_logits: int) -> Cost:
    """One forward call over `n_tokens` new tokens per sequence, producing logits for `n_logits` of them.

    FLOPs (multiply-add = 2 FLOPs, Kaplan et al. 2020 eq. 2.1 "C_forward ≈ 2N + 2·n_layer·n_ctx·d_attn"):
      1. block matmuls:  2 · P_body · n                       per sequence
      2. LM head:        2 · P_head · n_logits                per sequence
      3. attention:      4 · L · H · d · Σ_i (p + i)          per sequence
         (QKᵀ: 2·H·d FLOPs per (query, key) pair per layer; softmax·V: the same again)
    Bytes moved (DRAM ↔ chip; weights are streamed once per call and shared by the whole batch):
      4. weights:        (P_body + P_head) · b                once per call (a format: its bytes)
      5. embedding rows: B · n · D · b                        input lookups (a format: its row bytes)
      6. KV read:        B · p · k_kv                         cached keys/values attended to
      7. KV write:       B · n · k_kv                         new keys/values appended
    k_kv is in the KV cache's dtype (`geom.kv_cache_dtype`), which a runtime keeps at 16 bits for
    int4/int8 weights unless configured narrower.
    Activations are left out: at decode they are O(B·n·D) ≪ weights, and where they grow (long
    prefill) the call is compute-bound, so they do not change the max() in `call_time_s`.
    """
    if n_tokens < 1 or past_len < 0 or batch < 1 or not 0 <= n_logits <= n_tokens:
        raise ValueError(f"bad call shape: n_tokens={n_tokens}, past_len={past_len}, batch={batch}, "
                         f"n_logits={n_logits}")
    p_head = geom.vocab_size * geom.hidden_size
    p_body = geom.n_non_embedding_params - p_head
    kv_per_token = geom.kv_bytes_per_token  # in the KV cache's own dtype, not the weights'
    flops_per_seq = (
        2.0 * p_body * n_tokens
        + 2.0 * p_head * n_logits
        + 4.0 * geom.n_layers * geom.n_heads * geom.head_dim * attention_context_sum(n_tokens, past_len)
    )
    weight_bytes = geom.streamed_weight_bytes  # (P_body + P_head)·b, or the format's bytes of them
    bytes_moved = (
        weight_bytes
        + batch * n_tokens * geom.embedding_row_bytes
        + batch * past_len * kv_per_token
        + batch * n_tokens * kv_per_token
    )
    return Cost(flops=batch * flops_per_seq, bytes_moved=float(bytes_moved),
                dtype=geom.dtype, n_tokens=n_tokens, batch=batch,
                weight_bytes=float(weight_bytes), shapes=(CallShape(n_tokens, past_len, n_logits, batch),),
                format=geom.format, gemms=_gemms(geom, batch * n_tokens, batch * n_logits, p_body, p_head))


def prefill_cost(geom: ModelGeometry, n_tokens: int, past_len: int = 0, batch: int = 1) -> Cost:
    """Prompt processing: logits only for the last position, as llama.cpp, vLLM and TensorRT-LLM
    (`gather_last_token_logits`) do, so the LM head runs once per sequence, not n times."""
    return forward_cost(geom, n_tokens, past_len, batch, n_logits=1)


def decode_cost(geom: ModelGeometry, past_len: int, n_tokens: int = 1, batch: int = 1) -> Cost:
    """One decode step; `n_tokens` > 1 is a speculative-decoding verify step, which needs logits at
    every one of the n positions."""
    return forward_cost(geom, n_tokens, past_len, batch, n_logits=n_tokens)


def batched_cost(costs: Sequence[Cost]) -> Cost:
    """One forward call serving the sequences of several calls of one model at once, as an
    iteration-level batching server runs them (Orca's selective batching, Yu et al., OSDI 2022; vLLM,
    Kwon et al., SOSP 2023): the weights are streamed once for the whole step, while every sequence
    keeps its own FLOPs and its own embedding/KV bytes — in particular each attends over its own KV
    cache of its own past_len, so a step's KV read is the sum over its sequences.

        flops = Σ_i flops_i          bytes = W + Σ_i (bytes_i − W)          W = weight_bytes

    For B copies of `decode_cost(geom, p)` this is `decode_cost(geom, p, batch=B)`.
    """
    if not costs:
        raise ValueError("batched_cost needs at least one call")
    first = costs[0]
    for cost in costs[1:]:
        if (cost.dtype, cost.weight_bytes) != (first.dtype, first.weight_bytes):
            raise ValueError(f"only calls of one model share a step: {first!r} and {cost!r}")
    own_bytes = sum(cost.bytes_moved - cost.weight_bytes for cost in costs)
    # one model's calls have the same GEMMs in the same order; in a step each runs once over all the rows
    gemms = tuple(Gemm(same[0].kind, sum(g.rows for g in same), same[0].width, sum(g.flops for g in same))
                  for same in zip(*(cost.gemms for cost in costs), strict=True))
    return Cost(flops=sum(cost.flops for cost in costs), bytes_moved=first.weight_bytes + own_bytes,
                dtype=first.dtype, n_tokens=max(cost.n_tokens for cost in costs),
                batch=sum(cost.batch for cost in costs), weight_bytes=first.weight_bytes,
                shapes=tuple(shape for cost in costs for shape in cost.shapes), format=first.format,
                gemms=gemms)


def roofline_s(profile: DeviceProfile, cost: Cost) -> tuple[float, float]:
    """The two sides of the roofline, (compute_s, memory_s); the larger binds the call. The profile
    must be bound to a runtime (`load_profile` binds its own; `DeviceProfile.with_runtime` another)."""
    eta_c, eta_m, dtype = profile.kernels(cost.format, cost.dtype)
    compute_s = tiled_flops(profile, cost) / (profile.peak_flops_for(dtype) * eta_c)
    memory_s = cost.bytes_moved / (profile.mem_bw_bytes_per_s * eta_m)
    return compute_s, memory_s


def tiled_flops(profile: DeviceProfile, cost: Cost) -> float:
    """The FLOPs a GPU spends on the call: each weight GEMM's FLOPs over its `wave_efficiency` on the
    profile's SMs (a device without `compute_units` computes exactly `cost.flops`)."""
    units = profile.compute_units
    if units is None or not cost.gemms:
        return cost.flops
    return cost.flops + sum(g.flops * (1.0 / wave_efficiency(g.rows, g.width, units) - 1.0)
                            for g in cost.gemms)


def fixed_s(profile: DeviceProfile, cost: Cost) -> float:
    """The overheads of a roofline-charged call: per call, plus per sampled token (logits row)."""
    per_token = profile.overhead_per_token_s or 0.0
    return (profile.overhead_per_call_s or 0.0) + per_token * cost.sampled_tokens


def table_work_s(table: ComputeTable, cost: Cost) -> list[float]:
    """Seconds of each shape of a table-charged call: B_i · n_i · s_per_token(phase_i; n_i, p_i, B),
    with B the sequences of the whole step (a table's batch axis is the step's batch)."""
    return [shape.batch * shape.n_tokens
            * table.s_per_token(shape.phase, shape.n_tokens, shape.past_len, cost.batch)
            for shape in cost.shapes]


def call_time_s(profile: DeviceProfile, cost: Cost) -> float:
    """Duration of one call on a device under its runtime.

    Roofline with fixed costs (Williams et al., CACM 2009; DESIGN.md "Hardware"):

        t = overhead_per_call + overhead_per_token · sampled tokens
            + max( flops / (peak[dtype] · η_c),  bytes_moved / (bw · η_m) )

    or, when the runtime carries a measured latency table and the call is shaped like a model call,
    the table's charge (runtime.py, `ComputeTable`): t = overhead + Σ_i B_i · n_i · s_per_token_i.
    """
    table = profile.table
    if table is not None and cost.shapes:
        return table.overhead_per_call_s + sum(table_work_s(table, cost))
    return fixed_s(profile, cost) + max(roofline_s(profile, cost))


def decode_tokens_per_s(profile: DeviceProfile, geom: ModelGeometry, past_len: int) -> float:
    """Steady decode speed at batch 1 — the number published benchmarks report (llama-bench `tg`)."""
    return 1.0 / call_time_s(profile, decode_cost(geom, past_len))


def prefill_tokens_per_s(profile: DeviceProfile, geom: ModelGeometry, n_tokens: int) -> float:
    """Prompt speed of one call over `n_tokens` (llama-bench `pp`, ExecuTorch "prefill tokens/s")."""
    return n_tokens / call_time_s(profile, prefill_cost(geom, n_tokens))
