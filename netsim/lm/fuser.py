"""Cache-to-cache fusers: a sender model's KV cache projected into a receiver's cache, run by onnxruntime.

FedRefine (../shared/papers/003, eq. 1) lets a receiver LLM M₂ decode on C(F₁₂, M₁) ∘ C(M₂): the KV cache the
sender M₁ computed for the shared input, passed through a trained fuser F₁₂ and combined with the
receiver's own cache. The fuser follows Cache-to-Cache (C2C, Fu et al. 2025, arXiv 2510.03215): one fuser
per receiver layer j, fed the sender layer `layer_map[j]` and the receiver layer j position by position,

    fused_j = receiver_j + gate_j · weight_j(s, r) · projection_j(s, r)            (C2C's fuser output)

so a closed gate (a layer the training found no use for) leaves the receiver's layer exactly as it was.
The network itself is built and trained in `netsim.lm.fuser_train` (torch, the `train` extra); here it is a
plain ONNX graph, so simulations never import torch.

Layers are aligned bottom-up (the case study: "we align the receiver and sender models layer-by-layer
from the bottom up"): receiver layer j takes sender layer round(j·(Ls−1)/(Lr−1)). For Ls = Lr that is
layer j for layer j; for different depths the literal j ↔ j would leave the receiver's top layers without
a sender layer (SLM → LLM) or never use the sender's top layers (LLM → SLM), so the map keeps the bottom
layers together and spreads the rest by relative depth, as C2C's `build_layer_mapping` does. The map is
stored in each fuser's manifest, so the runtime never recomputes it.

Token alignment (issue 7 item 2): the receiver position r, a token ending at character e_r of the shared
input, takes the sender KV of the *last sender token that ends at or before e_r*. The sender state used
then summarises no text the receiver token has not reached (nothing from the future leaks into a position
during teacher forcing), and it is the most recent such state. For one tokenizer this is the identity.
Byte pieces of one character (byte-level BPE splits "ö" in two) end inside it in proportion to the bytes
they hold (`encode_with_ends`), so no piece takes a sender piece that has read more of the character. A
receiver position with no such sender token (text before the sender's first token ends) keeps its own KV.

When fusion happens (eq. 1's t_{k+1} = P(t_k | fused cache)): the fused cache covers the prompt without
its last token; the receiver then feeds the last prompt token on top of it, so every generated token is
conditioned on the fused cache. Training (`fuser_train`) and `fusion_nll` below use the same split.
"""

from __future__ import annotations

import itertools
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
import onnxruntime as ort
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from netsim.errors import InputError, ModelError
from netsim.inputfile import load_yaml, show_loc
from netsim.lm.manifest import sha256_file
from netsim.lm.onnx_lm import KVCache, OnnxCausalLM, cpu_session
from netsim.lm.tokenizer import Tokenizer
from netsim.paths import models_dirs

FUSER_FILE = "fuser.onnx"
FUSER_MANIFEST = "fuser.yaml"
FUSERS_SUBDIR = "fusers"
"""Fusers live in `<models dir>/fusers/<sender>--<receiver>/` on the model search path."""
PAIR_SEPARATOR = "--"
KINDS = ("key", "value")


# ---------------------------------------------------------------------------------------------------
# Layer map and token alignment (pure functions)
# ---------------------------------------------------------------------------------------------------


def layer_map(n_sender_layers: int, n_receiver_layers: int) -> tuple[int, ...]:
    """Sender layer for each receiver layer: round(j·(Ls−1)/(Lr−1)), bottom layers together (module doc).

    Rounds half up (not Python's half-to-even) so the map does not depend on parity. A one-layer receiver
    takes the sender's bottom layer (bottom-up).
    """
    if n_sender_layers < 1 or n_receiver_layers < 1:
        raise ValueError(f"layer_map needs ≥ 1 layer on each side, got {n_sender_layers}, "
                         f"{n_receiver_layers}")
    if n_receiver_layers == 1:
        return (0,)
    scale = (n_sender_layers - 1) / (n_receiver_layers - 1)
    return tuple(math.floor(j * scale + 0.5) for j in range(n_receiver_layers))


