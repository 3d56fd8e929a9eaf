"""Per-token SLM/LLM routing (netsim/policies/hlm.py, uhlm.py, rand_hlm.py): the verdict of eq. 3 and its
residual against the speculative-sampling guarantee, uplink sizes, uncertainty ranges, the cache fit of
eq. 14, and runs on a small wired topology: token conservation, thresholds 0 and 1, determinism, and a peer
or edge server that is down or late."""

from __future__ import annotations

import copy
import functools
from typing import Any

import numpy as np
import polars as pl
import pytest

from netsim.lm.memo import LanguageModel
from netsim.lm.zoo import ModelStore
from netsim.payload import MESSAGE_HEADER_BYTES
from netsim.policies.hlm import (
    entropy_uncertainty,
    fit_hit_curve,
    known_draft,
    rejection_probability,
    sampling_uncertainty,
    uplink,
    verdict,
)
from netsim.results import Results
from netsim.scenario import parse_scenario
from netsim.simulation import run

SLM, LLM = "shakespeare-slm", "shakespeare-llm"
STAGES = ("tokens_local", "tokens_p2p", "tokens_edge", "tokens_llm")


# -- closed forms ------------------------------------------------------------------------------------


def test_rejection_probability_is_eq3() -> None:
    assert rejection_probability(0.5, 0.25) == pytest.approx(0.5)
    assert rejection_probability(0.2, 0.6) == 0.0  # the LLM likes it more: never rejected
    assert rejection_probability(0.4, 0.0) == 1.0


def test_verdict_with_the_dense_draft_samples_from_the_llm_distribution() -> None:
    """Speculative sampling: draft x ~ q, keep with 1 − β, else resample from norm(max(y − q, 0)); the
    final token is distributed as y exactly (Leviathan et al. 2023, Theorem 1). 40,000 draws, V = 6."""
    rng = np.random.default_rng(0)
    q = rng.dirichlet(np.ones(6))
    y = rng.dirichlet(np.ones(6))
    n = 40_000
    counts = np.zeros(6)
    drafts = rng.choice(6, size=n, p=q)
    for d in drafts:
        final, _ = verdict(q, y, int(d), known_draft(q, int(d), "dense", 0), rng)
        counts[final] += 1
    assert np.abs(counts / n - y).max() < 0.0125  # σ ≤ √(0.25/n) = 0.0025: 5σ


def test_token_prob_wire_knows_only_the_draft_entry() -> None:
    q = np.array([0.1, 0.6, 0.3])
    assert known_draft(q, 2, "token_prob", 0).tolist() == [0.0, 0.0, 0.3]
    assert known_draft(q, 0, "top_k", 1).tolist() == [0.1, 0.6, 0.0]  # top-1 plus the draft itself
    assert known_draft(q, 0, "dense", 0) is q


def test_uplink_sizes_follow_the_wire_format() -> None:
    q = np.full(4096, 1 / 4096)
    h = MESSAGE_HEADER_BYTES
    token_prob = uplink("token_prob", "fp16", 16, (5, 6, 7), 9, q, 151_936)
    assert [m.nbytes for m in token_prob] == [h + 3 * 4, h + 4 + 2]
    assert [m.nbytes for m in uplink("token_prob", "fp32", 16, (), 9, q, 151_936)] == [h + 4 + 4]
    top_k = uplink("top_k", "fp16", 16, (5,), 9, q, 151_936)
    assert [m.nbytes for m in top_k] == [h + 2 * 4, h + 16 * (4 + 2)]
    dense = uplink("dense", "fp32", 16, (), 9, q, 151_936)
    assert [m.nbytes for m in dense] == [h + 4, h + 151_936 * 4]  # the charged card's vocabulary


