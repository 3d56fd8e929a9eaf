"""Heterogeneous-rank LoRA on the device SLM for Floe (Tian et al. 2026, arXiv:2602.14302): adapters as
numpy arrays, their aggregation, and (needing the `train` extra) local training and export to ONNX.

The paper's abstract names "a heterogeneity-aware LoRA adaptation strategy" and no equations; the choices
here, and why (docs/policies/floe.md has the full account):

* An adapter adapts each target projection W (d_out × d_in) of every decoder layer by ΔW = s · B A with
  A (r × d_in), B (d_out × r), s = α / r (Hu et al. 2021, eq. 3). B starts at zero, so round 0 is the base.
* Aggregation is SVD re-projection, not zero-padding. Zero-padding every client's A and B to the largest
  rank and averaging A's and B's separately averages the *factors*: (Σ wᵢ Bᵢ)(Σ wᵢ Aᵢ) ≠ Σ wᵢ Bᵢ Aᵢ, so
  the server's update is not the average of the clients' updates (the cross terms Bᵢ Aⱼ are noise), and a
  low-rank client's zero rows dilute the high-rank ones. Here the server forms the exact sample-weighted
  mean of the updates, ΔW̄ = Σ wᵢ ΔWᵢ (wᵢ = tokens trained by client i / all tokens), and sends each
  client the best rank-rᵢ approximation of it, U_r Σ_r V_rᵀ (Eckart–Young): B = U_r Σ_r^½ / √s,
  A = Σ_r^½ V_rᵀ / √s. For an SLM the matrices are at most a few thousand wide, so the SVD is cheap.
* Clients keep a personal part: LoRA on `personal_targets` is trained with the shared part every round
  but never leaves the device (FedPer, Arivazhagan et al. 2019), so the merged model is personalised.
* The personalised model (base + every ΔW merged) is exported to ONNX in the cache, named by a digest of
  the base model's sha256 and the merged deltas: each adapter version is a distinct model file with its
  own sha256, so the inference memo (keyed by model hash) never mixes versions, and a rerun reuses it.

Why hand-written rather than PEFT: the adapters must change rank between clients and be re-projected
every round, which PEFT's modules do not do; the module below is the 20 lines LoRA needs.
Training is deterministic for a seed: one torch thread, `torch.manual_seed`, windows drawn from a numpy
generator seeded by (seed, client, round).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from netsim.lm.geometry import ModelGeometry

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

__all__ = [
    "Adapter", "LocalTraining", "TrainedAdapter", "aggregate", "export_personalised", "init_adapter",
    "load_base", "merged_digest", "nll_of_texts", "train_adapter",
]

LORA_ALPHA = 16.0
"""α of s = α / r. Fixed across clients, so an update of a given size means the same at every rank."""


def _module_key(layer: int, target: str) -> str:
    """Module path of a target projection inside a Llama/Qwen decoder (as in `named_modules`)."""
    block = "mlp" if target in ("gate_proj", "up_proj", "down_proj") else "self_attn"
    return f"model.layers.{layer}.{block}.{target}"


def projection_shapes(geometry: ModelGeometry) -> dict[str, tuple[int, int]]:
    """(d_in, d_out) of every projection a LoRA may adapt (payload.lora_n_params uses the same)."""
    g = geometry
    d, q, kv, ffn = g.hidden_size, g.n_heads * g.head_dim, g.n_kv_heads * g.head_dim, g.intermediate_size
    return {"q_proj": (d, q), "k_proj": (d, kv), "v_proj": (d, kv), "o_proj": (q, d),
            "gate_proj": (d, ffn), "up_proj": (d, ffn), "down_proj": (ffn, d)}


@dataclass(frozen=True)
class Adapter:
    """One client's LoRA: per adapted module, A (r × d_in) and B (d_out × r), float32. What crosses the
    wire is `n_params` numbers (payload.AdapterWeights)."""

    rank: int
    a: Mapping[str, np.ndarray]
    b: Mapping[str, np.ndarray]
    alpha: float = LORA_ALPHA

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    @property
    def n_params(self) -> int:
        return sum(self.a[k].size + self.b[k].size for k in self.a)

    def delta(self, key: str) -> np.ndarray:
        """ΔW = s · B A, (d_out, d_in), in float64 so aggregation adds exactly."""
        return self.scale * (self.b[key].astype(np.float64) @ self.a[key].astype(np.float64))

    def modules(self) -> list[str]:
        return sorted(self.a)


def init_adapter(geometry: ModelGeometry, targets: Sequence[str], rank: int, seed: Sequence[int]) -> Adapter:
    """A from PEFT's default init (Kaiming-uniform, bound 1/√d_in), B = 0: ΔW starts at exactly 0."""
    rng = np.random.default_rng(list(seed))
    shapes = projection_shapes(geometry)
    a, b = {}, {}
    for layer in range(geometry.n_layers):
        for target in targets:
            d_in, d_out = shapes[target]
            key = _module_key(layer, target)
            bound = 1.0 / math.sqrt(d_in)
            a[key] = rng.uniform(-bound, bound, size=(rank, d_in)).astype(np.float32)
            b[key] = np.zeros((d_out, rank), dtype=np.float32)
    return Adapter(rank, a, b)


