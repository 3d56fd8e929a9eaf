"""Sizes of what collaborating models exchange, in bytes on the application layer.

Policies ask here instead of writing byte counts inline, so every policy charges a token, a text or a
KV cache the same way and a researcher can find (and change) the encoding in one place. Header and
packet overheads are the network's business, not this module's.
"""

from __future__ import annotations

from netsim.lm.geometry import ModelGeometry

TOKEN_ID_BYTES = 4
"""A token id as int32: vocabularies of modern LLMs (49k–152k) do not fit in 16 bits."""

MESSAGE_HEADER_BYTES = 16
"""Application framing per message (request id, sequence number, kind, length)."""


def text_nbytes(text: str) -> int:
    """UTF-8 text plus framing: what an API call carrying a prompt puts on the wire."""
    return MESSAGE_HEADER_BYTES + len(text.encode("utf-8"))


def tokens_nbytes(n_tokens: int) -> int:
    return MESSAGE_HEADER_BYTES + TOKEN_ID_BYTES * n_tokens


def logits_nbytes(n_positions: int, k: int, value_bytes: int = 2) -> int:
    """Top-k logits per position: k (token id, value) pairs; k = vocab for full distributions."""
    return MESSAGE_HEADER_BYTES + n_positions * k * (TOKEN_ID_BYTES + value_bytes)


def kv_cache_nbytes(geometry: ModelGeometry, n_tokens: int) -> int:
    """K and V of every layer for `n_tokens` positions, in the geometry's dtype (DESIGN.md)."""
    return MESSAGE_HEADER_BYTES + geometry.kv_bytes_per_token * n_tokens
