"""OnnxCausalLM against torch and against itself: prefill, decode, verify, batched decode, embeddings,
geometry read from the graph, and a model exported by a different code path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from runtime_models import export_independent, export_netsim, tiny_model, train_tokenizer, vocab_size

from netsim.lm.onnx_lm import KVCache, OnnxCausalLM, geometry_from_onnx
from netsim.paths import PROJECT_ROOT, cache_dir

TOL = 1e-4


@pytest.fixture(scope="module")
def tokenizer_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer.json")


@pytest.fixture(scope="module", params=["llama", "qwen3"])
def exported(request: pytest.FixtureRequest, tokenizer_json: Path,
             tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, OnnxCausalLM]:
    model = tiny_model(request.param, vocab_size=vocab_size(tokenizer_json))
    out_dir = tmp_path_factory.mktemp(request.param)
    out = export_netsim(model, out_dir, tokenizer_json, f"tiny-{request.param}")
    return model, OnnxCausalLM.load(out)


@pytest.fixture(scope="module")
def independent(tokenizer_json: Path,
                tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    model = tiny_model("llama", vocab_size=vocab_size(tokenizer_json), seed=1)
    return model, export_independent(model, tmp_path_factory.mktemp("independent"), tokenizer_json)


def _ids(lm: OnnxCausalLM, n: int, seed: int = 0) -> list[int]:
    return np.random.default_rng(seed).integers(1, lm.geometry.vocab_size, n).tolist()


def _torch_logits(model: torch.nn.Module, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


def _incremental(lm: OnnxCausalLM, ids: list[int], n_prefill: int) -> np.ndarray:
    """Logit rows for positions n_prefill-1 … len-1: a prefill, then one decode per token."""
    logits, cache = lm.prefill(ids[:n_prefill])
    rows = [logits[-1]]
    for token in ids[n_prefill:]:
        row, cache = lm.decode(token, cache)
        rows.append(row)
    assert cache.length == len(ids)
    return np.stack(rows)


def test_geometry_is_read_from_the_graph(exported: tuple[torch.nn.Module, OnnxCausalLM]) -> None:
    model, lm = exported
    config = model.config
    g = lm.geometry
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    expected = (config.num_hidden_layers, config.hidden_size, config.num_attention_heads,
                config.num_key_value_heads, head_dim, config.vocab_size, config.intermediate_size,
                sum(p.numel() for p in model.parameters()), config.tie_word_embeddings)
    got = (g.n_layers, g.hidden_size, g.n_heads, g.n_kv_heads, g.head_dim, g.vocab_size, g.intermediate_size,
           g.n_params, g.tied_embeddings)
    assert got == expected
    # without config.json the heads, MLP width, parameters and tying come from the weights alone
    bare = geometry_from_onnx(lm.model_dir / "model.onnx")
    assert bare.model_dump(exclude={"architecture"}) == g.model_dump(exclude={"architecture"})
    assert bare.architecture == "unknown"


def test_prefill_matches_torch(exported: tuple[torch.nn.Module, OnnxCausalLM]) -> None:
    model, lm = exported
    ids = _ids(lm, 40)
    logits, cache = lm.prefill(ids)
    assert logits.shape == (40, lm.geometry.vocab_size) and logits.dtype == np.float32
    assert np.abs(logits - _torch_logits(model, ids)).max() < TOL
    assert cache.length == 40


def test_incremental_decode_equals_full_recompute(exported: tuple[torch.nn.Module, OnnxCausalLM]) -> None:
    _, lm = exported
    ids = _ids(lm, 48, seed=1)
    full, _ = lm.prefill(ids)
    assert np.abs(_incremental(lm, ids, 5) - full[4:]).max() < TOL


def test_verify_equals_successive_decodes(exported: tuple[torch.nn.Module, OnnxCausalLM]) -> None:
    _, lm = exported
    ids = _ids(lm, 30, seed=2)
    _, cache = lm.prefill(ids[:20])
    block, block_cache = lm.verify(ids[20:], cache)
    assert block.shape == (10, lm.geometry.vocab_size)
    stepped, step_cache = [], cache
    for token in ids[20:]:
        row, step_cache = lm.decode(token, step_cache)
        stepped.append(row)
    assert np.abs(block - np.stack(stepped)).max() < TOL
    assert block_cache.length == step_cache.length == 30
    for (k1, v1), (k2, v2) in zip(block_cache.layers, step_cache.layers, strict=True):
        assert np.abs(k1 - k2).max() < TOL and np.abs(v1 - v2).max() < TOL


def test_decode_batch_equals_single_decodes(exported: tuple[torch.nn.Module, OnnxCausalLM]) -> None:
    _, lm = exported
    sequences = [_ids(lm, n, seed=n) for n in (3, 9, 16)]
    caches = [lm.prefill(s)[1] for s in sequences]
    tokens = [5, 17, 42]
    logits, new_caches = lm.decode_batch(tokens, caches)
    assert logits.shape == (3, lm.geometry.vocab_size)
    for row, token, cache, new in zip(logits, tokens, caches, new_caches, strict=True):
        single, single_cache = lm.decode(token, cache)
        assert np.abs(row - single).max() < TOL
        assert new.length == cache.length + 1
        assert np.abs(new.layers[-1][1] - single_cache.layers[-1][1]).max() < TOL
        # the batch's cache carries on like a single one
        again, _ = lm.decode(7, new)
        assert np.abs(again - lm.decode(7, single_cache)[0]).max() < TOL


def test_embed_reads_the_input_embedding(exported: tuple[torch.nn.Module, OnnxCausalLM]) -> None:
    model, lm = exported
    ids = [0, 3, 3, lm.geometry.vocab_size - 1]
    table = model.get_input_embeddings().weight.detach().numpy()
    np.testing.assert_array_equal(lm.embed(ids), table[ids])
    assert lm.embed(ids).shape == (4, lm.geometry.hidden_size)


def test_kv_cache_bytes_truncate_and_immutability(exported: tuple[torch.nn.Module, OnnxCausalLM]) -> None:
    _, lm = exported
    ids = _ids(lm, 12, seed=3)
    _, cache = lm.prefill(ids)
    assert cache.nbytes == lm.geometry.kv_bytes_per_token * 12
    assert len(cache.layers) == lm.geometry.n_layers
    assert cache.layers[0][0].shape == (1, lm.geometry.n_kv_heads, 12, lm.geometry.head_dim)
    with pytest.raises(ValueError):
        cache.layers[0][0][0, 0, 0, 0] = 1.0  # read-only: caches are shared between branches
    # a truncated cache is the cache of the shorter prefix (speculative rollback)
    short = cache.truncate(7)
    assert short.length == 7
    rolled, _ = lm.decode(ids[7], short)
    fresh, _ = lm.decode(ids[7], lm.prefill(ids[:7])[1])
    assert np.abs(rolled - fresh).max() < TOL
    with pytest.raises(ValueError):
        cache.truncate(13)
    empty = KVCache.empty(2, 3, 4)
    assert empty.length == 0 and empty.nbytes == 0


def _greedy(lm: OnnxCausalLM, prompt: list[int], n_new: int) -> list[int]:
    logits, cache = lm.prefill(prompt)
    token, out = int(np.argmax(logits[-1])), []
    for _ in range(n_new):
        out.append(token)
        row, cache = lm.decode(token, cache)
        token = int(np.argmax(row))
    return out


def test_independent_optimum_export_loads_and_generates_the_same_greedy_tokens(
        independent: tuple[torch.nn.Module, Path], tokenizer_json: Path, tmp_path: Path) -> None:
    model, path = independent
    other = OnnxCausalLM.load(path)
    assert other.manifest is None and not other.io.has_position_ids
    assert other.geometry.architecture == "llama" and other.tokenizer.eos_id == 0
    ours = OnnxCausalLM.load(export_netsim(model, tmp_path / "ours", tokenizer_json, "same-weights"))
    prompt = other.tokenizer.encode("Shall I compare thee")
    with torch.no_grad():
        expected = model.generate(torch.tensor([prompt]), max_new_tokens=24, do_sample=False,
                                  min_new_tokens=24)[0, len(prompt):].tolist()
    assert _greedy(other, prompt, 24) == expected
    assert _greedy(ours, prompt, 24) == expected
    ids = _ids(other, 20, seed=4)
    assert np.abs(_incremental(other, ids, 6) - other.prefill(ids)[0][5:]).max() < TOL


def test_decode_batch_without_position_ids_groups_by_length(
        independent: tuple[torch.nn.Module, Path]) -> None:
    _, path = independent
    lm = OnnxCausalLM.load(path)
    caches = [lm.prefill(_ids(lm, n, seed=n))[1] for n in (4, 10, 4)]
    logits, new = lm.decode_batch([1, 2, 3], caches)
    for row, token, cache, out in zip(logits, [1, 2, 3], caches, new, strict=True):
        assert np.abs(row - lm.decode(token, cache)[0]).max() < TOL
        assert out.length == cache.length + 1


def _bundled_model_dirs() -> list[Path]:
    root = PROJECT_ROOT / "models"
    return sorted(p for p in root.iterdir() if (p / "model.yaml").is_file()) if root.is_dir() else []


@pytest.mark.parametrize("model_dir", _bundled_model_dirs(), ids=lambda p: p.name)
def test_bundled_model_incremental_equals_full(model_dir: Path) -> None:
    lm = OnnxCausalLM.load(model_dir)
    ids = lm.tokenizer.encode("ROMEO. But soft, what light through yonder window breaks? It is the east")
    full, _ = lm.prefill(ids)
    assert np.abs(_incremental(lm, ids, 4) - full[3:]).max() < TOL


def _cached_model_dirs() -> list[Path]:
    root = cache_dir() / "models"
    return sorted(p for p in root.iterdir() if (p / "model.yaml").is_file()) if root.is_dir() else []


@pytest.mark.slow
@pytest.mark.parametrize("model_dir", _cached_model_dirs(), ids=lambda p: p.name)
def test_cached_model_incremental_equals_full(model_dir: Path) -> None:
    lm = OnnxCausalLM.load(model_dir, threads=2)
    ids = lm.tokenizer.encode("Once upon a time, in a small village by the sea, there lived an old fisherman")
    full, _ = lm.prefill(ids)
    assert np.abs(_incremental(lm, ids, 4) - full[3:]).max() < TOL


def test_fp16_stored_weights_load_as_the_same_model(tokenizer_json: Path, tmp_path: Path) -> None:
    """float16 storage + Cast: parameters counted once, embedding rows exact, logits as torch's."""
    import onnx

    from netsim.lm.export import export_causal_lm

    model = tiny_model("qwen3", vocab_size(tokenizer_json), seed=5).half().float()
    export_causal_lm(model, tmp_path, tokenizer_json=tokenizer_json, name="fp16", role="any",
                     description="tiny fp16-stored", license="Apache-2.0", provenance={}, store_fp16=True)
    lm = OnnxCausalLM.load(tmp_path)
    graph = onnx.load(str(tmp_path / "model.onnx")).graph
    assert sum(1 for node in graph.node if node.op_type == "Cast" and node.input[0].endswith("fp16")) >= 10
    assert lm.geometry.n_params == sum(p.numel() for p in model.parameters())
    assert geometry_from_onnx(tmp_path / "model.onnx").n_params == lm.geometry.n_params
    table = model.get_input_embeddings().weight.detach().numpy()
    np.testing.assert_array_equal(lm.embed([1, 2, 300]), table[[1, 2, 300]])
    ids = _ids(lm, 16, seed=6)
    assert np.abs(lm.prefill(ids)[0] - _torch_logits(model, ids)).max() < TOL