def align_tokens(receiver_ends: Sequence[float], sender_ends: Sequence[float]) -> np.ndarray:
    """For each receiver token, the index of the last sender token ending at or before it (−1: none).

    Both arguments are character end offsets (exclusive; `encode_with_ends`) of consecutive tokens of the
    same text, so they never decrease; a start token that covers no text ends at 0.
    Returns int64 (n_receiver,).
    """
    receiver = np.asarray(receiver_ends, dtype=np.float64).reshape(-1)
    sender = np.asarray(sender_ends, dtype=np.float64).reshape(-1)
    for name, ends in (("receiver", receiver), ("sender", sender)):
        if ends.size and (np.any(np.diff(ends) < 0) or ends[0] < 0):
            raise ValueError(f"align_tokens: {name} end offsets must be ≥ 0 and non-decreasing")
    # searchsorted(side="right") counts sender tokens with end ≤ e_r; the last of them is that count − 1.
    return np.searchsorted(sender, receiver, side="right").astype(np.int64) - 1


def encode_with_ends(tokenizer: Tokenizer, text: str, *,
                     start_id: int | None = None) -> tuple[list[int], np.ndarray]:
    """Token ids of `text` (optionally after a start token) and where each token ends in `text`.

    Ends are character offsets from the tokenizer (tokenizers' `Encoding.offsets`), float64 (n,). Byte
    pieces of one character ("ö" as two byte-level tokens) all report that character's span (a, b); they
    get ends inside it in proportion to the bytes read so far — a + (bytes through this piece / bytes of
    the character)·(b − a) — so the last piece ends at b, one tokenizer aligns to the identity, and across
    tokenizers a piece never takes a sender piece that has read more of the character's bytes. A start
    token covers no text and ends at 0, so the two models' start tokens align with each other.
    """
    encoding = tokenizer.hf.encode(text, add_special_tokens=False)
    spans, tokens = encoding.offsets, encoding.tokens
    ends = np.zeros(len(spans), dtype=np.float64)
    i = 0
    while i < len(spans):
        j = i + 1
        while j < len(spans) and spans[j] == spans[i]:
            j += 1
        start, end = spans[i]
        weights = np.array([_piece_bytes(t) for t in tokens[i:j]], dtype=np.float64)
        ends[i:j] = start + np.cumsum(weights) / weights.sum() * (end - start)
        i = j
    # trim_offsets can pull a whitespace-only token's end below its predecessor's; ends must not decrease.
    ends = np.maximum.accumulate(ends) if ends.size else ends
    ids = list(encoding.ids)
    if start_id is not None:
        ids = [start_id, *ids]
        ends = np.concatenate([np.zeros(1), ends])
    return ids, ends


_BYTE_FALLBACK = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")


def _piece_bytes(token: str) -> int:
    """Bytes a piece of a split character holds: one for a byte-fallback token (`<0xE6>`, SentencePiece),
    else one per symbol (byte-level BPE writes each byte as one symbol)."""
    return 1 if _BYTE_FALLBACK.match(token) else max(len(token), 1)


# ---------------------------------------------------------------------------------------------------
# Manifest
# ---------------------------------------------------------------------------------------------------


