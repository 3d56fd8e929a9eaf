"""Geometry of a causal LM: what compute and bytes it costs, independent of how its tokens are produced.

Both a real ONNX model (geometry read from the graph) and a cost card (geometry of a public model that a
run is *charged as*) are a `ModelGeometry`, so the hardware and network models never need to know which.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from netsim.hardware.quant import (
    KV_BYTES_PER_ELEMENT,
    KvDtype,
    canonical_format,
    default_kv_dtype,
    plain_dtype,
    weight_layout,
)

Dtype = Literal["float32", "float16", "bfloat16", "int8", "int4"]

BYTES_PER_ELEMENT: dict[str, float] = {
    "float32": 4.0, "float16": 2.0, "bfloat16": 2.0, "int8": 1.0, "int4": 0.5,
}


class ModelGeometry(BaseModel):
    """Architecture numbers that set FLOPs, weight bytes and KV-cache bytes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    architecture: str = Field(description="e.g. llama, qwen2, qwen3")
    n_layers: int = Field(gt=0)
    hidden_size: int = Field(gt=0)
    n_heads: int = Field(gt=0)
    n_kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    vocab_size: int = Field(gt=0)
    intermediate_size: int = Field(gt=0)
    n_params: int = Field(gt=0, description="all parameters, embeddings included")
    dtype: Dtype = Field("float32", description="compute dtype; the weights' too unless `format` is set")
    tied_embeddings: bool = False
    format: str | None = Field(
        None, description="quantised format the weights are stored in (a GGUF type such as Q4_K_M, "
                          "awq-g128, gptq-g128, fp8; netsim/hardware/quant.py); None: all at `dtype`")
    kv_dtype: KvDtype | None = Field(
        None, description="KV cache dtype; None: the runtime default, `dtype` for float weights and "
                          "float16 for int8/int4 (never narrower than 16 bits unless set)")

    @field_validator("format")
    @classmethod
    def _quantised_format(cls, value: str | None) -> str | None:
        if value is None:
            return None
        name = canonical_format(value)
        if plain_dtype(name) is not None:
            raise ValueError(f"{name!r} is a plain dtype: set `dtype: {plain_dtype(name)}` instead")
        return name

    def charged_with(self, format: str | None = None, kv_dtype: str | None = None) -> ModelGeometry:
        """This geometry with a scenario's overrides: a weight format (a plain one such as bf16 sets the
        dtype instead) and a KV cache dtype. Unchanged (the same object) when neither is given; a shape
        the format cannot pack raises ValueError with one line."""
        if format is None and kv_dtype is None:
            return self
        update: dict[str, object] = {} if kv_dtype is None else {"kv_dtype": kv_dtype}
        if format is not None:
            name = canonical_format(format)
            dtype = plain_dtype(name)
            update |= {"dtype": dtype, "format": None} if dtype is not None else {"format": name}
        try:
            charged = ModelGeometry.model_validate(self.model_dump() | update)
            if charged.format is not None:
                weight_layout(charged, charged.format)  # packs, or says why not
        except ValidationError as exc:
            reasons = (e["msg"].removeprefix("Value error, ") for e in exc.errors())
            raise ValueError("; ".join(reasons)) from None
        return charged

    @property
    def bytes_per_element(self) -> float:
        """Bytes per element of `dtype`: of every weight when no `format` is set, and of activations."""
        return BYTES_PER_ELEMENT[self.dtype]

    @property
    def kv_cache_dtype(self) -> KvDtype:
        return self.kv_dtype if self.kv_dtype is not None else default_kv_dtype(self.dtype)

    @property
    def kv_bytes_per_element(self) -> float:
        return KV_BYTES_PER_ELEMENT[self.kv_cache_dtype]

    @property
    def kv_bytes_per_token(self) -> int:
        """K and V, every layer: 2 · layers · kv_heads · head_dim · bytes/element of the KV dtype."""
        return int(2 * self.n_layers * self.n_kv_heads * self.head_dim * self.kv_bytes_per_element)

    @property
    def weight_bytes(self) -> int:
        """Resident bytes of the weights: n_params · bytes/element, or the format's real layout (scales,
        zero points, tensors it keeps wider; netsim/hardware/quant.py)."""
        if self.format is None:
            return int(self.n_params * self.bytes_per_element)
        return weight_layout(self, self.format).total

    @property
    def streamed_weight_bytes(self) -> float:
        """Weights a forward call streams: the matmuls of the blocks and the LM head, (P_body + P_head)·b
        (docs/hardware.md); with a format, its bytes of the body and of the head's table."""
        if self.format is None:  # P_body + P_head = n_non_embedding_params
            return self.n_non_embedding_params * self.bytes_per_element
        layout = weight_layout(self, self.format)
        return float(layout.body + (layout.head or layout.embedding))  # a tied table is read as the head

    @property
    def embedding_row_bytes(self) -> float:
        """Bytes of one input-embedding row as stored (read once per input token)."""
        if self.format is None:
            return self.hidden_size * self.bytes_per_element
        return weight_layout(self, self.format).embedding / self.vocab_size

    @property
    def n_non_embedding_params(self) -> int:
        """Parameters touched per token by matmuls (the input embedding is a lookup, not a matmul)."""
        embedding = self.vocab_size * self.hidden_size
        return self.n_params if self.tied_embeddings else self.n_params - embedding
