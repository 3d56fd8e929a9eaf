"""The `floe` policy: logit fusion at its two extremes reproduces each model's greedy text, a tight deadline
on a slow link misses yet yields every token, federated rounds charge adapter bytes by the closed form,
an outage drops a client from aggregation and sends inference to the SLM, and bad input exits 2."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from netsim.hardware.profile import load_profile
from netsim.lm.cards import load_card
from netsim.lm.sampling import SamplingSpec
from netsim.lm.zoo import ModelStore
from netsim.payload import AdapterWeights, TopKLogits, lora_n_params
from netsim.policies.floe import Floe, fused_log_probs, fused_scores, llm_log_probs
from netsim.scenario import parse_scenario
from netsim.simulation import run
from netsim.workload import make_requests
from netsim.world import STREAM_WORKLOAD, rng_for

SLM, LLM = "shakespeare-slm", "shakespeare-llm"


def _raw(phone_mbps: float = 100.0, **policy: Any) -> dict[str, Any]:
    """phone (OnePlus 12), pi (Raspberry Pi 5) ── gnb ── 1 Gbit/s, 20 ms ── cloud (A100, the LLM)."""
    card = {"charged_as": "smollm2-135m"}
    return {
        "name": "floe-test",
        "seed": 4,
        "topology": {
            "nodes": {
                "phone": {"role": "device", "profile": "oneplus-12", "models": [{"name": SLM, **card}]},
                "pi": {"role": "device", "profile": "raspberry-pi-5", "models": [{"name": SLM, **card}]},
                "gnb": {"role": "router"},
                "cloud": {"role": "cloud", "profile": "nvidia-a100-80gb", "models": [LLM]},
            },
            "links": [
                {"src": "phone", "dst": "gnb", "rate_mbps": phone_mbps, "delay_ms": 2},
                {"src": "pi", "dst": "gnb", "rate_mbps": 100, "delay_ms": 2},
                {"src": "gnb", "dst": "cloud", "rate_mbps": 1000, "delay_ms": 20},
            ],
        },
        "workload": {"n_requests": 2, "max_new_tokens": 10, "arrival": {"process": "all_at_once"},
                     "prompts": {"source": "corpus", "min_chars": 80, "max_chars": 200}},
        "policy": {"name": "floe", "rounds": 0, "eval_passages": 1, **policy},
    }


def _greedy_texts(raw: dict[str, Any], model: str) -> list[str]:
    """What `model` alone writes for each request's prompt (greedy, the workload's length)."""
    scenario = parse_scenario(copy.deepcopy(raw))
    lm = ModelStore().load(model)
    out = []
    for req in make_requests(scenario, rng_for(scenario.seed, STREAM_WORKLOAD)):
        ids = lm.generate(lm.tokenizer.encode(req.prompt), scenario.workload.max_new_tokens, SamplingSpec(),
                          seed=0)
        out.append(lm.tokenizer.decode(ids))
    return out


# ---------------------------------------------------------------------------------------------------
# Fusion (F5, F6)
# ---------------------------------------------------------------------------------------------------


def test_fusion_extremes_and_the_tail_bound() -> None:
    rng = np.random.default_rng(0)
    slm, llm = rng.normal(size=50) * 3, rng.normal(size=50) * 3
    log_llm = llm - np.log(np.exp(llm).sum())
    topk = TopKLogits.from_logits(log_llm, 5, "fp32")
    ids, scores = fused_scores(slm, topk, 0.0, 5)
    assert ids[int(np.argmax(scores))] == int(np.argmax(llm))
    ids, scores = fused_scores(slm, topk, 1.0, 5)
    assert ids[int(np.argmax(scores))] == int(np.argmax(slm))
    # F6: listed tokens exact, no unlisted token above the k-th, the tail shaped like the SLM
    log_s = slm - np.log(np.exp(slm).sum())
    log_l = llm_log_probs(np.asarray(topk.ids), np.asarray(topk.values), log_s[None])[0]
    listed = np.asarray(topk.ids[0])
    np.testing.assert_allclose(log_l[listed], log_llm[listed])
    unlisted = np.setdiff1d(np.arange(50), listed)
    assert log_l[unlisted].max() <= log_llm[listed].min() + 1e-12
    # A flat LLM (its top 5 hold 5 / 50 of the mass) and an SLM sure of a token the LLM did not list:
    # without the cap that token's imputed LLM probability (0.9 · 0.99) would beat every listed one, and
    # w = 0 would not be the LLM's choice.
    flat = np.zeros(50)
    flat[:5] = [0.4, 0.3, 0.2, 0.1, 0.05]
    sure = np.zeros(50)
    sure[40] = 10.0
    top_flat = TopKLogits.from_logits(flat - np.log(np.exp(flat).sum()), 5, "fp32")
    ids, scores = fused_scores(sure, top_flat, 0.0, 5)
    assert 40 in ids and ids[int(np.argmax(scores))] == 0
    # rows of the fused distribution are distributions
    rows = fused_log_probs(rng.normal(size=(4, 50)), rng.normal(size=(4, 50)), 0.5, 5)
    np.testing.assert_allclose(np.exp(rows).sum(axis=1), 1.0)
    np.testing.assert_allclose(fused_log_probs(slm[None], llm[None], 1.0, 5)[0], log_s, atol=1e-12)


def test_weight_0_is_the_llm_and_weight_1_the_slm() -> None:
    for weight, model in ((0.0, LLM), (1.0, SLM)):
        raw = _raw(slm_weight=weight)
        res = run(parse_scenario(copy.deepcopy(raw)))
        req = res.requests
        assert req["status"].to_list() == ["ok", "ok"]
        assert req["output_text"].to_list() == _greedy_texts(raw, model), weight
        assert req["deadline_misses"].to_list() == [0, 0]  # no deadline: the cloud is always waited for
        assert req["tokens_fused"].to_list() == req["n_output_tokens"].to_list()
        # per step: the new token(s) up, one top-k row down (8 pairs of int32 id + fp16 value)
        ev = res.events
        down = ev.filter((ev["kind"] == "tx") & (ev["detail"] == "topk_logits"))
        assert down.height == 2 * req["n_output_tokens"].sum()  # two hops per top-k
        assert (down["bytes"] == 16 + 8 * 6).all()


def test_sampled_fusion_repeats_for_a_seed() -> None:
    """Sampling draws from the request's own stream (ctx.rng): the same scenario gives the same text."""
    raw = _raw(slm_weight=0.5, top_k=4)
    raw["workload"]["sampling"] = {"temperature": 0.9}
    texts = [run(parse_scenario(copy.deepcopy(raw))).requests["output_text"].to_list() for _ in range(2)]
    assert texts[0] == texts[1]
    raw["seed"] = 5
    assert run(parse_scenario(copy.deepcopy(raw))).requests["output_text"].to_list() != texts[0]


