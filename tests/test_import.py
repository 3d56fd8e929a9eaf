"""netsim.lm.importer: GGUF files, Hugging Face directories and ONNX directories become store models.

Each source is made by the test from a tiny random model, so the expected logits are that model's own;
the GGUF is written with llama.cpp's conventions (tensor names, rotary row permutation of q/k), so a
round trip through it also checks that the permutation is undone.
"""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import onnx
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from netsim.errors import ModelError
from netsim.lm.export import export_causal_lm
from netsim.lm.importer import default_name, import_model
from netsim.lm.manifest import MANIFEST_FILE, read_manifest, sha256_file
from netsim.lm.onnx_lm import OnnxCausalLM

TEXT = "Shall I compare thee to a summer's day? Thou art more lovely and more temperate"
TOLERANCE = 1e-4
EOS = "<|endoftext|>"


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=[EOS])
    tok.train_from_iterator([TEXT] * 8, trainer)
    assert tok.token_to_id(EOS) == 0
    return tok


def tiny_llama(vocab: int, *, tied: bool) -> LlamaForCausalLM:
    """Norm gains are perturbed: freshly initialised they are all ones, and an exporter may then store
    one copy for all of them, which would make a parameter count read from the graph too small."""
    torch.manual_seed(7)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=tied,
        initializer_range=0.2)).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.add_(0.1 * torch.randn_like(param))
    return model


def assert_same_logits(model_dir: Path, model: PreTrainedModel, ids: list[int]) -> None:
    lm = OnnxCausalLM.load(model_dir)
    logits, cache = lm.prefill(ids[:-3])
    rows = [logits]
    for token in ids[-3:]:
        step, cache = lm.decode(token, cache)
        rows.append(step[None])
    with torch.no_grad():
        reference = model(input_ids=torch.tensor([ids])).logits[0].numpy()
    assert np.abs(np.concatenate(rows)[:-1] - reference[:-1]).max() < TOLERANCE


# ---------------------------------------------------------------------------------------------------
# GGUF
# ---------------------------------------------------------------------------------------------------