class PairSide(BaseModel):
    """One model of the pair as the fuser was trained against it (weights pinned by sha256)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    model_sha256: str = Field(description="sha256 of the model's ONNX file the fuser was trained with")
    tokenizer_sha256: str
    n_layers: int = Field(gt=0)
    n_kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)


class FuserManifest(BaseModel):
    """`<fuser_dir>/fuser.yaml`: the pair, the graph's file and hash, its shape, and how it was trained."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="<sender>--<receiver>")
    description: str
    sender: PairSide
    receiver: PairSide
    layer_map: list[int] = Field(description="sender layer feeding each receiver layer (bottom-up)")
    alignment: Literal["identity", "char_end"] = Field(
        description="identity: one tokenizer; char_end: last sender token ending at or before each "
                    "receiver token")
    hidden_size: int = Field(gt=0, description="width of each layer's 3-layer MLP")
    n_params: int = Field(gt=0)
    open_gates: dict[str, list[bool]] = Field(
        description="per receiver layer, whether the key/value gate is open")
    files: dict[str, str] = Field(description='"fuser" → file name in the directory')
    sha256: dict[str, str] = Field(description="file name → hex sha256 digest")
    weights_storage_dtype: str
    license: str
    provenance: dict[str, Any] = Field(default_factory=dict,
                                       description="training data, CPU time, held-out NLL")

    @model_validator(mode="after")
    def _consistent(self) -> FuserManifest:
        if len(self.layer_map) != self.receiver.n_layers:
            raise ValueError(f"layer_map has {len(self.layer_map)} entries for {self.receiver.n_layers} "
                             "receiver layers")
        if any(not 0 <= i < self.sender.n_layers for i in self.layer_map):
            raise ValueError(f"layer_map {self.layer_map} names a layer outside the sender's "
                             f"0..{self.sender.n_layers - 1}")
        if "fuser" not in self.files or self.files["fuser"] not in self.sha256:
            raise ValueError("files.fuser missing or not hashed")
        if self.alignment == "identity" and self.sender.tokenizer_sha256 != self.receiver.tokenizer_sha256:
            raise ValueError("alignment identity needs one tokenizer; the pair's tokenizers differ")
        return self


def pair_name(sender: str, receiver: str) -> str:
    return f"{sender}{PAIR_SEPARATOR}{receiver}"


def read_fuser_manifest(fuser_dir: Path) -> FuserManifest:
    """Parse and validate `<fuser_dir>/fuser.yaml`; every failure is a one-line ModelError."""
    path = Path(fuser_dir) / FUSER_MANIFEST
    if not os.path.lexists(path):
        raise ModelError(f"{path}: no fuser manifest")
    try:
        data = load_yaml(path, "fuser manifest")
    except InputError as exc:
        raise ModelError(str(exc)) from None
    if not isinstance(data, dict):
        raise ModelError(f"{path}: expected a mapping at the top level")
    try:
        return FuserManifest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = show_loc(first["loc"]) or "<root>"
        more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ModelError(f"{path}: {loc}: {first['msg']}{more}") from exc


def write_fuser_manifest(fuser_dir: Path, manifest: FuserManifest) -> None:
    """Keys in field order, so diffs of committed manifests stay small."""
    text = yaml.safe_dump(manifest.model_dump(mode="json"), sort_keys=False, allow_unicode=True, width=110)
    (Path(fuser_dir) / FUSER_MANIFEST).write_text(text, encoding="utf-8")


def io_names(sender_layers: Sequence[int], n_receiver_layers: int) -> tuple[list[str], list[str]]:
    """Graph inputs (the sender layers the map uses, then every receiver layer) and outputs, in order."""
    inputs = [f"sender.{i}.{k}" for i in sender_layers for k in KINDS]
    inputs += [f"receiver.{j}.{k}" for j in range(n_receiver_layers) for k in KINDS]
    outputs = [f"fused.{j}.{k}" for j in range(n_receiver_layers) for k in KINDS]
    return inputs, outputs


def find_fuser_dir(sender: str, receiver: str, search_dirs: Sequence[Path] | None = None) -> Path:
    """`<dir>/fusers/<sender>--<receiver>/` on the model search path (first match wins, as for models)."""
    roots = [Path(d) for d in (search_dirs if search_dirs is not None else models_dirs())]
    for root in roots:
        candidate = root / FUSERS_SUBDIR / pair_name(sender, receiver)
        if (candidate / FUSER_MANIFEST).is_file():
            return candidate
    raise ModelError(f"no fuser for the pair {sender} → {receiver} (looked for "
                     f"{FUSERS_SUBDIR}/{pair_name(sender, receiver)} in {', '.join(map(str, roots))})")


