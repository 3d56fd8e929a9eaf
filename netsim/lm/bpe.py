"""Byte-level BPE tokenizer training for the bundled models (tokenizers library, GPT-2 style bytes).

Byte-level means every string round-trips (no unknown token), which the simulator needs because prompts
come from held-out works whose rare words the training split never saw. One special token,
`<|endoftext|>`, separates documents in training and serves as both BOS and EOS at inference.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from netsim.errors import ModelError

EOS_TOKEN = "<|endoftext|>"
DEFAULT_VOCAB_SIZE = 4096


def train_tokenizer(texts: Iterable[str], *, vocab_size: int = DEFAULT_VOCAB_SIZE,
                    min_frequency: int = 2) -> Tokenizer:
    """Train on `texts` (the training split only); `<|endoftext|>` gets id 0."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def save_tokenizer(tokenizer: Tokenizer, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(path))
    return path


def eos_id(tokenizer: Tokenizer) -> int:
    token_id = tokenizer.token_to_id(EOS_TOKEN)
    if token_id is None:
        raise ModelError(f"tokenizer has no {EOS_TOKEN} token")
    return token_id
