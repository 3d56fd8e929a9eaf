"""The two runtime-specific weight formats against hand-computed sizes (netsim/hardware/quant.py).

q4f16_1 (MLC-LLM): every matrix, the token table and the head 4-bit + an fp16 scale per 32 → 0.5625 B
per weight; norms fp16. 8da4w-g32 (ExecuTorch): decoder matrices 4-bit + an fp32 scale per 32 → 0.625
B per weight; token table and head each int8 + an fp32 scale per row (the head its own tensor even when
tied); norms fp32. Norms of a Llama decoder: 2 per layer + the final one, D each.
"""

from __future__ import annotations

import pytest

from netsim.hardware.quant import canonical_format, weight_layout
from netsim.lm.cards import load_card


def test_q4f16_1_llama_3_1_8b_by_hand() -> None:
    g = load_card("llama-3.1-8b")
    norms = 2 * 32 * 4096 + 4096  # 266,240
    assert g.n_params == 8_030_261_248
    expected = (8_030_261_248 - norms) * 9 // 16 + 2 * norms  # 4,517,404,672 B = 4.5004 bit/weight
    charged = g.charged_with("q4f16_1")
    assert charged.weight_bytes == expected == 4_517_404_672
    layout = weight_layout(charged, "q4f16_1")
    assert layout.embedding == layout.head == 128_256 * 4096 * 9 // 16  # untied: both 4.5 bit
    # decode streams the decoder and the head, not the input table (one row per token instead)
    assert charged.streamed_weight_bytes == layout.body + layout.head
    assert charged.embedding_row_bytes == pytest.approx(4096 * 9 / 16)
    assert charged.kv_cache_dtype == "bfloat16"  # the card's float dtype, not 4 bits


def test_8da4w_llama_3_2_1b_by_hand_and_against_the_executorch_file_size() -> None:
    g = load_card("llama-3.2-1b")  # tied table 128,256 × 2048
    table, norms = 128_256 * 2048, 2 * 16 * 2048 + 2048
    matrices = g.n_params - table - norms  # 973,078,528
    int8_table = table + 4 * 128_256
    expected = matrices * 5 // 8 + 2 * int8_table + 4 * norms
    charged = g.charged_with("8da4w-g32")
    assert charged.weight_bytes == expected == 1_134_807_040
    # pytorch/executorch examples/models/llama/README.md: "1B SpinQuant … 1,083 MiB", "3B … 2,435 MiB"
    assert charged.weight_bytes / 2**20 == pytest.approx(1083, rel=0.002)
    assert load_card("llama-3.2-3b").charged_with("8da4w-g32").weight_bytes / 2**20 == pytest.approx(
        2435, rel=0.002)
    # tied, yet the head is stored (and streamed) as its own int8 tensor
    layout = weight_layout(charged, "8da4w-g32")
    assert layout.head == layout.embedding == int8_table
    assert charged.streamed_weight_bytes == layout.body + int8_table


def test_format_names_are_canonical_and_group_sizes_must_divide() -> None:
    assert canonical_format("Q4F16_1") == "q4f16_1" and canonical_format("8DA4W-G32") == "8da4w-g32"
    odd = load_card("qwen2.5-0.5b").model_copy(update={"hidden_size": 900, "n_params": 500_000_000})
    with pytest.raises(ValueError, match="q4f16_1: rows of 900 weights are no multiple of the group size 32"):
        odd.charged_with("q4f16_1")