# ---------------------------------------------------------------------------------------------------
# The fuser
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fuser:
    """A loaded fuser: its manifest and one onnxruntime session for all receiver layers.

    `fuse` is pure (caches in, new cache out), so one instance serves every request of a simulation.
    """

    manifest: FuserManifest
    session: ort.InferenceSession
    fuser_dir: Path
    sender_layers: tuple[int, ...]
    """Sender layers the layer map uses, in graph input order."""

    @classmethod
    def load(cls, fuser_dir: Path, *, threads: int = 1) -> Fuser:
        """Load and check a fuser directory: the file's sha256 against the manifest, then the graph's
        inputs and outputs against the pair's geometry. Each failure is one ModelError line."""
        fuser_dir = Path(fuser_dir)
        manifest = read_fuser_manifest(fuser_dir)
        path = fuser_dir / manifest.files["fuser"]
        if not path.is_file():
            raise ModelError(f"{fuser_dir}: fuser file {path.name} missing")
        expected, actual = manifest.sha256[path.name], sha256_file(path)
        if actual != expected:
            raise ModelError(f"{path}: sha256 {actual[:12]}… does not match {FUSER_MANIFEST} "
                             f"({expected[:12]}…); file corrupt or replaced")
        sender_layers = tuple(sorted(set(manifest.layer_map)))
        session = cpu_session(path, threads)
        _check_graph(session, manifest, sender_layers, path)
        return cls(manifest=manifest, session=session, fuser_dir=fuser_dir, sender_layers=sender_layers)

    @property
    def name(self) -> str:
        return self.manifest.name

    def check_pair(self, sender: OnnxCausalLM, receiver: OnnxCausalLM) -> None:
        """Refuse models other than the ones the fuser was trained against (weights pinned by sha256)."""
        for side, lm in (("sender", sender), ("receiver", receiver)):
            pinned: PairSide = getattr(self.manifest, side)
            if lm.sha256 != pinned.model_sha256:
                raise ModelError(f"fuser {self.name}: {side} {lm.name} (sha256 {lm.sha256[:12]}…) is not the "
                                 f"model it was trained with ({pinned.name}, {pinned.model_sha256[:12]}…)")

    def fuse(self, sender: KVCache, receiver: KVCache, alignment: np.ndarray | None = None) -> KVCache:
        """The receiver's cache with the sender's fused in (C2C output, module doc); same shape as `receiver`.

        `alignment` (n_receiver,) gives each receiver position's sender position (`align_tokens`), −1 for
        none; without it the two caches must cover the same tokens (one tokenizer, identity).
        """
        m = self.manifest
        self._check_cache(sender, m.sender, "sender")
        self._check_cache(receiver, m.receiver, "receiver")
        n_positions = receiver.length
        keep_own: np.ndarray | None = None
        if alignment is None:
            if sender.length != n_positions:
                raise ValueError(f"fuser {self.name}: sender cache has {sender.length} tokens, receiver "
                                 f"{n_positions}; pass an alignment")
            index = None
        else:
            index = np.asarray(alignment, dtype=np.int64).reshape(-1)
            if index.size != n_positions or np.any(index >= sender.length) or np.any(index < -1):
                raise ValueError(f"fuser {self.name}: alignment of {index.size} positions does not fit "
                                 f"{sender!r} → {receiver!r}")
            keep_own = index < 0
            if keep_own.all():  # nothing of the sender's text precedes any receiver token
                return receiver
            index = np.where(keep_own, 0, index)
        if n_positions == 0:
            return receiver
        feeds: dict[str, np.ndarray] = {}
        for i in self.sender_layers:
            for kind, array in zip(KINDS, sender.layers[i], strict=True):
                # (1, Hs, Ts, Ds) → (1, Hs, Tr, Ds): each receiver position's aligned sender state
                aligned = array if index is None else np.take(array, index, axis=2)
                feeds[f"sender.{i}.{kind}"] = np.ascontiguousarray(aligned, dtype=np.float32)
        for j, pair in enumerate(receiver.layers):
            for kind, array in zip(KINDS, pair, strict=True):
                feeds[f"receiver.{j}.{kind}"] = np.ascontiguousarray(array, dtype=np.float32)
        out = self.session.run(None, feeds)  # fused.{j}.key, fused.{j}.value: (1, Hr, Tr, Dr)
        if keep_own is not None and keep_own.any():
            for slot, array in enumerate(out):
                own = receiver.layers[slot // 2][slot % 2]
                array[:, :, keep_own] = own[:, :, keep_own]
        dtype = receiver.layers[0][0].dtype
        return KVCache.from_present([a.astype(dtype, copy=False) for a in out])

    def _check_cache(self, cache: KVCache, side: PairSide, role: str) -> None:
        key = cache.layers[0][0]
        heads, dim = key.shape[1], key.shape[3]
        if len(cache.layers) != side.n_layers or heads != side.n_kv_heads or dim != side.head_dim:
            raise ValueError(f"fuser {self.name}: {role} {cache!r} does not match {side.name} "
                             f"({side.n_layers} layers, {side.n_kv_heads} kv heads × {side.head_dim})")
        if key.shape[0] != 1:
            raise ValueError(f"fuser {self.name}: {role} cache holds {key.shape[0]} sequences, expected 1")

    def __repr__(self) -> str:
        m = self.manifest
        return (f"Fuser({m.sender.name!r} → {m.receiver.name!r}, {m.receiver.n_layers} layers, "
                f"{m.n_params / 1e6:.2f}M params)")


def _check_graph(session: ort.InferenceSession, manifest: FuserManifest, sender_layers: Sequence[int],
                 path: Path) -> None:
    """The graph's inputs and outputs must be the manifest's, with the pair's static head dims."""
    inputs, outputs = io_names(sender_layers, manifest.receiver.n_layers)
    got_in = [i.name for i in session.get_inputs()]
    got_out = [o.name for o in session.get_outputs()]
    if got_in != inputs or got_out != outputs:
        raise ModelError(f"{path}: graph inputs/outputs do not match {FUSER_MANIFEST} (expected "
                         f"{inputs[0]} … {outputs[-1]}, found {got_in[:1]} … {got_out[-1:]})")
    for arg in session.get_inputs():
        side = manifest.sender if arg.name.startswith("sender.") else manifest.receiver
        heads, dim = arg.shape[1], arg.shape[3]
        if (heads, dim) != (side.n_kv_heads, side.head_dim):
            raise ModelError(f"{path}: input {arg.name} has heads × head_dim {heads} × {dim}, "
                             f"{FUSER_MANIFEST} says {side.n_kv_heads} × {side.head_dim}")


def fuser_params(path: Path) -> int:
    """Float parameters stored in a fuser graph (each fp16-stored weight counted once)."""
    model = onnx.load(str(path))
    return sum(int(np.prod(t.dims)) for t in model.graph.initializer
               if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16) and len(t.dims) > 0)


