"""speculative: the acceptance rule against its closed forms, greedy runs against the LLM's own greedy
answer, one verify forward per round, bytes against the payload formulas, outages (retry, then the SLM
alone, nothing lost), and bad input refused with exit 2 and one line naming the YAML path."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import yaml
from scipy import stats

from netsim.cli import main
from netsim.lm.sampling import SamplingSpec
from netsim.lm.zoo import ModelStore
from netsim.metrics import RequestRecord
from netsim.payload import MESSAGE_HEADER_BYTES, TOKEN_ID_BYTES
from netsim.policies.speculative import accept_drafts, best_gamma, draw, expected_tokens, greedy_accept
from netsim.results import Results
from netsim.scenario import parse_scenario
from netsim.simulation import run
from netsim.workload import make_requests
from netsim.world import STREAM_WORKLOAD, rng_for

SLM, LLM = "shakespeare-slm", "shakespeare-llm"


# -- the acceptance rule on synthetic distributions ---------------------------------------------------

P = np.array([0.40, 0.25, 0.20, 0.10, 0.05])
Q = np.array([0.10, 0.30, 0.05, 0.25, 0.30])
P2 = np.array([0.05, 0.05, 0.60, 0.20, 0.10])
Q2 = np.array([0.30, 0.00, 0.30, 0.20, 0.20])  # q = 0 where p > 0: only a resample can give token 1


def _rounds(p_rows: list[np.ndarray], q_rows: list[np.ndarray], n: int, seed: int
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n independent rounds with position-wise distributions that ignore the prefix: the first emitted
    token, the second (-1 when the round stopped after one) and the accepted count of each."""
    rng_q, rng_u, rng_r = (np.random.default_rng([seed, k]) for k in range(3))
    first, second, accepted = np.empty(n, int), np.full(n, -1), np.empty(n, int)
    for i in range(n):
        drafts = [draw(q, rng_q) for q in q_rows]
        k, token = accept_drafts(drafts, q_rows, p_rows, rng_u.random(len(drafts)), rng_r)
        emitted = [*drafts[:k], token]
        first[i], accepted[i] = emitted[0], k
        if len(emitted) > 1:
            second[i] = emitted[1]
    return first, second, accepted


def _chi2_pvalue(samples: np.ndarray, probs: np.ndarray) -> float:
    counts = np.bincount(samples, minlength=len(probs))
    support = probs > 0
    assert counts[~support].sum() == 0, "a token the target gives probability 0 was emitted"
    return float(stats.chisquare(counts[support], probs[support] * len(samples)).pvalue)


@pytest.mark.parametrize(("p", "q"), [(P, Q), (P2, Q2), (P, P)])
def test_the_first_token_is_distributed_as_the_target(p: np.ndarray, q: np.ndarray) -> None:
    """Leviathan et al. Theorem 3.5: whatever q is, the emitted token ~ p (chi-square, 40,000 rounds)."""
    first, _, accepted = _rounds([p, p], [q], 40_000, seed=1)
    assert _chi2_pvalue(first, p) > 1e-3
    # and the acceptance rate is β = Σ min(p, q) = 1 − TV(p, q) (Leviathan et al. Definition 3.1)
    beta = np.minimum(p, q).sum()
    assert accepted.mean() == pytest.approx(beta, abs=4 * np.sqrt(beta * (1 - beta) / 40_000) + 1e-12)


def test_later_positions_and_the_bonus_token_follow_their_own_target() -> None:
    """γ = 2 with different targets per position: given x_1 accepted, the second emitted token (x_2 kept,
    its correction, or after two acceptances the bonus from p_3 — here p_3 = p_2) ~ p_2; P(k) has the
    closed form β₁(1−β₂), β₁β₂ for k = 1, 2."""
    first, second, accepted = _rounds([P, P2, P2], [Q, Q2], 40_000, seed=2)
    assert _chi2_pvalue(first, P) > 1e-3
    assert _chi2_pvalue(second[accepted >= 1], P2) > 1e-3
    b1, b2 = np.minimum(P, Q).sum(), np.minimum(P2, Q2).sum()
    for k, expected in ((0, 1 - b1), (1, b1 * (1 - b2)), (2, b1 * b2)):
        assert (accepted == k).mean() == pytest.approx(expected, abs=0.01)


