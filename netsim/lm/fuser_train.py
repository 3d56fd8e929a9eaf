"""Training cache-to-cache fusers (C2C, Fu et al. 2025) between two frozen bundled LMs; export to ONNX.

Needs the `train` extra (torch, transformers); imported only by scripts/train_fusers.py and the tests —
simulations run the exported graph through `netsim.lm.fuser`.

The network, per receiver layer j and separately for keys and values (C2C keeps the two paths apart):

    s = LN(sender_{map[j]}),  r = LN(receiver_j)            per position, heads flattened: (B, N, H·D)
    h = MLP₃([s ; r])                                        3 × (Linear, GELU), width `hidden`
    p = W_p h          → (B, Hr, N, Dr)                      projection into the receiver's KV heads
    w = σ(W_w h)       → (B, Hr, N, 1)                       learned per-head, per-position weight
    out = receiver_j + g · w · p                             g: the layer's gate

FedRefine's case study calls this "a three-layer MLP network [that] projects the corresponding layer's KV
cache from the sender model into the receiver model. The receiver then mixes the projected KV cache with
its own"; C2C (its C2CProjector) is the same shape with residual FFN blocks and a combiner. Choices here
for tiny CPU-trained models: inputs are layer-normed (K and V magnitudes differ by layer and model), the
projection starts at zero (step 0 reproduces the receiver exactly, like LoRA's B = 0), and the gate is a
scalar per layer and kind, starting open (σ(2)), trained as a binary-concrete relaxation (logistic noise,
temperature annealed from 1 to `final_temperature`) and hard at inference: g = [logit > 0]. C2C uses
Gumbel noise on the same scalar logit from 0; the logistic form makes P(g > ½) = σ(logit) exactly.

Training (FedRefine: the sender prefills the shared input, the receiver decodes on the fused cache): a
window of the packed training stream is split at a random prefix length P; both models prefill the first
P tokens (no gradient), the fuser fuses the two caches, and the receiver runs tokens P.. on top of the
fused cache; the loss is its next-token cross-entropy on those positions (eq. 1). Both models are frozen;
gradients reach the fuser through the receiver's attention over the fused keys and values.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import numpy_helper
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, DynamicCache, PreTrainedModel

from netsim.errors import ModelError
from netsim.lm.corpus import Work
from netsim.lm.evaluate import next_token_passages
from netsim.lm.export import _store_fp16
from netsim.lm.fuser import KINDS, AlignedWindow, aligned_window, io_names, layer_map
from netsim.lm.onnx_lm import CONFIG_FILE, MODEL_FILE, OnnxCausalLM
from netsim.lm.tokenizer import Tokenizer

OPSET = 17
ONNX_MAX_ABS_DIFF = 1e-5
"""The exported fuser must reproduce the torch fuser this closely on random caches."""
LM_MAX_ABS_LOGIT_DIFF = 1e-4
"""A torch model rebuilt from an ONNX file must reproduce its logits this closely..."""
LM_MAX_REL_LOGIT_DIFF = 1e-5
"""...or, for a deep model with large logits, this closely relative to the largest |logit|: float32
rounding grows with depth and scale. SmolLM2-135M (30 layers, |logit| up to 32–40) differs from
onnxruntime by 1.1–1.2·10⁻⁴ (3·10⁻⁶ relative; its keys and values by ≤ 3.1·10⁻⁵), as its own export
differs from torch by 5.1·10⁻⁴ (docs/models-build.md); the bundled models stay within 1e-4."""
GATE_INIT_LOGIT = 2.0

KV = tuple[torch.Tensor, torch.Tensor]
"""One layer's (key, value), each (B, kv_heads, T, head_dim)."""


# ---------------------------------------------------------------------------------------------------
# The frozen language models, rebuilt in torch from their ONNX files
# ---------------------------------------------------------------------------------------------------


