"""Heterogeneous-rank LoRA (netsim/lm/lora.py): sizes against payload.lora_n_params, SVD re-projection
against the Eckart–Young closed form, deterministic local training, merge and content-addressed export
against the torch model, and the training cost/memory formulas of the floe policy."""

from __future__ import annotations

import numpy as np
import pytest

from netsim.hardware.cost import forward_cost
from netsim.lm import lora
from netsim.lm.geometry import ModelGeometry
from netsim.payload import AdapterWeights, lora_n_params
from netsim.policies.floe import training_memory_bytes, training_step_cost

GEOM = ModelGeometry(architecture="llama", n_layers=2, hidden_size=32, n_heads=4, n_kv_heads=2, head_dim=8,
                     vocab_size=64, intermediate_size=48, n_params=20_000, dtype="float32",
                     tied_embeddings=True)


@pytest.mark.parametrize("targets", [("q_proj", "v_proj"), ("o_proj", "down_proj"), ("k_proj", "up_proj")])
@pytest.mark.parametrize("rank", [1, 4, 7])
def test_adapter_size_is_the_payload_formula(targets: tuple[str, ...], rank: int) -> None:
    adapter = lora.init_adapter(GEOM, targets, rank, (0, 1))
    assert adapter.n_params == lora_n_params(GEOM, rank, targets)
    # Hand count for q and v: per layer r·(d + H·d_h) + r·(d + H_kv·d_h)
    if targets == ("q_proj", "v_proj"):
        assert adapter.n_params == 2 * (rank * (32 + 32) + rank * (32 + 16))
    assert AdapterWeights(adapter.n_params, "fp16").nbytes == 16 + 2 * adapter.n_params
    # B = 0: the adapter starts as the base model
    assert all(not adapter.delta(k).any() for k in adapter.modules())


def _random_adapter(rank: int, seed: int) -> lora.Adapter:
    rng = np.random.default_rng(seed)
    base = lora.init_adapter(GEOM, ("q_proj", "v_proj"), rank, (seed,))
    b = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in base.b.items()}
    return lora.Adapter(rank, base.a, b)


def test_svd_reprojection_is_exact_when_the_rank_allows_and_optimal_when_not() -> None:
    a, b = _random_adapter(2, 1), _random_adapter(4, 2)
    w_a, w_b = 3.0, 1.0
    # 1. rank 6 ≥ rank(ΔW̄) = 2 + 4: the aggregate is the exact weighted mean of the updates
    (full,) = lora.aggregate([(a, w_a), (b, w_b)], [6])
    for k in a.modules():
        mean = (w_a * a.delta(k) + w_b * b.delta(k)) / (w_a + w_b)
        np.testing.assert_allclose(full.delta(k), mean, atol=1e-5)
        # 2. rank 2: the error is the Eckart–Young bound, √(Σ discarded σ²)
        (low,) = lora.aggregate([(a, w_a), (b, w_b)], [2])
        sigma = np.linalg.svd(mean, compute_uv=False)
        err = np.linalg.norm(low.delta(k) - mean)
        assert err == pytest.approx(np.sqrt((sigma[2:] ** 2).sum()), rel=1e-4)
    # 3. one client per requested rank, each of its own size
    out = lora.aggregate([(a, 1.0), (b, 1.0)], [2, 4, 8])
    assert [x.rank for x in out] == [2, 4, 8]
    assert [x.n_params for x in out] == [lora_n_params(GEOM, r, ("q_proj", "v_proj")) for r in (2, 4, 8)]


def test_zero_padding_would_not_average_the_updates() -> None:
    """Why SVD re-projection (lora.py doc): averaging A's and B's separately is not the mean update."""
    a, b = _random_adapter(4, 3), _random_adapter(4, 4)
    k = a.modules()[0]
    padded = a.scale * ((a.b[k] + b.b[k]) / 2) @ ((a.a[k] + b.a[k]) / 2)
    mean = (a.delta(k) + b.delta(k)) / 2
    assert np.linalg.norm(padded - mean) > 0.1 * np.linalg.norm(mean)
    (svd,) = lora.aggregate([(a, 1.0), (b, 1.0)], [8])
    np.testing.assert_allclose(svd.delta(k), mean, atol=1e-5)


