"""What collaborating models send each other, as typed payloads that know their own size.

A policy hands the network a payload object rather than a byte count, so every policy charges a token,
a logit vector or a KV cache the same way, a researcher finds (and changes) each encoding in one place,
and `events.parquet` can report bytes per payload `kind`. Sizes are application-layer bytes: a fixed
MESSAGE_HEADER_BYTES of framing plus the encoded body. Packet headers, segmentation and retransmission
are the network's business (docs/network.md). Formulas and the schemes behind them: docs/payloads.md.

Content is carried where a receiver needs it (token ids, text, top-k pairs) and optional where it is
large and often not needed to decide anything (dense logits, embeddings, KV arrays): a payload is sized
from its geometry alone, so a run can charge a 28-layer cost card while a small bundled model makes the
content. Optional arrays are left out of equality and hashing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal, get_args

import numpy as np

from netsim.lm.geometry import ModelGeometry

if TYPE_CHECKING:
    from netsim.lm.onnx_lm import KVCache as CacheArrays

__all__ = [
    "FLOAT_DTYPES", "LORA_TARGETS", "MESSAGE_HEADER_BYTES", "PAYLOAD_TYPES", "SCALE_BYTES",
    "TOKEN_ID_BYTES", "WIRE_BYTES", "WIRE_DTYPES", "AdapterWeights", "Control", "DenseLogits",
    "Embeddings", "KVCache", "Payload", "Text", "TokenIds", "TopKLogits", "WireDtype", "element_nbytes",
    "lora_n_params", "text_nbytes", "tokens_nbytes", "wire_dtype",
]

WireDtype = Literal["fp32", "fp16", "bf16", "int8", "int4"]
"""How numbers are encoded on the wire; scenario parameters name a dtype with this type."""

WIRE_DTYPES: tuple[WireDtype, ...] = get_args(WireDtype)

WIRE_BYTES: dict[str, float] = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "int8": 1.0, "int4": 0.5}
"""Bytes per element of each wire dtype (int4 packs two elements per byte)."""

FLOAT_DTYPES = ("fp32", "fp16", "bf16")
"""Dtypes that need no scales. Only KVCache models a quantisation scheme, so only it takes int8/int4."""

MESSAGE_HEADER_BYTES = 16
"""Application framing per message (request id, sequence number, kind, length)."""

TOKEN_ID_BYTES = 4
"""A token id as int32: vocabularies of modern LLMs (49k–152k) do not fit in 16 bits."""

SCALE_BYTES = 2
"""One fp16 scale per quantisation group of an int8/int4 KV cache."""

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""Linear layers a LoRA adapter may adapt, named as in Hugging Face PEFT's `target_modules`."""

_FROM_GEOMETRY: dict[str, WireDtype] = {
    "float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "int8": "int8", "int4": "int4",
    # KV cache dtypes without a wire name of their own (netsim/hardware/quant.py KvDtype): the nearest one
    "fp8": "int8", "q8_0": "int8", "q4_0": "int4",
}


def element_nbytes(dtype: str, allowed: tuple[str, ...] = WIRE_DTYPES) -> float:
    """Bytes per element of `dtype`; fails loudly so a typo in a scenario is not charged as something."""
    if dtype not in allowed:
        what = "unknown wire dtype" if dtype not in WIRE_BYTES else "wire dtype not valid here:"
        raise ValueError(f"{what} {dtype!r} (valid: {', '.join(allowed)})")
    return WIRE_BYTES[dtype]


def _check_counts(payload: Payload, **counts: int) -> None:
    for name, value in counts.items():
        if value < 0:
            raise ValueError(f"{type(payload).__name__}: {name} must be ≥ 0, got {value}")


@dataclass(frozen=True, slots=True)
class Payload:
    """One application message. Subclasses set `kind` (the `detail` of its `tx` events) and size
    their body; the header is added here once, so no payload can forget it."""

    kind: ClassVar[str] = "payload"

    @property
    def body_nbytes(self) -> int:
        raise NotImplementedError(f"{type(self).__name__} must size its body")

    @property
    def nbytes(self) -> int:
        """Header plus body: what the network carries for this message."""
        return MESSAGE_HEADER_BYTES + self.body_nbytes