# ---------------------------------------------------------------------------------------------------
# Held-out evaluation with onnxruntime only
# ---------------------------------------------------------------------------------------------------


def _nll_sum(logits: np.ndarray, targets: Sequence[int]) -> float:
    """Summed −log softmax(logits)[target] over rows; logits (n, V)."""
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return -float(logp[np.arange(len(targets)), np.asarray(targets)].sum())


def fusion_nll(sender: OnnxCausalLM, receiver: OnnxCausalLM, fuser: Fuser, windows: Sequence[Sequence[int]],
               n_prefix: int, *, control: bool = False) -> dict[str, float]:
    """Receiver NLL (nats/token) on each window's continuation, alone and on the fused prefix cache.

    Each window holds token ids of one tokenizer shared by the pair (identity alignment): its first
    `n_prefix` tokens are the shared input both models prefill (fused: sender → receiver), then the
    receiver feeds tokens n_prefix.. on top and is scored on predicting tokens n_prefix+1.. — the split
    of eq. 1 (module doc). Returns nll_alone, nll_fused, tokens, and delta_stderr: the standard error of
    the mean per-token difference, windows as the paired units.

    `control` adds nll_other_sender: the same fusion fed the sender's cache of the *next* window's
    prefix (same length, other text). The fuser also sees the receiver's own cache, so part of a gain can
    come from it acting as an adapter on the receiver; what fusion with the right sender adds beyond that
    is the sender's contribution (other_sender_gap_stderr: its paired standard error).
    """
    if fuser.manifest.alignment != "identity":
        raise ValueError(f"fusion_nll scores token windows of one tokenizer; {fuser.name} aligns "
                         f"{fuser.manifest.alignment}")
    for window in windows:
        if not 0 < n_prefix < len(window) - 1:
            raise ValueError(f"fusion_nll: window of {len(window)} tokens leaves nothing after {n_prefix}")
    theirs = [sender.prefill(list(w[:n_prefix]))[1] for w in windows]
    alone, fused_nll, other, counts = [], [], [], []
    for i, window in enumerate(windows):
        rest = list(window[n_prefix:])
        _, own = receiver.prefill(list(window[:n_prefix]))
        logits_alone, _ = receiver.verify(rest[:-1], own)  # (len(rest) − 1, V): row i predicts rest[i + 1]
        logits_fused, _ = receiver.verify(rest[:-1], fuser.fuse(theirs[i], own))
        alone.append(_nll_sum(logits_alone, rest[1:]))
        fused_nll.append(_nll_sum(logits_fused, rest[1:]))
        if control:
            logits_other, _ = receiver.verify(rest[:-1], fuser.fuse(theirs[(i + 1) % len(windows)], own))
            other.append(_nll_sum(logits_other, rest[1:]))
        counts.append(len(rest) - 1)
    n = np.asarray(counts, dtype=np.float64)

    def paired_stderr(a: list[float], b: list[float]) -> float:
        per_token = (np.asarray(a) - np.asarray(b)) / n
        return float(per_token.std(ddof=1) / np.sqrt(len(n))) if len(n) > 1 else float("nan")

    result = {"nll_alone": float(sum(alone) / n.sum()), "nll_fused": float(sum(fused_nll) / n.sum()),
              "tokens": int(n.sum()), "delta_stderr": paired_stderr(fused_nll, alone)}
    if control:
        result["nll_other_sender"] = float(sum(other) / n.sum())
        result["other_sender_gap_stderr"] = paired_stderr(fused_nll, other)
    return result


