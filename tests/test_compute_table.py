"""Table-driven compute (docs/hardware.md, "Table-driven compute") against closed forms.

A runtime carrying measured per-token latencies charges a call of n new tokens per sequence for B
sequences at context p: t = overhead + Σ_sequences n · s(phase; n, p, B). With the spec_fleet numbers
(prefill 0.45 ms/token, verify 1.6 ms per token in the batch, draft decode 12 ms/token) every duration
below is a product written out by hand.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest
import simpy
import yaml
from test_hardware_cost import TOY, toy_device

from netsim.cli import main
from netsim.errors import InputError
from netsim.hardware.batching import BatchingCompute
from netsim.hardware.compute import Compute
from netsim.hardware.cost import Cost, batched_cost, call_time_s, decode_cost, prefill_cost
from netsim.hardware.profile import DeviceProfile
from netsim.hardware.runtime import ComputeTable, RuntimeProfile, load_runtime
from netsim.recorder import Recorder

PREFILL_S, VERIFY_S, DRAFT_S = 0.45e-3, 1.6e-3, 12e-3


def runtime(table: dict[str, Any], name: str = "measured") -> RuntimeProfile:
    return RuntimeProfile.model_validate({
        "name": name, "description": "measured latencies", "formats": ["fp16"], "kv_dtypes": ["float16"],
        "sources": {"formats": "test", "kv_dtypes": "test"}, "table": {"source": "test", **table}})


def device(table: dict[str, Any]) -> DeviceProfile:
    """The toy device (10 W active) under a table runtime; its pinned roofline numbers do not apply."""
    return toy_device().with_runtime(runtime(table), "measured")


VERIFIER = {"prefill_s_per_token": "0.45ms", "verify_s_per_token": "1.6ms"}
GRID = {"decode_s_per_token": [
    {"context": 0, "batch": 1, "s_per_token": "10ms"}, {"context": 1000, "batch": 1, "s_per_token": "20ms"},
    {"context": 0, "batch": 9, "s_per_token": "2ms"}, {"context": 1000, "batch": 9, "s_per_token": "6ms"}]}


def test_scalar_table_charges_tokens_times_seconds_per_token() -> None:
    verifier, draft = device(VERIFIER), device({"decode_s_per_token": "12ms"})
    assert call_time_s(verifier, prefill_cost(TOY, 200)) == pytest.approx(200 * PREFILL_S, rel=1e-12)
    assert call_time_s(verifier, prefill_cost(TOY, 200, past_len=50)) == pytest.approx(200 * PREFILL_S)
    # a verify step of γ = 5 for one request, and for a batch of b = 3: b·γ·t
    assert call_time_s(verifier, decode_cost(TOY, 40, n_tokens=5)) == pytest.approx(5 * VERIFY_S, rel=1e-12)
    assert call_time_s(verifier, decode_cost(TOY, 40, n_tokens=5, batch=3)) == pytest.approx(15 * VERIFY_S)
    assert call_time_s(draft, decode_cost(TOY, 7)) == pytest.approx(DRAFT_S, rel=1e-12)
    # 4 draft steps of one token each: 4 · 12 ms, whatever the context
    steps = [call_time_s(draft, decode_cost(TOY, p)) for p in (10, 11, 12, 13)]
    assert sum(steps) == pytest.approx(4 * DRAFT_S)


def test_a_phase_the_table_lacks_is_charged_at_the_nearest_given_one() -> None:
    verifier = device(VERIFIER)
    assert call_time_s(verifier, decode_cost(TOY, 9)) == pytest.approx(VERIFY_S)  # decode ← verify
    draft = device({"decode_s_per_token": "12ms"})
    assert call_time_s(draft, decode_cost(TOY, 9, n_tokens=4)) == pytest.approx(4 * DRAFT_S)  # verify←decode
    assert call_time_s(draft, prefill_cost(TOY, 3)) == pytest.approx(3 * DRAFT_S)  # prefill ← decode
    only_prefill = device({"prefill_s_per_token": "1ms"})
    assert call_time_s(only_prefill, decode_cost(TOY, 9)) == pytest.approx(1e-3)


def test_overhead_per_call_is_added_once_per_call() -> None:
    d = device({**VERIFIER, "overhead_per_call_s": "3ms"})
    assert call_time_s(d, prefill_cost(TOY, 10)) == pytest.approx(3e-3 + 10 * PREFILL_S, rel=1e-12)
    assert call_time_s(d, decode_cost(TOY, 10, n_tokens=4, batch=2)) == pytest.approx(3e-3 + 8 * VERIFY_S)


def test_grid_is_bilinear_inside_and_clamped_outside() -> None:
    d = device(GRID)
    # at the centre of the (context, batch) cell: mean of the four corners = (10 + 20 + 2 + 6)/4 ms
    centre = call_time_s(d, batched_cost([decode_cost(TOY, 500)] * 5))
    assert centre == pytest.approx(5 * 9.5e-3, rel=1e-12)
    # along context at batch 1: 10 + 10·(250/1000) ms
    assert call_time_s(d, decode_cost(TOY, 250)) == pytest.approx(12.5e-3, rel=1e-12)
    # beyond the measured context and batch: the nearest edge (1000, 9) = 6 ms per token, not extrapolated
    assert call_time_s(d, decode_cost(TOY, 5000, batch=12)) == pytest.approx(12 * 6e-3, rel=1e-12)


def test_each_sequence_of_a_mixed_step_pays_at_its_own_context() -> None:
    d = device(GRID)
    step = batched_cost([decode_cost(TOY, 0), decode_cost(TOY, 1000)])  # B = 2: 1/8 of the way to 9
    short, long = 10e-3 + (2e-3 - 10e-3) / 8, 20e-3 + (6e-3 - 20e-3) / 8
    assert call_time_s(d, step) == pytest.approx(short + long, rel=1e-12)


def run_calls(compute: Compute | BatchingCompute, env: simpy.Environment,
              calls: list[tuple[int, Cost]]) -> list[tuple[int, float, float]]:
    done: list[tuple[int, float, float]] = []

    def one(request_id: int, cost: Cost) -> Generator[simpy.Event, Any, None]:
        dt = yield from compute.run(cost, request_id=request_id, kind="call")
        done.append((request_id, env.now, dt))

    for request_id, cost in calls:
        env.process(one(request_id, cost))
    env.run()
    return sorted(done)


def test_fifo_compute_charges_the_table_and_the_energy_of_it() -> None:
    env = simpy.Environment()
    compute = Compute(env, "verifier", device(VERIFIER), Recorder())
    done = run_calls(compute, env, [(1, prefill_cost(TOY, 100)), (2, decode_cost(TOY, 100, n_tokens=4))])
    assert done[0][1:] == pytest.approx((100 * PREFILL_S, 100 * PREFILL_S))
    assert done[1][1:] == pytest.approx((100 * PREFILL_S + 4 * VERIFY_S, 4 * VERIFY_S))
    assert compute.energy_j(1) == pytest.approx(10.0 * 100 * PREFILL_S)  # P_active · t
    assert compute.energy_j(2) == pytest.approx(10.0 * 4 * VERIFY_S)


def test_a_batched_verify_step_costs_b_gamma_t_and_splits_energy_by_tokens() -> None:
    env = simpy.Environment()
    engine = BatchingCompute(env, "verifier", device(VERIFIER), Recorder(), max_batch=8)
    # three requests verify γ = 4, 4 and 2 drafted tokens in one step: (4 + 4 + 2) · 1.6 ms
    done = run_calls(engine, env, [(1, decode_cost(TOY, 30, n_tokens=4)),
                                   (2, decode_cost(TOY, 60, n_tokens=4)),
                                   (3, decode_cost(TOY, 90, n_tokens=2))])
    step = 10 * VERIFY_S
    assert [d[1:] for d in done] == [pytest.approx((step, step))] * 3
    assert engine.n_steps == 1
    energies = [engine.energy_j(r) for r in (1, 2, 3)]
    assert sum(energies) == pytest.approx(10.0 * step, rel=1e-12)  # conservation
    assert energies == pytest.approx([10.0 * 4 * VERIFY_S, 10.0 * 4 * VERIFY_S, 10.0 * 2 * VERIFY_S])


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"decode_s_per_token": GRID["decode_s_per_token"][:3]}, "no entry for context=1000, batch=9"),
        ({"decode_s_per_token": [{"context": 0, "s_per_token": "1ms"}, {"batch": 2, "s_per_token": "1ms"}]},
         "decode_s_per_token[1]: gives batch but"),
        ({"prefill_s_per_token": [{"tokens": 8, "s_per_token": "1ms"}, {"tokens": 8, "s_per_token": "2ms"}]},
         "prefill_s_per_token[1]: the same size as"),
        ({}, "give at least one of"),
        ({"decode_s_per_token": "-1ms"}, "decode_s_per_token"),
    ],
)
def test_a_bad_table_is_one_line_naming_the_yaml_path(tmp_path: Path, table: dict[str, Any],
                                                      message: str) -> None:
    raw = {"name": "mine", "description": "d", "formats": ["fp16"], "kv_dtypes": ["float16"],
           "sources": {"formats": "s", "kv_dtypes": "s"}, "table": {"source": "s", **table}}
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(InputError) as err:
        load_runtime(str(path))
    line = str(err.value)
    assert "\n" not in line and line.startswith(f"{path}: table") and message in line, line


def test_a_table_with_a_missing_size_fails_validation_with_exit_2(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    raw = {"name": "measured", "description": "d", "formats": ["fp32"], "kv_dtypes": ["float32"],
           "sources": {"formats": "s", "kv_dtypes": "s"},
           "table": {"source": "s", "decode_s_per_token": GRID["decode_s_per_token"][1:]}}
    (tmp_path / "runtimes").mkdir()
    (tmp_path / "runtimes" / "measured.yaml").write_text(yaml.safe_dump(raw))
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({
        "name": "t", "topology": {"nodes": {"phone": {
            "role": "device", "profile": "oneplus-12", "runtime": "runtimes/measured.yaml",
            "models": ["shakespeare-slm"]}}},
        "workload": {"n_requests": 1, "max_new_tokens": 2}, "policy": {"name": "device_only"}}))
    with pytest.raises(SystemExit) as info:
        main(["validate", str(tmp_path / "s.yaml")])
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    [line] = [ln for ln in err.strip().splitlines() if "runtime" in ln]
    assert "topology.nodes.phone.runtime: " in line, err
    assert "table: decode_s_per_token: no entry for context=0, batch=1" in line, err


def test_a_table_runtime_needs_no_efficiencies_and_a_roofline_one_needs_an_entry() -> None:
    bare = RuntimeProfile.model_validate({
        "name": "bare", "description": "d", "formats": ["fp16"], "kv_dtypes": ["float16"],
        "sources": {"formats": "s", "kv_dtypes": "s"},
        "efficiency": {"datacenter_gpu": {"eta_compute": 0.5, "eta_memory": 0.5, "overhead_per_call_s": "1ms",
                                          "sources": {"eta_compute": "s", "eta_memory": "s",
                                                      "overhead_per_call_s": "s"}}}})
    with pytest.raises(InputError, match=r"runtime 'bare' gives no efficiencies for device 'toy' \(kind "
                                         r"cpu_server\)"):
        toy_device().with_runtime(bare, "bare")
    assert ComputeTable.model_validate({"source": "s", "decode_s_per_token": 0.01}).s_per_token(
        "decode", 1, 0, 1) == 0.01