def aggregate(updates: Sequence[tuple[Adapter, float]], ranks: Sequence[int]) -> list[Adapter]:
    """SVD re-projection (module doc): ΔW̄ = Σ wᵢ ΔWᵢ / Σ wᵢ per module, then one adapter per requested
    rank holding the best rank-r approximation of ΔW̄. `updates` are (adapter, weight) pairs."""
    if not updates:
        raise ValueError("aggregate needs at least one update")
    total = sum(w for _, w in updates)
    keys = updates[0][0].modules()
    mean = {k: sum(w * ad.delta(k) for ad, w in updates) / total for k in keys}  # (d_out, d_in)
    svd = {k: np.linalg.svd(m, full_matrices=False) for k, m in mean.items()}
    out = []
    for rank in ranks:
        scale = LORA_ALPHA / rank
        a, b = {}, {}
        for k, (u, s, vt) in svd.items():
            root = np.sqrt(s[:rank] / scale)  # ΔW ≈ U_r Σ_r V_rᵀ = s · (U_r Σ^½/√s)(Σ^½ V_rᵀ/√s)
            b[k] = (u[:, :rank] * root).astype(np.float32)
            a[k] = (root[:, None] * vt[:rank]).astype(np.float32)
        out.append(Adapter(rank, a, b))
    return out


# ---------------------------------------------------------------------------------------------------
# torch side (the `train` extra): base model, local training, merge, export
# ---------------------------------------------------------------------------------------------------


def load_base(model_dir: Path) -> PreTrainedModel:
    """The bundled SLM rebuilt in torch from its model.onnx (checked against onnxruntime), frozen."""
    from netsim.lm.fuser_train import torch_lm_from_onnx

    return torch_lm_from_onnx(Path(model_dir))


@dataclass(frozen=True)
class LocalTraining:
    """One client's local work in one round."""

    steps: int = 20
    batch_size: int = 8
    block_size: int = 128
    lr: float = 3e-3


@dataclass(frozen=True)
class TrainedAdapter:
    shared: Adapter
    personal: Adapter | None
    mean_loss: float
    """Mean training cross-entropy over the round's steps (nats/token)."""
    n_tokens: int
    """Tokens trained on: steps × batch × block (the aggregation weight and the compute charged)."""
    block_size: int
    batch_size: int
    steps: int
    losses: list[float] = field(default_factory=list)


