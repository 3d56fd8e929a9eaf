"""Whole runs against hand-composed expectations: a request's latency is exactly the sum of the network
and hardware closed forms along its path, bytes and tokens are conserved, and runs are reproducible."""

from __future__ import annotations

import copy
import math
from typing import Any

import polars as pl
import pytest

from netsim.hardware.cost import call_time_s, decode_cost, prefill_cost
from netsim.hardware.profile import load_profile
from netsim.lm.zoo import ModelStore
from netsim.scenario import parse_scenario
from netsim.simulation import run
from netsim.workload import make_requests
from netsim.world import STREAM_WORKLOAD, rng_for

RATE_MBPS, DELAY_MS, MTU, HEADER = 10.0, 5.0, 1500, 40

RAW: dict[str, Any] = {
    "name": "sim",
    "seed": 4,
    "topology": {
        "nodes": {
            "phone": {"role": "device", "profile": "oneplus-12", "models": ["shakespeare-slm"]},
            "cloud": {"role": "cloud", "profile": "nvidia-a100-80gb",
                      "models": [{"name": "shakespeare-slm", "charged_as": "qwen3-8b"}]},
        },
        "links": [{"src": "phone", "dst": "cloud", "rate_mbps": RATE_MBPS, "delay_ms": DELAY_MS,
                   "mtu_bytes": MTU, "header_bytes": HEADER}],
    },
    "workload": {"n_requests": 1, "max_new_tokens": 12},
    "policy": {"name": "cloud_only"},
}


@pytest.fixture(scope="module")
def store() -> ModelStore:
    return ModelStore()


def scenario(**changes: Any):
    raw = copy.deepcopy(RAW)
    for path, value in changes.items():
        node = raw
        *parents, last = path.split("__")
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        node[last] = value
    return parse_scenario(raw)


def one_hop_s(payload: int) -> float:
    """Store-and-forward hop: every MTU-sized packet carries HEADER bytes of header."""
    packets = math.ceil(payload / (MTU - HEADER))
    return (payload + packets * HEADER) * 8 / (RATE_MBPS * 1e6) + DELAY_MS * 1e-3


def test_device_only_latency_is_the_sum_of_roofline_calls(store: ModelStore) -> None:
    sc = scenario(policy={"name": "device_only"})
    row = run(sc, store).requests.row(0, named=True)
    phone, geom = load_profile("oneplus-12"), store.load("shakespeare-slm").geometry
    n_prompt, n_out = row["n_prompt_tokens"], row["n_output_tokens"]
    prefill = call_time_s(phone, prefill_cost(geom, n_prompt))
    decodes = [call_time_s(phone, decode_cost(geom, n_prompt + i - 1)) for i in range(1, n_out)]
    assert row["status"] == "ok" and n_out >= 1
    assert row["ttft_s"] == pytest.approx(prefill, rel=1e-9)
    assert row["e2e_s"] == pytest.approx(prefill + sum(decodes), rel=1e-9)
    assert (row["bytes_up"], row["bytes_down"], row["bytes_total"]) == (0, 0, 0)
    assert row["energy_device_j"] == pytest.approx(phone.power_active_w * row["e2e_s"], rel=1e-9)
    assert row["tokens_local"] == n_out and row["tokens_llm"] == 0


def test_cloud_only_ttft_and_streaming_match_closed_forms(store: ModelStore) -> None:
    sc = scenario()
    row = run(sc, store).requests.row(0, named=True)
    a100, card = load_profile("nvidia-a100-80gb"), store.card("qwen3-8b")
    n_prompt, n_out = row["n_prompt_tokens"], row["n_output_tokens"]
    # token_ids wire: 16 B framing + 4 B per int32 id, up (the prompt) and down (each token)
    up, down = one_hop_s(16 + 4 * n_prompt), one_hop_s(16 + 4)
    prefill = call_time_s(a100, prefill_cost(card, n_prompt))
    decodes = [call_time_s(a100, decode_cost(card, n_prompt + i - 1)) for i in range(1, n_out)]
    assert down < min(decodes)  # so streamed tokens never queue behind each other on the downlink
    assert row["ttft_s"] == pytest.approx(up + prefill + down, rel=1e-9)
    assert row["e2e_s"] == pytest.approx(up + prefill + sum(decodes) + down, rel=1e-9)
    assert row["bytes_up"] == 16 + 4 * n_prompt
    assert row["bytes_down"] == n_out * (16 + 4)
    assert row["charged_as"] == "qwen3-8b" and row["tokens_llm"] == n_out and row["llm_transmissions"] == 1
    phone = load_profile("oneplus-12")
    radio = phone.radio_tx_j_per_bit * 8 * row["bytes_up"] + phone.radio_rx_j_per_bit * 8 * row["bytes_down"]
    assert row["energy_device_j"] == pytest.approx(radio, rel=1e-9)