def test_tight_deadline_on_a_slow_link_misses_but_yields_every_token() -> None:
    raw = _raw(phone_mbps=0.05, deadline_s=0.03, first_token_deadline_s=0.05)
    res = run(parse_scenario(copy.deepcopy(raw)))
    req = res.requests.sort("request_id")
    phone = req.filter(req["device"] == "phone")
    assert phone["deadline_misses"].item() > 0
    assert (req["status"] == "ok").all()
    # every step yields one token, from the fusion or from the SLM alone
    assert (req["tokens_fused"] + req["tokens_local"] == req["n_output_tokens"]).all()
    assert (req["n_output_tokens"] == 10).all()  # max_new_tokens; these prompts reach no end-of-text
    # the late exchanges were given up: their bytes in flight are abandoned on the slow link
    assert (res.events["kind"] == "abandon").any()
    pooled = res.summary["floe"]
    assert pooled["deadline_misses"] == req["deadline_misses"].sum() > 0
    assert pooled["tokens_fused"] + req["tokens_local"].sum() == req["n_output_tokens"].sum()


# ---------------------------------------------------------------------------------------------------
# Federated rounds (fast: tiny rank, few steps)
# ---------------------------------------------------------------------------------------------------

TINY = {"rounds": 1, "local_steps": 2, "batch_size": 2, "block_size": 32, "ranks": [1, 2],
        "personal_targets": ["o_proj"]}


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_rounds_charge_adapter_bytes_by_rank_and_are_deterministic() -> None:
    pytest.importorskip("torch")
    raw = _raw(**TINY)
    first = run(parse_scenario(copy.deepcopy(raw)))
    rounds = first.tables["rounds"].sort("client")
    card = load_card("smollm2-135m")
    # rank rule F3 by hand: share = max tier · sustained / strongest (phone), then the largest tier below
    sustained = {d: load_profile(p).peak_flops_for(card.dtype) * load_profile(p).eta_compute
                 for d, p in (("phone", "oneplus-12"), ("pi", "raspberry-pi-5"))}
    expected_rank = {d: max([r for r in (1, 2) if r <= 2 * s / max(sustained.values())] or [1])
                     for d, s in sustained.items()}
    assert dict(zip(rounds["client"], rounds["rank"], strict=True)) == expected_rank
    for row in rounds.iter_rows(named=True):
        n = lora_n_params(card, row["rank"], ("q_proj", "v_proj"))  # Σ r·(d_in + d_out) over the card
        assert row["n_params"] == n
        assert row["bytes_up"] == row["bytes_down"] == AdapterWeights(n, "fp16").nbytes == 16 + 2 * n
        assert row["status"] == "ok" and row["n_aggregated"] == 2 and row["n_tokens"] == 2 * 2 * 32
        assert row["train_s"] > 0 and row["energy_train_j"] > 0
    # radio energy of the two adapter transfers, E = e_tx · bits up + e_rx · bits down (Huang et al.)
    phone = rounds.filter(rounds["client"] == "phone").row(0, named=True)
    prof = load_profile("oneplus-12")
    assert phone["energy_radio_j"] == pytest.approx(
        8 * phone["bytes_up"] * prof.radio_tx_j_per_bit + 8 * phone["bytes_down"] * prof.radio_rx_j_per_bit)
    tx = first.events.filter(first.events["detail"] == "adapter_weights")
    # every adapter message crosses two hops (device ─ gnb ─ cloud), one tx event each
    assert tx["bytes"].sum() == 2 * (rounds["bytes_up"].sum() + rounds["bytes_down"].sum())
    quality = first.tables["quality"]
    assert set(quality["model"]) == {"base_slm", "personalised_slm", "fused", "llm"}
    assert (quality.filter(quality["model"] == "personalised_slm")["model_version"] == 1).all()
    second = run(parse_scenario(copy.deepcopy(raw)))
    assert second.tables["rounds"].equals(first.tables["rounds"])
    assert second.tables["quality"].equals(first.tables["quality"])
    assert second.requests.equals(first.requests)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_outage_drops_the_client_from_aggregation_and_inference_falls_back_to_the_slm() -> None:
    pytest.importorskip("torch")
    raw = _raw(**TINY)
    raw["topology"]["links"][1]["outages"] = [{"start_s": 0.0, "end_s": 1e5}]  # pi's link, both ways
    raw["topology"]["transport"] = {"outage_timeout_s": 0.5}
    res = run(parse_scenario(copy.deepcopy(raw)))
    rounds = res.tables["rounds"].sort("client")
    assert rounds["status"].to_list() == ["ok", "dropped"]
    assert "outage" in rounds.filter(rounds["client"] == "pi")["reason"].item()
    assert (rounds["n_aggregated"] == 1).all() and (rounds["round"] == 1).all()
    assert rounds.filter(rounds["client"] == "pi")["bytes_up"].item() == 0
    req = res.requests.sort("request_id")
    pi = req.filter(req["device"] == "pi")
    assert pi["status"].item() == "ok"
    assert pi["cloud_failures"].item() == pi["n_output_tokens"].item() == pi["tokens_local"].item()
    # the SLM alone: its own greedy text (served before any adapter arrived: version 0)
    assert pi["model_version"].item() == 0
    slm_texts = _greedy_texts(raw, SLM)
    assert pi["output_text"].item() == slm_texts[int(pi["request_id"].item())]


