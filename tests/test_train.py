"""Training loop: schedule closed forms, data packing, parameter counts, and a tiny run that learns."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from netsim.errors import InputError
from netsim.lm.bpe import eos_id, train_tokenizer
from netsim.lm.corpus import load_works, split
from netsim.lm.train import (
    ModelSpec,
    TrainConfig,
    build_model,
    encode_works,
    heldout_blocks,
    learning_rate,
    mean_nll,
    n_params,
    train,
)

TINY = ModelSpec(architecture="llama", hidden_size=32, n_layers=2, n_heads=2, n_kv_heads=1, head_dim=16,
                 intermediate_size=64, max_position_embeddings=128)


@pytest.fixture(scope="module")
def streams():
    """A 512-token BPE over a slice of the training split, and token streams of both splits."""
    try:
        parts = split(load_works())
    except InputError as exc:
        pytest.skip(f"corpus unavailable: {exc}")
    train_texts = [w.text[:60_000] for w in parts["train"][:8]]
    tokenizer = train_tokenizer(train_texts, vocab_size=512)
    eos = eos_id(tokenizer)
    return (tokenizer, encode_works(tokenizer, train_texts, eos),
            encode_works(tokenizer, [parts["heldout"][0].text[:30_000]], eos))


def test_learning_rate_warmup_and_cosine_closed_forms() -> None:
    cfg = TrainConfig(lr=1e-3, min_lr=1e-4, warmup_steps=10)
    assert learning_rate(0.0, 0, cfg) == pytest.approx(1e-4)  # (0 + 1) / 10 of lr
    assert learning_rate(0.0, 9, cfg) == pytest.approx(1e-3)
    assert learning_rate(0.0, 10, cfg) == pytest.approx(1e-3)  # cosine starts at lr
    assert learning_rate(0.5, 500, cfg) == pytest.approx(5.5e-4)  # midpoint: (lr + min_lr) / 2
    assert learning_rate(1.0, 1000, cfg) == pytest.approx(1e-4)
    assert learning_rate(2.0, 2000, cfg) == pytest.approx(1e-4)  # clamped past the end


def test_encode_works_ends_every_text_with_eos(streams) -> None:
    tokenizer, *_ = streams
    eos = eos_id(tokenizer)
    ids = encode_works(tokenizer, ["to be", "or not"], eos)
    first = tokenizer.encode("to be").ids
    second = tokenizer.encode("or not").ids
    assert ids.tolist() == [*first, eos, *second, eos]


def test_heldout_blocks_are_disjoint_windows_spread_over_the_stream() -> None:
    ids = np.arange(1001)
    blocks = heldout_blocks(ids, block_size=100)
    assert blocks.shape == (10, 101)
    # Window i covers [100 i, 100 i + 100]: inputs never overlap, only the last target is shared.
    assert blocks[:, 0].tolist() == list(range(0, 1000, 100))
    picked = heldout_blocks(ids, block_size=100, n_blocks=4)
    assert picked[:, 0].tolist() == [0, 300, 600, 900]
    with pytest.raises(ValueError):
        heldout_blocks(np.arange(50), block_size=100)


@pytest.mark.parametrize("architecture", ["llama", "qwen3"])
def test_parameter_count_matches_closed_form(architecture: str) -> None:
    spec = TINY.model_copy(update={"architecture": architecture})
    model = build_model(spec, vocab_size=512, eos_token_id=0, seed=0)
    h, q, kv, ffn = spec.hidden_size, spec.n_heads * spec.head_dim, spec.n_kv_heads * spec.head_dim, 64
    per_layer = h * q + 2 * h * kv + q * h + 3 * h * ffn + 2 * h  # attention, SwiGLU MLP, two RMSNorms
    if architecture == "qwen3":
        per_layer += 2 * spec.head_dim  # q_norm and k_norm gains
    expected = 512 * h + spec.n_layers * per_layer + h  # tied embedding counted once, final norm
    assert n_params(model) == expected


def test_untrained_model_predicts_near_uniform(streams) -> None:
    _, _, heldout = streams
    model = build_model(TINY, vocab_size=512, eos_token_id=0, seed=0)
    # Small random weights give near-flat logits: the NLL of a uniform guess is ln V.
    assert mean_nll(model, heldout_blocks(heldout, 32, 8)) == pytest.approx(math.log(512), abs=0.1)


def test_a_few_steps_lower_the_heldout_loss(streams) -> None:
    tokenizer, train_ids, heldout = streams
    torch.manual_seed(0)
    model = build_model(TINY, vocab_size=tokenizer.get_vocab_size(), eos_token_id=0, seed=0)
    cfg = TrainConfig(block_size=32, batch_size=8, lr=1e-2, min_lr=1e-3, warmup_steps=5, max_steps=60,
                      eval_every=30, eval_blocks=16, seed=0)
    before = mean_nll(model, heldout_blocks(heldout, 32, 16))
    result = train(model, train_ids, heldout, cfg, log=lambda _: None)
    assert result.steps == 60
    assert result.tokens_seen == 60 * 8 * 32
    assert [h["step"] for h in result.history] == [30, 60]
    assert result.heldout_nll < before - 0.7  # ln 512 ≈ 6.24 → below the unigram entropy
    assert result.heldout_nll == pytest.approx(mean_nll(model, heldout_blocks(heldout, 32, 16)), abs=1e-3)
