"""Roofline times and call costs against values worked out by hand (docs/hardware.md, "Cost of a call").

Toy model: 2 layers, hidden 64, 4 heads × 16, 2 KV heads, vocab 100, 1,000,000 params, untied, fp16.
  P_head = 100·64 = 6,400; P_body = 1,000,000 − 6,400 (input embedding) − 6,400 (head) = 987,200
  KV bytes/token = 2·2·2·16·2 = 256; attention FLOPs per (query, key) = 4·2·4·16 = 512
Toy device: fp32 0.5 TFLOP/s, fp16 1 TFLOP/s, 100 GB/s, η_c = η_m = 0.5, 1 ms per call.
"""

from __future__ import annotations

import pytest

from netsim.hardware.cost import (
    Cost,
    attention_context_sum,
    batched_cost,
    call_time_s,
    decode_cost,
    prefill_cost,
    tiled_flops,
    wave_efficiency,
)
from netsim.hardware.profile import DeviceProfile
from netsim.lm.geometry import ModelGeometry

TOY = ModelGeometry(architecture="llama", n_layers=2, hidden_size=64, n_heads=4, n_kv_heads=2, head_dim=16,
                    vocab_size=100, intermediate_size=128, n_params=1_000_000, dtype="float16")


def toy_device(**update: object) -> DeviceProfile:
    fields: dict[str, object] = dict(
        name="toy", description="round numbers", kind="cpu_server", runtime="none",
        memory_bytes="1GB", mem_bw_bytes_per_s="100GB/s",
        peak_flops={"float32": "0.5TFLOPS", "float16": "1TFLOPS"},
        eta_compute=0.5, eta_memory=0.5, overhead_per_call_s="1ms", power_idle_w="2W", power_active_w="10W",
    )
    fields.update(update)
    numeric = ["memory_bytes", "mem_bw_bytes_per_s", "eta_compute", "eta_memory", "overhead_per_call_s",
               "power_idle_w", "power_active_w", "compute_units"]
    sources = {k: "test" for k in numeric if fields.get(k) is not None}
    sources |= {f"peak_flops.{d}": "test" for d in fields["peak_flops"]}  # type: ignore[union-attr]
    return DeviceProfile.model_validate({**fields, "sources": sources})


def test_attention_context_sum_is_causal() -> None:
    # 3 new tokens after 5 cached: they see 6, 7 and 8 positions.
    assert attention_context_sum(3, 5) == 6 + 7 + 8
    assert attention_context_sum(1, 0) == 1


def test_decode_cost_by_hand() -> None:
    c = decode_cost(TOY, past_len=10)
    # 2·987,200 + 2·6,400 + 512·(10 + 1)
    assert c.flops == 1_974_400 + 12_800 + 5_632
    # weights (987,200 + 6,400)·2 + embedding row 64·2 + KV read 10·256 + KV write 1·256
    assert c.bytes_moved == 1_987_200 + 128 + 2_560 + 256
    assert (c.dtype, c.n_tokens, c.batch) == ("float16", 1, 1)


def test_memory_bound_decode_time_by_hand() -> None:
    c = decode_cost(TOY, past_len=10)
    # compute 1,992,832 / 0.5e12 = 3.99 µs < memory 1,990,144 / 50e9 = 39.80 µs
    assert call_time_s(toy_device(), c) == pytest.approx(1e-3 + 1_990_144 / 50e9, rel=1e-12)


def test_compute_bound_prefill_time_by_hand() -> None:
    c = prefill_cost(TOY, n_tokens=1000, batch=4)
    # per sequence: 2·987,200·1000 + 2·6,400·1 (last-position logits only) + 512·(1000·1001/2)
    assert c.flops == 4 * (1_974_400_000 + 12_800 + 256_256_000)
    # weights once + embedding rows 4·1000·64·2 + no KV read + KV write 4·1000·256
    assert c.bytes_moved == 1_987_200 + 512_000 + 1_024_000
    # compute 8,922,675,200 / 0.5e12 = 17.845 ms ≫ memory 3,523,200 / 50e9 = 70 µs
    assert call_time_s(toy_device(), c) == pytest.approx(1e-3 + 8_922_675_200 / 0.5e12, rel=1e-12)


def test_batch_shares_weight_reads_but_multiplies_flops() -> None:
    one, eight = decode_cost(TOY, past_len=10), decode_cost(TOY, past_len=10, batch=8)
    assert eight.flops == 8 * one.flops
    # only the per-sequence part (embedding row + KV read + write = 2,944 B) is multiplied
    assert eight.bytes_moved == 1_987_200 + 8 * 2_944
    device = toy_device()
    assert call_time_s(device, eight) == pytest.approx(1e-3 + (1_987_200 + 8 * 2_944) / 50e9, rel=1e-12)
    assert call_time_s(device, eight) < 1.02 * call_time_s(device, one)  # batching is nearly free here