def torch_lm_from_onnx(model_dir: Path) -> PreTrainedModel:
    """The bundled model as a frozen torch module with exactly the weights of its `model.onnx`.

    The zoo's checkpoints are not in the repository (`.cache/zoo/` is git-ignored), and the ONNX file is
    the model simulations run, so the fuser is trained against that. The exporter keeps module paths in
    node names (`/model/model/layers.0/self_attn/q_proj/MatMul`): a MatMul's weight initializer is the
    transposed `nn.Linear` weight of that path; norms and the embedding keep their parameter names. The
    rebuilt model is checked against onnxruntime before it is returned.
    """
    model_dir = Path(model_dir)
    config = AutoConfig.from_pretrained(model_dir / CONFIG_FILE)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    graph = onnx.load(str(model_dir / MODEL_FILE)).graph
    arrays = {t.name: numpy_helper.to_array(t).astype(np.float32) for t in graph.initializer}
    for node in graph.node:  # fp16-stored weights: X = Cast(X__fp16) → the array under X's name
        if node.op_type == "Cast" and node.input[0] in arrays:
            arrays[node.output[0]] = arrays.pop(node.input[0])
    state: dict[str, torch.Tensor] = {}
    for node in graph.node:
        for name in node.input:
            if name not in arrays:
                continue
            if name.startswith("model."):  # named parameter of the exporter's wrapper module
                state[name.removeprefix("model.")] = torch.from_numpy(arrays[name])
            elif node.op_type == "MatMul" and node.name.endswith("/MatMul"):
                path = node.name.removeprefix("/model/").removesuffix("/MatMul").replace("/", ".")
                state[f"{path}.weight"] = torch.from_numpy(arrays[name].T.copy())
    expected = {k for k in model.state_dict() if not (config.tie_word_embeddings and k == "lm_head.weight")}
    missing, unknown = expected - set(state), set(state) - expected
    if missing or unknown:
        raise ModelError(f"{model_dir}: cannot map the ONNX weights onto {type(model).__name__} "
                         f"(missing {sorted(missing)[:2]}, unknown {sorted(unknown)[:2]})")
    model.load_state_dict(state, strict=False)
    model.tie_weights()
    if any(t.data_type == onnx.TensorProto.FLOAT16 for t in graph.initializer):
        # The zoo exports fp16-stored models after `model.half().float()`, which also rounds buffers such
        # as RoPE's inv_freq (traced into the graph as a constant); round them the same way.
        model.half().float()
    model.eval().requires_grad_(False)
    diff, scale = _max_logit_diff(model, model_dir)
    limit = max(LM_MAX_ABS_LOGIT_DIFF, LM_MAX_REL_LOGIT_DIFF * scale)
    if not diff <= limit:
        raise ModelError(f"{model_dir}: torch rebuilt from the ONNX weights differs by {diff:.3g} in a logit "
                         f"(limit {limit:.3g})")
    return model


def _max_logit_diff(model: PreTrainedModel, model_dir: Path, n_tokens: int = 24) -> tuple[float, float]:
    """(max |Δlogit| torch vs onnxruntime, max |logit|) on random token ids."""
    lm = OnnxCausalLM.load(model_dir)
    ids = np.random.default_rng(0).integers(0, lm.tokenizer.vocab_size, n_tokens).tolist()
    expected, _ = lm.prefill(ids)
    with torch.no_grad():
        got = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0].numpy()
    return float(np.abs(got - expected).max()), float(np.abs(expected).max())


def prefill_cache(model: PreTrainedModel, ids: torch.Tensor) -> list[KV]:
    """Per layer (key, value), each (B, kv_heads, T, head_dim): the model's cache of `ids` (B, T).

    Runs the decoder stack without the head: the cache does not depend on it, and SmolLM2's 49k-word head
    would cost a third of the sender's prefill."""
    with torch.no_grad():
        out = model.get_decoder()(input_ids=ids, use_cache=True)
    return [(layer.keys, layer.values) for layer in out.past_key_values.layers]


def logits_on_cache(model: PreTrainedModel, ids: torch.Tensor, cache: Sequence[KV]) -> torch.Tensor:
    """Logits (B, T, V) of `ids` (B, T) fed on top of `cache` (positions continue after it)."""
    batch, n_new = ids.shape
    past = cache[0][0].shape[2]
    position_ids = torch.arange(past, past + n_new).expand(batch, n_new)
    dynamic = DynamicCache(ddp_cache_data=[(k, v) for k, v in cache])
    mask = torch.ones(batch, past + n_new, dtype=torch.long)
    return model(input_ids=ids, attention_mask=mask, position_ids=position_ids, past_key_values=dynamic,
                 use_cache=True).logits


# ---------------------------------------------------------------------------------------------------
# The fuser network
# ---------------------------------------------------------------------------------------------------