def test_greedy_distributions_accept_exactly_the_argmax() -> None:
    onehot = np.eye(5)
    rng = np.random.default_rng(0)
    # the draft agrees at position 1, not at 2: one accepted, the correction is the target's argmax
    assert accept_drafts([3, 1], [onehot[3], onehot[1]], [onehot[3], onehot[4], onehot[0]],
                         rng.random(2), rng) == (1, 4)
    assert accept_drafts([3, 4], [onehot[3], onehot[4]], [onehot[3], onehot[4], onehot[2]],
                         rng.random(2), rng) == (2, 2)  # all accepted: the bonus is p_3's argmax


def test_the_greedy_shortcut_is_the_rule_on_one_hot_rows() -> None:
    """The policy's greedy path skips building vectors; on one-hot p and q it must decide as the rule."""
    rng = np.random.default_rng(3)
    onehot = np.eye(5)
    for _ in range(300):
        drafts = rng.integers(0, 5, size=int(rng.integers(1, 5))).tolist()
        argmax = [d if rng.random() < 0.6 else int(rng.integers(0, 5)) for d in drafts]
        argmax.append(int(rng.integers(0, 5)))
        rule = accept_drafts(drafts, [onehot[d] for d in drafts], [onehot[a] for a in argmax],
                             rng.random(len(drafts)), rng)
        assert greedy_accept(drafts, argmax) == rule


def test_adaptive_gamma_follows_the_expected_tokens_closed_form() -> None:
    assert expected_tokens(0.0, 4) == 1.0 and expected_tokens(1.0, 4) == 5.0
    assert expected_tokens(0.5, 2) == pytest.approx(1 + 0.5 + 0.25)
    # cheap drafts and a long round trip: draft far; a draft step as dear as the round: γ = 1
    assert best_gamma(0.9, t_draft_s=0.001, t_round_s=0.1, gamma_max=16) == 16
    assert best_gamma(0.5, t_draft_s=0.1, t_round_s=0.1, gamma_max=16) == 1
    g = best_gamma(0.8, t_draft_s=0.01, t_round_s=0.05, gamma_max=16)
    rates = [expected_tokens(0.8, k) / (k * 0.01 + 0.05) for k in range(1, 17)]
    assert rates[g - 1] == max(rates)


# -- runs on the real models ----------------------------------------------------------------------


def _raw(policy: dict[str, Any] | None = None, **workload: Any) -> dict[str, Any]:
    """phone ── 50 Mbit/s, 20 ms ── cloud (A100, batching 8 sequences)."""
    return {
        "name": "spec",
        "seed": 5,
        "topology": {
            "nodes": {
                "phone": {"role": "device", "profile": "oneplus-12", "models": [SLM]},
                "cloud": {"role": "cloud", "profile": "nvidia-a100-80gb", "models": [LLM],
                          "batching": {"max_batch": 8}},
            },
            "links": [{"src": "phone", "dst": "cloud", "rate_mbps": 50, "delay_ms": 20}],
        },
        "workload": {"n_requests": 3, "max_new_tokens": 24, **workload},
        "policy": {"name": "speculative", "gamma": 4, **(policy or {})},
    }


@pytest.fixture(scope="module")
def store() -> ModelStore:
    return ModelStore()


def _run(raw: dict[str, Any], store: ModelStore) -> tuple[Results, dict[int, RequestRecord]]:
    records: dict[int, RequestRecord] = {}
    results = run(parse_scenario(copy.deepcopy(raw)), store,
                  on_request_done=lambda r: records.__setitem__(r.request_id, r))
    return results, records


def _prompts(raw: dict[str, Any], store: ModelStore) -> dict[int, list[int]]:
    scenario = parse_scenario(copy.deepcopy(raw))
    tokenizer = store.load(LLM).tokenizer
    return {r.request_id: tokenizer.encode(r.prompt)
            for r in make_requests(scenario, rng_for(scenario.seed, STREAM_WORKLOAD))}