def test_kv_cache_reads_grow_with_context() -> None:
    short, long = decode_cost(TOY, past_len=10), decode_cost(TOY, past_len=10_010)
    assert long.bytes_moved - short.bytes_moved == 10_000 * 256
    assert long.flops - short.flops == 512 * 10_000
    assert call_time_s(toy_device(), long) - call_time_s(toy_device(), short) == pytest.approx(
        10_000 * 256 / 50e9, rel=1e-9)


def test_multi_token_verify_needs_logits_everywhere() -> None:
    verify = decode_cost(TOY, past_len=10, n_tokens=4)
    # 2·987,200·4 + 2·6,400·4 + 512·(4·10 + 4·5/2)
    assert verify.flops == 7_897_600 + 51_200 + 25_600
    same_shape_prefill = prefill_cost(TOY, n_tokens=4, past_len=10)
    assert verify.flops - same_shape_prefill.flops == 2 * 6_400 * 3  # three more LM-head rows
    assert verify.bytes_moved == same_shape_prefill.bytes_moved


def test_dtype_fallback_sets_the_peak() -> None:
    device = toy_device()
    c = decode_cost(TOY, past_len=0)
    as_bf16 = Cost(c.flops, c.bytes_moved, "bfloat16", 1, 1)
    as_int4 = Cost(c.flops * 1e4, c.bytes_moved, "int4", 1, 1)
    assert device.effective_dtype("bfloat16") == "float32"   # bf16 widens to fp32
    assert device.effective_dtype("int4") == "float16"       # int4 → int8 → fp16
    assert call_time_s(device, Cost(c.flops * 1e4, 0.0, "float16", 1, 1)) == pytest.approx(
        1e-3 + c.flops * 1e4 / 0.5e12)
    assert call_time_s(device, as_int4) == pytest.approx(1e-3 + c.flops * 1e4 / 0.5e12)
    assert call_time_s(device, Cost(as_bf16.flops * 1e4, 0.0, "bfloat16", 1, 1)) == pytest.approx(
        1e-3 + c.flops * 1e4 / 0.25e12)


def test_fused_costs_add_and_reject_mixed_dtypes() -> None:
    a = decode_cost(TOY, past_len=0)
    both = a + a
    assert (both.flops, both.bytes_moved) == (2 * a.flops, 2 * a.bytes_moved)
    with pytest.raises(ValueError, match="dtypes"):
        _ = a + Cost(1.0, 1.0, "float32", 1, 1)


@pytest.mark.parametrize("shape", [dict(n_tokens=0, past_len=0), dict(n_tokens=1, past_len=-1)])
def test_bad_call_shapes_are_refused(shape: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="bad call shape"):
        prefill_cost(TOY, **shape)


def test_kv_reads_are_charged_in_the_kv_dtype_not_the_weights() -> None:
    """int4 weights (0.5 B each) with the runtime's default fp16 cache: the weights term shrinks 4×, the KV
    term stays 256 B per cached token; an fp8 cache halves it (128 B)."""
    int4 = TOY.model_copy(update={"dtype": "int4"})
    c = decode_cost(int4, past_len=10)
    # weights 993,600·0.5 + embedding row 64·0.5 + KV read 10·256 + write 1·256 (fp16 cache)
    assert c.bytes_moved == 496_800 + 32 + 2_560 + 256
    fp8_cache = TOY.charged_with(kv_dtype="fp8")
    assert decode_cost(fp8_cache, 10_010).bytes_moved - decode_cost(fp8_cache, 10).bytes_moved == 10_000 * 128


def test_a_weight_format_streams_its_real_bytes() -> None:
    """Q8_0 (34 B per 32 weights) on the toy: the untied head 100×64 and the table at Q8_0 too (Q8_0 stays
    Q8_0), its matrices 2·(64·64 + 2·64·32 + 64·64 + 3·64·128) = 73,728 weights, the remaining
    1,000,000 − 73,728 − 2·6,400 = 913,472 one-dimensional parameters in F32 (4 B)."""
    q8 = TOY.charged_with("Q8_0")
    table, matrices, other = 6_400 // 32 * 34, 73_728 // 32 * 34, 913_472 * 4
    assert q8.weight_bytes == 2 * table + matrices + other
    c = decode_cost(q8, past_len=10)
    assert c.weight_bytes == table + matrices + other  # body + head; the input table is only looked up
    assert c.bytes_moved == c.weight_bytes + 64 // 32 * 34 + 11 * 256  # one Q8_0 row, KV at fp16


# -- GEMM tiles and waves on a GPU ------------------------------------------------------------------------

