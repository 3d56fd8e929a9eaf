"""Geometry of a causal LM: what compute and bytes it costs, independent of how its tokens are produced.

Both a real ONNX model (geometry read from the graph) and a cost card (geometry of a public model that a
run is *charged as*) are a `ModelGeometry`, so the hardware and network models never need to know which.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

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
    dtype: Dtype = Field("float32", description="dtype of weights and KV cache as charged")
    tied_embeddings: bool = False

    @property
    def bytes_per_element(self) -> float:
        return BYTES_PER_ELEMENT[self.dtype]

    @property
    def kv_bytes_per_token(self) -> int:
        """K and V, every layer: 2 · layers · kv_heads · head_dim · bytes/element (DESIGN.md)."""
        return int(2 * self.n_layers * self.n_kv_heads * self.head_dim * self.bytes_per_element)

    @property
    def weight_bytes(self) -> int:
        return int(self.n_params * self.bytes_per_element)

    @property
    def n_non_embedding_params(self) -> int:
        """Parameters touched per token by matmuls (the input embedding is a lookup, not a matmul)."""
        embedding = self.vocab_size * self.hidden_size
        return self.n_params if self.tied_embeddings else self.n_params - embedding
