"""netsim.lm.export and netsim.lm.manifest: the ONNX graph computes what the torch model computes.

Reference values come from the torch model itself, run by full recompute (no cache), and from
hand-derived parameter counts of published configs; onnxruntime is driven directly so these tests do not
depend on netsim's runtime.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import yaml
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from netsim.errors import ModelError
from netsim.lm.export import count_params, export_causal_lm, io_names
from netsim.lm.manifest import read_manifest, sha256_file, write_manifest

VOCAB = 320
TOLERANCE = 1e-4


def tiny_models() -> dict[str, PreTrainedModel]:
    """Three architectures with different depth, width, head_dim, GQA ratio and embedding tying."""
    torch.manual_seed(0)
    return {
        "llama": LlamaForCausalLM(LlamaConfig(
            vocab_size=VOCAB, hidden_size=64, intermediate_size=160, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=256)),
        "qwen3": Qwen3ForCausalLM(Qwen3Config(
            vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=32, tie_word_embeddings=True,
            max_position_embeddings=256)),
        "qwen2": Qwen2ForCausalLM(Qwen2Config(
            vocab_size=VOCAB, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)),
    }


@pytest.fixture(scope="module")
def tokenizer_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(["to be, or not to be, that is the question"] * 8, trainer)
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tokenizer.save(str(path))
    return path


def export(model: PreTrainedModel, out_dir: Path, tokenizer_json: Path, **kwargs: object):
    return export_causal_lm(model, out_dir, tokenizer_json=tokenizer_json, name=out_dir.name, role="any",
                            description="test model", license="Apache-2.0", provenance={"test": True},
                            **kwargs)


class OrtLM:
    """The smallest driver of an Optimum-layout graph: one sequence (or a padded batch) at a time."""

    def __init__(self, model_dir: Path) -> None:
        self.session = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
        past = [i for i in self.session.get_inputs() if i.name.startswith("past_key_values.")]
        self.n_layers = len(past) // 2
        self.kv_heads, self.head_dim = past[0].shape[1], past[0].shape[3]

    def run(self, ids: np.ndarray, mask: np.ndarray, past: list[np.ndarray] | None):
        batch = ids.shape[0]
        if past is None:
            past = [np.zeros((batch, self.kv_heads, 0, self.head_dim), np.float32)] * (2 * self.n_layers)
        positions = np.clip(mask.cumsum(axis=1) - 1, 0, None)[:, -ids.shape[1]:]
        names, _ = io_names(self.n_layers)
        out = self.session.run(None, dict(zip(names, [ids, mask, positions, *past], strict=True)))
        return out[0], out[1:]


def torch_logits(model: PreTrainedModel, ids: list[int]) -> np.ndarray:
    """Full recompute, no cache: (T, V)."""
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0].numpy()


def onnx_incremental(lm: OrtLM, prompt: list[int], n_steps: int) -> tuple[list[int], np.ndarray]:
    """Prefill the prompt, then greedy single-token decodes; returns all ids and each step's logits."""
    ids = np.array([prompt], dtype=np.int64)
    mask = np.ones_like(ids)
    logits, past = lm.run(ids, mask, None)
    tokens, rows = list(prompt), [logits[0]]
    for _ in range(n_steps):
        tokens.append(int(rows[-1][-1].argmax()))
        mask = np.ones((1, len(tokens)), dtype=np.int64)
        logits, past = lm.run(np.array([[tokens[-1]]], dtype=np.int64), mask, past)
        rows.append(logits[0])
    return tokens, np.concatenate(rows, axis=0)


@pytest.mark.parametrize("arch", ["llama", "qwen3", "qwen2"])
def test_onnx_prefill_and_decode_equal_torch_full_recompute(arch: str, tmp_path: Path,
                                                            tokenizer_json: Path) -> None:
    model = tiny_models()[arch].eval()
    manifest = export(model, tmp_path / arch, tokenizer_json)
    prompt = [int(t) for t in np.random.default_rng(1).integers(0, VOCAB, 11)]
    tokens, onnx_rows = onnx_incremental(OrtLM(tmp_path / arch), prompt, n_steps=6)
    # Row j of the incremental run predicts token j+1: it must equal torch on the whole sequence.
    reference = torch_logits(model, tokens)
    assert onnx_rows.shape == reference.shape == (len(tokens), VOCAB)
    assert np.abs(onnx_rows - reference).max() < TOLERANCE
    assert manifest.provenance["export"]["onnx_vs_torch_max_abs_logit_diff"] < TOLERANCE


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_left_padded_batch_equals_each_sequence_alone(arch: str, tmp_path: Path,
                                                      tokenizer_json: Path) -> None:
    """Batched decode pads on the left; the padding must not leak into any real sequence."""
    export(tiny_models()[arch], tmp_path / arch, tokenizer_json)
    lm = OrtLM(tmp_path / arch)
    rng = np.random.default_rng(2)
    seqs = [rng.integers(0, VOCAB, n).tolist() for n in (8, 3)]
    width = max(map(len, seqs))
    ids = np.array([[0] * (width - len(s)) + s for s in seqs], dtype=np.int64)
    mask = np.array([[0] * (width - len(s)) + [1] * len(s) for s in seqs], dtype=np.int64)
    logits, past = lm.run(ids, mask, None)
    nxt = np.array([[5], [7]], dtype=np.int64)
    step, _ = lm.run(nxt, np.concatenate([mask, np.ones((2, 1), np.int64)], axis=1), past)
    for row, seq in enumerate(seqs):
        alone, alone_past = lm.run(np.array([seq]), np.ones((1, len(seq)), np.int64), None)
        assert np.abs(logits[row, -len(seq):] - alone[0]).max() < TOLERANCE
        alone_step, _ = lm.run(nxt[row:row + 1], np.ones((1, len(seq) + 1), np.int64), alone_past)
        assert np.abs(step[row] - alone_step[0]).max() < TOLERANCE


