"""Pre-training loop for the bundled models: small Llama- or Qwen3-style causal LMs on token-packed text.

Needs the `train` extra (torch, transformers). Deliberately plain (nanoGPT-like): AdamW, linear warmup then
cosine decay to `min_lr`, random contiguous blocks of the packed training stream, periodic held-out loss.
The machine is shared and slow, so training runs to a time budget, counted by default in CPU seconds of
this process with one torch thread: other jobs on the machine then slow a run down without shrinking the
compute it gets (with several threads, a busy machine turns spin-waits into charged CPU time). With no
fixed step count the cosine schedule follows the fraction of the budget spent, so a run always ends
annealed; `max_steps` makes a run exactly repeatable when that matters more than the clock.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from tokenizers import Tokenizer
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedModel, Qwen3Config, Qwen3ForCausalLM


class ModelSpec(BaseModel):
    """Architecture of one bundled model; turned into a Hugging Face config by `build_model`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    architecture: Literal["llama", "qwen3"]
    hidden_size: int = Field(gt=0)
    n_layers: int = Field(gt=0)
    n_heads: int = Field(gt=0)
    n_kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    intermediate_size: int = Field(gt=0)
    max_position_embeddings: int = Field(1024, gt=0)
    rope_theta: float = Field(10000.0, gt=0)
    tie_embeddings: bool = True


class TrainConfig(BaseModel):
    """Optimisation settings; recorded verbatim in the manifest's provenance."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    block_size: int = Field(256, gt=1, description="tokens per training sequence")
    batch_size: int = Field(8, gt=0, description="sequences per step")
    lr: float = Field(2e-3, gt=0)
    min_lr: float = Field(2e-4, ge=0)
    warmup_steps: int = Field(30, ge=0)
    weight_decay: float = Field(0.1, ge=0)
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = Field(1.0, gt=0)
    budget_s: float = Field(600.0, gt=0, description="budget in seconds of `clock`, evaluation excluded")
    clock: Literal["cpu", "wall"] = Field(
        "cpu", description="cpu: process CPU time, so a budget buys the same compute on a shared machine")
    max_steps: int | None = Field(None, gt=0, description="fixed step count; None = run to the budget")
    eval_every: int = Field(50, gt=0, description="steps between held-out evaluations")
    eval_blocks: int = Field(48, gt=0, description="held-out blocks per periodic evaluation")
    seed: int = 0
    threads: int = Field(1, gt=0, description="torch threads; 1 avoids spin-waiting on a shared machine")


class TrainResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: int
    tokens_seen: int
    train_time_s: float
    """Seconds of the config's clock spent in training steps."""
    wall_time_s: float
    """Wall-clock seconds of the whole run, evaluations included."""
    final_train_loss: float
    heldout_nll: float
    history: list[dict[str, float]]


def build_model(spec: ModelSpec, *, vocab_size: int, eos_token_id: int, seed: int) -> PreTrainedModel:
    """Fresh random-initialised model (float32, SDPA attention) with `<|endoftext|>` as BOS and EOS."""
    common = dict(
        vocab_size=vocab_size,
        hidden_size=spec.hidden_size,
        num_hidden_layers=spec.n_layers,
        num_attention_heads=spec.n_heads,
        num_key_value_heads=spec.n_kv_heads,
        head_dim=spec.head_dim,
        intermediate_size=spec.intermediate_size,
        max_position_embeddings=spec.max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": spec.rope_theta},
        tie_word_embeddings=spec.tie_embeddings,
        bos_token_id=eos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=eos_token_id,
    )
    torch.manual_seed(seed)
    if spec.architecture == "llama":
        return LlamaForCausalLM(LlamaConfig(**common))
    return Qwen3ForCausalLM(Qwen3Config(**common))


def n_params(model: torch.nn.Module) -> int:
    """Distinct parameters (a tied embedding counts once)."""
    return sum(p.numel() for p in model.parameters())


def encode_works(tokenizer: Tokenizer, texts: Sequence[str], eos_token_id: int) -> np.ndarray:
    """Pack texts into one token stream, each text followed by `<|endoftext|>` (document boundary)."""
    pieces: list[np.ndarray] = []
    for encoding in tokenizer.encode_batch(list(texts)):
        pieces.append(np.asarray(encoding.ids, dtype=np.int64))
        pieces.append(np.asarray([eos_token_id], dtype=np.int64))
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)