# ---------------------------------------------------------------------------------------------------
# Bad input: exit 2, one line naming the YAML path
# ---------------------------------------------------------------------------------------------------


def _validate(tmp_path: Path, raw: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> list[str]:
    import yaml

    from netsim.cli import main

    path = tmp_path / "floe.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(SystemExit) as info:
        main(["validate", str(path)])
    _, err = capsys.readouterr()
    assert info.value.code == 2, err
    assert "Traceback" not in err
    return [line for line in err.strip().splitlines() if not line.endswith("problems")]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ({"deadline_s": 0}, "policy.deadline_s"),
        ({"deadline_s": -0.1}, "policy.deadline_s"),
        ({"first_token_deadline_s": 0}, "policy.first_token_deadline_s"),
        ({"ranks": [4, 256]}, "policy.ranks[1]: rank 256 is above the hidden size 128"),
        ({"rank_by_device": {"pi": 129}}, "policy.rank_by_device.pi: rank 129 is above the hidden size"),
        ({"rank_by_device": {"laptop": 2}}, "policy.rank_by_device.laptop: not a requesting device"),
        ({"rounds": 1, "batch_size": 4096, "block_size": 8192}, "policy.ranks: LoRA training at rank 4"),
        ({"rounds": 1, "rank_by_device": {"pi": 8}, "batch_size": 4096, "block_size": 8192},
         "policy.rank_by_device.pi: LoRA training at rank 8"),
        ({"dirichlet_alpha": 5.0, "prompts": True}, "policy.dirichlet_alpha: 5.0 differs from"),
        ({"personal_targets": ["q_proj", "o_proj"]}, "policy.personal_targets: q_proj also in targets"),
        ({"cut_pi": True}, "topology.nodes.pi: no route to and from a floe server (cloud)"),
        ({"llm": "shakespeare-llm-qwen"}, "policy.llm: floe needs a cloud or edge node hosting"),
    ],
)
def test_bad_input_exits_2_naming_the_path(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           policy: dict[str, Any], expected: str) -> None:
    partition, cut_pi = policy.pop("prompts", False), policy.pop("cut_pi", False)
    raw = _raw(**policy)
    if partition:
        raw["workload"]["prompts"] = {"source": "partition", "alpha": 0.3}
    if cut_pi:  # the pi's link only goes towards the cloud: no way back
        raw["topology"]["links"][1]["duplex"] = False
    lines = _validate(tmp_path, raw, capsys)
    assert any(expected in line for line in lines), lines
    assert all(line.startswith("error: ") and "\n" not in line for line in lines)


