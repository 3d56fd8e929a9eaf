"""Payload sizes against hand-computed closed forms (docs/payloads.md), and against real arrays."""

from __future__ import annotations

import dataclasses

import numpy as np
import pydantic
import pytest

from netsim.lm.cards import list_cards, load_card
from netsim.lm.geometry import ModelGeometry
from netsim.lm.onnx_lm import OnnxCausalLM
from netsim.paths import PROJECT_ROOT
from netsim.payload import (
    MESSAGE_HEADER_BYTES,
    PAYLOAD_TYPES,
    WIRE_BYTES,
    WIRE_DTYPES,
    AdapterWeights,
    Control,
    DenseLogits,
    Embeddings,
    KVCache,
    Payload,
    Text,
    TokenIds,
    TopKLogits,
    WireDtype,
    element_nbytes,
    lora_n_params,
    text_nbytes,
    tokens_nbytes,
)

H = MESSAGE_HEADER_BYTES
assert H == 16  # the literals below are written for a 16-byte header


@pytest.fixture(scope="module")
def qwen3() -> ModelGeometry:
    """Qwen3-0.6B's cost card: 28 layers · 8 kv heads · 128 head_dim, bf16."""
    return load_card("qwen3-0.6b")


@pytest.fixture(scope="module")
def slm() -> OnnxCausalLM:
    """The bundled 2-layer Llama (1 kv head · 64 head_dim, fp32 cache), for real KV arrays."""
    return OnnxCausalLM.load(PROJECT_ROOT / "models" / "shakespeare-slm")


def _toy(head_dim: int) -> ModelGeometry:
    return ModelGeometry(architecture="toy", n_layers=1, hidden_size=head_dim, n_heads=1, n_kv_heads=1,
                         head_dim=head_dim, vocab_size=10, intermediate_size=4, n_params=100)


# --- wire dtypes ----------------------------------------------------------------------------------

def test_wire_dtype_table() -> None:
    assert WIRE_BYTES == {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1, "int4": 0.5}
    assert set(WIRE_DTYPES) == set(WIRE_BYTES)


def test_unknown_dtype_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"'fp8'.*fp32, fp16, bf16, int8, int4"):
        element_nbytes("fp8")
    with pytest.raises(ValueError, match="'float16'"):  # geometry spelling is not a wire name
        DenseLogits(1, 10, "float16")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"'int8'.*valid: fp32, fp16, bf16\)"):
        TokenIds((1,), probs=(0.5,), prob_dtype="int8")  # no scale scheme outside KVCache


def test_wire_dtype_validates_as_a_scenario_parameter() -> None:
    class Params(pydantic.BaseModel):
        kv_dtype: WireDtype = "fp16"

    assert Params(kv_dtype="int4").kv_dtype == "int4"
    with pytest.raises(pydantic.ValidationError):
        Params(kv_dtype="fp8")  # type: ignore[arg-type]


# --- each payload by hand -------------------------------------------------------------------------

def test_token_ids_are_int32_with_optional_probabilities() -> None:
    assert TokenIds((5, 151_000, 7)).nbytes == 16 + 3 * 4
    assert TokenIds((5, 151_000, 7), probs=(0.5, 0.25, 0.25)).nbytes == 16 + 3 * (4 + 2)
    assert TokenIds((5, 151_000, 7), probs=(0.5, 0.25, 0.25), prob_dtype="fp32").nbytes == 16 + 3 * 8
    assert tokens_nbytes(1) == TokenIds((9,)).nbytes == 20
    with pytest.raises(ValueError, match="2 probs for 3 ids"):
        TokenIds((1, 2, 3), probs=(0.5, 0.5))


def test_text_counts_utf8_bytes_not_characters() -> None:
    text = "héllo → 世界 🙂"  # 12 characters
    # h 1, é 2, l l o 3, space 1, → 3, space 1, 世 3, 界 3, space 1, 🙂 4
    assert len(text) == 12
    assert Text(text).nbytes == 16 + 22 == text_nbytes(text)
    assert Text("").nbytes == 16


def test_top_k_logits_are_id_value_pairs_per_position() -> None:
    ids = ((1, 2, 3, 4, 5),) * 3
    values = ((5.0, 4.0, 3.0, 2.0, 1.0),) * 3
    assert TopKLogits(ids, values, k=5).nbytes == 16 + 3 * 5 * (4 + 2)
    assert TopKLogits(ids, values, k=5, dtype="bf16").nbytes == 16 + 3 * 5 * (4 + 2)
    assert TopKLogits(ids, values, k=5, dtype="fp32").nbytes == 16 + 3 * 5 * (4 + 4)
    with pytest.raises(ValueError, match="position 1 has 4 ids"):
        TopKLogits((ids[0], ids[0][:4]), (values[0], values[0][:4]), k=5)