def test_greedy_speculation_is_exactly_the_llms_greedy_answer(store: ModelStore) -> None:
    raw = _raw()
    results, records = _run(raw, store)
    llm = store.load(LLM)
    frame = results.requests
    for rid, prompt in _prompts(raw, store).items():
        expected = llm.generate(prompt, 24, SamplingSpec(), seed=(5, rid))
        assert records[rid].output_ids == expected
        row = frame.row(by_predicate=pl.col("request_id") == rid, named=True)
        assert row["status"] == "ok" and row["n_output_tokens"] == len(expected)
        # every token is an accepted draft or the LLM's own (a correction or a bonus token)
        assert row["tokens_local"] + row["tokens_llm"] == len(expected)
        assert 0 <= row["accepted_tokens"] <= row["drafted_tokens"]
        # each round commits at least one token, at most γ + 1
        assert row["rounds"] <= len(expected) <= row["rounds"] * 5
    assert 0.0 < float(frame["accept_rate"].mean()) < 1.0


def test_adaptive_gamma_keeps_the_answer_and_moves_gamma(store: ModelStore) -> None:
    """With adapt on, γ follows the measured costs (a slow 20 ms round trip against ~2.5 ms drafts and
    ~35% acceptance favours long drafts) and the greedy answer is still the LLM's."""
    raw = _raw({"adapt": True, "gamma": 2, "gamma_max": 12})
    results, records = _run(raw, store)
    llm = store.load(LLM)
    for rid, prompt in _prompts(raw, store).items():
        assert records[rid].output_ids == llm.generate(prompt, 24, SamplingSpec(), seed=(5, rid))
    finals = results.requests["gamma_final"].to_list()
    assert all(1 <= g <= 12 for g in finals) and any(g != 2 for g in finals)


def test_one_llm_forward_per_verification_round(store: ModelStore) -> None:
    results, _ = _run(_raw(), store)
    events, frame = results.events, results.requests
    for row in frame.iter_rows(named=True):
        mine = events.filter((pl.col("request_id") == row["request_id"]) & (pl.col("node") == "cloud"))
        assert mine.filter(pl.col("kind") == "verify").height == row["rounds"] == row["round_trips"]
        assert mine.filter(pl.col("kind") == "prefill").height == 1
        assert mine.filter(~pl.col("kind").is_in(["verify", "prefill"])).height == 0


def test_sampled_bytes_follow_the_payload_formulas(store: ModelStore) -> None:
    """With top-k sampling each round sends the ids with q(x) (4 + 2 B each, fp16), the draft rows as
    k (id, prob) pairs (k·(4 + 2) B per draft), and gets back 4 B per committed token."""
    k = 20
    raw = _raw()
    raw["workload"]["sampling"] = {"temperature": 0.8, "top_k": k}
    results, records = _run(raw, store)
    prompts = _prompts(raw, store)
    h = MESSAGE_HEADER_BYTES
    for row in results.requests.iter_rows(named=True):
        rounds, drafted, n_out = row["round_trips"], row["drafted_tokens"], row["n_output_tokens"]
        prompt_up = h + TOKEN_ID_BYTES * len(prompts[row["request_id"]])
        assert row["bytes_up"] == prompt_up + rounds * 2 * h + drafted * (TOKEN_ID_BYTES + 2) \
            + drafted * k * (TOKEN_ID_BYTES + 2)
        assert row["bytes_down"] == rounds * h + TOKEN_ID_BYTES * n_out
        assert row["tokens_local"] + row["tokens_llm"] == n_out
    # same scenario and seed: the same tokens (every draw comes from the request's own streams)
    _, again = _run(raw, store)
    assert {r: x.output_ids for r, x in again.items()} == {r: x.output_ids for r, x in records.items()}


def _with_outage(raw: dict[str, Any], start_s: float, end_s: float, timeout_s: float) -> dict[str, Any]:
    raw["topology"]["links"][0]["outages"] = [{"start_s": start_s, "end_s": end_s}]
    raw["topology"]["transport"] = {"outage_timeout_s": timeout_s}
    return raw


