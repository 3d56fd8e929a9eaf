"""Weight formats and KV-cache dtypes (netsim/hardware/quant.py) against hand-computed sizes and the
bits per weight llama.cpp publishes.

Qwen3-0.6B (models/cards/qwen3-0.6b.yaml), tied embeddings, 28 layers:
  token table V·D = 151,936 · 1,024 = 155,582,464 weights
  per layer q 1024×2048 + k, v 1024×1024 + o 2048×1024 + gate, up, down 1024×3072 = 15,728,640
  decoder matrices 28 · 15,728,640 = 440,401,920; the rest (norms) 596,049,920 − both = 65,536
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from netsim.errors import ScenarioError
from netsim.hardware.cost import decode_cost
from netsim.hardware.profile import load_profile, memory_needed_bytes
from netsim.hardware.quant import GGML_TYPES, bits_per_weight, canonical_format, weight_bytes
from netsim.lm.cards import load_card
from netsim.lm.geometry import ModelGeometry
from netsim.payload import KVCache
from netsim.scenario import parse_scenario
from netsim.validation import check_scenario

QWEN3 = load_card("qwen3-0.6b")
TABLE, MATRICES, NORMS = 155_582_464, 440_401_920, 65_536
KV_BF16 = 2 * 28 * 8 * 128 * 2  # 114,688 B per token

# meta-llama/Llama-3.1-8B config.json (untied); n_params = 32 · 218,103,808 + 2 · V·D + 65 · 4096 (norms)
LLAMA31_8B = ModelGeometry(
    architecture="llama", n_layers=32, hidden_size=4096, n_heads=32, n_kv_heads=8, head_dim=128,
    vocab_size=128_256, intermediate_size=14_336, n_params=8_030_261_248, dtype="bfloat16")


def test_ggml_block_types_are_their_struct_sizes() -> None:
    """ggml-common.h: Q4_0 = fp16 d + 16 B of nibbles per 32 weights, …, Q6_K = 210 B per 256."""
    bits = {name: t.bits_per_weight for name, t in GGML_TYPES.items()}
    assert bits == {"F32": 32, "F16": 16, "Q4_0": 4.5, "Q4_1": 5.0, "Q5_0": 5.5, "Q5_1": 6.0, "Q8_0": 8.5,
                    "Q4_K": 4.5, "Q5_K": 5.5, "Q6_K": 6.5625}


def test_qwen3_at_q4_0_is_charged_its_real_gguf_bytes() -> None:
    """Decoder matrices Q4_0 (18 B per 32), the tied token table Q6_K as the output head (210 B per 256),
    norms F32: 13,762,560 · 18 + 607,744 · 210 + 65,536 · 4 — not 596,049,920 · 0.5."""
    expected = MATRICES // 32 * 18 + TABLE // 256 * 210 + NORMS * 4
    assert expected == 375_614_464
    q4 = QWEN3.charged_with("Q4_0")
    assert q4.weight_bytes == weight_bytes(QWEN3, "Q4_0") == expected
    assert q4.weight_bytes > 1.26 * QWEN3.charged_with("int4").weight_bytes  # 298,024,960 as plain int4
    # a decode step streams the whole file (the tied table is the head) and reads one Q6_K row per token
    assert q4.streamed_weight_bytes == expected and q4.embedding_row_bytes == 1024 / 256 * 210
    assert decode_cost(q4, 0).weight_bytes == expected
    assert decode_cost(q4, 0).bytes_moved == expected + 840 + KV_BF16  # row + the new token's K/V (bf16)
    assert memory_needed_bytes([q4], kv_tokens=10) == expected + 10 * KV_BF16


@pytest.mark.parametrize(("file_type", "published_bpw"), [
    ("Q4_K_S", 4.6672), ("Q4_K_M", 4.8944), ("Q5_K_S", 5.5704), ("Q5_K_M", 5.7036), ("Q6_K", 6.5633),
    ("Q8_0", 8.5008),
])
def test_gguf_mixes_reproduce_llama_cpp_bits_per_weight(file_type: str, published_bpw: float) -> None:
    """llama.cpp tools/quantize/README.md, meta-llama/Llama-3.1-8B table (4 decimals): the per-tensor rules
    (output Q6_K, attn_v/ffn_down Q6_K in `use_more_bits` layers for _M, Q5_K in the first layers for
    Q4_K_S) give the published average to its last digit."""
    assert bits_per_weight(LLAMA31_8B, file_type) == pytest.approx(published_bpw, abs=5e-5)


@pytest.mark.parametrize(("file_type", "published_gib"), [
    ("Q4_0", 4.34), ("Q4_1", 4.78), ("Q5_0", 5.21), ("Q5_1", 5.65),
])
def test_legacy_gguf_types_match_llama_quantize_sizes(file_type: str, published_gib: float) -> None:
    """llama.cpp tools/quantize/quantize.cpp QUANT_OPTIONS ("Q4_0: 4.34G … @ Llama-3-8B", same shapes as
    3.1-8B): every matrix and the untied token table at the type, the output head Q6_K. The printed size
    has two decimals and includes the file's metadata (tokenizer, a few MB): within 0.01 GiB."""
    assert weight_bytes(LLAMA31_8B, file_type) / 2**30 == pytest.approx(published_gib, abs=0.01)


