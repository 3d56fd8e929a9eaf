"""Weight formats and KV-cache dtypes: the bytes a checkpoint and its cache really occupy.

A 4-bit model is not 0.5 byte per weight: every format stores scales (and often zero points or minimums)
beside the packed integers, keeps some tensors wider, and leaves the norms in floating point. This module
names the formats people run and sizes every tensor of a dense decoder (Llama/Qwen layout) in each, from
the format's own storage layout:

  * GGUF (llama.cpp) file types. A ggml block type stores `weights_per_block` weights in
    `bytes_per_block` bytes (ggml/src/ggml-common.h, e.g. `block_q4_0` = fp16 scale + 16 bytes of
    nibbles = 18 bytes for 32 weights = 4.5 bits). A file type such as Q4_K_M is a *mix*: llama.cpp's
    `llama_tensor_get_type_impl` (src/llama-quant.cpp) gives the output head, attn_v and ffn_down other
    block types than the rest; `_gguf_type` below follows it for dense models without an importance
    matrix. Checked against the bits/weight that tools/quantize/README.md reports for Llama-3.1-8B
    (tests/test_quant.py: Q4_K_S 4.6672 … Q8_0 8.5008, all to 1e-4).
  * AWQ and GPTQ with group size g: 4-bit weights of the decoder's linear layers, an fp16 scale and a
    4-bit zero point per group of g input features of each output column, GPTQ also an int32 group
    index per input feature; embeddings, LM head and norms in fp16 (AutoAWQ `WQLinear_GEMM`, AutoGPTQ
    `QuantLinear` buffers).
  * fp8: vLLM's `quantization="fp8"` — every linear layer but the LM head in FP8 E4M3 with one fp32
    scale per tensor; embeddings, head and norms stay 16-bit (docs.vllm.ai, "FP8 W8A8").
  * Plain dtypes (fp32, fp16, bf16, int8, int4): every parameter at that width and no scales. int8/int4
    are netsim's legacy charge, the one the device profiles were calibrated with (docs/hardware.md).

The geometry is read through the `Shape` protocol rather than `ModelGeometry`, which imports this
module (tests/test_imports.py keeps the import graph acyclic).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, Protocol, cast, get_args

__all__ = [
    "GGML_TYPES", "GGUF_FILE_TYPES", "KV_BYTES_PER_ELEMENT", "KV_DTYPES", "PLAIN_FORMATS", "BlockType",
    "KvDtype", "Shape", "WeightLayout", "bits_per_weight", "canonical_format", "default_kv_dtype",
    "format_names", "plain_dtype", "weight_bytes", "weight_layout",
]


class Shape(Protocol):
    """What the sizes need of a model geometry (a `ModelGeometry` is one)."""

    @property
    def n_layers(self) -> int: ...
    @property
    def hidden_size(self) -> int: ...
    @property
    def n_heads(self) -> int: ...
    @property
    def n_kv_heads(self) -> int: ...
    @property
    def head_dim(self) -> int: ...
    @property
    def vocab_size(self) -> int: ...
    @property
    def intermediate_size(self) -> int: ...
    @property
    def n_params(self) -> int: ...
    @property
    def tied_embeddings(self) -> bool: ...


# -- KV cache ----------------------------------------------------------------------------------------

KvDtype = Literal["float32", "float16", "bfloat16", "fp8", "int8", "q8_0", "q4_0"]
"""How a runtime stores its KV cache. float16 is llama.cpp's default (`--cache-type-k/-v f16`, also
f32/bf16/q8_0/q4_0); vLLM's `kv_cache_dtype: auto` keeps the model's dtype, `fp8` one byte with a
per-tensor scale; TensorRT-LLM offers INT8 and FP8 caches (one byte, per-tensor scale)."""

KV_DTYPES: tuple[KvDtype, ...] = get_args(KvDtype)

KV_BYTES_PER_ELEMENT: dict[str, float] = {
    "float32": 4.0, "float16": 2.0, "bfloat16": 2.0,
    "fp8": 1.0, "int8": 1.0,  # per-tensor scales: a few bytes per layer, not per token (left out)
    "q8_0": 34 / 32, "q4_0": 18 / 32,  # ggml blocks: fp16 scale + 32 int8 / 32 nibbles (ggml-common.h)
}


def default_kv_dtype(weight_dtype: str) -> KvDtype:
    """The cache a runtime keeps unless told otherwise: the model's float dtype, and float16 for int8 or
    int4 weights (llama.cpp's f16 default; vLLM's `auto` = the activation dtype, fp16 for AWQ/GPTQ). A
    cache narrower than 16 bits is always configured (`kv_dtype`), never a consequence of the weights."""
    return cast(KvDtype, weight_dtype) if weight_dtype in ("float32", "float16", "bfloat16") else "float16"


# -- ggml block types ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BlockType:
    """A ggml tensor type: `weights_per_block` values in `bytes_per_block` bytes."""

    name: str
    weights_per_block: int
    bytes_per_block: int

    @property
    def bits_per_weight(self) -> float:
        return 8.0 * self.bytes_per_block / self.weights_per_block

    def nbytes(self, n_weights: int) -> int:
        return n_weights // self.weights_per_block * self.bytes_per_block


GGML_TYPES: dict[str, BlockType] = {t.name: t for t in (
    # ggml/src/ggml-common.h block structs (ggml_half = 2 bytes; QK_K = 256; K_SCALE_SIZE = 12):
    BlockType("F32", 1, 4),
    BlockType("F16", 1, 2),
    BlockType("Q4_0", 32, 2 + 16),           # d; qs[16]                          4.5 bit
    BlockType("Q4_1", 32, 2 + 2 + 16),       # d, m; qs[16]                       5.0 bit
    BlockType("Q5_0", 32, 2 + 4 + 16),       # d; qh[4]; qs[16]                   5.5 bit
    BlockType("Q5_1", 32, 2 + 2 + 4 + 16),   # d, m; qh[4]; qs[16]                6.0 bit
    BlockType("Q8_0", 32, 2 + 32),           # d; qs[32]                          8.5 bit
    BlockType("Q4_K", 256, 4 + 12 + 128),    # d, dmin; scales[12]; qs[128]       4.5 bit
    BlockType("Q5_K", 256, 4 + 12 + 32 + 128),  # d, dmin; scales[12]; qh[32]; qs[128]  5.5 bit
    BlockType("Q6_K", 256, 128 + 64 + 16 + 2),  # ql[128]; qh[64]; scales[16]; d        6.5625 bit
)}

GGUF_FILE_TYPES: dict[str, str] = {
    # llama-quant.cpp `llama_ftype_get_default_type`: the block type of every tensor no rule changes
    "Q4_0": "Q4_0", "Q4_1": "Q4_1", "Q5_0": "Q5_0", "Q5_1": "Q5_1", "Q8_0": "Q8_0",
    "Q4_K_S": "Q4_K", "Q4_K_M": "Q4_K", "Q5_K_S": "Q5_K", "Q5_K_M": "Q5_K", "Q6_K": "Q6_K",
}

_GGUF_FALLBACK = {"Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}
"""llama-quant.cpp `tensor_type_fallback`: the type a tensor whose width is no multiple of 256 gets."""


def _use_more_bits(i_layer: int, n_layers: int) -> bool:
    """llama-quant.cpp `use_more_bits`: the first and last eighth of the layers and every third between."""
    return i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8 or (i_layer - n_layers // 8) % 3 == 2


def _gguf_type(file_type: str, kind: str, layer: int, n_layers: int, n_in: int, tied: bool) -> BlockType:
    """Block type of one tensor in a GGUF file of `file_type` (llama-quant.cpp `llama_tensor_get_type_impl`
    for a dense model without an importance matrix; the Falcon, 70B and mixture-of-experts rules do not
    apply to the decoders charged here). `n_in` is the tensor's row width (ggml ne[0], input features)."""
    name = GGUF_FILE_TYPES[file_type]
    # 1. the output head, or the token table when the head shares it, gets Q6_K (Q8_0 stays Q8_0)
    if kind == "output" or (kind == "token_embd" and tied):
        name = "Q8_0" if name == "Q8_0" or n_in % GGML_TYPES[name].weights_per_block else "Q6_K"
    # 2. V projection and FFN down projection: more bits in some layers of the _M and _S mixes
    elif kind in ("attn_v", "ffn_down"):
        if file_type in ("Q4_K_M", "Q5_K_M") and _use_more_bits(layer, n_layers):
            name = "Q6_K"
        elif file_type == "Q4_K_S" and layer < (4 if kind == "attn_v" else n_layers // 8):
            name = "Q5_K"
    # 3. a row width the block does not divide falls back to a 32-weight type, then to F16
    if n_in % GGML_TYPES[name].weights_per_block:
        if name not in _GGUF_FALLBACK:
            raise ValueError(f"GGUF {file_type}: {kind} rows of {n_in} weights are no multiple of "
                             f"{GGML_TYPES[name].weights_per_block} (llama.cpp refuses this shape)")
        name = _GGUF_FALLBACK[name]
        if n_in % GGML_TYPES[name].weights_per_block:
            name = "F16"
    return GGML_TYPES[name]


# -- formats ------------------------------------------------------------------------------------------

PLAIN_FORMATS: dict[str, str] = {
    "fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "int8": "int8", "int4": "int4",
}
"""Formats that are a plain dtype: every parameter at its width, no scales (the geometry's `dtype`)."""

_GROUPED = re.compile(r"(awq|gptq)-g(32|64|128)")
"""AWQ/GPTQ with group size 32, 64 or 128 — the sizes AutoAWQ's kernels accept (`calculate_zeros_width`)."""


RUNTIME_FORMATS = ("q4f16_1", "8da4w-g32")
"""Formats of one runtime each: MLC-LLM's q4f16_1 and ExecuTorch/XNNPACK's 8da4w with group 32."""


def format_names() -> list[str]:
    """Every format name a card or scenario may use."""
    return [*GGUF_FILE_TYPES, *(f"{m}-g{g}" for m in ("awq", "gptq") for g in (32, 64, 128)), "fp8",
            *RUNTIME_FORMATS, *PLAIN_FORMATS]


def canonical_format(name: str) -> str:
    """The format's canonical spelling (GGUF types upper case, the rest lower case), or ValueError."""
    if name.upper() in GGUF_FILE_TYPES:
        return name.upper()
    if (name.lower() in PLAIN_FORMATS or name.lower() in ("fp8", *RUNTIME_FORMATS)
            or _GROUPED.fullmatch(name.lower())):
        return name.lower()
    raise ValueError(f"unknown weight format {name[:40]!r} (known: {', '.join(format_names())})")


def plain_dtype(format_name: str) -> str | None:
    """The geometry dtype a plain format stands for (bf16 → bfloat16), None for a quantised format."""
    return PLAIN_FORMATS.get(format_name)


@dataclass(frozen=True, slots=True)
class _Matrix:
    """One weight matrix: `n_out` rows of `n_in` weights (ggml ne[0] = n_in, the input features)."""

    kind: str
    layer: int
    n_in: int
    n_out: int


def _matrices(shape: Shape) -> Iterator[_Matrix]:
    """The matmul weights of each decoder layer (Llama/Qwen: q, k, v, o, gated MLP)."""
    d, q, kv, ffn = shape.hidden_size, shape.n_heads * shape.head_dim, shape.n_kv_heads * shape.head_dim, \
        shape.intermediate_size
    for i in range(shape.n_layers):
        yield from (_Matrix("attn_q", i, d, q), _Matrix("attn_k", i, d, kv), _Matrix("attn_v", i, d, kv),
                    _Matrix("attn_output", i, q, d), _Matrix("ffn_gate", i, d, ffn),
                    _Matrix("ffn_up", i, d, ffn), _Matrix("ffn_down", i, ffn, d))


@dataclass(frozen=True, slots=True)
class WeightLayout:
    """Bytes of a model's weights in one format, split as the cost model reads them.

    `embedding`: the input token table (when the head is tied, the one shared table, at the type it is
    stored in); `head`: an untied LM head (0 when tied); `body`: the decoder layers' matrices plus the
    one-dimensional tensors (norms, biases) and the final norm.
    """

    embedding: int
    head: int
    body: int

    @property
    def total(self) -> int:
        return self.embedding + self.head + self.body


def _grouped_nbytes(method: str, g: int, m: _Matrix) -> int:
    """AWQ (AutoAWQ WQLinear_GEMM) or GPTQ (AutoGPTQ QuantLinear) buffers of one linear layer:
    qweight in·out 4-bit = in·out/2 B; qzeros ⌈in/g⌉·out 4-bit packed in int32 = ⌈in/g⌉·out/2 B;
    scales ⌈in/g⌉·out fp16 = 2·⌈in/g⌉·out B; GPTQ also g_idx, one int32 per input feature.
    Per weight: 4 + 4/g + 16/g bits (AWQ at g = 128: 4.15625), GPTQ + 32/out."""
    if m.n_in % g or m.n_out % 8 or (method == "gptq" and m.n_in % 32):
        raise ValueError(f"{method}-g{g}: {m.kind} of {m.n_in}×{m.n_out} does not pack (input features "
                         f"must be a multiple of the group size{' and 32' if method == 'gptq' else ''}, "
                         "output features of 8)")
    groups = m.n_in // g
    nbytes = m.n_in * m.n_out // 2 + groups * m.n_out // 2 + 2 * groups * m.n_out
    return nbytes + (4 * m.n_in if method == "gptq" else 0)


@lru_cache(maxsize=256)
def _layout(shape: Shape, format_name: str) -> WeightLayout:
    table = shape.vocab_size * shape.hidden_size
    matrices = list(_matrices(shape))
    n_matrix = sum(m.n_in * m.n_out for m in matrices)
    n_other = shape.n_params - n_matrix - table * (1 if shape.tied_embeddings else 2)
    if n_other < 0:
        raise ValueError(f"n_params {shape.n_params:,} is smaller than the embeddings and decoder matrices "
                         f"({n_matrix + table:,}): not a Llama/Qwen-style decoder, so {format_name} "
                         "cannot be laid out")
    tied = shape.tied_embeddings
    if format_name in GGUF_FILE_TYPES:
        # embeddings and matrices by their block types; 1-D tensors stay F32 (llama-quant.cpp quantises
        # only tensors of two or more dimensions, and convert_hf_to_gguf writes norms as F32)
        def gguf(kind: str, layer: int, n_in: int, n_weights: int) -> int:
            return _gguf_type(format_name, kind, layer, shape.n_layers, n_in, tied).nbytes(n_weights)
        body = sum(gguf(m.kind, m.layer, m.n_in, m.n_in * m.n_out) for m in matrices) + 4 * n_other
        return WeightLayout(embedding=gguf("token_embd", 0, shape.hidden_size, table),
                            head=0 if tied else gguf("output", 0, shape.hidden_size, table), body=body)
    if format_name == "fp8":
        # FP8 E4M3 linear layers with one fp32 scale each; embeddings, head and norms 16-bit
        body = sum(m.n_in * m.n_out + 4 for m in matrices) + 2 * n_other
        return WeightLayout(embedding=2 * table, head=0 if tied else 2 * table, body=body)
    if format_name == "q4f16_1":
        # MLC-LLM GroupQuantize(group_size=32, int4, model dtype float16, quantize_embedding and
        # quantize_final_fc on): every matrix, the token table and the head as 4-bit values with one fp16
        # scale per 32 (symmetric, no zero point) = 4.5 bit; norms fp16
        def q4(n_in: int, n_weights: int) -> int:
            if n_in % 32:
                raise ValueError(f"q4f16_1: rows of {n_in} weights are no multiple of the group size 32")
            return n_weights // 2 + 2 * (n_weights // 32)
        body = sum(q4(m.n_in, m.n_in * m.n_out) for m in matrices) + 2 * n_other
        q4_table = q4(shape.hidden_size, table)
        return WeightLayout(embedding=q4_table, head=0 if tied else q4_table, body=body)
    if format_name == "8da4w-g32":
        # ExecuTorch XNNPACK `-qmode 8da4w -G 32` with `--embedding-quantize 8,0` (the SpinQuant/QAT
        # Llama 3.2 exports, examples/models/llama/README.md): decoder linears 4-bit with one fp32 scale
        # per 32 (5 bit); token table and output head each int8 per row with an fp32 scale, the head
        # stored as its own tensor even when tied; norms fp32
        def w4(n_in: int, n_weights: int) -> int:
            if n_in % 32:
                raise ValueError(f"8da4w-g32: rows of {n_in} weights are no multiple of the group size 32")
            return n_weights // 2 + 4 * (n_weights // 32)
        body = sum(w4(m.n_in, m.n_in * m.n_out) for m in matrices) + 4 * n_other
        int8_table = table + 4 * shape.vocab_size
        return WeightLayout(embedding=int8_table, head=int8_table, body=body)
    grouped = _GROUPED.fullmatch(format_name)
    if grouped is None:
        raise ValueError(f"{format_name!r} is not a quantised format")
    method, g = grouped.group(1), int(grouped.group(2))
    # quantised decoder linears; embeddings, LM head, norms and biases in fp16
    body = sum(_grouped_nbytes(method, g, m) for m in matrices) + 2 * n_other
    return WeightLayout(embedding=2 * table, head=0 if tied else 2 * table, body=body)


def weight_layout(shape: Shape, format_name: str) -> WeightLayout:
    """Bytes of `shape`'s weights stored as the quantised format `format_name` (canonical spelling)."""
    if format_name in PLAIN_FORMATS:
        raise ValueError(f"{format_name!r} is a plain dtype: every parameter at {plain_dtype(format_name)}")
    return _layout(shape, format_name)


def weight_bytes(shape: Shape, format_name: str) -> int:
    """Resident bytes of the weights in `format_name` (plain formats: n_params × their width)."""
    dtype = plain_dtype(format_name)
    if dtype is not None:
        return int(shape.n_params * {"float32": 4.0, "float16": 2.0, "bfloat16": 2.0, "int8": 1.0,
                                     "int4": 0.5}[dtype])
    return _layout(shape, format_name).total


def bits_per_weight(shape: Shape, format_name: str) -> float:
    """Average bits per parameter, as llama.cpp reports it (file tensor bytes · 8 / parameters)."""
    return 8.0 * weight_bytes(shape, format_name) / shape.n_params