def test_top_k_from_model_logits_keeps_the_largest_first() -> None:
    logits = np.array([[0.1, 3.0, -1.0, 2.0], [5.0, 0.0, 1.0, 4.0]], dtype=np.float32)  # (2, vocab 4)
    top = TopKLogits.from_logits(logits, k=2)
    assert top.ids == ((1, 3), (0, 3))
    assert top.values == ((3.0, 2.0), (5.0, 4.0))
    assert top.n_positions == 2 and top.nbytes == 16 + 2 * 2 * 6


def test_dense_logits_are_positions_times_vocab() -> None:
    assert DenseLogits(4, 151_936).nbytes == 16 + 4 * 151_936 * 2 == 1_215_504
    assert DenseLogits(4, 151_936, "fp32").nbytes == 16 + 4 * 151_936 * 4 == 2_430_992
    with pytest.raises(ValueError, match=r"shape \(3, 10\) for \(4, 10\)"):
        DenseLogits(4, 10, values=np.zeros((3, 10)))


def test_attached_arrays_stay_out_of_equality_and_hashing() -> None:
    a = DenseLogits(2, 3, values=np.zeros((2, 3)))
    b = DenseLogits(2, 3, values=np.ones((2, 3)))
    assert a == b and hash(a) == hash(b)
    assert Embeddings(2, 3, vectors=np.zeros((2, 3))) == Embeddings(2, 3)


def test_embeddings_adapters_and_control() -> None:
    assert Embeddings(3, 1024).nbytes == 16 + 3 * 1024 * 2
    assert Embeddings(3, 1024, "fp32").nbytes == 16 + 3 * 1024 * 4
    assert AdapterWeights(1_000_000, "bf16").nbytes == 16 + 2_000_000
    assert Control("ack").nbytes == 16
    assert Control("threshold", body_bytes=4).nbytes == 20
    with pytest.raises(ValueError, match="body_bytes must be ≥ 0"):
        Control("ack", body_bytes=-1)
    with pytest.raises(ValueError, match="n_vectors must be ≥ 0"):
        Embeddings(-1, 8)


# --- KV cache -------------------------------------------------------------------------------------

def test_kv_cache_of_qwen3_card_in_every_dtype(qwen3: ModelGeometry) -> None:
    # 2 (K, V) · 28 layers · 8 kv heads = 448 vectors of 128 elements per token
    vectors = 2 * 28 * 8
    assert KVCache(qwen3, 1).bytes_per_token == 114_688 == vectors * 128 * 2  # as stored: bf16
    assert KVCache(qwen3, 1, "fp32").bytes_per_token == vectors * 128 * 4 == 229_376
    assert KVCache(qwen3, 1, "fp16").bytes_per_token == 114_688
    # int8, one group per vector: 128 B of ints + one 2 B fp16 scale
    assert KVCache(qwen3, 1, "int8").bytes_per_token == vectors * (128 + 2) == 58_240
    # int8, groups of 32: 4 groups · (32 + 2)
    assert KVCache(qwen3, 1, "int8", group_size=32).bytes_per_token == vectors * 4 * 34 == 60_928
    # int4: 64 B of packed nibbles + scale; groups of 32: 4 · (16 + 2)
    assert KVCache(qwen3, 1, "int4").bytes_per_token == vectors * 66 == 29_568
    assert KVCache(qwen3, 1, "int4", group_size=32).bytes_per_token == vectors * 4 * 18 == 32_256
    # int4 with groups of one element: a nibble still takes a whole byte, plus its scale
    assert KVCache(qwen3, 1, "int4", group_size=1).bytes_per_token == vectors * 128 * 3 == 172_032
    # a message: one header, n_tokens · bytes per token
    assert KVCache(qwen3, 10, "int8").nbytes == 16 + 10 * 58_240 == 582_416
    assert KVCache(qwen3, 0).nbytes == 16


def test_kv_cache_of_some_layers(qwen3: ModelGeometry) -> None:
    assert KVCache(qwen3, 1, layers=(0, 27)).bytes_per_token == 2 * 2 * 8 * 128 * 2 == 8_192
    assert KVCache(qwen3, 3, "int8", layers=(5,)).nbytes == 16 + 3 * 2 * 1 * 8 * 130
    with pytest.raises(ValueError, match=r"layers \(28,\)"):
        KVCache(qwen3, 1, layers=(28,))
    with pytest.raises(ValueError, match="distinct"):
        KVCache(qwen3, 1, layers=(3, 3))


