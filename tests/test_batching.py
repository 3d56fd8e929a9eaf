"""Continuous batching against hand-computed step times (docs/hardware.md, "Batching servers").

Toy model and device of test_hardware_cost: weights W = (987,200 + 6,400)·2 = 1,987,200 B; a decode at
past_len p moves W + 128 (embedding row) + 256·p (KV read) + 256 (KV write) bytes; the device streams
50 GB/s effective and adds 1 ms per call, so decode is memory-bound and

    one step of sequences with past lengths p_i:  t = 1 ms + (W + Σ_i (384 + 256·p_i)) / 50e9 s
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Sequence
from typing import Any

import pytest
import simpy
from test_hardware_cost import TOY, toy_device

from netsim.hardware.batching import BatchingCompute
from netsim.hardware.compute import Compute
from netsim.hardware.cost import batched_cost, call_time_s, decode_cost, prefill_cost
from netsim.recorder import Recorder

W = 1_987_200
OVERHEAD_S = 1e-3
BW_S = 50e9  # 100 GB/s · η_m 0.5
P_ACTIVE_W, P_IDLE_W = 10.0, 2.0


def step_s(*past_lens: int) -> float:
    """Hand roofline of one decode step over sequences at these past lengths (memory-bound)."""
    return OVERHEAD_S + (W + sum(384 + 256 * p for p in past_lens)) / BW_S


Log = list[tuple[int, float, float, float]]  # (request_id, issued at, returned at, returned dt)


def decoder(env: simpy.Environment, compute: Compute | BatchingCompute, request_id: int, start_s: float,
            past_lens: Sequence[int], log: Log, n_tokens: int = 1,
            detail: str = "toy") -> Generator[simpy.Event, Any, None]:
    """A sequence decoding one token per call, each call issued the instant the previous returns."""
    yield env.timeout(start_s)
    for past_len in past_lens:
        t0 = env.now
        dt = yield from compute.run(decode_cost(TOY, past_len, n_tokens=n_tokens), request_id=request_id,
                                    kind="decode" if n_tokens == 1 else "verify", detail=detail)
        log.append((request_id, t0, env.now, dt))


def batching(env: simpy.Environment, recorder: Recorder, max_batch: int = 8) -> BatchingCompute:
    return BatchingCompute(env, "edge", toy_device(), recorder, max_batch=max_batch)


def test_hand_step_time_is_the_roofline_of_the_batched_cost() -> None:
    four = batched_cost([decode_cost(TOY, 10)] * 4)
    same = decode_cost(TOY, 10, batch=4)
    assert (four.bytes_moved, four.batch, four.weight_bytes) == (same.bytes_moved, 4, W)
    assert four.flops == pytest.approx(same.flops, rel=1e-15)
    assert call_time_s(toy_device(), four) == pytest.approx(step_s(10, 10, 10, 10), rel=1e-12)
    assert call_time_s(toy_device(), decode_cost(TOY, 10)) == pytest.approx(step_s(10), rel=1e-12)


def test_concurrent_identical_decodes_take_one_batched_step(env: simpy.Environment,
                                                            recorder: Recorder) -> None:
    compute = batching(env, recorder)
    log: Log = []
    for rid in range(4):
        env.process(decoder(env, compute, rid, 0.0, [10], log))
    env.run()
    t4 = step_s(10, 10, 10, 10)  # 1 ms + 1,998,976 B / 50 GB/s = 1.03998 ms
    assert [(end, dt) for _, _, end, dt in log] == pytest.approx([(t4, t4)] * 4, rel=1e-12)
    assert t4 < 1.01 * step_s(10) < 4 * step_s(10)  # not B× queueing as on Compute
    assert (compute.n_steps, compute.n_calls, compute.wait_s) == (1, 4, 0.0)
    assert compute.busy_s == pytest.approx(t4, rel=1e-12)
    assert [(e.t_s, e.node, e.kind, e.request_id, e.nbytes, e.duration_s, e.detail)
            for e in recorder.events] == pytest.approx(
        [(t4, "edge", "decode", rid, 0, t4, "toy batch=4") for rid in range(4)], rel=1e-12)


def test_a_call_arriving_mid_step_joins_the_next_one_with_the_running_sequences(
        env: simpy.Environment, recorder: Recorder) -> None:
    compute = batching(env, recorder)
    log: Log = []
    env.process(decoder(env, compute, 1, 0.0, [10, 11], log))
    env.process(decoder(env, compute, 2, 0.0, [10, 11], log))
    t_step1 = step_s(10, 10)
    env.process(decoder(env, compute, 3, t_step1 / 2, [10], log))
    env.run(until=t_step1 * 0.75)
    assert repr(compute) == "BatchingCompute('edge', 2/8 seqs in step, 1 queued, toy)"
    env.run()
    # step 2 = the two running sequences' next tokens (past 11) + the newcomer (past 10)
    t_step2 = step_s(11, 11, 10)
    assert sorted(log) == pytest.approx([
        (1, 0.0, t_step1, t_step1), (1, t_step1, t_step1 + t_step2, t_step2),
        (2, 0.0, t_step1, t_step1), (2, t_step1, t_step1 + t_step2, t_step2),
        (3, t_step1 / 2, t_step1 + t_step2, t_step2),  # returned dt = its step (it waited t_step1 / 2)
    ], rel=1e-12)
    assert compute.n_steps == 2
    assert compute.wait_s == pytest.approx(t_step1 / 2, rel=1e-12)
    assert [e.detail for e in recorder.events] == ["toy batch=2"] * 2 + ["toy batch=3"] * 3


def test_max_batch_caps_a_step_and_the_rest_go_next(env: simpy.Environment, recorder: Recorder) -> None:
    compute = batching(env, recorder, max_batch=2)
    log: Log = []
    for rid in range(5):
        env.process(decoder(env, compute, rid, 0.0, [10], log))
    env.run()
    t1, t2 = step_s(10), step_s(10, 10)
    # steps of 2, 2, 1 in arrival order
    assert [(rid, end) for rid, _, end, _ in log] == pytest.approx(
        [(0, t2), (1, t2), (2, 2 * t2), (3, 2 * t2), (4, 2 * t2 + t1)], rel=1e-12)
    assert compute.wait_s == pytest.approx(2 * t2 + 2 * t2, rel=1e-12)  # 2 calls wait t2, one 2·t2
    assert [e.detail for e in recorder.events] == ["toy batch=2"] * 4 + ["toy batch=1"]


def test_each_sequence_reads_its_own_kv_cache_and_pays_for_it(env: simpy.Environment,
                                                              recorder: Recorder) -> None:
    compute = batching(env, recorder)
    past = {1: 10, 2: 100, 3: 1000}
    for rid, p in past.items():
        env.process(decoder(env, compute, rid, 0.0, [p], []))
    env.run()
    step = batched_cost([decode_cost(TOY, p) for p in past.values()])
    # KV read 256·(10 + 100 + 1000), not 3·256·max(p) nor 256·p of one sequence
    assert step.bytes_moved == W + 3 * 384 + 256 * (10 + 100 + 1000)
    t = step_s(*past.values())
    assert [e.duration_s for e in recorder.events] == pytest.approx([t] * 3, rel=1e-12)
    # energy: 1 ms overhead split 1/3 each; the memory time by bytes, the weights split evenly
    for rid, p in past.items():
        t_i = OVERHEAD_S / 3 + (384 + 256 * p + W / 3) / BW_S
        assert compute.energy_j(rid) == pytest.approx(P_ACTIVE_W * t_i, rel=1e-12)
    assert compute.energy_j(1) < compute.energy_j(2) < compute.energy_j(3)


def test_energy_split_sums_to_active_power_times_busy_time(env: simpy.Environment,
                                                           recorder: Recorder) -> None:
    compute = batching(env, recorder, max_batch=3)
    env.process(decoder(env, compute, 1, 0.0, range(10, 20), []))
    env.process(decoder(env, compute, 2, 0.0005, range(50, 55), []))
    env.process(decoder(env, compute, 3, 0.0021, range(5, 8), [], n_tokens=4))  # verify steps
    env.process(decoder(env, compute, 4, 0.0, range(900, 906), []))
    env.process(decoder(env, compute, 5, 0.003, range(1, 4), []))
    env.run(until=1.0)
    assert compute.n_calls == 10 + 5 + 3 + 6 + 3
    assert {int(e.detail.split("=")[1]) for e in recorder.events} == {1, 2, 3}
    charged = sum(compute.energy_j(rid) for rid in range(1, 6))
    assert charged == pytest.approx(compute.active_energy_j, rel=1e-12)
    assert charged == pytest.approx(P_ACTIVE_W * compute.busy_s, rel=1e-12)
    assert compute.total_energy_j(1.0) == pytest.approx(
        P_ACTIVE_W * compute.busy_s + P_IDLE_W * (1.0 - compute.busy_s), rel=1e-12)
    with pytest.raises(ValueError, match="before the end"):
        compute.idle_energy_j(compute.busy_s / 2)


def test_compute_bound_steps_split_energy_by_flops(env: simpy.Environment, recorder: Recorder) -> None:
    compute = batching(env, recorder)
    calls = {1: prefill_cost(TOY, 1000), 2: prefill_cost(TOY, 3000)}

    def prompt(rid: int) -> Generator[simpy.Event, Any, None]:
        yield from compute.run(calls[rid], request_id=rid, kind="prefill", detail="toy")

    for rid in calls:
        env.process(prompt(rid))
    env.run()
    step = batched_cost(list(calls.values()))
    compute_s = step.flops / 0.5e12
    assert compute_s > step.bytes_moved / BW_S  # compute-bound
    assert compute.busy_s == pytest.approx(OVERHEAD_S + compute_s, rel=1e-12)
    for rid, cost in calls.items():
        assert compute.energy_j(rid) == pytest.approx(
            P_ACTIVE_W * (OVERHEAD_S / 2 + compute_s * cost.flops / step.flops), rel=1e-12)


def test_max_batch_one_is_compute_fifo(env: simpy.Environment, recorder: Recorder) -> None:
    fifo_env, fifo_recorder = simpy.Environment(), Recorder()
    fifo = Compute(fifo_env, "edge", toy_device(), fifo_recorder)
    one = batching(env, recorder, max_batch=1)
    workload = [(1, 0.0, range(10, 16)), (2, 0.0, range(200, 203)), (3, 0.0015, range(40, 45)),
                (4, 0.0015, range(7, 9)), (5, 0.0042, range(1000, 1004))]
    for e, compute in ((fifo_env, fifo), (env, one)):
        for rid, start_s, past_lens in workload:
            e.process(decoder(e, compute, rid, start_s, past_lens, []))
        e.run(until=1.0)

    def timeline(rec: Recorder) -> list[tuple[float, str, int | None, float]]:
        return [(e.t_s, e.kind, e.request_id, e.duration_s) for e in rec.events]
    assert timeline(recorder) == pytest.approx(timeline(fifo_recorder), rel=1e-12, abs=1e-15)
    assert {e.detail for e in recorder.events} == {"toy batch=1"}
    assert (one.busy_s, one.wait_s) == pytest.approx((fifo.busy_s, fifo.wait_s), rel=1e-12)
    for rid, _, _ in workload:
        assert one.energy_j(rid) == pytest.approx(fifo.energy_j(rid), rel=1e-12)
    assert one.total_energy_j(1.0) == pytest.approx(fifo.total_energy_j(1.0), rel=1e-12)


def test_prefill_is_a_step_of_its_own_and_verify_batches_with_decode(env: simpy.Environment,
                                                                     recorder: Recorder) -> None:
    compute = batching(env, recorder)

    def prompt() -> Generator[simpy.Event, Any, None]:
        yield env.timeout(0.0)
        yield from compute.run(prefill_cost(TOY, 32), request_id=9, kind="prefill", detail="toy")

    # issued at t = 0 in this order: decode, prefill, verify
    env.process(decoder(env, compute, 1, 0.0, [10], []))
    env.process(prompt())
    env.process(decoder(env, compute, 2, 0.0, [10], [], n_tokens=4))
    env.run()
    t_decode = call_time_s(toy_device(), batched_cost([decode_cost(TOY, 10), decode_cost(TOY, 10, 4)]))
    t_prefill = call_time_s(toy_device(), prefill_cost(TOY, 32))
    assert [(e.kind, e.request_id, e.detail) for e in recorder.events] == [
        ("decode", 1, "toy batch=2"), ("verify", 2, "toy batch=2"), ("prefill", 9, "toy batch=1")]
    assert [e.t_s for e in recorder.events] == pytest.approx(
        [t_decode, t_decode, t_decode + t_prefill], rel=1e-12)


def test_different_models_do_not_share_a_step(env: simpy.Environment, recorder: Recorder) -> None:
    compute = batching(env, recorder)
    env.process(decoder(env, compute, 1, 0.0, [10], [], detail="a"))
    env.process(decoder(env, compute, 2, 0.0, [10], [], detail="b"))
    env.process(decoder(env, compute, 3, 0.0, [10], [], detail="a"))
    env.run()
    t1, t2 = step_s(10), step_s(10, 10)
    assert [(e.request_id, e.detail) for e in recorder.events] == [(1, "a batch=2"), (3, "a batch=2"),
                                                                    (2, "b batch=1")]
    assert [e.t_s for e in recorder.events] == pytest.approx([t2, t2, t2 + t1], rel=1e-12)


def test_calls_issued_after_zero_time_hops_still_join_the_step(env: simpy.Environment,
                                                               recorder: Recorder) -> None:
    compute = batching(env, recorder)

    def late_by_hops(hops: int) -> Generator[simpy.Event, Any, None]:
        for _ in range(hops):
            yield env.timeout(0)
        yield from compute.run(decode_cost(TOY, 10), request_id=hops, kind="decode", detail="toy")

    for hops in range(4):
        env.process(late_by_hops(hops))
    env.run()
    assert compute.n_steps == 1
    assert {e.detail for e in recorder.events} == {"toy batch=4"}


def test_a_caller_interrupted_while_queued_leaves_the_queue(env: simpy.Environment,
                                                            recorder: Recorder) -> None:
    compute = batching(env, recorder, max_batch=1)
    env.process(decoder(env, compute, 1, 0.0, [10], []))

    def impatient() -> Generator[simpy.Event, Any, None]:
        yield env.timeout(step_s(10) / 4)
        with contextlib.suppress(simpy.Interrupt):
            yield from compute.run(decode_cost(TOY, 10), request_id=2, kind="decode", detail="toy")

    waiting = env.process(impatient())
    env.run(until=step_s(10) / 2)
    assert compute.queued == 1
    waiting.interrupt("deadline")
    env.run()
    assert compute.queued == 0
    assert (compute.n_steps, compute.energy_j(2)) == (1, 0.0)


def test_bad_sizes_are_refused(env: simpy.Environment, recorder: Recorder) -> None:
    with pytest.raises(ValueError, match="max_batch >= 1"):
        batching(env, recorder, max_batch=0)
    compute = batching(env, recorder, max_batch=2)
    call = compute.run(decode_cost(TOY, 10, batch=3), request_id=1, kind="decode")
    with pytest.raises(ValueError, match="cannot fit a step of at most 2"):
        next(call)


def test_a_batching_edge_serves_concurrent_requests_in_shared_steps(tmp_path) -> None:
    """End to end: three phones ask the same prompt at t = 0 over identical links; a batching edge runs
    one prefill step of 3 and then decode steps of 3, each exactly the batched roofline (weights read
    once per step), so every request ends at the same time — not 3× a single request's time."""
    import netsim
    from netsim.hardware.cost import batched_cost, call_time_s, decode_cost, prefill_cost
    from netsim.hardware.profile import load_profile
    from netsim.lm.zoo import ModelStore
    from netsim.scenario import parse_scenario

    (tmp_path / "prompts.txt").write_text("Shall I compare thee to a summer's day?\n")
    phones = {f"p{i}": {"role": "device", "profile": "oneplus-12"} for i in range(3)}
    raw = {
        "name": "batch", "seed": 1,
        "topology": {
            "nodes": {**phones, "edge": {"role": "edge", "profile": "nvidia-l4", "batching": {"max_batch": 8},
                                         "models": [{"name": "shakespeare-llm", "charged_as": "qwen3-4b"}]}},
            "links": [{"src": p, "dst": "edge", "rate_mbps": 100, "delay_ms": 2} for p in phones],
        },
        "workload": {"n_requests": 3, "max_new_tokens": 6,
                     "prompts": {"source": "file", "path": str(tmp_path / "prompts.txt")}},
        "policy": {"name": "edge_only"},
    }
    store = ModelStore()
    res = netsim.run(parse_scenario(raw), store)
    req, ev = res.requests, res.events
    assert (req["status"] == "ok").all() and req["e2e_s"].n_unique() == 1
    steps = ev.filter(ev["kind"].is_in(["prefill", "decode"]))
    assert steps["detail"].str.ends_with("batch=3").all()
    l4, card = load_profile("nvidia-l4"), store.card("qwen3-4b")
    n_prompt, n_out = int(req["n_prompt_tokens"][0]), int(req["n_output_tokens"][0])
    prefill = call_time_s(l4, batched_cost([prefill_cost(card, n_prompt)] * 3))
    decodes = [call_time_s(l4, batched_cost([decode_cost(card, n_prompt + i - 1)] * 3))
               for i in range(1, n_out)]
    single = call_time_s(l4, prefill_cost(card, n_prompt))
    assert steps.filter(steps["kind"] == "prefill")["duration_s"][0] == pytest.approx(prefill, rel=1e-12)
    assert prefill < 3 * single  # sharing the weight reads is the point of batching
    decode_steps = steps.filter(steps["kind"] == "decode")["duration_s"].unique(maintain_order=True).to_list()
    assert decode_steps == pytest.approx(decodes, rel=1e-12)