LLAMA2_7B = ModelGeometry(architecture="llama", n_layers=32, hidden_size=4096, n_heads=32, n_kv_heads=32,
                          head_dim=128, vocab_size=32000, intermediate_size=11008, n_params=6_738_415_616,
                          dtype="float16")


def test_wave_efficiency_by_hand() -> None:
    # 494 rows × 4096 on 108 SMs: ⌈494/128⌉·⌈4096/128⌉ = 4·32 = 128 tiles → 2 waves of 108
    assert wave_efficiency(494, 4096, 108) == pytest.approx(494 * 4096 / (2 * 108 * 128 * 128), rel=1e-12)
    # × 11008: 4·86 = 344 tiles → 4 waves (432 slots)
    assert wave_efficiency(494, 11008, 108) == pytest.approx(494 * 11008 / (4 * 108 * 128 * 128), rel=1e-12)
    # 512 × 13824 on 108 SMs: 4·108 = 432 tiles, exactly 4 full waves, no partial tile
    assert wave_efficiency(512, 13824, 108) == 1.0
    assert wave_efficiency(1, 4096, 108) == 1.0  # decode: matrix-vector kernels, not tiles
    assert wave_efficiency(127, 4096, 108) == 1.0


def test_tiled_flops_weigh_each_gemm_by_its_waves() -> None:
    gpu = toy_device(compute_units=108)
    cost = prefill_cost(LLAMA2_7B, 494)
    d, ffn, layers = 4096, 11008, 32
    widths = [(d, 4 * d * d), (ffn, 2 * d * ffn), (d, ffn * d)]  # q,k,v,o (MHA) + gate,up + down
    total = sum(w for _, w in widths)
    p_body = LLAMA2_7B.n_non_embedding_params - 32000 * d
    assert p_body == layers * total + (p_body - layers * total)  # norms are not matmuls: they stay unwaved
    expected = cost.flops + sum(2 * p_body * 494 * w / total * (1 / wave_efficiency(494, n, 108) - 1)
                                for n, w in widths)
    expected += 2 * 32000 * d * (1 / wave_efficiency(1, 32000, 108) - 1)  # one logits row: no tiles
    assert tiled_flops(gpu, cost) == pytest.approx(expected, rel=1e-12)
    assert tiled_flops(toy_device(), cost) == cost.flops  # no SMs given: the FLOPs as counted


def test_a_batching_server_tiles_the_rows_of_all_its_sequences_together() -> None:
    gpu = toy_device(compute_units=108)
    four = batched_cost([prefill_cost(LLAMA2_7B, 64)] * 4)
    body = {g.width: g.rows for g in four.gemms if g.kind == "body"}
    assert set(body.values()) == {256}  # 4 × 64 rows in one GEMM, tiled as 256 rows, not 64
    assert tiled_flops(gpu, four) == pytest.approx(tiled_flops(gpu, prefill_cost(LLAMA2_7B, 64, batch=4)),
                                                   rel=1e-12)
    assert tiled_flops(gpu, four) > four.flops


def test_a_formats_own_kernels_set_its_efficiency_and_compute_dtype() -> None:
    from netsim.hardware.runtime import RuntimeProfile

    runtime = RuntimeProfile.model_validate({
        "name": "r", "description": "test", "formats": ["fp16", "Q4_0", "8da4w-g32"],
        "kv_dtypes": ["float16"],
        "sources": {"formats": "t", "kv_dtypes": "t"},
        "efficiency": {"default": {
            "eta_compute": 0.5, "eta_memory": 0.5, "overhead_per_call_s": "1ms",
            "formats": {"q4_0": {"eta_memory": 0.25, "sources": {"eta_memory": "t"}},
                        "8da4w-g32": {"compute_dtype": "int8", "sources": {"compute_dtype": "t"}}},
            "sources": {"eta_compute": "t", "eta_memory": "t", "overhead_per_call_s": "t"}}}})
    device = toy_device(peak_flops={"float32": "0.5TFLOPS", "float16": "1TFLOPS", "int8": "4TOPS"},
                        eta_compute=None, eta_memory=None, overhead_per_call_s=None)
    device = device.with_runtime(runtime, "r")
    plain = decode_cost(LLAMA2_7B, past_len=0)
    q4 = decode_cost(LLAMA2_7B.charged_with("Q4_0"), past_len=0)
    assert call_time_s(device, plain) == pytest.approx(1e-3 + plain.bytes_moved / 50e9, rel=1e-12)
    assert call_time_s(device, q4) == pytest.approx(1e-3 + q4.bytes_moved / 25e9, rel=1e-12)  # η_m 0.25
    w4 = prefill_cost(LLAMA2_7B.charged_with("8da4w-g32"), 512)
    assert w4.dtype == "float16"
    assert call_time_s(device, w4) == pytest.approx(1e-3 + w4.flops / (4e12 * 0.5), rel=1e-12)  # int8 peak
