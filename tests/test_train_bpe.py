"""Byte-level BPE: lossless round trip, the end-of-text token, determinism."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer

from netsim.lm.bpe import EOS_TOKEN, eos_id, save_tokenizer, train_tokenizer

# Made-up training text (no corpus excerpt): enough repetition for merges to form.
TEXTS = ["the quick brown fox jumps over the lazy dog\n" * 20, "a stitch in time saves nine\n" * 20]


def test_vocab_size_and_eos_is_id_zero() -> None:
    tokenizer = train_tokenizer(TEXTS, vocab_size=300, min_frequency=1)
    assert tokenizer.get_vocab_size() == 300
    assert eos_id(tokenizer) == 0
    assert tokenizer.id_to_token(0) == EOS_TOKEN


@pytest.mark.parametrize("text", ["the quick fox", "Ünïcödé — 漢字 🙂\ttabs\n\nnewlines", "  leading spaces"])
def test_any_string_round_trips(text: str) -> None:
    tokenizer = train_tokenizer(TEXTS, vocab_size=300, min_frequency=1)
    ids = tokenizer.encode(text).ids
    assert tokenizer.decode(ids) == text


def test_merges_compress_seen_text() -> None:
    tokenizer = train_tokenizer(TEXTS, vocab_size=300, min_frequency=1)
    text = "the quick brown fox"
    assert len(tokenizer.encode(text).ids) < len(text.encode()) / 2


def test_training_is_deterministic_and_saved_file_reloads(tmp_path: Path) -> None:
    first = train_tokenizer(TEXTS, vocab_size=300, min_frequency=1)
    second = train_tokenizer(TEXTS, vocab_size=300, min_frequency=1)
    assert first.get_vocab() == second.get_vocab()
    path = save_tokenizer(first, tmp_path / "sub" / "tokenizer.json")
    again = Tokenizer.from_file(str(path))
    assert again.encode("the lazy dog").ids == first.encode("the lazy dog").ids