def heldout_windows(tokenizer: Tokenizer, texts: Sequence[str], n_tokens: int) -> list[list[int]]:
    """The first `n_tokens` tokens (after the start token) of each text long enough to have them."""
    start = tokenizer.bos_id if tokenizer.bos_id is not None else tokenizer.eos_id
    head = [] if start is None else [start]
    windows = []
    for text in texts:
        ids = head + tokenizer.encode(text, add_special_tokens=False)
        if len(ids) >= n_tokens:
            windows.append(ids[:n_tokens])
    return windows


# ---------------------------------------------------------------------------------------------------
# Across tokenizers: can the rule apply, and the aligned windows (issue 7 item 2)
# ---------------------------------------------------------------------------------------------------

ALIGNMENT_PROBE = "Shall I compare thee? naïve façade — 日本 🙂\n\n  O Romeo,\tRomeo!"
"""Probe text of `check_alignable`: ASCII words and punctuation, accented letters, a dash, CJK, an emoji
(4 UTF-8 bytes), blank lines, runs of spaces and a tab — the cases where offsets go wrong."""


def check_alignable(sender_tokenizer: Tokenizer, receiver_tokenizer: Tokenizer) -> str | None:
    """None when the character-offset rule (module doc) can align the two tokenizers; else a short reason.

    Both must report, for a probe text, character spans that lie inside the text, never move backwards and
    cover every non-space character, so each token has an end and the last one ends at the text's last
    non-space character. A tokenizer whose offsets are all (0, 0) (some hand-built or converted
    vocabularies) or that drops characters without a span cannot be aligned: the rule would silently give
    every receiver position the sender's start state.
    """
    for role, tokenizer in (("sender", sender_tokenizer), ("receiver", receiver_tokenizer)):
        reason = _offsets_problem(tokenizer, ALIGNMENT_PROBE)
        if reason is not None:
            return f"{role} tokenizer {reason}"
    return None