def test_fp16_storage_equals_rounded_torch_model_and_halves_the_file(tmp_path: Path,
                                                                     tokenizer_json: Path) -> None:
    torch.manual_seed(3)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    model = LlamaForCausalLM(config).half().float().eval()
    full = export(model, tmp_path / "fp32", tokenizer_json)
    half = export(model, tmp_path / "fp16", tokenizer_json, store_fp16=True)
    assert (full.weights_storage_dtype, half.weights_storage_dtype) == ("float32", "float16")

    size_ratio = (tmp_path / "fp16/model.onnx").stat().st_size / (tmp_path / "fp32/model.onnx").stat().st_size
    assert 0.45 < size_ratio < 0.56
    graph = onnx.load(str(tmp_path / "fp16/model.onnx")).graph
    fp16_elements = sum(int(np.prod(i.dims)) for i in graph.initializer
                        if i.data_type == onnx.TensorProto.FLOAT16)
    assert fp16_elements > 0.97 * full.geometry.n_params

    prompt = [int(t) for t in np.random.default_rng(4).integers(0, VOCAB, 9)]
    tokens, rows = onnx_incremental(OrtLM(tmp_path / "fp16"), prompt, n_steps=4)
    assert np.abs(rows - torch_logits(model, tokens)).max() < TOLERANCE
    assert tokens == onnx_incremental(OrtLM(tmp_path / "fp32"), prompt, n_steps=4)[0]


def test_fp16_storage_refuses_weights_float16_cannot_hold(tmp_path: Path, tokenizer_json: Path) -> None:
    with pytest.raises(ValueError, match=r"half\(\)\.float\(\)"):
        export(tiny_models()["llama"], tmp_path / "m", tokenizer_json, store_fp16=True)


def test_tied_embedding_is_stored_once(tmp_path: Path, tokenizer_json: Path) -> None:
    model = tiny_models()["qwen3"]
    export(model, tmp_path / "m", tokenizer_json)
    graph = onnx.load(str(tmp_path / "m/model.onnx")).graph
    embedding_like = [i.name for i in graph.initializer if sorted(i.dims) == sorted([VOCAB, 64])]
    assert len(embedding_like) == 1
    stored = sum(int(np.prod(i.dims)) for i in graph.initializer)
    assert stored <= model.num_parameters()  # nothing duplicated (identical norm gains may even share)


@pytest.mark.parametrize("arch", ["llama", "qwen3", "qwen2"])
def test_parameter_formula_matches_torch(arch: str) -> None:
    model = tiny_models()[arch]
    assert count_params(model.config) == sum(p.numel() for p in model.parameters())


def test_parameter_formula_on_published_configs() -> None:
    """ANCHORS.md: Qwen3-0.6B 0.596 B, SmolLM2-135M 0.135 B (hand sums: 596,049,920 and 134,515,008)."""
    qwen3 = Qwen3Config(vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                        num_attention_heads=16, num_key_value_heads=8, head_dim=128, tie_word_embeddings=True)
    smollm2 = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                          num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True)
    assert count_params(qwen3) == 596_049_920
    assert count_params(smollm2) == 134_515_008


def test_manifest_records_geometry_hashes_and_round_trips(tmp_path: Path, tokenizer_json: Path) -> None:
    model = tiny_models()["llama"]
    manifest = export(model, tmp_path / "m", tokenizer_json)
    out = tmp_path / "m"
    assert read_manifest(out) == manifest
    files = sorted(p.name for p in out.iterdir())
    assert files == ["config.json", "model.onnx", "model.yaml", "tokenizer.json"]
    assert all(sha256_file(out / f) == digest for f, digest in manifest.sha256.items())
    g = manifest.geometry
    assert (g.n_layers, g.n_heads, g.n_kv_heads, g.head_dim, g.vocab_size) == (3, 4, 1, 16, VOCAB)
    assert g.kv_bytes_per_token == 2 * 3 * 1 * 16 * 4
    assert g.n_params == model.num_parameters()
    assert manifest.provenance["test"] is True
    write_manifest(out, manifest)
    assert read_manifest(out) == manifest


def test_tokenizer_larger_than_the_vocabulary_is_refused(tmp_path: Path, tokenizer_json: Path) -> None:
    torch.manual_seed(0)
    small = LlamaForCausalLM(LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1))
    n_tokens = Tokenizer.from_file(str(tokenizer_json)).get_vocab_size()
    assert n_tokens > 100
    with pytest.raises(ModelError, match=f"{n_tokens} tokens but the model has 100 logits"):
        export(small, tmp_path / "m", tokenizer_json)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: [unclosed", "unreadable YAML"),
        ("- a list", "expected a mapping"),
        ("name: x\nrole: boss\n", "role"),
    ],
)
def test_bad_manifest_is_a_one_line_model_error(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "model.yaml").write_text(text)
    with pytest.raises(ModelError, match=message) as err:
        read_manifest(tmp_path)
    assert "\n" not in str(err.value)


def test_missing_manifest_and_unhashed_file_are_model_errors(tmp_path: Path, tokenizer_json: Path) -> None:
    with pytest.raises(ModelError, match="no manifest"):
        read_manifest(tmp_path)
    manifest = export(tiny_models()["qwen2"], tmp_path / "m", tokenizer_json)
    data = manifest.model_dump(mode="json")
    del data["sha256"]["tokenizer.json"]
    (tmp_path / "m/model.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ModelError, match="no sha256 for"):
        read_manifest(tmp_path / "m")
