"""Cost cards against the reference numbers in ANCHORS.md and the decoder parameter closed form."""

from __future__ import annotations

from pathlib import Path

import pytest

from netsim.errors import ModelError
from netsim.lm.cards import list_cards, load_card, read_card
from netsim.lm.geometry import ModelGeometry

# ANCHORS.md "Real model geometry": layers, hidden, heads, kv heads, head_dim, vocab, params (B), KV B/token
ANCHORS = {
    "qwen3-0.6b": (28, 1024, 16, 8, 128, 151_936, 0.596, 114_688),
    "qwen2.5-0.5b": (24, 896, 14, 2, 64, 151_936, 0.494, 12_288),
    "qwen2.5-1.5b": (28, 1536, 12, 2, 128, 151_936, 1.544, 28_672),
    "llama-3.2-1b": (16, 2048, 32, 8, 64, 128_256, 1.236, 32_768),
    "qwen3-4b": (36, 2560, 32, 8, 128, 151_936, 4.02, 147_456),
    "qwen3-8b": (36, 4096, 32, 8, 128, 151_936, 8.19, 147_456),
    "smollm2-135m": (30, 576, 9, 3, 64, 49_152, 0.135, 23_040),
}
# Not in ANCHORS.md; KV bytes by hand from the public configs: 2 · layers · kv_heads · head_dim · 2 B
HAND = {"smollm2-360m": 2 * 32 * 5 * 64 * 2, "smollm2-1.7b": 2 * 24 * 32 * 64 * 2,
        "qwen3-1.7b": 2 * 28 * 8 * 128 * 2, "qwen2.5-3b": 2 * 36 * 2 * 128 * 2,
        "qwen2.5-7b": 2 * 28 * 4 * 128 * 2, "llama-3.2-3b": 2 * 28 * 8 * 128 * 2,
        "llama-3.1-8b": 2 * 32 * 8 * 128 * 2, "gemma-3-270m": 2 * 18 * 1 * 256 * 2,
        "gemma-3-1b": 2 * 26 * 1 * 256 * 2, "gemma-3-4b": 2 * 34 * 4 * 256 * 2,
        "phi-3.5-mini": 2 * 32 * 32 * 96 * 2}

# The size each model card states, in parameters (Hugging Face model cards; Gemma 3 4B: the text decoder,
# 4.3B with the vision encoder the card's "4B" includes). Within 1.5%: the cards round to 2-3 digits.
STATED = {"qwen3-1.7b": 1.7e9, "qwen2.5-3b": 3.09e9, "qwen2.5-7b": 7.61e9, "llama-3.2-3b": 3.21e9,
          "llama-3.1-8b": 8.03e9, "gemma-3-270m": 270e6, "gemma-3-1b": 1.0e9, "gemma-3-4b": 3.88e9,
          "phi-3.5-mini": 3.8e9, "smollm2-135m": 135e6, "smollm2-360m": 362e6, "smollm2-1.7b": 1.71e9}


def test_the_issue_names_every_card() -> None:
    assert set(list_cards()) == set(ANCHORS) | set(HAND)


@pytest.mark.parametrize("name", sorted(ANCHORS))
def test_card_matches_anchors(name: str) -> None:
    layers, hidden, heads, kv_heads, head_dim, vocab, params_b, kv_bytes = ANCHORS[name]
    g = load_card(name)
    assert (g.n_layers, g.hidden_size, g.n_heads, g.n_kv_heads, g.head_dim, g.vocab_size) == \
        (layers, hidden, heads, kv_heads, head_dim, vocab)
    assert g.kv_bytes_per_token == kv_bytes
    assert g.dtype == "bfloat16"
    assert abs(g.n_params / 1e9 - params_b) <= 0.0051 * params_b  # ANCHORS rounds to 3 digits
    assert g.weight_bytes == 2 * g.n_params


@pytest.mark.parametrize("name", sorted(HAND))
def test_other_cards_kv_bytes(name: str) -> None:
    assert load_card(name).kv_bytes_per_token == HAND[name]


def _decoder_params(g: ModelGeometry) -> int:
    """Llama/Qwen decoder, written out here independently of the exporter's formula."""
    q, kv = g.n_heads * g.head_dim, g.n_kv_heads * g.head_dim
    per_layer = g.hidden_size * (2 * q + 2 * kv) + 3 * g.hidden_size * g.intermediate_size + 2 * g.hidden_size
    if g.architecture == "qwen2":
        per_layer += q + 2 * kv  # q/k/v biases
    if g.architecture == "qwen3":
        per_layer += 2 * g.head_dim  # per-head q/k RMSNorm
    if g.architecture == "gemma3":
        per_layer += 2 * g.hidden_size + 2 * g.head_dim  # pre/post-feedforward norms, per-head q/k norms
    head = 0 if g.tied_embeddings else g.vocab_size * g.hidden_size
    return g.vocab_size * g.hidden_size + g.n_layers * per_layer + g.hidden_size + head


@pytest.mark.parametrize("name", sorted(ANCHORS) + sorted(HAND))
def test_card_parameter_count_is_the_closed_form(name: str) -> None:
    card = read_card(name)
    assert card.geometry.n_params == _decoder_params(card.geometry)
    assert card.source


def test_unknown_and_malformed_cards(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"unknown cost card 'gpt-9'.*qwen3-0\.6b"):
        load_card("gpt-9")
    (tmp_path / "bad.yaml").write_text("name: bad\nsource: x\ngeometry: {n_layers: 2}\n")
    with pytest.raises(ModelError, match=r"bad\.yaml: geometry"):
        load_card("bad", tmp_path)
    real = Path(__file__).parents[1] / "models" / "cards" / "qwen3-4b.yaml"
    (tmp_path / "renamed.yaml").write_text(real.read_text())
    with pytest.raises(ModelError, match="card says name 'qwen3-4b'"):
        load_card("renamed", tmp_path)


@pytest.mark.parametrize("name", sorted(STATED))
def test_card_parameter_count_agrees_with_the_size_the_model_card_states(name: str) -> None:
    card = read_card(name)
    assert card.geometry.n_params == pytest.approx(STATED[name], rel=0.015), card.source
    assert "config.json" in card.source and card.geometry.dtype == "bfloat16"


def test_gemma3_cards_say_what_the_geometry_ignores() -> None:
    for name in ("gemma-3-270m", "gemma-3-1b", "gemma-3-4b"):
        card = read_card(name)
        assert card.geometry.head_dim == 256 and card.geometry.tied_embeddings
        assert "sliding-window" in card.source and "Not represented" in card.source