def heldout_blocks(ids: np.ndarray, block_size: int, n_blocks: int | None = None) -> np.ndarray:
    """Non-overlapping (n, block_size + 1) windows, evenly spread over the stream (deterministic)."""
    available = (len(ids) - 1) // block_size
    if available < 1:
        raise ValueError(f"held-out stream of {len(ids)} tokens is shorter than one block")
    starts = np.arange(available) * block_size
    if n_blocks is not None and n_blocks < available:
        starts = starts[np.linspace(0, available - 1, n_blocks).round().astype(int)]
    return np.stack([ids[s : s + block_size + 1] for s in starts])


@torch.no_grad()
def mean_nll(model: PreTrainedModel, blocks: np.ndarray, batch_size: int = 16) -> float:
    """Mean next-token negative log-likelihood (nats/token) over every position of every block."""
    was_training = model.training
    model.eval()
    total = 0.0
    count = 0
    for i in range(0, len(blocks), batch_size):
        batch = torch.from_numpy(blocks[i : i + batch_size])
        logits = model(input_ids=batch[:, :-1], use_cache=False).logits  # (B, T, V)
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), batch[:, 1:].reshape(-1), reduction="sum")
        total += float(loss)
        count += batch[:, 1:].numel()
    model.train(was_training)
    return total / count


def learning_rate(progress: float, step: int, cfg: TrainConfig) -> float:
    """Linear warmup over `warmup_steps`, then cosine from `lr` to `min_lr` as progress goes 0 → 1."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(max(progress, 0.0), 1.0)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)


def _optimizer(model: PreTrainedModel, cfg: TrainConfig) -> torch.optim.AdamW:
    # Weight decay on matrices only; norms' gains stay undecayed (the usual GPT-2/nanoGPT split).
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))


def train(model: PreTrainedModel, train_ids: np.ndarray, heldout_ids: np.ndarray, cfg: TrainConfig,
          log: Callable[[str], None] = print) -> TrainResult:
    """Train in place until `max_steps` or `budget_s` of training time; return what the manifest records."""
    torch.set_num_threads(cfg.threads)
    clock = time.process_time if cfg.clock == "cpu" else time.perf_counter
    wall_start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    eval_set = heldout_blocks(heldout_ids, cfg.block_size, cfg.eval_blocks)
    optimizer = _optimizer(model, cfg)
    model.train()
    history: list[dict[str, float]] = []
    train_time_s = 0.0
    step = 0
    loss_ema = float("nan")
    stream = torch.from_numpy(train_ids)
    max_start = len(train_ids) - cfg.block_size - 1
    if max_start < 1:
        raise ValueError(f"training stream of {len(train_ids)} tokens is shorter than one block")
    while True:
        progress = step / cfg.max_steps if cfg.max_steps else train_time_s / cfg.budget_s
        if (cfg.max_steps and step >= cfg.max_steps) or (not cfg.max_steps and progress >= 1.0):
            break
        started = clock()
        lr = learning_rate(progress, step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        # 1. a batch of random contiguous windows of the packed stream: (B, block_size + 1)
        starts = rng.integers(0, max_start, size=cfg.batch_size)
        batch = torch.stack([stream[s : s + cfg.block_size + 1] for s in starts])
        # 2. next-token cross-entropy, mean over B·T positions
        logits = model(input_ids=batch[:, :-1], use_cache=False).logits
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        train_time_s += clock() - started
        step += 1
        value = loss.detach().item()
        loss_ema = value if math.isnan(loss_ema) else 0.95 * loss_ema + 0.05 * value
        if step % cfg.eval_every == 0:
            nll = mean_nll(model, eval_set)
            history.append({"step": step, "train_time_s": round(train_time_s, 1),
                            "train_loss": round(loss_ema, 4), "heldout_nll": round(nll, 4), "lr": lr})
            log(f"step {step} t={train_time_s:.0f}s lr={lr:.2e} train {loss_ema:.3f} heldout {nll:.3f}")
    nll = mean_nll(model, eval_set)
    log(f"done: {step} steps, {train_time_s:.0f}s {cfg.clock}, train {loss_ema:.3f}, heldout {nll:.3f}")
    return TrainResult(steps=step, tokens_seen=step * cfg.batch_size * cfg.block_size,
                       train_time_s=round(train_time_s, 1),
                       wall_time_s=round(time.perf_counter() - wall_start, 1),
                       final_train_loss=round(loss_ema, 4), heldout_nll=round(nll, 4), history=history)
