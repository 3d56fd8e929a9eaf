"""scenarios/spec_fleet.yaml is the fleet issue 9 item 4 describes; its compute comes from the
measured-latency tables (closed forms per call), and link jitter spreads each message's delay within
±jitter around the link's delay, keyed by the message, not by other traffic."""

from __future__ import annotations

from collections import Counter
from collections.abc import Generator
from typing import Any

import numpy as np
import polars as pl
import pytest
import simpy

from netsim.lm.zoo import ModelStore
from netsim.network import LinkSpec, TransportSpec, build_network
from netsim.paths import PROJECT_ROOT
from netsim.recorder import Recorder
from netsim.scenario import ClosedLoop, load_scenario
from netsim.simulation import run

FLEET = PROJECT_ROOT / "scenarios" / "spec_fleet.yaml"
DRAFT_S, PREFILL_S, VERIFY_S = 12e-3, 0.45e-3, 1.6e-3


def test_the_fleet_is_the_one_the_issue_describes() -> None:
    scenario = load_scenario(FLEET)
    nodes, links = scenario.topology.nodes, scenario.topology.links
    devices = [n for n, s in nodes.items() if s.role == "device"]
    verifiers = [n for n, s in nodes.items() if s.role == "edge"]
    assert len(devices) == 80 and len(verifiers) == 20
    drafts = [g for g in scenario.topology.groups if g.role == "device"]
    assert [g.count for g in drafts] == [8] * 10
    tiers = [g for g in scenario.topology.groups if g.role == "edge"]
    assert [(g.count, g.batching.max_batch) for g in tiers] == [(5, 12), (5, 12), (5, 14), (5, 11)]
    assert all(nodes[v].runtime.endswith("spec_fleet-verifier.yaml") for v in verifiers)
    assert all(nodes[d].runtime.endswith("spec_fleet-draft.yaml") for d in devices)
    per_device = Counter(link.src for link in links)
    assert set(per_device) == set(devices) and set(per_device.values()) == {4}
    assert all(link.dst in verifiers and link.rate_mbps == 100 and 5 <= link.delay_ms <= 12
               and link.jitter == 0.12 and link.duplex for link in links)
    assert set(Counter(link.dst for link in links).values()) == {16}  # two groups of 8 per verifier
    wl = scenario.workload
    assert isinstance(wl.arrival, ClosedLoop) and wl.arrival.think_mean_s == 1.7
    assert (wl.prompt_tokens.min, wl.prompt_tokens.max) == (32, 119)
    assert (wl.answer_tokens.min, wl.answer_tokens.max) == (80, 194)
    policy = scenario.policy
    assert (policy.name, policy.gamma, policy.choice, policy.candidates) == ("speculative", 4, "jsq", 4)


@pytest.fixture(scope="module")
def small_fleet_run() -> Any:
    """The fleet with 12 short conversations (8–12 tokens each) instead of 160."""
    scenario = load_scenario(FLEET, ["workload.n_requests=12", "workload.max_new_tokens=12",
                                     "workload.answer_tokens={min: 8, max: 12}"])
    return run(scenario, ModelStore())


def test_compute_is_charged_from_the_tables(small_fleet_run: Any) -> None:
    events, requests = small_fleet_run.events, small_fleet_run.requests
    assert requests["status"].to_list() == ["ok"] * 12
    on_device = events.filter(pl.col("node").str.starts_with("d") & (pl.col("kind") == "decode"))
    assert on_device.height > 0 and np.allclose(on_device["duration_s"], DRAFT_S)
    # a verifier prefills the prompt at 0.45 ms per token
    for row in requests.iter_rows(named=True):
        prefill = events.filter((pl.col("request_id") == row["request_id"]) & (pl.col("kind") == "prefill")
                                & (pl.col("node") == row["server"]))
        assert prefill.height == 1
        if prefill["detail"][0].endswith("batch=1"):
            assert prefill["duration_s"][0] == pytest.approx(row["n_prompt_tokens"] * PREFILL_S)
    # a verify step of B requests with n_i tokens each costs Σ n_i · 1.6 ms, 1 ≤ n_i ≤ γ + 1 = 5
    verify = events.filter(pl.col("kind") == "verify")
    batch = verify["detail"].str.extract(r"batch=(\d+)").cast(pl.Int64).to_numpy()
    tokens = verify["duration_s"].to_numpy() / VERIFY_S
    assert np.allclose(tokens, np.round(tokens)) and np.all(tokens >= batch) and np.all(tokens <= 5 * batch)
    assert int(requests["rounds"].sum()) == int(batch.sum())  # one verify per request and round


def test_jsq_picks_among_the_groups_verifiers(small_fleet_run: Any) -> None:
    scenario = load_scenario(FLEET)
    linked = {(link.src, link.dst) for link in scenario.topology.links}
    for row in small_fleet_run.requests.iter_rows(named=True):
        assert (row["device"], row["server"]) in linked


def _deliveries(jitter: float, n: int = 400, seed: int = 0) -> list[float]:
    """n 100-byte messages one after another over a 10 ms, 100 Mbit/s link: their one-way times."""
    env, recorder = simpy.Environment(), Recorder()
    link = LinkSpec(src="a", dst="b", rate_mbps=100, delay_ms=10, jitter=jitter)
    net = build_network(env, ["a", "b"], [link], [], TransportSpec(), np.random.default_rng(seed), recorder)
    out: list[float] = []

    def sender() -> Generator[simpy.Event, Any, None]:
        for i in range(n):
            delivery = yield from net.send("a", "b", 100, request_id=i)
            out.append(delivery.duration_s)

    env.process(sender())
    env.run()
    return out


def test_jitter_spreads_the_delay_uniformly_within_its_bounds() -> None:
    serialization_s = (100 + 52) * 8 / 100e6
    plain = np.array(_deliveries(0.0)) - serialization_s
    assert np.allclose(plain, 0.010)
    spread = np.array(_deliveries(0.12)) - serialization_s
    assert spread.min() >= 0.010 * 0.88 - 1e-12 and spread.max() <= 0.010 * 1.12 + 1e-12
    # uniform on [8.8, 11.2] ms: mean 10 ms, sd 0.24/√3 ms ≈ 0.69 ms
    assert spread.mean() == pytest.approx(0.010, abs=4 * 0.0012 / np.sqrt(3) / np.sqrt(400))
    assert spread.std() == pytest.approx(0.0012 / np.sqrt(3), rel=0.15)
    assert _deliveries(0.12) == _deliveries(0.12)  # the same draws for the same messages


def test_jitter_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="jitter"):
        LinkSpec(src="a", dst="b", rate_mbps=1, jitter=1.0)