def test_a_short_outage_is_retried_and_loses_nothing(store: ModelStore) -> None:
    """Down 0–0.15 s, transfers give up after 0.1 s held: the prompt upload (from 0) and the first
    drafts (from ~10 ms) fail at ~0.1 s; the retry is held until 0.15 s only, and resends the prompt."""
    raw = _with_outage(_raw(n_requests=1), 0.0, 0.15, timeout_s=0.1)
    results, records = _run(raw, store)
    row = results.requests.row(0, named=True)
    assert row["status"] == "ok" and row["retries"] == 1 and row["fallback"] is False
    assert row["round_trips"] == row["rounds"] + 1
    prompt = _prompts(raw, store)[0]
    assert records[0].output_ids == store.load(LLM).generate(prompt, 24, SamplingSpec(), seed=(5, 0))


def test_a_long_outage_falls_back_to_the_slm_and_keeps_every_token(store: ModelStore) -> None:
    raw = _with_outage(_raw({"max_retries": 2}, n_requests=1), 0.10, 50.0, timeout_s=0.05)
    results, records = _run(raw, store)
    row = results.requests.row(0, named=True)
    assert row["status"] == "ok" and row["fallback"] is True and row["retries"] == 2
    assert row["round_trips"] == row["rounds"] + 3
    out = records[0].output_ids
    assert len(out) == 24 and row["fallback_tokens"] > 0
    # what was committed before the outage is the LLM's answer; the rest is the SLM's own continuation
    prompt = _prompts(raw, store)[0]
    llm_ref = store.load(LLM).generate(prompt, 24, SamplingSpec(), seed=(5, 0))
    m = next((i for i, (a, b) in enumerate(zip(out, llm_ref, strict=True)) if a != b), len(out))
    assert m >= 1
    cont = store.load(SLM).generate(prompt + out[:m], 24 - m, SamplingSpec(), seed=(5, 0), stop_at_eos=False)
    assert out[m:] == cont[: 24 - m]
    events = results.events
    assert events.filter(pl.col("kind") == "round_failed").height == 3
    assert row["tokens_local"] + row["tokens_llm"] == 24


def test_a_round_timeout_abandons_the_bytes_in_flight(store: ModelStore) -> None:
    """Dense draft rows (4 × 4096 fp16) on a 0.2 Mbit/s link take ~1.3 s; the device gives up at 0.3 s."""
    raw = _raw({"round_timeout_s": 0.3, "max_retries": 1}, n_requests=1,
               sampling={"temperature": 1.0})
    raw["topology"]["links"][0]["rate_mbps"] = 0.2
    results, records = _run(raw, store)
    row = results.requests.row(0, named=True)
    assert row["status"] == "ok" and row["fallback"] is True and row["rounds"] == 0
    assert len(records[0].output_ids) == row["n_output_tokens"] > 0
    abandoned = results.events.filter(pl.col("kind") == "abandon")
    assert abandoned.height >= 2 and int(abandoned["bytes"].sum()) > 0


def test_closed_loop_conversations_draw_lengths_and_chain_requests(store: ModelStore) -> None:
    raw = _raw(n_requests=4, max_new_tokens=30, answer_tokens={"min": 5, "max": 30},
               prompt_tokens={"min": 8, "max": 20},
               arrival={"process": "closed_loop", "think_mean_s": 0.5, "think_sigma": 0.5})
    results, records = _run(raw, store)
    frame = results.requests.sort("request_id")
    scenario = parse_scenario(copy.deepcopy(raw))
    requests = make_requests(scenario, rng_for(5, STREAM_WORKLOAD))
    for req in requests:
        row = frame.row(req.request_id, named=True)
        assert 5 <= req.max_new_tokens <= 30 and 8 <= req.prompt_tokens <= 20
        assert row["n_prompt_tokens"] == req.prompt_tokens  # corpus prompts are longer than 20 tokens
        assert row["n_output_tokens"] == req.max_new_tokens or records[req.request_id].output_ids[-1] == \
            store.load(LLM).tokenizer.eos_id
    # one device: each request starts its think time after the previous one ended
    ends = (frame["t_arrival_s"] + frame["e2e_s"]).to_list()
    for i in range(1, 4):
        assert frame["t_arrival_s"][i] == pytest.approx(ends[i - 1] + requests[i].think_s)
    assert frame["t_arrival_s"][0] == pytest.approx(requests[0].think_s)