class KVFuser(nn.Module):
    """One kind (key or value) of one receiver layer: [LN(s); LN(r)] → 3-layer MLP → projection, weight."""

    def __init__(self, sender_dim: int, receiver_heads: int, receiver_head_dim: int, hidden: int) -> None:
        super().__init__()
        receiver_dim = receiver_heads * receiver_head_dim
        self.receiver_heads, self.receiver_head_dim = receiver_heads, receiver_head_dim
        self.norm_sender = nn.LayerNorm(sender_dim)
        self.norm_receiver = nn.LayerNorm(receiver_dim)
        self.mlp = nn.Sequential(
            nn.Linear(sender_dim + receiver_dim, hidden), nn.GELU(),
            nn.Linear(hidden, hidden), nn.GELU(),
            nn.Linear(hidden, hidden), nn.GELU(),
        )
        self.projection = nn.Linear(hidden, receiver_dim)
        self.weight = nn.Linear(hidden, receiver_heads)
        nn.init.zeros_(self.projection.weight)  # step 0 reproduces the receiver (module doc)
        nn.init.zeros_(self.projection.bias)

    def forward(self, sender: torch.Tensor, receiver: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """sender (B, Hs, N, Ds), receiver (B, Hr, N, Dr) → projection (B, Hr, N, Dr), weight (B, Hr, N, 1)"""
        batch, _, n, _ = receiver.shape
        s = sender.transpose(1, 2).flatten(2)  # (B, N, Hs·Ds)
        r = receiver.transpose(1, 2).flatten(2)  # (B, N, Hr·Dr)
        h = self.mlp(torch.cat([self.norm_sender(s), self.norm_receiver(r)], dim=-1))  # (B, N, hidden)
        projection = self.projection(h).view(batch, n, self.receiver_heads, self.receiver_head_dim)
        weight = torch.sigmoid(self.weight(h))  # (B, N, Hr)
        return projection.transpose(1, 2), weight.transpose(1, 2).unsqueeze(-1)


class LayerFuser(nn.Module):
    """One receiver layer: a key and a value path and their two gates (logits, closed below zero)."""

    def __init__(self, sender_dim: int, receiver_heads: int, receiver_head_dim: int, hidden: int) -> None:
        super().__init__()
        self.key = KVFuser(sender_dim, receiver_heads, receiver_head_dim, hidden)
        self.value = KVFuser(sender_dim, receiver_heads, receiver_head_dim, hidden)
        # [key, value], starting open: P(open) = σ(2) ≈ 0.88. The projection starts at zero, so an open gate
        # costs nothing at first, while a closed one starves the projection of gradient — from logit 0 at
        # lr 3e-3 all four gates of the LLM → SLM fuser closed within 50 steps and fusion never learned.
        self.gate_logit = nn.Parameter(torch.full((2,), GATE_INIT_LOGIT))
        self.register_buffer("temperature", torch.tensor(1.0), persistent=False)

    def gates(self, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """Training: binary-concrete samples of `shape` (B, Hr, N, 1); inference: [logit > 0]."""
        if not self.training:
            hard = (self.gate_logit > 0).to(self.gate_logit.dtype)
            return hard[0], hard[1]
        u = torch.rand(2, *shape).clamp(1e-6, 1 - 1e-6)
        noise = torch.log(u) - torch.log1p(-u)  # logistic noise
        soft = torch.sigmoid((self.gate_logit.view(2, *([1] * len(shape))) + noise) / self.temperature)
        return soft[0], soft[1]

    def forward(self, sender: KV, receiver: KV) -> KV:
        key_projection, key_weight = self.key(sender[0], receiver[0])
        value_projection, value_weight = self.value(sender[1], receiver[1])
        key_gate, value_gate = self.gates(tuple(key_weight.shape))
        # C2C's output: receiver + gate · weight · projection, all (B, Hr, N, Dr)
        return (receiver[0] + key_gate * key_weight * key_projection,
                receiver[1] + value_gate * value_weight * value_projection)


class CacheFuser(nn.Module):
    """All receiver layers of one sender → receiver pair; `layer_map[j]` feeds receiver layer j."""

    def __init__(self, *, sender_layers: int, sender_heads: int, sender_head_dim: int, receiver_layers: int,
                 receiver_heads: int, receiver_head_dim: int, hidden: int,
                 layer_map_: Sequence[int] | None = None) -> None:
        super().__init__()
        chosen = layer_map_ if layer_map_ is not None else layer_map(sender_layers, receiver_layers)
        self.layer_map = tuple(chosen)
        if len(self.layer_map) != receiver_layers or not all(0 <= i < sender_layers for i in self.layer_map):
            raise ValueError(f"layer map {self.layer_map} does not fit {sender_layers} → {receiver_layers} "
                             "layers")
        self.layers = nn.ModuleList(
            LayerFuser(sender_heads * sender_head_dim, receiver_heads, receiver_head_dim, hidden)
            for _ in range(receiver_layers))

    def set_temperature(self, value: float) -> None:
        for layer in self.layers:
            layer.temperature.fill_(value)

    def forward(self, sender: Sequence[KV], receiver: Sequence[KV]) -> list[KV]:
        """Per-layer caches in, per receiver layer fused (key, value) out; positions aligned 1:1."""
        return [fuse(sender[self.layer_map[j]], receiver[j]) for j, fuse in enumerate(self.layers)]

    def open_gates(self) -> dict[str, list[bool]]:
        return {kind: [bool(layer.gate_logit[i] > 0) for layer in self.layers]
                for i, kind in enumerate(KINDS)}


def build_fuser(sender: PreTrainedModel, receiver: PreTrainedModel, hidden: int) -> CacheFuser:
    """A fresh fuser shaped for the pair's geometry (layers, KV heads, head_dim read from the configs)."""
    def geometry(model: PreTrainedModel) -> tuple[int, int, int]:
        c = model.config
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        return c.num_hidden_layers, c.num_key_value_heads, head_dim

    ls, hs, ds = geometry(sender)
    lr, hr, dr = geometry(receiver)
    return CacheFuser(sender_layers=ls, sender_heads=hs, sender_head_dim=ds, receiver_layers=lr,
                      receiver_heads=hr, receiver_head_dim=dr, hidden=hidden)


# ---------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------


class FuserTrainConfig(BaseModel):
    """Optimisation settings of one fuser; recorded verbatim in its manifest."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    hidden: int = Field(128, gt=0, description="width of each layer's MLP")
    batch_size: int = Field(16, gt=0)
    min_prefix: int = Field(32, gt=0, description="shortest fused prefix (tokens)")
    max_prefix: int = Field(128, gt=0, description="longest fused prefix (tokens)")
    continuation: int = Field(32, gt=0, description="tokens the receiver decodes (and is scored on)")
    lr: float = Field(2e-3, gt=0)
    min_lr: float = Field(2e-4, ge=0)
    warmup_steps: int = Field(50, ge=0)
    weight_decay: float = Field(0.01, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    final_temperature: float = Field(0.05, gt=0, description="gate relaxation temperature at the end")
    budget_s: float = Field(900.0, gt=0, description="CPU seconds of training steps (one torch thread)")
    max_steps: int | None = Field(None, gt=0, description="fixed step count instead of the budget")
    eval_every: int = Field(100, gt=0)
    eval_prefix: int = Field(96, gt=0, description="fused prefix of the held-out evaluation windows")
    eval_windows: int = Field(48, gt=0, description="held-out windows per periodic evaluation")
    checkpoint_every: int = Field(100, gt=0)
    seed: int = 0


def learning_rate(progress: float, step: int, cfg: FuserTrainConfig) -> float:
    """Linear warmup, then cosine from `lr` to `min_lr` over the budget (as netsim.lm.train does)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(max(progress, 0.0), 1.0)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)


def gate_temperature(progress: float, cfg: FuserTrainConfig) -> float:
    """Geometric anneal 1 → final_temperature, so the relaxed gate ends as the hard one inference uses."""
    return float(cfg.final_temperature ** min(max(progress, 0.0), 1.0))


def fused_loss(fuser: CacheFuser, sender: PreTrainedModel, receiver: PreTrainedModel, batch: torch.Tensor,
               n_prefix: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean next-token cross-entropy of the receiver on `batch[:, n_prefix:]`, (fused, alone).

    `batch` (B, T + 1): tokens 0..P−1 are the shared prefix both models prefill; the receiver feeds tokens
    P..T−1 on top of the fused cache and predicts tokens P+1..T. `alone` (no gradient) is the same
    receiver on its own cache, the baseline the fuser has to beat.
    """
    sender_cache = prefill_cache(sender, batch[:, :n_prefix])
    return _receiver_loss(fuser, receiver, batch, n_prefix, sender_cache, keep_own=None)


def _receiver_loss(fuser: CacheFuser, receiver: PreTrainedModel, batch: torch.Tensor, n_prefix: int,
                   sender_cache: Sequence[KV],
                   keep_own: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The receiver's side of `fused_loss`, given the sender cache already on the receiver's positions.

    `keep_own` (B, P) bool marks positions no sender token precedes; they keep the receiver's own KV, as
    `netsim.lm.fuser.Fuser.fuse` does at run time."""
    inputs, targets = batch[:, :-1], batch[:, n_prefix + 1:]
    receiver_cache = prefill_cache(receiver, inputs[:, :n_prefix])
    fused = fuser(sender_cache, receiver_cache)
    if keep_own is not None:
        mask = keep_own[:, None, :, None]
        fused = [(torch.where(mask, own_k, k), torch.where(mask, own_v, v))
                 for (k, v), (own_k, own_v) in zip(fused, receiver_cache, strict=True)]
    logits = logits_on_cache(receiver, inputs[:, n_prefix:], fused)  # (B, T − P, V)
    loss = nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
    with torch.no_grad():
        alone_logits = logits_on_cache(receiver, inputs[:, n_prefix:], receiver_cache)
        alone = nn.functional.cross_entropy(alone_logits.flatten(0, 1), targets.flatten())
    return loss, alone


@torch.no_grad()
def evaluate(fuser: CacheFuser, sender: PreTrainedModel, receiver: PreTrainedModel, windows: np.ndarray,
             n_prefix: int, batch_size: int = 16) -> tuple[float, float]:
    """(fused, alone) mean NLL on held-out windows (n, P + C + 1), hard gates."""
    batches = [torch.from_numpy(windows[i:i + batch_size]) for i in range(0, len(windows), batch_size)]
    return _evaluate(fuser, [(b, len(b)) for b in batches],
                     lambda b: fused_loss(fuser, sender, receiver, b, n_prefix))


def _evaluate(fuser: CacheFuser, batches: Sequence[tuple[Any, int]],
              loss: Callable[[Any], tuple[torch.Tensor, torch.Tensor]]) -> tuple[float, float]:
    """(fused, alone) NLL averaged over (batch, size) pairs with hard gates; every batch scores the same
    number of tokens per window, so window-weighting is token-weighting."""
    was_training = fuser.training
    fuser.eval()
    fused_sum = alone_sum = 0.0
    count = 0
    with torch.no_grad():
        for batch, size in batches:
            fused, alone = loss(batch)
            fused_sum += float(fused) * size
            alone_sum += float(alone) * size
            count += size
    fuser.train(was_training)
    return fused_sum / count, alone_sum / count


# ---------------------------------------------------------------------------------------------------
# Across tokenizers: both models read the same text (netsim.lm.fuser module doc, token alignment)
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlignedBatch:
    """Windows of one receiver prefix length, each read by both models with their own tokenizers."""

    receiver_ids: torch.Tensor
    """(B, P + C + 1) receiver tokens: the prefix, then the continuation it is scored on."""
    sender_ids: torch.Tensor
    """(B, S) the sender's tokens of each prefix's characters, right-padded to the longest."""
    alignment: torch.Tensor
    """(B, P) int64: the sender position fused into each receiver prefix position, −1 for none."""
    n_prefix: int


def collate_aligned(windows: Sequence[AlignedWindow], pad_id: int) -> AlignedBatch:
    """Stack windows of one shape. The sender's rows are right-padded: a causal model's KV at a real
    position does not depend on anything after it, and the alignment never points past a row's real end."""
    n_prefix = windows[0].n_prefix
    if any(w.n_prefix != n_prefix or len(w.receiver_ids) != len(windows[0].receiver_ids) for w in windows):
        raise ValueError("collate_aligned: windows of one batch need one prefix and window length")
    longest = max(len(w.sender_ids) for w in windows)
    sender = torch.full((len(windows), longest), pad_id, dtype=torch.long)
    for row, w in enumerate(windows):
        sender[row, :len(w.sender_ids)] = torch.tensor(w.sender_ids)
    return AlignedBatch(receiver_ids=torch.tensor([w.receiver_ids for w in windows]), sender_ids=sender,
                        alignment=torch.from_numpy(np.stack([w.alignment for w in windows])),
                        n_prefix=n_prefix)


def gather_aligned(cache: Sequence[KV], alignment: torch.Tensor) -> list[KV]:
    """Each layer's (B, H, S, D) sender KV taken at the aligned positions: (B, H, P, D). Positions with
    no sender token (−1) take position 0; `_receiver_loss` then overwrites them with the receiver's own."""
    index = alignment.clamp(min=0)[:, None, :, None]
    out = []
    for key, value in cache:
        idx = index.expand(-1, key.shape[1], -1, key.shape[3])
        out.append((torch.gather(key, 2, idx), torch.gather(value, 2, idx)))
    return out


def fused_loss_aligned(fuser: CacheFuser, sender: PreTrainedModel, receiver: PreTrainedModel,
                       batch: AlignedBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """`fused_loss` across tokenizers: the sender prefills its own reading of the prefix's characters and
    its cache reaches each receiver position through the alignment (last sender token ending at or before
    the receiver token's end)."""
    sender_cache = gather_aligned(prefill_cache(sender, batch.sender_ids), batch.alignment)
    return _receiver_loss(fuser, receiver, batch.receiver_ids, batch.n_prefix, sender_cache,
                          keep_own=batch.alignment < 0)


def sample_aligned(works: Sequence[Work], sender_tokenizer: Tokenizer, receiver_tokenizer: Tokenizer,
                   rng: np.random.Generator, *, batch_size: int, n_prefix: int, continuation: int,
                   pad_id: int) -> AlignedBatch:
    """A batch cut in text, not token ids: passages of whole lines drawn from `works` (as the held-out
    score draws them), each read by both tokenizers, the receiver's first `n_prefix` tokens (start token
    included) the shared input. Passages too short for the window are skipped."""
    windows: list[AlignedWindow] = []
    while len(windows) < batch_size:
        for text in next_token_passages(works, batch_size, seed=int(rng.integers(2**63))):
            window = aligned_window(sender_tokenizer, receiver_tokenizer, text, n_prefix + continuation + 1,
                                    n_prefix)
            if window is not None and len(windows) < batch_size:
                windows.append(window)
    return collate_aligned(windows, pad_id)


class TrainState(BaseModel):
    """What a checkpoint resumes from besides the tensors."""

    model_config = ConfigDict(extra="forbid")

    step: int = 0
    train_time_s: float = 0.0
    wall_time_s: float = 0.0
    tokens_scored: int = 0
    history: list[dict[str, float]] = Field(default_factory=list)
    done: bool = False


class FuserTask(Protocol):
    """What one training run draws and scores: `draw` takes the step's generator, `loss` the drawn batch,
    `evaluate` scores the fixed held-out windows with hard gates (fused, alone)."""

    def draw(self, rng: np.random.Generator, cfg: FuserTrainConfig) -> Any: ...

    def loss(self, fuser: CacheFuser, batch: Any) -> tuple[torch.Tensor, torch.Tensor]: ...

    def evaluate(self, fuser: CacheFuser) -> tuple[float, float]: ...


@dataclass
class TokenStreamTask:
    """One shared tokenizer (identity alignment): windows of the packed training token stream."""

    sender: PreTrainedModel
    receiver: PreTrainedModel
    train_ids: np.ndarray
    heldout: np.ndarray
    """(n, eval_prefix + continuation + 1) held-out windows"""
    eval_prefix: int

    def draw(self, rng: np.random.Generator, cfg: FuserTrainConfig) -> tuple[torch.Tensor, int]:
        n_prefix = int(rng.integers(cfg.min_prefix, cfg.max_prefix + 1))
        starts = rng.integers(0, len(self.train_ids) - (cfg.max_prefix + cfg.continuation + 1),
                              size=cfg.batch_size)
        stream = torch.from_numpy(self.train_ids)
        return torch.stack([stream[s:s + n_prefix + cfg.continuation + 1] for s in starts]), n_prefix

    def loss(self, fuser: CacheFuser, batch: tuple[torch.Tensor, int]) -> tuple[torch.Tensor, torch.Tensor]:
        return fused_loss(fuser, self.sender, self.receiver, batch[0], batch[1])

    def evaluate(self, fuser: CacheFuser) -> tuple[float, float]:
        return evaluate(fuser, self.sender, self.receiver, self.heldout, self.eval_prefix)


@dataclass
class AlignedTextTask:
    """Two tokenizers (character-offset alignment): passages of the training works, read by both."""

    sender: PreTrainedModel
    receiver: PreTrainedModel
    sender_tokenizer: Tokenizer
    receiver_tokenizer: Tokenizer
    works: Sequence[Work]
    heldout: Sequence[AlignedBatch]
    pad_id: int

    def draw(self, rng: np.random.Generator, cfg: FuserTrainConfig) -> AlignedBatch:
        # min_prefix..max_prefix receiver tokens, the start token included
        n_prefix = int(rng.integers(cfg.min_prefix, cfg.max_prefix + 1))
        return sample_aligned(self.works, self.sender_tokenizer, self.receiver_tokenizer, rng,
                              batch_size=cfg.batch_size, n_prefix=n_prefix, continuation=cfg.continuation,
                              pad_id=self.pad_id)

    def loss(self, fuser: CacheFuser, batch: AlignedBatch) -> tuple[torch.Tensor, torch.Tensor]:
        return fused_loss_aligned(fuser, self.sender, self.receiver, batch)

    def evaluate(self, fuser: CacheFuser) -> tuple[float, float]:
        return _evaluate(fuser, [(b, len(b.receiver_ids)) for b in self.heldout],
                         lambda b: fused_loss_aligned(fuser, self.sender, self.receiver, b))


def train_fuser(fuser: CacheFuser, sender: PreTrainedModel, receiver: PreTrainedModel, train_ids: np.ndarray,
                heldout: np.ndarray, cfg: FuserTrainConfig, *, checkpoint: Path | None = None,
                log: Callable[[str], None] = print) -> TrainState:
    """Train `fuser` over one shared tokenizer (windows of the packed token stream); see `run_training`."""
    task = TokenStreamTask(sender, receiver, train_ids, heldout[:cfg.eval_windows], cfg.eval_prefix)
    return run_training(fuser, task, cfg, checkpoint=checkpoint, log=log)


def run_training(fuser: CacheFuser, task: FuserTask, cfg: FuserTrainConfig, *, checkpoint: Path | None = None,
                 log: Callable[[str], None] = print) -> TrainState:
    """Train `fuser` in place to `max_steps` or `budget_s` CPU seconds; resumes from `checkpoint` if present.

    One torch thread, CPU-time budget (netsim.lm.train's reasoning: other jobs on the shared machine slow
    the run down without changing what it learns). The data order follows (seed, step), so a resumed run
    draws the same batches as an uninterrupted one.
    """
    torch.set_num_threads(1)
    optimizer = torch.optim.AdamW(fuser.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    state = TrainState()
    if checkpoint is not None and checkpoint.exists():
        saved = torch.load(checkpoint, weights_only=False)
        fuser.load_state_dict(saved["fuser"])
        optimizer.load_state_dict(saved["optimizer"])
        state = TrainState.model_validate(saved["state"])
        log(f"resumed at step {state.step}, {state.train_time_s:.0f} CPU s")
    fuser.train()
    wall_start = time.perf_counter() - state.wall_time_s
    while not state.done:
        progress = state.step / cfg.max_steps if cfg.max_steps else state.train_time_s / cfg.budget_s
        if progress >= 1.0:
            state.done = True
            break
        started = time.process_time()
        # 1. a batch of windows and one prefix length, both drawn from (seed, step)
        rng = np.random.default_rng([cfg.seed, state.step])
        torch.manual_seed(cfg.seed * 1_000_003 + state.step)
        batch = task.draw(rng, cfg)
        # 2. schedules: learning rate and the gates' relaxation temperature
        lr = learning_rate(progress, state.step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        fuser.set_temperature(gate_temperature(progress, cfg))
        # 3. receiver loss on the fused cache; gradients reach only the fuser
        loss, alone = task.loss(fuser, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(fuser.parameters(), cfg.grad_clip)
        optimizer.step()
        state.train_time_s += time.process_time() - started
        state.step += 1
        state.tokens_scored += cfg.batch_size * cfg.continuation
        if state.step % cfg.eval_every == 0:
            fused_nll, alone_nll = task.evaluate(fuser)
            state.history.append({"step": state.step, "train_time_s": round(state.train_time_s, 1),
                                  "train_fused": round(loss.item(), 4), "train_alone": round(alone.item(), 4),
                                  "heldout_fused": round(fused_nll, 4), "heldout_alone": round(alone_nll, 4),
                                  "lr": lr})
            gates = fuser.open_gates()
            log(f"step {state.step} t={state.train_time_s:.0f}s lr={lr:.2e} held-out fused {fused_nll:.4f} "
                f"alone {alone_nll:.4f} (Δ {fused_nll - alone_nll:+.4f}) gates k={gates['key']} "
                f"v={gates['value']}")
        if checkpoint is not None and state.step % cfg.checkpoint_every == 0:
            state.wall_time_s = time.perf_counter() - wall_start
            _save(checkpoint, fuser, optimizer, state)
    state.wall_time_s = time.perf_counter() - wall_start
    if checkpoint is not None:
        _save(checkpoint, fuser, optimizer, state)
    fuser.eval()
    return state


def _save(path: Path, fuser: CacheFuser, optimizer: torch.optim.Optimizer, state: TrainState) -> None:
    """Write beside and rename, so an interrupted save never leaves a truncated checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"fuser": fuser.state_dict(), "optimizer": optimizer.state_dict(),
                "state": state.model_dump()}, tmp)
    tmp.replace(path)


# ---------------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------------


class _FlatSignature(nn.Module):
    """Flat tensors in the order of `netsim.lm.fuser.io_names`, around a CacheFuser."""

    def __init__(self, fuser: CacheFuser) -> None:
        super().__init__()
        self.fuser = fuser
        self.sender_layers = sorted(set(fuser.layer_map))

    def forward(self, *flat: torch.Tensor) -> tuple[torch.Tensor, ...]:
        n_sender = len(self.sender_layers)
        sender: dict[int, tuple[torch.Tensor, torch.Tensor]] = {
            layer: (flat[2 * i], flat[2 * i + 1]) for i, layer in enumerate(self.sender_layers)}
        receiver = [(flat[2 * (n_sender + j)], flat[2 * (n_sender + j) + 1])
                    for j in range(len(self.fuser.layers))]
        out: list[torch.Tensor] = []
        for j, fuse in enumerate(self.fuser.layers):
            out += list(fuse(sender[self.fuser.layer_map[j]], receiver[j]))
        return tuple(out)


def random_caches(fuser: CacheFuser, sender_shape: tuple[int, int], receiver_shape: tuple[int, int],
                  n_positions: int, *, batch: int = 1, seed: int = 0) -> tuple[list[torch.Tensor], ...]:
    """(sender flat inputs, receiver flat inputs) of random values, for tracing and checks.

    `*_shape` = (kv_heads, head_dim); tensors (batch, heads, n_positions, head_dim), key then value.
    """
    generator = torch.Generator().manual_seed(seed)
    sender = [torch.randn(batch, sender_shape[0], n_positions, sender_shape[1], generator=generator)
              for _ in sorted(set(fuser.layer_map)) for _ in KINDS]
    receiver = [torch.randn(batch, receiver_shape[0], n_positions, receiver_shape[1], generator=generator)
                for _ in fuser.layers for _ in KINDS]
    return sender, receiver


def export_fuser(fuser: CacheFuser, path: Path, *, sender_shape: tuple[int, int],
                 receiver_shape: tuple[int, int], store_fp16: bool = True) -> dict[str, Any]:
    """Write the fuser (eval mode: hard gates) as one ONNX graph; check it against torch on random caches.

    With `store_fp16` the parameters are rounded to float16 first (so torch and the stored graph are the
    same function) and stored as float16 + Cast, halving the file. Returns what the manifest records.
    """
    fuser.eval()
    if store_fp16:
        with torch.no_grad():
            for p in fuser.parameters():
                p.copy_(p.half().float())
    wrapper = _FlatSignature(fuser).eval()
    inputs, outputs = io_names(wrapper.sender_layers, len(fuser.layers))
    sender, receiver = random_caches(fuser, sender_shape, receiver_shape, n_positions=5, batch=2)
    axes = {name: {0: "batch_size", 2: "positions"} for name in inputs + outputs}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, tuple(sender + receiver), str(path), input_names=inputs,
                          output_names=outputs, dynamic_axes=axes, opset_version=OPSET,
                          do_constant_folding=True, dynamo=False)
    saved = 0
    if store_fp16:
        model = onnx.load(str(path))
        saved = _store_fp16(model.graph)
        onnx.checker.check_model(model)
        onnx.save(model, str(path))
    worst = max(onnx_vs_torch(fuser, path, sender_shape, receiver_shape, n_positions=n, seed=n)
                for n in (1, 7, 40))
    if not worst <= ONNX_MAX_ABS_DIFF:
        raise ModelError(f"{path}: ONNX fuser differs from torch by {worst:.3g} "
                         f"(limit {ONNX_MAX_ABS_DIFF:g})")
    return {"tool": f"torch.onnx legacy tracer, opset {OPSET}", "torch": torch.__version__,
            "onnx_vs_torch_max_abs_diff": worst, "fp16_bytes_saved": saved}


def onnx_vs_torch(fuser: CacheFuser, path: Path, sender_shape: tuple[int, int],
                  receiver_shape: tuple[int, int], *, n_positions: int, seed: int) -> float:
    """Max |Δ| between every fused output of onnxruntime and of the torch fuser on random caches."""
    fuser.eval()
    sender, receiver = random_caches(fuser, sender_shape, receiver_shape, n_positions, seed=seed)
    inputs, _ = io_names(sorted(set(fuser.layer_map)), len(fuser.layers))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    got = session.run(None, {n: t.numpy() for n, t in zip(inputs, sender + receiver, strict=True)})
    with torch.no_grad():
        expected = _FlatSignature(fuser)(*sender, *receiver)
    return max(float(np.abs(g - e.numpy()).max()) for g, e in zip(got, expected, strict=True))