def _lora_module(base: Any, a: np.ndarray, b: np.ndarray, scale: float) -> Any:
    """base(x) + s · (x Aᵀ) Bᵀ with trainable A, B; the base Linear stays frozen."""
    import torch

    class LoraLinear(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.base = base
            self.a = torch.nn.Parameter(torch.from_numpy(a.copy()))  # (r, d_in)
            self.b = torch.nn.Parameter(torch.from_numpy(b.copy()))  # (d_out, r)
            self.scale = scale

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # x (B, T, d_in)
            return self.base(x) + self.scale * ((x @ self.a.T) @ self.b.T)

    return LoraLinear()


def _install(model: Any, adapters: Sequence[Adapter]) -> dict[str, Any]:
    """Replace each adapted Linear of `model` (a deep copy) by a LoraLinear; returns key → module."""
    modules = dict(model.named_modules())
    installed = {}
    for adapter in adapters:
        for key in adapter.modules():
            parent_name, _, child = key.rpartition(".")
            lora = _lora_module(modules[key], adapter.a[key], adapter.b[key], adapter.scale)
            setattr(modules[parent_name], child, lora)
            installed[key] = lora
    return installed


def _extract(installed: Mapping[str, Any], like: Adapter) -> Adapter:
    return Adapter(like.rank, {k: installed[k].a.detach().numpy().copy() for k in like.modules()},
                   {k: installed[k].b.detach().numpy().copy() for k in like.modules()}, like.alpha)


def train_adapter(base: PreTrainedModel, shared: Adapter, personal: Adapter | None, stream: np.ndarray,
                  cfg: LocalTraining, seed: Sequence[int]) -> TrainedAdapter:
    """`cfg.steps` AdamW steps on random windows of the client's packed token `stream`, training the
    shared and personal adapters together on a frozen copy of `base`; deterministic for `seed`."""
    import copy

    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(int(np.random.default_rng(list(seed)).integers(2**31)))
        model = copy.deepcopy(base).train()
        model.requires_grad_(False)
        adapters = [shared] + ([personal] if personal is not None else [])
        installed = _install(model, adapters)
        params = [p for m in installed.values() for p in (m.a, m.b)]
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
        block = min(cfg.block_size, len(stream) - 1)
        rng = np.random.default_rng(list(seed))
        tokens = torch.from_numpy(stream.astype(np.int64))
        losses = []
        for _ in range(cfg.steps):
            # 1. a batch of random windows of the client's own text: (B, block + 1)
            starts = rng.integers(0, len(stream) - block, size=cfg.batch_size)
            batch = torch.stack([tokens[s : s + block + 1] for s in starts])
            # 2. next-token cross-entropy, mean over B·T; gradients reach only A and B
            logits = model(input_ids=batch[:, :-1], use_cache=False).logits  # (B, T, V)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                     batch[:, 1:].reshape(-1))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
    finally:
        torch.set_num_threads(threads)
    return TrainedAdapter(_extract(installed, shared),
                          _extract(installed, personal) if personal is not None else None,
                          float(np.mean(losses)) if losses else float("nan"),
                          cfg.steps * cfg.batch_size * block, block, cfg.batch_size, cfg.steps, losses)


def merged_digest(base_sha256: str, adapters: Sequence[Adapter]) -> str:
    """Content address of base + adapters: sha256 over the base model's hash and every merged ΔW."""
    h = hashlib.sha256(base_sha256.encode())
    for adapter in adapters:
        for key in adapter.modules():
            h.update(key.encode())
            h.update(adapter.delta(key).astype("<f4").tobytes())
    return h.hexdigest()


def merge(base: PreTrainedModel, adapters: Sequence[Adapter]) -> PreTrainedModel:
    """A copy of `base` with W ← W + s·B A for every adapted module (no LoRA modules left)."""
    import copy

    import torch

    model = copy.deepcopy(base)
    modules = dict(model.named_modules())
    with torch.no_grad():
        for adapter in adapters:
            for key in adapter.modules():
                weight = modules[key].weight  # nn.Linear: (d_out, d_in)
                weight += torch.from_numpy(adapter.delta(key).astype(np.float32))
    return model


def export_personalised(base: PreTrainedModel, base_dir: Path, base_sha256: str, adapters: Sequence[Adapter],
                        cache_root: Path, *, name: str, provenance: dict[str, Any]) -> Path:
    """The merged model as ONNX under `cache_root/<digest[:20]>/`, written once (staged, then renamed);
    an existing directory of that digest is reused: the digest names its content."""
    from netsim.lm.export import export_causal_lm
    from netsim.lm.manifest import MANIFEST_FILE
    from netsim.lm.onnx_lm import TOKENIZER_FILE
    from netsim.paths import staged_dir

    digest = merged_digest(base_sha256, adapters)
    target = Path(cache_root) / digest[:20]
    if (target / MANIFEST_FILE).is_file():
        return target
    model = merge(base, adapters)
    try:
        with staged_dir(target) as staging:
            export_causal_lm(model, staging, tokenizer_json=Path(base_dir) / TOKENIZER_FILE, name=name,
                             role="slm", description=f"{name}: LoRA-personalised SLM (Floe)",
                             license="as the base model", provenance={**provenance, "merged_digest": digest})
    except Exception:
        if (target / MANIFEST_FILE).is_file():  # another process of a sweep wrote it first
            return target
        raise
    return target


def nll_of_texts(lm: Any, texts: Sequence[str]) -> tuple[float, int]:
    """(mean next-token NLL in nats, tokens scored) of an OnnxCausalLM on `texts` (evaluate.score_passage)."""
    from netsim.lm.evaluate import score_passage

    total, count = 0.0, 0
    for text in texts:
        nll, n, _, _ = score_passage(lm, text)
        total, count = total + nll, count + n
    return (total / count if count else float("nan")), count


def encode_stream(tokenizer_json: Path, texts: Sequence[str], eos_id: int) -> np.ndarray:
    """The client's passages packed into one token stream, each followed by end-of-text (train.py's way)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    pieces = []
    for encoding in tokenizer.encode_batch(list(texts)):
        pieces += [np.asarray(encoding.ids, dtype=np.int64), np.asarray([eos_id], dtype=np.int64)]
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