def test_training_cost_is_three_forwards_plus_the_lora_matmuls() -> None:
    fwd = forward_cost(GEOM, 16, 0, 2, n_logits=16)
    cost = training_step_cost(GEOM, 2, 16, 1000)
    assert cost.flops == pytest.approx(3 * (fwd.flops + 2 * 1000 * 2 * 16))
    assert cost.bytes_moved == pytest.approx(3 * fwd.bytes_moved)
    # Korthikanti et al. eq. 1 by hand: L·s·b·h·(34 + 5·a·s/h) + weights + 16 B per LoRA parameter
    activations = 2 * 16 * 2 * 32 * (34 + 5 * 4 * 16 / 32)
    assert training_memory_bytes(GEOM, 1000, 2, 16) == pytest.approx(GEOM.weight_bytes + 16_000 + activations)


# ---------------------------------------------------------------------------------------------------
# torch side, on the bundled SLM
# ---------------------------------------------------------------------------------------------------

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def slm() -> tuple:
    from netsim.lm.onnx_lm import OnnxCausalLM
    from netsim.paths import bundled_models_dir

    model_dir = bundled_models_dir() / "shakespeare-slm"
    return model_dir, lora.load_base(model_dir), OnnxCausalLM.load(model_dir)


def _stream(onnx_lm) -> np.ndarray:
    """A short packed token stream (text, then end-of-text), as encode_stream makes a client's."""
    text = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n" * 4
    return np.asarray([*onnx_lm.tokenizer.encode(text), onnx_lm.tokenizer.eos_id], dtype=np.int64)


def test_local_training_is_deterministic_and_moves_only_the_adapter(slm: tuple) -> None:
    _, base, onnx_lm = slm
    geom = onnx_lm.geometry
    shared = lora.init_adapter(geom, ("q_proj", "v_proj"), 2, (0, 0))
    personal = lora.init_adapter(geom, ("o_proj",), 2, (0, 1))
    cfg = lora.LocalTraining(steps=3, batch_size=2, block_size=16, lr=1e-2)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    one = lora.train_adapter(base, shared, personal, _stream(onnx_lm), cfg, (5, 0, 1))
    two = lora.train_adapter(base, shared, personal, _stream(onnx_lm), cfg, (5, 0, 1))
    other = lora.train_adapter(base, shared, personal, _stream(onnx_lm), cfg, (6, 0, 1))
    for k in shared.modules():
        assert np.array_equal(one.shared.a[k], two.shared.a[k])
        assert np.array_equal(one.shared.b[k], two.shared.b[k])
        assert one.shared.b[k].any()  # B left zero: it trained
    assert one.losses == two.losses and one.losses != other.losses
    assert one.n_tokens == 3 * 2 * 16
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())  # the base stays frozen


def test_merged_export_is_content_addressed_and_matches_torch(slm: tuple, tmp_path) -> None:
    from netsim.lm.onnx_lm import OnnxCausalLM

    model_dir, base, onnx_lm = slm
    geom = onnx_lm.geometry
    cfg = lora.LocalTraining(steps=2, batch_size=2, block_size=16, lr=1e-2)
    trained = lora.train_adapter(base, lora.init_adapter(geom, ("q_proj", "v_proj"), 2, (1,)), None,
                                 _stream(onnx_lm), cfg, (1,))
    adapters = [trained.shared]
    path, again = (lora.export_personalised(base, model_dir, onnx_lm.sha256, adapters, tmp_path, name="p",
                                            provenance={}) for _ in range(2))
    assert again == path and path.name == lora.merged_digest(onnx_lm.sha256, adapters)[:20]
    exported = OnnxCausalLM.load(path)
    assert exported.sha256 != onnx_lm.sha256  # a distinct model: the memo keys it apart
    ids = onnx_lm.tokenizer.encode("Now is the winter of our discontent")
    with torch.no_grad():
        merged = lora.merge(base, adapters)
        expected = merged(input_ids=torch.tensor([ids]), use_cache=False).logits[0].numpy()
    got, _ = exported.prefill(ids)
    assert np.abs(got - expected).max() < 1e-4
    base_logits, _ = onnx_lm.prefill(ids)
    assert np.abs(got - base_logits).max() > 1e-3  # the adapter changed the model
