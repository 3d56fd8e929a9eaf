"""The run summary against hand-computed numbers: percentiles, throughput and bytes per token on a frame
written by hand; failure codes from the network's real raise sites; the tokenizer that counted the
tokens a cost card bills, with its characters per token."""

from __future__ import annotations

import copy
from collections.abc import Generator
from typing import Any

import numpy as np
import polars as pl
import pytest
import simpy

from netsim.lm.zoo import ModelStore
from netsim.metrics import FAIL_CODES, REQUEST_SCHEMA, RequestRecord, summarize, token_accounting
from netsim.network import CellSpec, LinkSpec, TransferFailed, TransportSpec, build_network
from netsim.network.spec import OutageSpec
from netsim.recorder import Recorder
from netsim.scenario import parse_scenario
from netsim.simulation import failure, run
from netsim.workload import make_requests
from netsim.world import STREAM_WORKLOAD, rng_for


def frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """A requests frame from a few hand-written columns; the rest are zeros, nulls or empty."""
    defaults = {name: (0.0 if dtype == pl.Float64 else 0 if dtype == pl.Int64 else "")
                for name, dtype in REQUEST_SCHEMA.items()}
    return pl.DataFrame([{**defaults, "policy": "cloud_only", **row} for row in rows], schema=REQUEST_SCHEMA)


def ok(i: int, t: float, ttft: float, e2e: float, n_out: int, nbytes: int, energy_j: float) -> dict[str, Any]:
    return {"request_id": i, "status": "ok", "t_arrival_s": t, "ttft_s": ttft, "e2e_s": e2e,
            "tpot_s": (e2e - ttft) / (n_out - 1), "n_output_tokens": n_out, "bytes_total": nbytes,
            "bytes_up": nbytes // 4, "bytes_down": nbytes - nbytes // 4, "energy_device_j": energy_j,
            "llm_transmissions": 1, "tokens_llm": n_out}


def failed(i: int, t: float, code: str, reason: str) -> dict[str, Any]:
    return {"request_id": i, "status": "failed", "t_arrival_s": t, "fail_code": code, "fail_reason": reason,
            "ttft_s": None, "tpot_s": None, "e2e_s": None, "n_output_tokens": 3, "bytes_total": 999,
            "energy_device_j": 5.0}


def test_summary_matches_hand_computed_numbers() -> None:
    requests = frame([
        ok(0, 0.0, 0.1, 1.1, 11, 4400, 1.0),
        ok(1, 0.5, 0.2, 0.7, 6, 2400, 0.5),
        ok(2, 1.0, 0.3, 2.3, 21, 8400, 2.0),
        ok(3, 2.0, 0.4, 0.9, 2, 800, 0.25),
        failed(4, 2.5, "outage", "outage on gnb->cloud: down until 60 s, gave up after 3 s"),
        failed(5, 3.0, "no_coverage", "phone9 and gnb are out of coverage (SNR below the floor)"),
        failed(6, 3.5, "outage", "outage on gnb->cloud: down until 61 s, gave up after 3 s"),
    ])
    s = summarize(requests)
    assert (s["n_requests"], s["n_ok"], s["n_failed"]) == (7, 4, 3)
    # Failures counted by code, most frequent first; the details (hop, time, device) are not keys.
    assert s["fail_reasons"] == {"outage": 2, "no_coverage": 1}
    assert list(s["fail_reasons"]) == ["outage", "no_coverage"]
    # TTFT of the ok requests 0.1, 0.2, 0.3, 0.4: linear interpolation between order statistics
    # (numpy's default): p50 at rank 1.5 → 0.25, p95 at rank 2.85 → 0.3 + 0.85·0.1 = 0.385.
    assert s["ttft_s"]["mean"] == pytest.approx(0.25)
    assert s["ttft_s"]["p50"] == pytest.approx(0.25)
    assert s["ttft_s"]["p95"] == pytest.approx(0.385)
    # E2E 1.1, 0.7, 2.3, 0.9 sorted 0.7, 0.9, 1.1, 2.3: p50 = 1.0, p95 = 1.1 + 0.85·1.2 = 2.12.
    assert s["e2e_s"]["p50"] == pytest.approx(1.0) and s["e2e_s"]["p95"] == pytest.approx(2.12)
    # TPOT (e2e − ttft)/(n − 1): 0.1, 0.1, 0.1, 0.5 → mean 0.2.
    assert s["tpot_s"]["mean"] == pytest.approx(0.2)
    # Only ok requests count: 40 tokens, 16,000 bytes → 400 B per token; energy 3.75 J.
    assert s["n_output_tokens"] == 40 and s["bytes_total"] == 16_000
    assert s["bytes_per_output_token"] == pytest.approx(400.0)
    assert s["energy_per_token_j"] == pytest.approx(3.75 / 40)
    assert s["llm_transmission_rate"] == pytest.approx(4 / 40)
    # Throughput: 40 tokens between the first ok arrival (0 s) and the last ok token (1.0 + 2.3 s).
    assert s["throughput_tokens_per_s"] == pytest.approx(40 / 3.3)