def test_q4_k_m_of_qwen3_by_hand() -> None:
    """use_more_bits(i, 28): i < 3, i ≥ 24, or (i − 3) % 3 == 2 → 14 of 28 layers keep attn_v (1024×1024)
    and ffn_down (3072×1024) at Q6_K; every other matrix Q4_K; the tied table Q6_K; norms F32."""
    six = 14 * (1024 * 1024 + 3072 * 1024)
    expected = (six // 256 * 210 + (MATRICES - six) // 256 * 144 + TABLE // 256 * 210 + NORMS * 4)
    assert QWEN3.charged_with("q4_k_m").weight_bytes == expected == 390_753_280


def test_awq_gptq_and_fp8_keep_embeddings_and_head_in_16_bit() -> None:
    """AWQ g = 128: 4 + 4/128 + 16/128 bits per decoder weight (qweight, qzeros, fp16 scales); GPTQ also
    an int32 g_idx per input feature of each matrix; fp8: one byte per weight + an fp32 scale per matrix.
    The token table (tied head) and norms stay 2 bytes each."""
    sixteen_bit = 2 * (TABLE + NORMS)
    awq = MATRICES * (4 + 4 / 128 + 16 / 128) / 8
    assert QWEN3.charged_with("awq-g128").weight_bytes == awq + sixteen_bit
    inputs = 28 * (1024 + 1024 + 1024 + 2048 + 1024 + 1024 + 3072)  # in_features of every matrix
    assert QWEN3.charged_with("GPTQ-g128").weight_bytes == awq + 4 * inputs + sixteen_bit
    assert QWEN3.charged_with("fp8").weight_bytes == MATRICES + 4 * 28 * 7 + sixteen_bit


def test_plain_formats_set_the_dtype_and_keep_the_legacy_charge() -> None:
    """int4 is netsim's calibrated charge (0.5 B per parameter, no scales); bf16 and fp32 set the dtype."""
    assert QWEN3.charged_with("int4").model_dump() == QWEN3.model_copy(update={"dtype": "int4"}).model_dump()
    assert QWEN3.charged_with("int4").weight_bytes == 596_049_920 // 2
    assert QWEN3.charged_with("fp32").dtype == "float32"
    assert QWEN3.charged_with() is QWEN3  # nothing to change: the same object
    assert canonical_format("q8_0") == "Q8_0" and canonical_format("AWQ-G64") == "awq-g64"
    with pytest.raises(ValueError, match="unknown weight format 'Q3_X'"):
        canonical_format("Q3_X")
    with pytest.raises(ValueError, match="plain dtype"):
        ModelGeometry.model_validate(QWEN3.model_dump() | {"format": "bf16"})


def test_a_shape_awq_cannot_pack_is_refused_with_one_line() -> None:
    """SmolLM2-135M's hidden size 576 is no multiple of 128 (AutoAWQ asserts in_features % group_size);
    GGUF K-quants fall back to Q5_0/Q5_1/Q8_0 for such rows as llama.cpp does."""
    smol = load_card("smollm2-135m")
    with pytest.raises(ValueError, match=r"^awq-g128: attn_q of 576×576 does not pack"):
        smol.charged_with("awq-g128")
    assert smol.charged_with("awq-g64").format == "awq-g64"
    q4km = smol.charged_with("Q4_K_M")
    assert 5.5 < bits_per_weight(q4km, "Q4_K_M") < 8.5  # rows of 576: Q5_0 (5.5 bit), head Q8_0


# -- KV cache dtype -----------------------------------------------------------------------------------


def test_an_int4_model_keeps_a_16_bit_kv_cache() -> None:
    """The cache is not charged in the weights' dtype: int4 weights, bf16/fp16 cache (114,688 B per token
    of Qwen3-0.6B, not 28,672), in KV bytes, memory fit, decode KV reads and KV payloads."""
    int4 = QWEN3.charged_with("int4")
    assert int4.kv_cache_dtype == "float16" and int4.kv_bytes_per_token == KV_BF16
    bf16_cache = QWEN3.charged_with("int4", kv_dtype="bfloat16")
    assert bf16_cache.kv_cache_dtype == "bfloat16" and bf16_cache.kv_bytes_per_token == KV_BF16
    kv_tokens = 32_768
    assert memory_needed_bytes([int4], kv_tokens) == 596_049_920 // 2 + kv_tokens * KV_BF16
    # decode: every cached token adds its K/V read at 2 bytes per element
    assert decode_cost(int4, 1000).bytes_moved - decode_cost(int4, 0).bytes_moved == 1000 * KV_BF16
    assert KVCache(int4, 10).body_nbytes == 10 * KV_BF16
    # 8 GiB Orin Nano (5.2 GB usable): the 0.3 GB of weights fit, their 3.76 GB cache for 32k tokens too,
    # but not twice that — a cache charged at 4 bits (0.94 GB) would have fit four times over
    nano = load_profile("jetson-orin-nano")
    assert nano.fit_problem([int4], kv_tokens) is None
    problem = nano.fit_problem([int4], 2 * kv_tokens)
    assert problem is not None and problem.startswith("models need 7.81 GB")


@pytest.mark.parametrize(("kv_dtype", "per_element"), [
    ("float32", 4), ("float16", 2), ("fp8", 1), ("int8", 1), ("q8_0", 34 / 32), ("q4_0", 18 / 32),
])
def test_a_configured_kv_dtype_is_charged_everywhere(kv_dtype: str, per_element: float) -> None:
    g = QWEN3.charged_with(kv_dtype=kv_dtype)
    per_token = int(2 * 28 * 8 * 128 * per_element)
    assert g.weight_bytes == QWEN3.weight_bytes  # weights untouched
    assert g.kv_bytes_per_token == per_token
    assert KVCache(g, 3).body_nbytes == 3 * per_token  # a payload of the cache as stored
    assert KVCache(g, 3, "fp16").body_nbytes == 3 * KV_BF16  # an explicit wire dtype still re-encodes
    assert decode_cost(g, 100).bytes_moved - decode_cost(g, 0).bytes_moved == 100 * per_token


# -- scenarios ----------------------------------------------------------------------------------------

BASE = {
    "name": "q", "seed": 1,
    "topology": {
        "nodes": {
            "phone": {"role": "device", "profile": "oneplus-12",
                      "models": [{"name": "shakespeare-slm", "charged_as": "qwen3-0.6b", "format": "Q4_0",
                                  "kv_dtype": "fp8"}]},
            "cloud": {"role": "cloud", "profile": "nvidia-a100-80gb", "models": ["shakespeare-llm"]},
        },
        "links": [{"src": "phone", "dst": "cloud", "rate_mbps": 50, "delay_ms": 5}],
    },
    "workload": {"n_requests": 1, "max_new_tokens": 2},
    "policy": {"name": "device_only"},
}


def _with_phone_model(**ref: str) -> dict:
    raw = yaml.safe_load(yaml.safe_dump(BASE))
    raw["topology"]["nodes"]["phone"]["models"] = [{"name": "shakespeare-slm", **ref}]
    return raw


def test_a_node_charges_its_format_and_kv_dtype() -> None:
    from netsim.world import build_world

    raw = yaml.safe_load(yaml.safe_dump(BASE))
    phone = raw["topology"]["nodes"]["phone"]
    phone["profile"] = "raspberry-pi-5"  # its runtime, llama.cpp, runs Q4_0 (the phone's executorch does not)
    phone["models"][0]["kv_dtype"] = "q8_0"  # and keeps a q8_0 cache, not fp8 (runtime_profiles/)
    scenario = parse_scenario(raw)
    check_scenario(scenario)
    (hosted,) = build_world(scenario).nodes["phone"].models
    assert hosted.charged == QWEN3.charged_with("Q4_0", "q8_0")
    assert hosted.charged.weight_bytes == 375_614_464
    assert hosted.charged.kv_bytes_per_token == KV_BF16 * 17 // 32  # 34 B per 32 elements, not 64


@pytest.mark.parametrize(("ref", "line"), [
    ({"format": "Q3_X"}, "topology.nodes.phone.models[0].format: unknown weight format 'Q3_X' (known: Q4_0,"),
    ({"kv_dtype": "fp4"}, "topology.nodes.phone.models[0].kv_dtype: Input should be 'float32', 'float16',"),
])
def test_unknown_format_or_kv_dtype_is_one_line_naming_the_yaml_path(ref: dict, line: str) -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(_with_phone_model(**ref))
    (problem,) = info.value.problems
    assert problem.startswith(line)


def test_a_format_the_card_cannot_pack_is_a_validation_line() -> None:
    scenario = parse_scenario(_with_phone_model(charged_as="smollm2-135m", format="awq-g128"))
    with pytest.raises(ScenarioError) as info:
        check_scenario(scenario)
    assert info.value.problems == ["topology.nodes.phone.models[0].format: awq-g128: attn_q of 576×576 does "
                                   "not pack (input features must be a multiple of the group size, output "
                                   "features of 8)"]


def test_cli_exits_2_with_one_line_per_bad_field(tmp_path: Path) -> None:
    raw = _with_phone_model(format="Q4_K_X")
    raw["topology"]["nodes"]["cloud"]["models"] = [{"name": "shakespeare-llm", "kv_dtype": "int3"}]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    proc = subprocess.run([sys.executable, "-m", "netsim", "validate", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1] == "error: 2 problems"
    assert any(ln.startswith("error: topology.nodes.phone.models[0].format: unknown weight format 'Q4_K_X'")
               for ln in lines), lines
    assert any(ln.startswith("error: topology.nodes.cloud.models[0].kv_dtype: Input should be")
               for ln in lines), lines
