"""The model store: find models by name on the search path, load each once, check them.

Search path (`netsim.paths.models_dirs()`): `$NETSIM_MODELS_PATH`, the bundled `models/`, then models built
or imported into the cache. A model is a directory holding `model.yaml` (or at least `model.onnx` and
`tokenizer.json`); the first directory of a name on the path wins, so a bundled model cannot be shadowed
by a stale cache entry. A store loads each model once: all nodes of a run and all runs of a process share
one `LanguageModel`, and with it one memo.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from netsim.errors import ModelError
from netsim.lm.cards import load_card
from netsim.lm.fuser import Fuser, find_fuser_dir
from netsim.lm.fusion import FusionMemo
from netsim.lm.geometry import ModelGeometry
from netsim.lm.manifest import MANIFEST_FILE, Manifest, read_manifest
from netsim.lm.memo import DEFAULT_KV_MEMO_NBYTES, DEFAULT_LOGITS_MEMO_NBYTES, LanguageModel
from netsim.lm.onnx_lm import MODEL_FILE, TOKENIZER_FILE, OnnxCausalLM
from netsim.paths import models_dirs

VERIFY_MAX_ABS_LOGIT_DIFF = 1e-4
"""Incremental decode must match a full recompute this closely (the model-zoo acceptance bound)."""


def is_model_dir(path: Path) -> bool:
    return path.is_dir() and ((path / MANIFEST_FILE).is_file()
                              or ((path / MODEL_FILE).is_file() and (path / TOKENIZER_FILE).is_file()))


class ModelStore:
    """Models by name. `disk_memo` turns on the on-disk inference memo (keyed by model sha256); the
    in-memory memo budgets apply to each loaded model (256 MiB of logits rows, 512 MiB of KV caches)."""

    def __init__(self, search_dirs: Sequence[Path] | None = None, disk_memo: Path | None = None, *,
                 threads: int = 1, logits_memo_nbytes: int = DEFAULT_LOGITS_MEMO_NBYTES,
                 kv_memo_nbytes: int = DEFAULT_KV_MEMO_NBYTES) -> None:
        self.search_dirs = [Path(d) for d in (search_dirs if search_dirs is not None else models_dirs())]
        self.disk_memo = disk_memo
        self.threads = threads
        self.memo_budgets = {"logits_memo_nbytes": logits_memo_nbytes, "kv_memo_nbytes": kv_memo_nbytes}
        self._loaded: dict[str, LanguageModel] = {}
        self._fusers: dict[tuple[str, str], Fuser] = {}
        self.fusion = FusionMemo()
        """Fused caches and generations on them (C2C), shared by every run of this process like the models."""

    def names(self) -> list[str]:
        """Every model name on the search path, sorted; a name is listed once."""
        return sorted(self._index())

    def path(self, name: str) -> Path:
        index = self._index()
        if name not in index:
            known = ", ".join(sorted(index)) or "none"
            raise ModelError(f"unknown model {name!r} (known: {known}; "
                             "`netsim models build NAME` or `netsim models import PATH` adds more)")
        return index[name]

    def manifest(self, name: str) -> Manifest:
        return read_manifest(self.path(name))

    def load(self, name: str) -> LanguageModel:
        """The memoised model `name`, loaded (and checked) on first use."""
        if name not in self._loaded:
            lm = OnnxCausalLM.load(self.path(name), threads=self.threads, name=name)
            self._loaded[name] = LanguageModel(lm, disk_dir=self.disk_memo, **self.memo_budgets)
        return self._loaded[name]

    def fuser(self, sender: str, receiver: str) -> Fuser:
        """The trained fuser `sender → receiver` on the model search path, loaded and checked against both
        models' weights once per process (ModelError when there is none or it does not fit them)."""
        key = (sender, receiver)
        if key not in self._fusers:
            fuser = Fuser.load(find_fuser_dir(sender, receiver, self.search_dirs), threads=self.threads)
            fuser.check_pair(self.load(sender).lm, self.load(receiver).lm)
            self._fusers[key] = fuser
        return self._fusers[key]

    def card(self, name: str) -> ModelGeometry:
        """Geometry of the cost card `name`: a bundled card (models/cards/NAME.yaml) or a card file's path."""
        return load_card(name)

    def _index(self) -> dict[str, Path]:
        index: dict[str, Path] = {}
        for root in self.search_dirs:
            if not root.is_dir():
                continue
            for child in sorted(root.iterdir()):
                if child.name not in index and is_model_dir(child):
                    index[child.name] = child
        return index

    def __repr__(self) -> str:
        return f"ModelStore({len(self._index())} models on {[str(d) for d in self.search_dirs]}, " \
               f"{len(self._loaded)} loaded)"


@dataclass(frozen=True)
class Verification:
    """What `verify_model` checked: hashes of every manifest file, and incremental decode vs recompute."""

    name: str
    files_checked: int
    n_tokens: int
    max_abs_logit_diff: float

    @property
    def ok(self) -> bool:
        return self.max_abs_logit_diff < VERIFY_MAX_ABS_LOGIT_DIFF


def verify_model(model_dir: Path, *, n_tokens: int = 24, seed: int = 0) -> Verification:
    """Re-hash the files (loading fails on any mismatch) and compare logits of token-by-token decoding
    after a short prefill against one full forward pass over a seeded random token sequence."""
    lm = OnnxCausalLM.load(model_dir)
    files_checked = len(lm.manifest.sha256) if lm.manifest else 0
    ids = np.random.default_rng(seed).integers(0, lm.tokenizer.vocab_size, n_tokens).tolist()
    full, _ = lm.prefill(ids)
    n_prefill = n_tokens // 3
    logits, cache = lm.prefill(ids[:n_prefill])
    rows = [logits[-1]]
    for token in ids[n_prefill:]:
        row, cache = lm.decode(token, cache)
        rows.append(row)
    diff = float(np.abs(np.stack(rows) - full[n_prefill - 1:]).max())
    return Verification(lm.name, files_checked, n_tokens, diff)