def _offsets_problem(tokenizer: Tokenizer, text: str) -> str | None:
    encoding = tokenizer.hf.encode(text, add_special_tokens=False)
    spans = encoding.offsets
    if not spans:
        return "encodes the probe text to no tokens"
    if any(not 0 <= a <= b <= len(text) for a, b in spans):
        return "reports character offsets outside the text"
    if any(later[0] < earlier[0] for earlier, later in itertools.pairwise(spans)):
        return "reports character offsets that move backwards"
    covered = np.zeros(len(text), dtype=bool)
    for a, b in spans:
        covered[a:b] = True
    missing = [i for i, ch in enumerate(text) if not ch.isspace() and not covered[i]]
    if missing:
        return (f"reports no character offsets for {len(missing)} of {len(text)} probe characters "
                f"(first {text[missing[0]]!r} at {missing[0]})")
    return None


def start_token(tokenizer: Tokenizer) -> int | None:
    """The document-start token a model conditions on (BOS, else EOS), as `netsim.lm.evaluate` uses it."""
    return tokenizer.bos_id if tokenizer.bos_id is not None else tokenizer.eos_id


@dataclass(frozen=True)
class AlignedWindow:
    """One text read by both models of a pair: the receiver's token window and the sender's prefix.

    The receiver reads `receiver_ids` (start token + text); its first `n_prefix` tokens are the shared
    input, which end at character `prefix_chars` (rounded down when the last is a byte piece of a
    character). The sender reads that same text, `text[:prefix_chars]`, with its own tokenizer and start
    token (`sender_ids`), so none of its states has read past the receiver's prefix. `alignment[r]` is the
    sender position fused into receiver position r (`align_tokens`), −1 for none.
    """

    receiver_ids: list[int]
    sender_ids: list[int]
    alignment: np.ndarray
    n_prefix: int
    prefix_chars: int


def aligned_window(sender_tokenizer: Tokenizer, receiver_tokenizer: Tokenizer, text: str, n_tokens: int,
                   n_prefix: int) -> AlignedWindow | None:
    """The first `n_tokens` receiver tokens of `text` (after its start token) and the sender's reading of
    the first `n_prefix` of them; None when the text is shorter than `n_tokens` receiver tokens."""
    if not 0 < n_prefix < n_tokens:
        raise ValueError(f"aligned_window: prefix {n_prefix} must lie inside the window of {n_tokens}")
    receiver_ids, receiver_ends = encode_with_ends(receiver_tokenizer, text,
                                                   start_id=start_token(receiver_tokenizer))
    if len(receiver_ids) < n_tokens:
        return None
    prefix_chars = math.floor(receiver_ends[n_prefix - 1] + 1e-9)
    sender_ids, sender_ends = encode_with_ends(sender_tokenizer, text[:prefix_chars],
                                               start_id=start_token(sender_tokenizer))
    alignment = align_tokens(receiver_ends[:n_prefix], sender_ends)
    return AlignedWindow(receiver_ids=receiver_ids[:n_tokens], sender_ids=sender_ids, alignment=alignment,
                         n_prefix=n_prefix, prefix_chars=prefix_chars)


def aligned_windows(sender_tokenizer: Tokenizer, receiver_tokenizer: Tokenizer, texts: Sequence[str],
                    n_tokens: int, n_prefix: int) -> list[AlignedWindow]:
    """`aligned_window` of each text long enough (the aligned counterpart of `heldout_windows`)."""
    windows = (aligned_window(sender_tokenizer, receiver_tokenizer, t, n_tokens, n_prefix) for t in texts)
    return [w for w in windows if w is not None]