def rotary_permute(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp stores q/k rows of each head as interleaved pairs instead of HF's two halves:
    (heads, 2, head_dim/2, in) → (heads, head_dim/2, 2, in)."""
    rows = weight.shape[0]
    return weight.reshape(n_heads, 2, rows // n_heads // 2, -1).swapaxes(1, 2).reshape(weight.shape)


def write_gguf(model: LlamaForCausalLM, tok: Tokenizer, path: Path) -> None:
    config = model.config
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    writer = gguf.GGUFWriter(str(path), arch="llama")
    writer.add_name("tiny-test-llama")
    writer.add_license("mit")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(config.head_dim)
    writer.add_rope_freq_base(float(config.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([t for t, _ in vocab])
    writer.add_token_types([gguf.TokenType.CONTROL if t == EOS else gguf.TokenType.NORMAL for t, _ in vocab])
    merges = json.loads(tok.to_str())["model"]["merges"]  # ["a b", …] or [["a", "b"], …]
    writer.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in merges])
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(0)

    writer.add_tensor("token_embd.weight", state["model.embed_tokens.weight"])
    for i in range(config.num_hidden_layers):
        p = f"model.layers.{i}."
        q, k = state[p + "self_attn.q_proj.weight"], state[p + "self_attn.k_proj.weight"]
        tensors = {
            "attn_norm": state[p + "input_layernorm.weight"],
            "attn_q": rotary_permute(q, config.num_attention_heads),
            "attn_k": rotary_permute(k, config.num_key_value_heads),
            "attn_v": state[p + "self_attn.v_proj.weight"],
            "attn_output": state[p + "self_attn.o_proj.weight"],
            "ffn_norm": state[p + "post_attention_layernorm.weight"],
            "ffn_gate": state[p + "mlp.gate_proj.weight"],
            "ffn_up": state[p + "mlp.up_proj.weight"],
            "ffn_down": state[p + "mlp.down_proj.weight"],
        }
        for name, value in tensors.items():
            writer.add_tensor(f"blk.{i}.{name}.weight", np.ascontiguousarray(value))
    writer.add_tensor("output_norm.weight", state["model.norm.weight"])
    if not config.tie_word_embeddings:
        writer.add_tensor("output.weight", state["lm_head.weight"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_gguf_import_reproduces_the_model_and_its_tokenizer(tmp_path: Path, tokenizer: Tokenizer) -> None:
    model = tiny_llama(tokenizer.get_vocab_size(), tied=False)
    write_gguf(model, tokenizer, tmp_path / "Tiny-Llama.F32.gguf")
    out = import_model(tmp_path / "Tiny-Llama.F32.gguf", out_root=tmp_path / "store")

    assert out == tmp_path / "store" / "tiny-llama.f32"
    manifest = read_manifest(out)
    assert manifest.license == "mit" and manifest.architecture == "llama"
    assert manifest.provenance["imported_from"] == "gguf"
    assert manifest.provenance["source_sha256"] == sha256_file(tmp_path / "Tiny-Llama.F32.gguf")
    assert manifest.geometry.n_params == model.num_parameters()
    lm = OnnxCausalLM.load(out)
    ids = lm.tokenizer.encode(TEXT)
    assert ids == tokenizer.encode(TEXT).ids
    assert lm.tokenizer.decode(ids) == TEXT
    assert_same_logits(out, model, ids)


def test_corrupt_gguf_is_a_one_line_error_and_leaves_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + bytes(range(256)) * 4)
    with pytest.raises(ModelError, match=r"broken\.gguf") as err:
        import_model(bad, out_root=tmp_path / "store")
    assert "\n" not in str(err.value)
    assert list((tmp_path / "store").iterdir()) == []


# ---------------------------------------------------------------------------------------------------
# Hugging Face directory
# ---------------------------------------------------------------------------------------------------


def test_hugging_face_directory_import(tmp_path: Path, tokenizer: Tokenizer) -> None:
    torch.manual_seed(8)
    model = Qwen3ForCausalLM(Qwen3Config(
        vocab_size=tokenizer.get_vocab_size() + 16, hidden_size=64, intermediate_size=128,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        tie_word_embeddings=True, initializer_range=0.2)).eval()
    source = tmp_path / "Tiny-Qwen3"
    model.save_pretrained(source)
    PreTrainedTokenizerFast(tokenizer_object=tokenizer).save_pretrained(source)
    (source / "README.md").write_text("---\nlicense: apache-2.0\nlanguage: en\n---\n# tiny\n")

    out = import_model(source, name="tiny-qwen3", out_root=tmp_path / "store")
    manifest = read_manifest(out)
    assert (manifest.name, manifest.license, manifest.architecture) == ("tiny-qwen3", "apache-2.0", "qwen3")
    assert manifest.geometry.tied_embeddings and manifest.geometry.n_params == model.num_parameters()
    assert set(manifest.provenance["source_sha256"]) >= {"config.json", "model.safetensors"}
    assert_same_logits(out, model, OnnxCausalLM.load(out).tokenizer.encode(TEXT))


# ---------------------------------------------------------------------------------------------------
# ONNX directory
# ---------------------------------------------------------------------------------------------------


@pytest.fixture
def onnx_dir(tmp_path: Path, tokenizer: Tokenizer) -> tuple[Path, LlamaForCausalLM]:
    """An Optimum-layout directory without a manifest, weights in an external data file."""
    model = tiny_llama(tokenizer.get_vocab_size(), tied=True)
    tokenizer.save(str(tmp_path / "tok.json"))
    exported = tmp_path / "exported"
    export_causal_lm(model, exported, tokenizer_json=tmp_path / "tok.json", name="x", role="any",
                     description="", license="", provenance={})
    source = tmp_path / "outside-tool"
    source.mkdir()
    graph = onnx.load(str(exported / "model.onnx"))
    onnx.save(graph, str(source / "model.onnx"), save_as_external_data=True, location="model.onnx_data",
              size_threshold=0)
    for name in ("tokenizer.json", "config.json"):
        (source / name).write_bytes((exported / name).read_bytes())
    return source, model


def test_onnx_directory_import_copies_hashes_and_describes_it(tmp_path: Path,
                                                             onnx_dir: tuple[Path, LlamaForCausalLM]) -> None:
    source, model = onnx_dir
    out = import_model(source, out_root=tmp_path / "store")
    assert out.name == "outside-tool"
    manifest = read_manifest(out)
    assert set(manifest.sha256) == {"model.onnx", "model.onnx_data", "tokenizer.json", "config.json"}
    assert all(sha256_file(out / f) == digest for f, digest in manifest.sha256.items())
    g = manifest.geometry
    assert (g.n_layers, g.hidden_size, g.n_heads, g.n_kv_heads, g.head_dim) == (2, 64, 4, 2, 16)
    assert g.n_params == model.num_parameters() and g.tied_embeddings
    assert manifest.weights_storage_dtype == "float32"
    assert_same_logits(out, model, OnnxCausalLM.load(out).tokenizer.encode(TEXT))


def test_existing_model_needs_force(tmp_path: Path, onnx_dir: tuple[Path, LlamaForCausalLM]) -> None:
    source, _ = onnx_dir
    out = import_model(source, name="m", out_root=tmp_path / "store")
    (out / "marker").write_text("old")
    with pytest.raises(ModelError, match="exists"):
        import_model(source, name="m", out_root=tmp_path / "store")
    assert (out / "marker").is_file()
    import_model(source, name="m", out_root=tmp_path / "store", force=True)
    assert not (out / "marker").exists() and (out / MANIFEST_FILE).is_file()


def test_onnx_directory_with_a_foreign_tokenizer_is_refused(tmp_path: Path,
                                                           onnx_dir: tuple[Path, LlamaForCausalLM]) -> None:
    source, _ = onnx_dir
    big = Tokenizer(models.BPE())
    big.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=2000, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    big.train_from_iterator([f"word{i} other{i * 7} thing{i * 13}" for i in range(3000)], trainer)
    assert big.get_vocab_size() > 1000
    big.save(str(source / "tokenizer.json"))
    with pytest.raises(ModelError, match="wrong tokenizer") as err:
        import_model(source, out_root=tmp_path / "store")
    assert "\n" not in str(err.value)
    assert list((tmp_path / "store").iterdir()) == []


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing", "no such file"),
        (lambda d: (d / "notes.txt").write_text("hi") and d / "notes.txt", "expected a .gguf"),
        (lambda d: d, "not a model directory"),
    ],
)
def test_unusable_sources_are_one_line_errors(tmp_path: Path, make, message: str) -> None:
    with pytest.raises(ModelError, match=message) as err:
        import_model(make(tmp_path), out_root=tmp_path / "store")
    assert "\n" not in str(err.value)


def test_bad_model_names_are_refused(tmp_path: Path, onnx_dir: tuple[Path, LlamaForCausalLM]) -> None:
    with pytest.raises(ModelError, match="model name"):
        import_model(onnx_dir[0], name="../escape", out_root=tmp_path / "store")
    assert default_name(Path("SmolLM2-135M-Instruct.Q4_1.gguf")) == "smollm2-135m-instruct.q4_1"