def test_int4_rounds_up_per_group() -> None:
    odd = _toy(head_dim=5)  # one layer, one kv head: 2 vectors per token
    assert KVCache(odd, 1, "int4").bytes_per_token == 2 * (3 + 2)  # ⌈5 / 2⌉ = 3 B + scale
    assert KVCache(odd, 1, "int8").bytes_per_token == 2 * (5 + 2)
    assert KVCache(odd, 1, "fp16").bytes_per_token == 2 * 5 * 2


def test_group_size_is_checked(qwen3: ModelGeometry) -> None:
    with pytest.raises(ValueError, match="must divide head_dim 128"):
        KVCache(qwen3, 1, "int8", group_size=48)
    with pytest.raises(ValueError, match="applies to int8/int4, not bf16"):
        KVCache(qwen3, 1, group_size=32)


@pytest.mark.parametrize("name", list_cards())
def test_kv_cache_as_stored_matches_every_card(name: str) -> None:
    geometry = load_card(name)
    assert KVCache(geometry, 7).nbytes == 16 + 7 * geometry.kv_bytes_per_token


def test_kv_cache_bytes_are_the_real_arrays(slm: OnnxCausalLM) -> None:
    """fp32 bytes equal the model's own cache arrays; int8 bytes equal what a symmetric per-group
    absmax quantiser of those arrays emits (int8 values + one fp16 scale per group)."""
    _, cache = slm.prefill([1, 2, 3, 4, 5, 6, 7])
    arrays = [a for kv in cache.layers for a in kv]  # each (1, kv_heads, T, head_dim)
    payload = KVCache(slm.geometry, 7, "fp32", cache=cache)
    assert payload.body_nbytes == sum(a.nbytes for a in arrays)

    group = 16
    quantised = 0
    for a in arrays:
        groups = a.reshape(*a.shape[:-1], -1, group)  # (1, kv_heads, T, head_dim / g, g)
        scale = (np.abs(groups).max(axis=-1, keepdims=True) / 127).astype(np.float16)
        q = np.round(groups / scale.astype(np.float32)).astype(np.int8)
        quantised += q.nbytes + scale.nbytes
    assert KVCache(slm.geometry, 7, "int8", group_size=group).body_nbytes == quantised

    with pytest.raises(ValueError, match="attached to a payload of 6 tokens"):
        KVCache(slm.geometry, 6, cache=cache)


# --- LoRA -----------------------------------------------------------------------------------------

def test_lora_params_by_hand(qwen3: ModelGeometry) -> None:
    # Qwen3-0.6B: hidden 1024, q out 16·128 = 2048, k/v out 8·128 = 1024, ffn 3072; r = 8
    attention = 8 * ((1024 + 2048) + (1024 + 1024) + (1024 + 1024) + (2048 + 1024))  # 81,920 per layer
    mlp = 8 * ((1024 + 3072) + (1024 + 3072) + (3072 + 1024))  # 98,304 per layer
    assert lora_n_params(qwen3, 8) == 28 * attention == 2_293_760
    every = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    assert lora_n_params(qwen3, 8, every) == 28 * (attention + mlp) == 5_046_272
    assert lora_n_params(qwen3, 8, ("q_proj", "v_proj")) == 28 * 8 * (3072 + 2048)
    assert AdapterWeights(lora_n_params(qwen3, 8)).nbytes == 16 + 2 * 2_293_760
    with pytest.raises(ValueError, match=r"unknown LoRA targets \['mlp'\]"):
        lora_n_params(qwen3, 8, ("q_proj", "mlp"))
    with pytest.raises(ValueError, match="rank must be > 0"):
        lora_n_params(qwen3, 0)


# --- the family -----------------------------------------------------------------------------------

def test_every_payload_is_a_frozen_slotted_dataclass_with_its_own_kind() -> None:
    kinds = [t.kind for t in PAYLOAD_TYPES]
    assert len(set(kinds)) == len(kinds) and "payload" not in kinds
    for t in PAYLOAD_TYPES:
        assert issubclass(t, Payload) and dataclasses.is_dataclass(t)
        assert "__dict__" not in dir(t) and t.__dataclass_params__.frozen  # type: ignore[attr-defined]
    token = TokenIds((1, 2))
    with pytest.raises(dataclasses.FrozenInstanceError):
        token.ids = (3,)  # type: ignore[misc]
    assert len({token, TokenIds((1, 2)), Text("a")}) == 2
