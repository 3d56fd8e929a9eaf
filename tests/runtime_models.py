"""Tiny random-init models for the runtime tests, built from configs here (nothing is downloaded).

Two export paths: netsim's own exporter (`netsim.lm.export`), and `export_independent` below — a second,
deliberately different code path in the Optimum layout (no `position_ids` input, no manifest, outputs
named `present.{i}.key`, HF's `save_pretrained` config), standing in for a directory another tool wrote.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    DynamicCache,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from netsim.lm.export import export_causal_lm

TEXT = ("Shall I compare thee to a summer's day? Thou art more lovely and more temperate: rough winds do "
        "shake the darling buds of May, and summer's lease hath all too short a date. ") * 40


def train_tokenizer(path: Path, vocab_size: int = 320) -> Path:
    """A byte-level BPE with `<|endoftext|>` as id 0, like the bundled zoo's."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator([TEXT], trainer=trainer)
    path.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(path))
    return path


def vocab_size(tokenizer_json: Path) -> int:
    return Tokenizer.from_file(str(tokenizer_json)).get_vocab_size()


def tiny_model(arch: str, vocab_size: int, seed: int = 0) -> PreTrainedModel:
    """Random-init Llama (tied, 2 layers, GQA 4/2, head_dim 16) or Qwen3 (untied, 3 layers, 4/1, 24).

    Norm gains are drawn at random too: left at 1.0 they are all equal, and the exporter would store
    them once, which no trained model does.
    """
    torch.manual_seed(seed)
    model = _tiny_model(arch, vocab_size)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.uniform_(0.5, 1.5)
    return model


def _tiny_model(arch: str, vocab_size: int) -> PreTrainedModel:
    common = {"vocab_size": vocab_size, "max_position_embeddings": 512, "eos_token_id": 0, "bos_token_id": 0}
    if arch == "llama":
        config = LlamaConfig(hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True, **common)
        return LlamaForCausalLM(config).eval()
    config = Qwen3Config(hidden_size=96, intermediate_size=200, num_hidden_layers=3, num_attention_heads=4,
                         num_key_value_heads=1, head_dim=24, tie_word_embeddings=False, **common)
    return Qwen3ForCausalLM(config).eval()


def export_netsim(model: PreTrainedModel, out_dir: Path, tokenizer_json: Path, name: str) -> Path:
    export_causal_lm(model, out_dir, tokenizer_json=tokenizer_json, name=name, role="any",
                     description=f"tiny random {model.config.model_type} for tests", license="Apache-2.0",
                     provenance={"made_by": "tests/runtime_models.py"})
    return out_dir


class _NoPositionIds(torch.nn.Module):
    """Optimum's older signature: positions come from the cache length inside the model."""

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        n_layers = len(past) // 2
        cache = DynamicCache(ddp_cache_data=[(past[2 * i], past[2 * i + 1]) for i in range(n_layers)])
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, past_key_values=cache,
                         use_cache=True)
        flat: list[torch.Tensor] = []
        for layer in out.past_key_values.layers:
            flat += [layer.keys, layer.values]
        return (out.logits, *flat)


def export_independent(model: PreTrainedModel, out_dir: Path, tokenizer_json: Path) -> Path:
    """Optimum-layout export by another route: opset 14, no position_ids, no model.yaml."""
    config = model.config
    n_layers, kv_heads = config.num_hidden_layers, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    past_len, new_len = 2, 3
    past = [torch.randn(1, kv_heads, past_len, head_dim) for _ in range(2 * n_layers)]
    ids = torch.randint(0, config.vocab_size, (1, new_len))
    mask = torch.ones(1, past_len + new_len, dtype=torch.int64)
    past_names = [f"past_key_values.{i}.{k}" for i in range(n_layers) for k in ("key", "value")]
    present_names = [f"present.{i}.{k}" for i in range(n_layers) for k in ("key", "value")]
    axes = {"input_ids": {0: "b", 1: "s"}, "attention_mask": {0: "b", 1: "t"}, "logits": {0: "b", 1: "s"}}
    axes |= {n: {0: "b", 2: "p"} for n in past_names} | {n: {0: "b", 2: "t"} for n in present_names}
    out_dir.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_NoPositionIds(model), (ids, mask, *past), str(out_dir / "model.onnx"),
                          input_names=["input_ids", "attention_mask", *past_names],
                          output_names=["logits", *present_names], dynamic_axes=axes, opset_version=14,
                          dynamo=False)
    config.save_pretrained(out_dir)
    (out_dir / "tokenizer.json").write_bytes(tokenizer_json.read_bytes())
    return out_dir