def test_summary_of_only_failures_has_null_ratios() -> None:
    s = summarize(frame([failed(0, 0.0, "retx_exhausted", "retries exhausted on a->b")]))
    assert s["n_ok"] == 0 and s["fail_reasons"] == {"retx_exhausted": 1}
    assert s["ttft_s"] == {"mean": None, "p50": None, "p95": None}
    assert s["bytes_per_output_token"] is None and s["throughput_tokens_per_s"] is None


# -- failure codes -------------------------------------------------------------------------------------


def _send(links: list[LinkSpec], cells: list[CellSpec], src: str, dst: str, nbytes: int,
          transport: TransportSpec) -> TransferFailed:
    """One transfer through the real network engine; returns the TransferFailed it must end with."""
    env = simpy.Environment()
    names = sorted({e for link in links for e in (link.src, link.dst)}
                   | {n for cell in cells for n in (cell.ap, *cell.members)})
    net = build_network(env, names, links, cells, transport, np.random.default_rng(0), Recorder())
    box: list[TransferFailed] = []

    def sender() -> Generator[simpy.Event, Any, None]:
        try:
            yield from net.send(src, dst, nbytes, request_id=0)
        except TransferFailed as exc:
            box.append(exc)

    env.process(sender())
    env.run()
    assert len(box) == 1, "the transfer should have failed"
    return box[0]


@pytest.mark.parametrize("kind", ["ideal", "tcp"])
def test_each_network_failure_maps_to_its_code(kind: str) -> None:
    """Every place the engine raises TransferFailed, driven for real, gets its own code."""
    transport = TransportSpec(kind=kind, outage_timeout_s=0.5, max_retx=0)
    down = _send([LinkSpec(src="a", dst="b", rate_mbps=10, outages=[OutageSpec(start_s=0.0, end_s=30.0)])],
                 [], "a", "b", 1000, transport)
    lossy = _send([LinkSpec(src="a", dst="b", rate_mbps=10, loss=0.5)], [], "a", "b", 200_000, transport)
    far = _send([], [CellSpec(name="c", ap="gnb", members={"far": 4000}, pathloss="uma_nlos")],
                "far", "gnb", 100, transport)
    assert failure(down) == ("outage", str(down))
    assert failure(lossy) == ("retx_exhausted", str(lossy))
    assert failure(far) == ("no_coverage", str(far))


def test_interrupts_and_unknown_reasons_get_codes_not_crashes() -> None:
    assert failure(simpy.Interrupt(TimeoutError("deadline 2 s passed"))) == ("timeout", "deadline 2 s passed")
    assert failure(simpy.Interrupt("peer gave up")) == ("cancelled", "peer gave up")
    cut = TransferFailed("outage on a->b: down until 9 s, gave up after 1 s")
    assert failure(simpy.Interrupt(cut))[0] == "outage"
    odd = "a reason nobody wrote yet"
    assert failure(TransferFailed(odd)) == ("transfer_failed", odd)
    assert {"outage", "retx_exhausted", "no_coverage", "timeout", "cancelled"} <= set(FAIL_CODES)


def test_record_refuses_an_unknown_code() -> None:
    record = RequestRecord(0, "phone", "cloud_only", 0.0)
    with pytest.raises(ValueError, match="unknown fail code 'phone went away'"):
        record.fail("phone went away", "")
    record.fail("no_coverage", "phone and gnb are out of coverage")
    assert record.row()["fail_code"] == "no_coverage" and record.row()["status"] == "failed"


# -- whole runs: codes and token accounting -----------------------------------------------------------