def test_uncertainties_stay_inside_their_ranges() -> None:
    rng = np.random.default_rng(1)
    peaked = np.array([20.0, 0.0, 0.0, 0.0])
    flat = np.zeros(4)
    assert sampling_uncertainty(peaked, 0, 8, 1.0, rng) == pytest.approx(0.5 / 9)  # no disagreement
    assert sampling_uncertainty(peaked, 1, 8, 1.0, rng) == pytest.approx(8.5 / 9)  # all disagree
    assert entropy_uncertainty(flat) == pytest.approx(1.0)
    assert entropy_uncertainty(peaked) < 1e-6


def test_eq14_fit_recovers_alpha() -> None:
    rng = np.random.default_rng(2)
    sizes = rng.integers(1, 200, size=20_000)
    hits = rng.random(sizes.size) < 1 - np.exp(-0.02 * sizes)
    assert fit_hit_curve(sizes, hits) == pytest.approx(0.02, rel=0.05)
    assert fit_hit_curve(np.zeros(3), np.zeros(3, dtype=bool)) is None


# -- runs on a small topology -------------------------------------------------------------------------


def small(policy: dict[str, Any], *, n_requests: int = 12, max_new_tokens: int = 6, seed: int = 5,
          links: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """a0 a1 a2 ── swa ── edgea        b0 b1 b2 ── swb ── edgeb;   swa, swb ── core ── cloud (LLM).
    Wired, 100 Mbit/s, 1 ms per hop (20 ms to the cloud). Every a*/b* hosts the SLM."""
    nodes: dict[str, Any] = {
        "swa": {"role": "router"}, "swb": {"role": "router"}, "core": {"role": "router"},
        "edgea": {"role": "edge", "profile": "jetson-agx-orin"},
        "edgeb": {"role": "edge", "profile": "jetson-agx-orin"},
        "cloud": {"role": "cloud", "profile": "nvidia-a100-80gb", "slots": 8, "models": [LLM]},
    }
    wires = [{"src": "swa", "dst": "edgea", "rate_mbps": 1000, "delay_ms": 1},
             {"src": "swb", "dst": "edgeb", "rate_mbps": 1000, "delay_ms": 1},
             {"src": "swa", "dst": "core", "rate_mbps": 1000, "delay_ms": 1},
             {"src": "swb", "dst": "core", "rate_mbps": 1000, "delay_ms": 1},
             {"src": "core", "dst": "cloud", "rate_mbps": 1000, "delay_ms": 20}]
    for side in "ab":
        for i in range(3):
            nodes[f"{side}{i}"] = {"role": "device", "profile": "oneplus-12", "models": [SLM]}
            wires.append({"src": f"{side}{i}", "dst": f"sw{side}", "rate_mbps": 100, "delay_ms": 1})
    for extra in links or []:
        for w in wires:
            if (w["src"], w["dst"]) == (extra["src"], extra["dst"]):
                w.update(extra)
    return {
        "name": "hlm-small", "seed": seed,
        "topology": {"nodes": nodes, "links": wires},
        "workload": {"n_requests": n_requests, "max_new_tokens": max_new_tokens,
                     "prompts": {"source": "corpus", "min_chars": 150, "max_chars": 400},
                     "sampling": {"temperature": 0.8}},
        "policy": {"teacher_forced": True, "prompt_tokens": 16, **policy},
    }


FED = {"name": "fedhlm", "rounds": 2, "threshold": 0.3, "uncertainty": "entropy",
       "clusters": [{"devices": ["a0", "a1", "a2"], "edge": "edgea"},
                    {"devices": ["b0", "b1", "b2"], "edge": "edgeb"}]}


@functools.cache
def store() -> ModelStore:
    """One store for every run of these tests: the models load once and their memo stays warm."""
    return ModelStore()


def simulate(raw: dict[str, Any]) -> Results:
    return run(parse_scenario(copy.deepcopy(raw)), store())


def conserved(results: Results) -> None:
    r = results.requests
    assert r["status"].to_list() == ["ok"] * r.height
    total = r.select(pl.sum_horizontal(*STAGES)).to_series()
    assert total.to_list() == r["n_output_tokens"].to_list()


@pytest.mark.parametrize("policy", [FED, {"name": "uhlm", "threshold": 0.5},
                                    {"name": "rand_hlm", "p_offload": 0.5}],
                         ids=["fedhlm", "uhlm", "rand_hlm"])
def test_every_token_is_resolved_exactly_once(policy: dict[str, Any]) -> None:
    results = simulate(small(policy))
    conserved(results)
    r = results.requests
    assert int(r["n_output_tokens"].sum()) == 12 * 6
    assert (r["tokens_cache"] <= r["tokens_local"]).all()
    assert (r["llm_transmissions"] == r["tokens_llm"] + r["llm_timeouts"]).all()


def test_threshold_zero_sends_every_token_on_and_one_keeps_all() -> None:
    zero = simulate(small({"name": "uhlm", "threshold": 0.0})).requests
    assert int(zero["tokens_local"].sum()) == 0
    assert (zero["tokens_llm"] == zero["n_output_tokens"]).all()
    one = simulate(small({"name": "uhlm", "threshold": 1.0})).requests
    assert (one["tokens_local"] == one["n_output_tokens"]).all()
    assert int(one["bytes_total"].sum()) == 0  # nothing left any device
    # the same with entropy as the uncertainty
    zero_h = simulate(small({"name": "uhlm", "threshold": 0.0, "uncertainty": "entropy"})).requests
    assert int(zero_h["tokens_local"].sum()) == 0


def test_same_seed_same_results() -> None:
    a = simulate(small(FED))
    b = simulate(small(FED))
    assert a.requests.drop("output_text").equals(b.requests.drop("output_text"))
    assert a.tables["rounds"].equals(b.tables["rounds"])


def test_prefetching_the_next_questions_changes_no_result(monkeypatch: pytest.MonkeyPatch) -> None:
    """The policy starts the next draft's and the cloud's model calls ahead (LanguageModel.prefetch);
    a fresh store run with prefetching off gives the same run, event for event."""
    raw = small({**FED, "teacher_forced": False}, n_requests=18, max_new_tokens=10)
    models = ModelStore()
    ahead = run(parse_scenario(copy.deepcopy(raw)), models)
    assert models.load("shakespeare-slm").n_prefetched > 0 and models.load("shakespeare-llm").n_prefetched > 0
    monkeypatch.setattr(LanguageModel, "prefetch", lambda self, prefix: None)
    on_demand = run(parse_scenario(copy.deepcopy(raw)), ModelStore())
    assert ahead.requests.equals(on_demand.requests)
    assert ahead.events.equals(on_demand.events)
    assert ahead.tables["rounds"].equals(on_demand.tables["rounds"])


def test_teacher_forced_scores_and_llm_agreement() -> None:
    """Rand-HLM with p = 1 sends every draft to the LLM, which keeps or resamples it from the residual: on
    the same prefixes the emitted tokens then follow the LLM, so they agree with its own choices more often
    than the SLM's drafts alone (p = 0) do."""
    all_llm = simulate(small({"name": "rand_hlm", "p_offload": 1.0}, n_requests=12)).requests
    no_llm = simulate(small({"name": "rand_hlm", "p_offload": 0.0}, n_requests=12)).requests
    assert all_llm["accuracy"].is_between(0, 1).all()
    assert float(all_llm["agreement"].mean()) > float(no_llm["agreement"].mean())


def _abandoned(results: Results) -> int:
    return results.events.filter(pl.col("kind") == "abandon").height


def test_a_peer_that_is_down_passes_the_token_on() -> None:
    """a1's wire is down for the whole run: every question to it times out (its bytes in flight are
    abandoned), the others still answer, and every token is still resolved once."""
    down = {"src": "a1", "dst": "swa", "outages": [{"start_s": 0.0, "end_s": 1000.0}]}
    policy = {**FED, "p2p_timeout_s": 0.05}
    raw = small(policy, links=[down])
    raw["workload"]["devices"] = ["a0", "a2", "b0", "b1", "b2"]  # a1 asks nothing: its own link is down
    results = simulate(raw)
    conserved(results)
    r = results.requests.filter(pl.col("device").is_in(["a0", "a2"]))
    assert int(r["p2p_timeouts"].sum()) > 0
    assert _abandoned(results) > 0


def test_a_late_peer_and_a_dead_edge_pass_the_token_on() -> None:
    """b1 sits behind a 10 kbit/s wire (its answers come after 20 ms), edgeb is cut off: b0's and b2's
    questions to b1 time out, their edge stage times out, and the tokens go to the cloud directly."""
    slow = {"src": "b1", "dst": "swb", "rate_mbps": 0.01}
    dead_edge = {"src": "swb", "dst": "edgeb", "outages": [{"start_s": 0.0, "end_s": 1000.0}]}
    policy = {**FED, "p2p_timeout_s": 0.02, "edge_timeout_s": 0.02}
    raw = small(policy, links=[slow, dead_edge])
    raw["workload"]["devices"] = ["a0", "a1", "a2", "b0", "b2"]
    results = simulate(raw)
    conserved(results)
    b = results.requests.filter(pl.col("device").is_in(["b0", "b2"]))
    assert int(b["p2p_timeouts"].sum()) > 0
    assert int(b["edge_timeouts"].sum()) > 0
    assert int(b["tokens_edge"].sum()) == 0
    assert int(b["tokens_llm"].sum()) > 0 and int(b["llm_timeouts"].sum()) == 0  # verified, from the device
    assert _abandoned(results) > 0


def test_draw_is_the_engine_sampler() -> None:
    """The draft is drawn from q computed once; it must be the token `sample` would draw from the logits."""
    from netsim.lm.sampling import SamplingSpec, probabilities, sample
    from netsim.policies.hlm import draw

    rng = np.random.default_rng(3)
    for spec in (SamplingSpec(), SamplingSpec(temperature=0.8), SamplingSpec(temperature=1.2, top_k=40)):
        for _ in range(50):
            z = rng.normal(0, 3, 512).astype(np.float32)
            seed = int(rng.integers(1 << 30))
            assert draw(probabilities(z, spec), spec.greedy, np.random.default_rng(seed)) == sample(
                z, spec, np.random.default_rng(seed))


@pytest.mark.parametrize(("wire", "kind"), [("top_k", "topk_logits"), ("dense", "dense_logits")])
def test_wire_formats_reach_the_network(wire: str, kind: str) -> None:
    """Every draft sent to the cloud carries its distribution in the chosen format (and its size)."""
    results = simulate(small({"name": "uhlm", "threshold": 0.0, "wire": wire, "top_k": 8}, n_requests=6,
                             max_new_tokens=3))
    conserved(results)
    sent = results.events.filter((pl.col("kind") == "tx") & (pl.col("detail") == kind))
    first_hop = sent.filter(pl.col("node").str.ends_with("->swa") | pl.col("node").str.ends_with("->swb"))
    assert first_hop.height == 6 * 3  # one per draft, all of them sent (threshold 0)
    size = MESSAGE_HEADER_BYTES + (8 * (4 + 2) if wire == "top_k" else 4096 * 2)
    assert set(first_hop["bytes"].to_list()) == {size}


def test_opportunistic_p2p_skips_peers_that_cost_more_than_the_cloud() -> None:
    """Eq. 13: with the peers behind 10 kbit/s wires, C_P2P / C_LLM exceeds any hit probability, so no
    question is sent; with ordinary wires the peers are asked."""
    slow = [{"src": f"{s}{i}", "dst": f"sw{s}", "rate_mbps": 0.01} for s in "ab" for i in (1, 2)]
    raw = small({**FED, "opportunistic": True}, links=slow)
    raw["workload"]["devices"] = ["a0", "b0"]
    results = simulate(raw)
    conserved(results)
    assert results.events.filter(pl.col("detail") == "embeddings").height == 0
    assert int(results.requests["p2p_timeouts"].sum()) == 0
    fast = simulate(small({**FED, "opportunistic": True}))
    assert fast.events.filter(pl.col("detail") == "embeddings").height > 0