def test_jsq_spreads_requests_over_the_candidates(store: ModelStore) -> None:
    """Three verifiers at 5, 6 and 7 ms; eight requests at once: nearest sends all to the first, JSQ
    deals them out (3, 3, 2: each new request joins the verifier with the fewest open)."""
    raw = _raw({"choice": "jsq", "candidates": 3}, n_requests=8)
    nodes, links = raw["topology"]["nodes"], raw["topology"]["links"]
    links.clear()
    for i, delay in enumerate((5, 6, 7)):
        nodes[f"v{i}"] = {"role": "cloud", "profile": "nvidia-a100-80gb", "models": [LLM],
                          "batching": {"max_batch": 8}}
        links.append({"src": "phone", "dst": f"v{i}", "rate_mbps": 50, "delay_ms": delay})
    del nodes["cloud"]
    results, _ = _run(raw, store)
    counts = results.requests.group_by("server").len().sort("server")["len"].to_list()
    assert counts == [3, 3, 2]
    raw["policy"]["choice"] = "nearest"
    results, _ = _run(raw, store)
    assert results.requests["server"].unique().to_list() == ["v0"]


# -- bad input --------------------------------------------------------------------------------------


def _validate(tmp_path: Path, capsys: pytest.CaptureFixture[str], raw: dict[str, Any]) -> tuple[int, str]:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SystemExit) as info:
        main(["validate", str(path)])
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out + err


def test_gamma_below_one_is_exit_2_naming_the_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                    ) -> None:
    code, text = _validate(tmp_path, capsys, _raw({"gamma": 0}))
    assert code == 2
    lines = [line for line in text.splitlines() if "policy.gamma" in line]
    assert len(lines) == 1 and "greater than or equal to 1" in lines[0], text
    assert "Traceback" not in text


def test_tokenizer_mismatch_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A copy of the SLM whose vocabulary gives two ids each other's tokens: its drafts would mean other
    words to the LLM."""
    src = ModelStore().path(SLM)
    dst = tmp_path / "models" / "slm-other-vocab"
    dst.mkdir(parents=True)
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    tok = json.loads((src / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    a, b = sorted(vocab, key=vocab.get)[300:302]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (dst / "tokenizer.json").write_text(json.dumps(tok))
    manifest = yaml.safe_load((dst / "model.yaml").read_text())
    manifest["name"] = "slm-other-vocab"
    manifest["sha256"]["tokenizer.json"] = hashlib.sha256((dst / "tokenizer.json").read_bytes()).hexdigest()
    (dst / "model.yaml").write_text(yaml.safe_dump(manifest))
    monkeypatch.setenv("NETSIM_MODELS_PATH", str(tmp_path / "models"))
    raw = _raw()
    raw["topology"]["nodes"]["phone"]["models"] = ["slm-other-vocab"]
    code, text = _validate(tmp_path, capsys, raw)
    assert code == 2, text
    lines = [line for line in text.splitlines() if "tokenizers" in line]
    assert len(lines) == 1 and lines[0].startswith("error: policy.target_model:"), text
    raw["topology"]["nodes"]["phone"]["models"] = [SLM]
    code, text = _validate(tmp_path, capsys, raw)
    assert code == 0, text


def test_missing_verifier_and_draft_model_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                    ) -> None:
    raw = _raw()
    raw["topology"]["nodes"]["phone"]["models"] = []
    code, text = _validate(tmp_path, capsys, raw)
    assert code == 2 and "topology.nodes.phone.models: speculative needs a draft model" in text, text
    raw = _raw({"target_model": "nope"})
    code, text = _validate(tmp_path, capsys, raw)
    assert code == 2 and "policy.target_model: speculative needs an edge or cloud node hosting nope" in text