def fusion_nll_aligned(sender: OnnxCausalLM, receiver: OnnxCausalLM, fuser: Fuser,
                       windows: Sequence[AlignedWindow], *, control: bool = False) -> dict[str, float]:
    """`fusion_nll` across tokenizers: each model reads the window's text with its own tokenizer.

    The receiver prefills its `n_prefix` tokens, the sender prefills its reading of the same characters,
    the fuser fuses them through the window's alignment, and the receiver is scored on its continuation
    exactly as in `fusion_nll` (for one tokenizer the alignment is the identity and the two agree). The
    control fuses the *next* window's sender cache through that window's alignment (same receiver
    positions, other text). Same keys as `fusion_nll`.
    """
    theirs = [sender.prefill(w.sender_ids)[1] for w in windows]
    alone, fused_nll, other, counts = [], [], [], []
    for i, window in enumerate(windows):
        n_prefix, ids = window.n_prefix, window.receiver_ids
        if not 0 < n_prefix < len(ids) - 1:
            raise ValueError(f"fusion_nll_aligned: window of {len(ids)} tokens leaves nothing after "
                             f"{n_prefix}")
        rest = list(ids[n_prefix:])
        _, own = receiver.prefill(list(ids[:n_prefix]))
        logits_alone, _ = receiver.verify(rest[:-1], own)
        logits_fused, _ = receiver.verify(rest[:-1], fuser.fuse(theirs[i], own, window.alignment))
        alone.append(_nll_sum(logits_alone, rest[1:]))
        fused_nll.append(_nll_sum(logits_fused, rest[1:]))
        if control:
            j = (i + 1) % len(windows)
            if windows[j].n_prefix != n_prefix:
                raise ValueError("fusion_nll_aligned: the control needs windows of one prefix length")
            logits_other, _ = receiver.verify(rest[:-1], fuser.fuse(theirs[j], own, windows[j].alignment))
            other.append(_nll_sum(logits_other, rest[1:]))
        counts.append(len(rest) - 1)
    return _nll_summary(alone, fused_nll, other if control else None, counts)


def _nll_summary(alone: list[float], fused: list[float], other: list[float] | None,
                 counts: list[int]) -> dict[str, float]:
    n = np.asarray(counts, dtype=np.float64)

    def paired_stderr(a: list[float], b: list[float]) -> float:
        per_token = (np.asarray(a) - np.asarray(b)) / n
        return float(per_token.std(ddof=1) / np.sqrt(len(n))) if len(n) > 1 else float("nan")

    result = {"nll_alone": float(sum(alone) / n.sum()), "nll_fused": float(sum(fused) / n.sum()),
              "tokens": int(n.sum()), "delta_stderr": paired_stderr(fused, alone)}
    if other is not None:
        result["nll_other_sender"] = float(sum(other) / n.sum())
        result["other_sender_gap_stderr"] = paired_stderr(fused, other)
    return result


def fuser_n_params(sender_kv_dims: Sequence[int], receiver_kv_heads: int, receiver_head_dim: int,
                   hidden: int) -> int:
    """Parameters of a fuser of this architecture (`fuser_train.CacheFuser`) for any pair's geometry.

    `sender_kv_dims[j]` is kv_heads × head_dim of the sender layer feeding receiver layer j. Per receiver
    layer: a key and a value path, each two layer norms, a 3-layer MLP of width `hidden` over the
    concatenated vectors, the projection and the per-head weight, plus the layer's two gate logits. Used to
    bill a fuser sized for the cost cards a run is charged as, not the small bundled pair's.
    """
    dr = receiver_kv_heads * receiver_head_dim
    total = 0
    for ds in sender_kv_dims:
        path = (2 * ds + 2 * dr + (ds + dr) * hidden + hidden + 2 * (hidden * hidden + hidden)
                + hidden * dr + dr + hidden * receiver_kv_heads + receiver_kv_heads)
        total += 2 * path + 2
    return total
