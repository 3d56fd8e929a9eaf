"""A node's compute queues concurrent calls and accounts energy: active × busy + idle × rest = total."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest
import simpy
from test_hardware_cost import toy_device

from netsim.hardware.compute import Compute, radio_energy_j
from netsim.hardware.cost import Cost, call_time_s
from netsim.hardware.profile import load_profile
from netsim.recorder import Recorder

# 50 GFLOP at 0.5 TFLOP/s effective fp16 = 0.1 s, + 1 ms overhead: every call takes 0.101 s
CALL = Cost(flops=50e9, bytes_moved=0.0, dtype="float16", n_tokens=1, batch=1)
T_CALL = 0.101


def caller(env: simpy.Environment, compute: Compute, request_id: int, start_s: float,
           finished: dict[int, float]) -> Generator[simpy.Event, Any, None]:
    yield env.timeout(start_s)
    dt = yield from compute.run(CALL, request_id=request_id, kind="decode", detail="toy")
    assert dt == pytest.approx(T_CALL)
    finished[request_id] = env.now


def test_call_time_of_the_fixture_call() -> None:
    assert call_time_s(toy_device(), CALL) == pytest.approx(T_CALL, rel=1e-12)


def test_two_concurrent_calls_on_one_slot_finish_at_t_and_2t(env: simpy.Environment,
                                                            recorder: Recorder) -> None:
    compute = Compute(env, "edge", toy_device(), recorder)
    finished: dict[int, float] = {}
    env.process(caller(env, compute, 1, 0.0, finished))
    env.process(caller(env, compute, 2, 0.0, finished))
    env.run(until=0.05)
    assert repr(compute) == "Compute('edge', 1/1 busy, 1 queued, toy)"
    env.run()
    assert sorted(finished.values()) == pytest.approx([T_CALL, 2 * T_CALL])
    assert compute.wait_s == pytest.approx(T_CALL)  # the second call waited one call time
    assert [(e.t_s, e.node, e.kind, e.request_id, e.duration_s) for e in recorder.events] == pytest.approx(
        [(T_CALL, "edge", "decode", 1, T_CALL), (2 * T_CALL, "edge", "decode", 2, T_CALL)])


def test_two_slots_serve_two_calls_at_once(env: simpy.Environment, recorder: Recorder) -> None:
    compute = Compute(env, "cloud", toy_device(), recorder, slots=2)
    finished: dict[int, float] = {}
    for rid in (1, 2, 3):
        env.process(caller(env, compute, rid, 0.0, finished))
    env.run()
    assert sorted(finished.values()) == pytest.approx([T_CALL, T_CALL, 2 * T_CALL])


def test_energy_active_times_busy_plus_idle_times_rest(env: simpy.Environment, recorder: Recorder) -> None:
    compute = Compute(env, "dev", toy_device(), recorder)  # 10 W active, 2 W idle
    finished: dict[int, float] = {}
    env.process(caller(env, compute, 7, 0.0, finished))
    env.process(caller(env, compute, 7, 0.5, finished))
    env.process(caller(env, compute, 8, 0.2, finished))
    env.run(until=1.0)
    assert compute.energy_j(7) == pytest.approx(10.0 * 2 * T_CALL)
    assert compute.energy_j(8) == pytest.approx(10.0 * T_CALL)
    assert compute.energy_j(99) == 0.0
    assert compute.busy_s == pytest.approx(3 * T_CALL)
    assert compute.idle_energy_j(1.0) == pytest.approx(2.0 * (1.0 - 3 * T_CALL))
    # hand total: 10 W · 0.303 s + 2 W · 0.697 s = 3.03 + 1.394 J
    assert compute.total_energy_j(1.0) == pytest.approx(3.03 + 1.394)


def test_idle_energy_counts_every_slot(env: simpy.Environment, recorder: Recorder) -> None:
    compute = Compute(env, "srv", toy_device(), recorder, slots=4)
    env.process(caller(env, compute, 1, 0.0, {}))
    env.run(until=2.0)
    assert compute.idle_energy_j(2.0) == pytest.approx(2.0 * (4 * 2.0 - T_CALL))
    with pytest.raises(ValueError, match="before the end"):
        compute.idle_energy_j(0.01)


def test_radio_energy_is_linear_in_bits() -> None:
    phone = load_profile("oneplus-12")
    # LTE, Huang et al. 2012: 438.39 nJ per bit sent, 51.97 nJ per bit received
    assert radio_energy_j(phone, 8_000, 80_000) == pytest.approx(8_000 * 438.39e-9 + 80_000 * 51.97e-9)
    assert radio_energy_j(load_profile("nvidia-a100-80gb"), 8_000, 8_000) == 0.0
    with pytest.raises(ValueError):
        radio_energy_j(phone, -1, 0)
