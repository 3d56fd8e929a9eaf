"""Text ↔ token ids for a model, over a Hugging Face `tokenizer.json` (tokenizers library).

The end-of-sequence and beginning-of-sequence ids matter to the simulator (a request ends at EOS), yet
`tokenizer.json` does not say which token plays which part. The model's `config.json` does
(`eos_token_id`, `bos_token_id`), so the model loader passes those in; a tokenizer read on its own falls
back to `tokenizer_config.json` beside it, then to the usual special-token spellings.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from tokenizers import Tokenizer as HfTokenizer

from netsim.errors import ModelError

EOS_SPELLINGS = ("<|endoftext|>", "</s>", "<|im_end|>", "<|end_of_text|>", "<eos>", "<|eot_id|>")
BOS_SPELLINGS = ("<s>", "<|begin_of_text|>", "<bos>", "<|startoftext|>", "<|im_start|>")


class Tokenizer:
    """A byte-level (or any) tokenizer with the model's special ids attached."""

    def __init__(self, hf: HfTokenizer, *, eos_id: int | None, bos_id: int | None) -> None:
        self.hf = hf
        self.eos_id = eos_id
        self.bos_id = bos_id
        self.vocab_size: int = hf.get_vocab_size(with_added_tokens=True)

    @classmethod
    def from_file(cls, path: Path, *, eos_id: int | None = None, bos_id: int | None = None) -> Tokenizer:
        """Read `tokenizer.json`; ids not given are looked up as the module docstring says."""
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"{path}: tokenizer file missing")
        try:
            hf = HfTokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception on any parse failure
            first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ModelError(f"{path}: not a tokenizers JSON file ({first_line})") from exc
        named = _special_tokens_from_config(path.parent / "tokenizer_config.json")
        if eos_id is None:
            eos_id = _first_known(hf, [named.get("eos_token"), *EOS_SPELLINGS])
        if bos_id is None:
            bos_id = _first_known(hf, [named.get("bos_token"), *BOS_SPELLINGS])
        return cls(hf, eos_id=eos_id, bos_id=bos_id)

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        """Token ids of `text`; special tokens are those the tokenizer's post-processor adds (if any)."""
        return self.hf.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token(self, token_id: int) -> str | None:
        """The vocabulary entry of one id (byte-level form), or None outside the vocabulary."""
        return self.hf.id_to_token(token_id)

    def __repr__(self) -> str:
        return f"Tokenizer(vocab={self.vocab_size}, eos={self.eos_id}, bos={self.bos_id})"


def _special_tokens_from_config(path: Path) -> dict[str, str]:
    """`eos_token`/`bos_token` strings from a HF `tokenizer_config.json`, when one sits beside the file."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    found: dict[str, str] = {}
    for key in ("eos_token", "bos_token"):
        value = data.get(key)
        if isinstance(value, dict):  # older configs store AddedToken objects
            value = value.get("content")
        if isinstance(value, str):
            found[key] = value
    return found


def _first_known(hf: HfTokenizer, spellings: Sequence[str | None]) -> int | None:
    for spelling in spellings:
        if spelling is not None and (token_id := hf.token_to_id(spelling)) is not None:
            return token_id
    return None