def test_tokenizer_mismatch_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """An LLM whose tokenizer differs from the SLM's (a copy of the LLM with one merge dropped)."""
    import json

    from netsim.lm.manifest import read_manifest, sha256_file, write_manifest
    from netsim.paths import bundled_models_dir

    other = tmp_path / "models" / "other-llm"
    shutil.copytree(bundled_models_dir() / LLM, other)
    tokenizer = json.loads((other / "tokenizer.json").read_text(encoding="utf-8"))
    tokenizer["model"]["merges"] = tokenizer["model"]["merges"][:-1]
    (other / "tokenizer.json").write_text(json.dumps(tokenizer), encoding="utf-8")
    manifest = read_manifest(other)
    hashes = {**manifest.sha256, "tokenizer.json": sha256_file(other / "tokenizer.json")}
    write_manifest(other, manifest.model_copy(update={"name": "other-llm", "sha256": hashes}))
    monkeypatch.setenv("NETSIM_MODELS_PATH", str(tmp_path / "models"))
    raw = _raw()
    raw["topology"]["nodes"]["cloud"]["models"] = ["other-llm"]
    lines = _validate(tmp_path, raw, capsys)
    assert any("policy.llm: other-llm and the SLM shakespeare-slm have different tokenizers" in line
               for line in lines), lines


def test_training_without_torch_says_so_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from netsim.network.topology import build_graph

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "torch" else real(name, *a))
    scenario = parse_scenario(_raw(rounds=2))
    topo = scenario.topology
    problems = Floe.check(scenario.policy, scenario, build_graph(topo.nodes, topo.links, topo.cells))
    assert problems == ["policy.rounds: federated LoRA training needs torch (pip install 'netsim[train]'); "
                        "set rounds: 0 to run floe with the base SLM"]
    assert Floe.check(parse_scenario(_raw(rounds=0)).policy, scenario,
                      build_graph(topo.nodes, topo.links, topo.cells)) == []


# ---------------------------------------------------------------------------------------------------
# Personalisation (slow: the bundled scenario, three real rounds)
# ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_personalised_slms_beat_the_base_on_their_own_heldout_text(scenarios_dir: Path) -> None:
    from netsim.scenario import load_scenario

    res = run(load_scenario(scenarios_dir / "floe.yaml"))
    q = res.tables["quality"].filter(res.tables["quality"]["task"] == "own_heldout")
    for client in q["client"].unique():
        rows = {r["model"]: r["nll"] for r in q.filter(q["client"] == client).iter_rows(named=True)}
        assert rows["personalised_slm"] < rows["base_slm"], (client, rows)
    rounds = res.tables["rounds"]
    assert rounds["round"].max() == 3 and (rounds["status"] == "ok").all()