@dataclass(frozen=True, slots=True)
class TokenIds(Payload):
    """Token ids, optionally each with its probability (FedHLM's "token id + probability" uplink).

    body = n · 4 + (n · bytes(prob_dtype) if probs).
    """

    kind: ClassVar[str] = "token_ids"
    ids: tuple[int, ...]
    probs: tuple[float, ...] | None = None
    prob_dtype: WireDtype = "fp16"

    def __post_init__(self) -> None:
        element_nbytes(self.prob_dtype, FLOAT_DTYPES)
        if self.probs is not None and len(self.probs) != len(self.ids):
            raise ValueError(f"TokenIds: {len(self.probs)} probs for {len(self.ids)} ids")

    @property
    def body_nbytes(self) -> int:
        n = len(self.ids)
        probs = 0 if self.probs is None else n * element_nbytes(self.prob_dtype)
        return int(n * TOKEN_ID_BYTES + probs)


@dataclass(frozen=True, slots=True)
class Text(Payload):
    """UTF-8 text, as a chat-completion API call carries a prompt. body = len(text.encode("utf-8"))."""

    kind: ClassVar[str] = "text"
    text: str

    @property
    def body_nbytes(self) -> int:
        return len(self.text.encode("utf-8"))


@dataclass(frozen=True, slots=True)
class TopKLogits(Payload):
    """The k largest logits of each position as (token id, value) pairs, ids as int32.

    `ids[p]` and `values[p]` hold position p's k pairs, largest value first.
    body = positions · k · (4 + bytes(dtype)).
    """

    kind: ClassVar[str] = "topk_logits"
    ids: tuple[tuple[int, ...], ...]
    values: tuple[tuple[float, ...], ...]
    k: int
    dtype: WireDtype = "fp16"

    def __post_init__(self) -> None:
        element_nbytes(self.dtype, FLOAT_DTYPES)
        _check_counts(self, k=self.k)
        if len(self.ids) != len(self.values):
            raise ValueError(f"TopKLogits: {len(self.ids)} id rows but {len(self.values)} value rows")
        for p, (ids, values) in enumerate(zip(self.ids, self.values, strict=True)):
            if len(ids) != self.k or len(values) != self.k:
                raise ValueError(f"TopKLogits: position {p} has {len(ids)} ids and {len(values)} "
                                 f"values, k={self.k}")

    @classmethod
    def from_logits(cls, logits: np.ndarray, k: int, dtype: WireDtype = "fp16") -> TopKLogits:
        """Top-k of model logits (positions, vocab), e.g. from the memo's `block_logits`."""
        logits = np.atleast_2d(logits)  # (positions, vocab)
        top = np.argsort(-logits, axis=-1, kind="stable")[:, :k]  # (positions, k), largest first
        values = np.take_along_axis(logits, top, axis=-1)
        return cls(tuple(tuple(int(i) for i in row) for row in top),
                   tuple(tuple(float(v) for v in row) for row in values), k, dtype)

    @property
    def n_positions(self) -> int:
        return len(self.ids)

    @property
    def body_nbytes(self) -> int:
        return int(self.n_positions * self.k * (TOKEN_ID_BYTES + element_nbytes(self.dtype)))


@dataclass(frozen=True, slots=True)
class DenseLogits(Payload):
    """Full next-token distributions: a value for every vocabulary entry, no ids needed.

    body = positions · vocab · bytes(dtype). `values` (positions, vocab) may ride along.
    """

    kind: ClassVar[str] = "dense_logits"
    n_positions: int
    vocab_size: int
    dtype: WireDtype = "fp16"
    values: np.ndarray | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        element_nbytes(self.dtype, FLOAT_DTYPES)
        _check_counts(self, n_positions=self.n_positions, vocab_size=self.vocab_size)
        if self.values is not None and self.values.shape != (self.n_positions, self.vocab_size):
            raise ValueError(f"DenseLogits: values of shape {self.values.shape} for "
                             f"({self.n_positions}, {self.vocab_size})")

    @property
    def body_nbytes(self) -> int:
        return int(self.n_positions * self.vocab_size * element_nbytes(self.dtype))