RAW: dict[str, Any] = {
    "name": "summary",
    "seed": 3,
    "topology": {
        "nodes": {
            "phone": {"role": "device", "profile": "oneplus-12", "models": ["shakespeare-slm"]},
            "cloud": {"role": "cloud", "profile": "nvidia-a100-80gb",
                      "models": [{"name": "shakespeare-llm", "charged_as": "qwen3-8b"}]},
        },
        "links": [{"src": "phone", "dst": "cloud", "rate_mbps": 10, "delay_ms": 5}],
    },
    "workload": {"n_requests": 4, "max_new_tokens": 8, "arrival": {"process": "poisson", "rate_per_s": 4.0}},
    "policy": {"name": "cloud_only"},
}


@pytest.fixture(scope="module")
def store() -> ModelStore:
    return ModelStore()


def test_failed_requests_carry_a_code_and_the_detail(store: ModelStore) -> None:
    raw = copy.deepcopy(RAW)
    raw["workload"]["n_requests"] = 10
    raw["topology"]["links"][0]["outages"] = [{"start_s": 0.8, "end_s": 60.0}]
    raw["topology"]["transport"] = {"outage_timeout_s": 2.0}
    results = run(parse_scenario(raw), store)
    req = results.requests
    bad = req.filter(pl.col("status") == "failed")
    assert bad.height > 0 and req.filter(pl.col("status") == "ok").height > 0
    assert set(bad["fail_code"]) == {"outage"}
    assert bad["fail_reason"].str.starts_with("outage on ").all()  # the detail stays in its own column
    assert (req.filter(pl.col("status") == "ok")["fail_code"] == "").all()
    assert results.summary["fail_reasons"] == {"outage": bad.height}


def test_token_accounting_names_the_counting_tokenizer_and_its_chars_per_token(store: ModelStore) -> None:
    scenario = parse_scenario(RAW)
    results = run(scenario, store)
    issued = make_requests(scenario, rng_for(scenario.seed, STREAM_WORKLOAD))
    prompts = {r.request_id: r.prompt for r in issued}
    req = results.requests
    assert (req["status"] == "ok").all()
    # Every token generated reached the device here, so n_output_tokens is what the card billed.
    chars = sum(len(prompts[i]) + len(text)
                for i, text in zip(req["request_id"], req["output_text"], strict=True))
    tokens = int(req["n_prompt_tokens"].sum() + req["n_output_tokens"].sum())
    (row,) = results.summary["token_accounting"]
    vocab = store.load("shakespeare-llm").tokenizer.vocab_size
    assert row == {"model": "shakespeare-llm", "tokenizer_vocab": vocab,
                   "chars_per_token": pytest.approx(chars / tokens), "charged_as": "qwen3-8b",
                   "card_vocab": 151_936}
    assert 1.0 < row["chars_per_token"] < 5.0


def test_token_accounting_by_hand() -> None:
    def record(i: int, model: str, card: str, n_prompt: int, out: list[int], text: str) -> RequestRecord:
        rec = RequestRecord(i, "phone", "cloud_only", 0.0, model=model, charged_as=card)
        rec.n_prompt_tokens, rec.output_ids, rec.output_text = n_prompt, out, text
        return rec

    records = [record(0, "llm", "qwen3-8b", 10, [1, 2, 3, 4, 5], "abcdefghij"),  # 30 + 10 chars, 15 tokens
               record(1, "llm", "qwen3-8b", 5, [1, 2, 3, 4, 5], "abcde"),  # 15 + 5 chars, 10 tokens
               record(2, "slm", "", 4, [7, 8], "xyz"),  # 9 + 3 chars, 6 tokens, no card
               RequestRecord(3, "phone", "cloud_only", 0.0)]  # failed before it was answered: not counted
    prompt_chars = {0: 30, 1: 15, 2: 9, 3: 50}
    vocab = {("llm", "qwen3-8b"): (4096, 151_936), ("slm", ""): (4096, None)}
    assert token_accounting(records, prompt_chars, vocab) == [
        {"model": "llm", "tokenizer_vocab": 4096, "chars_per_token": 60 / 25, "charged_as": "qwen3-8b",
         "card_vocab": 151_936},
        {"model": "slm", "tokenizer_vocab": 4096, "chars_per_token": 2.0, "charged_as": None,
         "card_vocab": None},
    ]
