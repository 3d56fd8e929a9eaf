"""A model exported in the Optimum layout by another code path loads as-is and generates the same tokens.

The other code path is torch's dynamo exporter (`torch.onnx.export(..., dynamo=True)`, via onnxscript):
a different tracer, different op decompositions, symbolic dimension names instead of Optimum's, no
netsim manifest. `optimum-onnx` itself is not usable here: its newest release (0.1.0) requires
transformers < 4.58 and netsim pins 5.23.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from runtime_models import train_tokenizer
from transformers import (
    DynamicCache,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from netsim.lm.export import export_causal_lm, io_names
from netsim.lm.onnx_lm import OnnxCausalLM

pytest.importorskip("onnxscript", reason="the dynamo exporter needs onnxscript (test extra)")

VOCAB = 320
N_NEW_TOKENS = 12


class _FlatCache(torch.nn.Module):
    """The Optimum signature written independently of netsim.lm.export: flat past in, flat present out."""

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        pairs = list(zip(past[0::2], past[1::2], strict=True))
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         past_key_values=DynamicCache(ddp_cache_data=pairs), use_cache=True)
        flat = [t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)]
        return (out.logits, *flat)


def dynamo_export(model: PreTrainedModel, out_dir: Path, tokenizer_json: Path) -> None:
    """Write model.onnx + tokenizer.json + config.json the way an outside tool would (no model.yaml)."""
    config = model.config
    n_layers, head_dim = config.num_hidden_layers, config.hidden_size // config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or head_dim
    batch, past_len, new_len = 2, 3, 4
    args = (
        torch.randint(0, VOCAB, (batch, new_len)),
        torch.ones(batch, past_len + new_len, dtype=torch.long),
        torch.arange(past_len, past_len + new_len).repeat(batch, 1),
        *[torch.randn(batch, config.num_key_value_heads, past_len, head_dim) for _ in range(2 * n_layers)],
    )
    dyn = torch.export.Dim.DYNAMIC
    # DESIGN.md: the *past entry is one nested tuple of per-tensor specs; Dim.DYNAMIC, no Dim arithmetic.
    shapes = ({0: dyn, 1: dyn}, {0: dyn, 1: dyn}, {0: dyn, 1: dyn}, tuple({0: dyn, 2: dyn} for _ in args[3:]))
    in_names, out_names = io_names(n_layers)
    out_dir.mkdir(parents=True)
    with torch.no_grad():
        program = torch.onnx.export(_FlatCache(model).eval(), args, dynamo=True, dynamic_shapes=shapes,
                                    input_names=in_names, output_names=out_names, verbose=False)
    program.save(str(out_dir / "model.onnx"))
    (out_dir / "tokenizer.json").write_bytes(tokenizer_json.read_bytes())
    (out_dir / "config.json").write_text(config.to_json_string(use_diff=False))


def torch_greedy(model: PreTrainedModel, prompt: list[int], n_new: int) -> list[int]:
    """Greedy tokens by full recompute at every step (no cache): the reference both exports must match."""
    tokens = list(prompt)
    with torch.no_grad():
        for _ in range(n_new):
            tokens.append(int(model(input_ids=torch.tensor([tokens])).logits[0, -1].argmax()))
    return tokens[len(prompt):]


def netsim_greedy(lm: OnnxCausalLM, prompt: list[int], n_new: int) -> tuple[list[int], np.ndarray]:
    logits, cache = lm.prefill(prompt)
    rows, tokens = [logits[-1]], []
    for _ in range(n_new):
        tokens.append(int(rows[-1].argmax()))
        logits, cache = lm.decode(tokens[-1], cache)
        rows.append(logits)
    return tokens, np.stack(rows[:-1])


@pytest.fixture(scope="module")
def tokenizer_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer.json")


def tiny(arch: str) -> PreTrainedModel:
    """Random init with a wide spread, so greedy decoding does not collapse onto one token."""
    torch.manual_seed(5)
    if arch == "llama":
        return LlamaForCausalLM(LlamaConfig(
            vocab_size=VOCAB, hidden_size=64, intermediate_size=160, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
            initializer_range=0.3)).eval()
    return Qwen3ForCausalLM(Qwen3Config(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=32, tie_word_embeddings=True, max_position_embeddings=128,
        initializer_range=0.3)).eval()


@pytest.mark.parametrize("arch", ["llama", pytest.param("qwen3", marks=pytest.mark.slow)])
def test_dynamo_exported_model_loads_and_generates_the_same_greedy_tokens(
        arch: str, tmp_path: Path, tokenizer_json: Path) -> None:
    model = tiny(arch)
    export_causal_lm(model, tmp_path / "netsim", tokenizer_json=tokenizer_json, name="netsim-export",
                     role="any", description="netsim exporter", license="Apache-2.0", provenance={})
    dynamo_export(model, tmp_path / "dynamo", tokenizer_json)

    other = OnnxCausalLM.load(tmp_path / "dynamo")
    ours = OnnxCausalLM.load(tmp_path / "netsim")
    assert other.manifest is None and ours.manifest is not None
    for field in ("n_layers", "hidden_size", "n_kv_heads", "head_dim", "vocab_size"):
        assert getattr(other.geometry, field) == getattr(ours.geometry, field)

    prompt = other.tokenizer.encode("now is the winter")
    assert prompt == ours.tokenizer.encode("now is the winter") and len(prompt) > 1
    reference = torch_greedy(model, prompt, N_NEW_TOKENS)
    other_tokens, other_logits = netsim_greedy(other, prompt, N_NEW_TOKENS)
    our_tokens, our_logits = netsim_greedy(ours, prompt, N_NEW_TOKENS)
    assert other_tokens == our_tokens == reference
    assert np.abs(other_logits - our_logits).max() < 1e-4
    assert len(set(reference)) > 1  # a constant sequence would hide a broken cache