@dataclass(frozen=True, slots=True)
class KVCache(Payload):
    """Keys and values of `n_tokens` positions, for some or all layers, in a wire dtype.

    int8/int4 use symmetric per-group absmax quantisation: each (token, layer, K|V, kv_head) vector of
    head_dim elements is cut into head_dim / g groups of g = `group_size` elements (default g = head_dim,
    i.e. one group per vector), each sent as its packed integers plus one fp16 scale; no zero point.
    With L = len(layers) (all layers when None), H = kv_heads, D = head_dim, b = bytes(dtype):

        body = n_tokens · 2 · L · H · (D / g) · (⌈g · b⌉ + s),   s = 2 for int8/int4, else 0

    With `dtype` None (and no `group_size`) the cache goes as the geometry stores it, in its KV dtype
    (`geometry.kv_cache_dtype`: bf16 for a bf16 card, 16-bit for an int4 one unless configured):
    body = n_tokens · 2 · L · H · D · b_kv, the geometry's own KV bytes per token.
    The bytes follow `geometry` (usually the cost card a run is charged as); `cache`, if given, is the
    content the producing model actually computed and may come from a smaller model.
    """

    kind: ClassVar[str] = "kv_cache"
    geometry: ModelGeometry = field(repr=False)
    n_tokens: int
    dtype: WireDtype | None = None  # None: as the geometry stores its KV cache (its kv_cache_dtype)
    layers: tuple[int, ...] | None = None
    group_size: int | None = None
    cache: CacheArrays | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        g = self.geometry
        element_nbytes(self.wire_dtype)
        _check_counts(self, n_tokens=self.n_tokens)
        if self.layers is not None and (len(set(self.layers)) != len(self.layers)
                                        or not all(0 <= i < g.n_layers for i in self.layers)):
            raise ValueError(f"KVCache: layers {self.layers} must be distinct indices in "
                             f"[0, {g.n_layers})")
        if self.group_size is not None:
            if self.wire_dtype in FLOAT_DTYPES:
                raise ValueError(f"KVCache: group_size applies to int8/int4, not {self.wire_dtype}")
            if self.group_size <= 0 or g.head_dim % self.group_size:
                raise ValueError(f"KVCache: group_size {self.group_size} must divide "
                                 f"head_dim {g.head_dim}")
        if self.cache is not None and self.cache.length != self.n_tokens:
            raise ValueError(f"KVCache: {self.cache!r} attached to a payload of {self.n_tokens} tokens")

    @property
    def wire_dtype(self) -> WireDtype:
        return self.dtype if self.dtype is not None else _FROM_GEOMETRY[self.geometry.kv_cache_dtype]

    @property
    def n_layers(self) -> int:
        return self.geometry.n_layers if self.layers is None else len(self.layers)

    @property
    def bytes_per_token(self) -> int:
        """Body bytes per position (the header is per message, not per token)."""
        g, dtype = self.geometry, self.wire_dtype
        if self.dtype is None and self.group_size is None:  # as stored: the KV dtype's own bytes
            return int(2 * self.n_layers * g.n_kv_heads * g.head_dim * g.kv_bytes_per_element)
        quantised = dtype not in FLOAT_DTYPES
        group = (self.group_size or g.head_dim) if quantised else g.head_dim
        per_group = math.ceil(group * element_nbytes(dtype)) + (SCALE_BYTES if quantised else 0)
        return 2 * self.n_layers * g.n_kv_heads * (g.head_dim // group) * per_group

    @property
    def body_nbytes(self) -> int:
        return self.n_tokens * self.bytes_per_token


@dataclass(frozen=True, slots=True)
class Embeddings(Payload):
    """`n_vectors` vectors of `dim` numbers (hidden states, sentence embeddings).

    body = n_vectors · dim · bytes(dtype). `vectors` (n_vectors, dim) may ride along.
    """

    kind: ClassVar[str] = "embeddings"
    n_vectors: int
    dim: int
    dtype: WireDtype = "fp16"
    vectors: np.ndarray | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        element_nbytes(self.dtype, FLOAT_DTYPES)
        _check_counts(self, n_vectors=self.n_vectors, dim=self.dim)
        if self.vectors is not None and self.vectors.shape != (self.n_vectors, self.dim):
            raise ValueError(f"Embeddings: vectors of shape {self.vectors.shape} for "
                             f"({self.n_vectors}, {self.dim})")

    @property
    def body_nbytes(self) -> int:
        return int(self.n_vectors * self.dim * element_nbytes(self.dtype))


@dataclass(frozen=True, slots=True)
class AdapterWeights(Payload):
    """Trainable weights such as a LoRA adapter (Floe); see `lora_n_params`. body = n_params · bytes."""

    kind: ClassVar[str] = "adapter_weights"
    n_params: int
    dtype: WireDtype = "fp16"

    def __post_init__(self) -> None:
        element_nbytes(self.dtype, FLOAT_DTYPES)
        _check_counts(self, n_params=self.n_params)

    @property
    def body_nbytes(self) -> int:
        return int(self.n_params * element_nbytes(self.dtype))


@dataclass(frozen=True, slots=True)
class Control(Payload):
    """A small protocol message (ack, accept/reject, threshold update); `name` says which."""

    kind: ClassVar[str] = "control"
    name: str
    body_bytes: int = 0

    def __post_init__(self) -> None:
        _check_counts(self, body_bytes=self.body_bytes)

    @property
    def body_nbytes(self) -> int:
        return self.body_bytes


PAYLOAD_TYPES: tuple[type[Payload], ...] = (
    TokenIds, Text, TopKLogits, DenseLogits, KVCache, Embeddings, AdapterWeights, Control,
)
"""Every payload type, in the order reports list their kinds."""


def wire_dtype(geometry_dtype: str) -> WireDtype:
    """The wire name of a ModelGeometry dtype ("bfloat16" -> "bf16")."""
    return _FROM_GEOMETRY[geometry_dtype]


def lora_n_params(geometry: ModelGeometry, rank: int,
                  targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")) -> int:
    """Trainable parameters of a LoRA adapter (Hu et al. 2021): each adapted d_in×d_out matrix W gets
    B·A with A of r×d_in and B of d_out×r, so r · (d_in + d_out) per matrix per layer."""
    unknown = sorted(set(targets) - set(LORA_TARGETS))
    if unknown:
        raise ValueError(f"unknown LoRA targets {unknown} (valid: {', '.join(LORA_TARGETS)})")
    if rank <= 0:
        raise ValueError(f"LoRA rank must be > 0, got {rank}")
    g = geometry
    d, q, kv, ffn = g.hidden_size, g.n_heads * g.head_dim, g.n_kv_heads * g.head_dim, g.intermediate_size
    shapes = {  # (d_in, d_out) of each projection in a Llama/Qwen decoder layer
        "q_proj": (d, q), "k_proj": (d, kv), "v_proj": (d, kv), "o_proj": (q, d),
        "gate_proj": (d, ffn), "up_proj": (d, ffn), "down_proj": (ffn, d),
    }
    return g.n_layers * sum(rank * sum(shapes[t]) for t in dict.fromkeys(targets))


def text_nbytes(text: str) -> int:
    """Kept for callers that still pass byte counts; prefer `Text(text)`."""
    return Text(text).nbytes


def tokens_nbytes(n_tokens: int) -> int:
    """Kept for callers that still pass byte counts; prefer `TokenIds(ids)`."""
    return TokenIds((0,) * n_tokens).nbytes