def test_api_text_wire_carries_the_json_request_and_one_sse_chunk_per_token(store: ModelStore) -> None:
    """`api_text`: the prompt inside a chat-completion JSON body up, an OpenAI-style SSE chunk per token
    down whose content is the token's text; bytes are those strings' UTF-8 sizes + 16 B framing."""
    sc = scenario(policy={"name": "cloud_only", "wire": "api_text"})
    res = run(sc, store)
    row = res.requests.row(0, named=True)
    prompt = make_requests(sc, rng_for(sc.seed, STREAM_WORKLOAD))[0].prompt
    assert row["bytes_up"] > 16 + len(prompt.encode())  # the prompt plus the JSON around it
    tx = res.events.filter(pl.col("kind") == "tx")
    down = tx.filter(pl.col("node").str.starts_with("cloud"))
    assert down.height == row["n_output_tokens"] and (down["detail"] == "text").all()
    assert row["bytes_down"] == down["bytes"].sum()
    tokenizer = store.load("shakespeare-slm").tokenizer
    ids = tokenizer.encode(row["output_text"], add_special_tokens=False)
    texts = [tokenizer.decode([t]) for t in ids]
    # each chunk = 16 + len(b"data: " + json + b"\n\n") and its json carries the token text
    chunk_json = [b - 16 - len("data: ") - 2 for b in down["bytes"].to_list()]
    assert all(j > len(t.encode()) + 100 for j, t in zip(chunk_json, texts, strict=False))
    plain = run(scenario(), store).requests.row(0, named=True)
    assert row["output_text"] == plain["output_text"]  # the wire changes bytes, never content
    assert row["e2e_s"] > plain["e2e_s"]


def test_edge_only_serves_from_the_nearest_edge(store: ModelStore) -> None:
    """Two edge servers, 2 ms and 9 ms away: edge_only picks the nearer one and its e2e is the same
    closed form as cloud_only's, with the edge's profile and card."""
    raw = copy.deepcopy(RAW)
    card_ref = {"name": "shakespeare-slm", "charged_as": "qwen3-4b"}
    raw["topology"]["nodes"].update({
        "near": {"role": "edge", "profile": "nvidia-l4", "models": [card_ref]},
        "far": {"role": "edge", "profile": "nvidia-a10", "models": [card_ref]},
    })
    raw["topology"]["links"] += [
        {"src": "phone", "dst": "far", "rate_mbps": RATE_MBPS, "delay_ms": 9.0, "mtu_bytes": MTU,
         "header_bytes": HEADER},
        {"src": "phone", "dst": "near", "rate_mbps": RATE_MBPS, "delay_ms": DELAY_MS, "mtu_bytes": MTU,
         "header_bytes": HEADER},
    ]
    raw["policy"] = {"name": "edge_only"}
    sc = parse_scenario(raw)
    row = run(sc, store).requests.row(0, named=True)
    l4, card = load_profile("nvidia-l4"), store.card("qwen3-4b")
    n_prompt, n_out = row["n_prompt_tokens"], row["n_output_tokens"]
    prefill = call_time_s(l4, prefill_cost(card, n_prompt))
    decodes = [call_time_s(l4, decode_cost(card, n_prompt + i - 1)) for i in range(1, n_out)]
    up, down = one_hop_s(16 + 4 * n_prompt), one_hop_s(16 + 4)
    assert row["server"] == "near" and row["charged_as"] == "qwen3-4b"
    assert row["e2e_s"] == pytest.approx(up + prefill + sum(decodes) + down, rel=1e-9)


def test_bytes_and_tokens_are_conserved(store: ModelStore) -> None:
    res = run(scenario(workload__n_requests=6, workload__arrival={"process": "poisson", "rate_per_s": 20.0}),
              store)
    req, ev = res.requests, res.events
    tx = ev.filter(pl.col("kind") == "tx")
    assert (req["status"] == "ok").all()
    assert tx["bytes"].sum() == req["bytes_total"].sum() == req["bytes_up"].sum() + req["bytes_down"].sum()
    tokens = tx.filter(pl.col("node").str.starts_with("cloud"))  # everything down is one token each
    assert tokens.height == req["n_output_tokens"].sum()
    per_request = tokens.group_by("request_id").len().sort("request_id")
    assert per_request["len"].to_list() == req.sort("request_id")["n_output_tokens"].to_list()


def test_same_seed_same_results_and_seed_matters(store: ModelStore) -> None:
    kwargs = {"workload__n_requests": 5, "workload__arrival": {"process": "poisson", "rate_per_s": 3.0},
              "topology__links__0__loss": 0.05}
    a, b = run(scenario(**kwargs), store), run(scenario(**kwargs), store)
    assert a.requests.equals(b.requests) and a.events.equals(b.events)
    c = run(scenario(seed=5, **kwargs), store)
    assert not a.requests["t_arrival_s"].equals(c.requests["t_arrival_s"])


def test_every_request_ends_under_outage_and_heavy_loss(store: ModelStore) -> None:
    sc = scenario(
        workload__n_requests=12,
        workload__arrival={"process": "poisson", "rate_per_s": 4.0},
        topology__links__0__loss=0.3,
        topology__links__0__outages=[{"start_s": 0.5, "end_s": 1.5}, {"start_s": 2.0, "end_s": 60.0}],
        topology__transport={"outage_timeout_s": 3.0},
    )
    req = run(sc, store).requests
    assert req.height == 12
    assert set(req["status"].unique()) <= {"ok", "failed"}
    failed = req.filter(pl.col("status") == "failed")
    assert failed.height > 0 and (failed["fail_reason"].str.len_chars() > 0).all()
    ok = req.filter(pl.col("status") == "ok")
    assert ok.height > 0 and ok["e2e_s"].is_not_null().all()


def test_written_run_dir_round_trips(store: ModelStore, tmp_path) -> None:
    res = run(scenario(), store)
    out = res.write(tmp_path / "run")
    assert {p.name for p in out.iterdir()} >= {"requests.parquet", "events.parquet", "summary.json",
                                                "scenario.resolved.yaml"}
    assert pl.read_parquet(out / "requests.parquet").equals(res.requests)
    from netsim.scenario import load_scenario

    again = load_scenario(out / "scenario.resolved.yaml")
    assert again == res.scenario
