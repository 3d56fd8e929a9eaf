"""FedRefine's policies (t2t, c2c, adaptive) on the simulated network: bytes against closed forms, latency
against the recorded events, the T2T/C2C crossover, fallbacks that lose nothing, exact fusion content."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

import netsim.simulation
from netsim.lm.fuser import FuserManifest, fuser_n_params, read_fuser_manifest
from netsim.lm.fusion import SenderInput, tokens_with_ends
from netsim.lm.sampling import SamplingSpec
from netsim.lm.zoo import ModelStore
from netsim.payload import MESSAGE_HEADER_BYTES, KVCache
from netsim.policies.adaptive import choose
from netsim.scenario import ScenarioError, load_scenario

ROOT = Path(__file__).resolve().parents[1]
FEDREFINE = ROOT / "scenarios" / "fedrefine.yaml"


@pytest.fixture(scope="module")
def store() -> ModelStore:
    return ModelStore()


def run(store: ModelStore, *overrides: str) -> netsim.simulation.Results:
    base = ["workload.n_requests=1", "workload.max_new_tokens=6"]
    return netsim.simulation.run(load_scenario(FEDREFINE, [*base, *overrides]), store)


def ok_row(results: netsim.simulation.Results) -> dict:
    rows = results.requests.to_dicts()
    assert all(r["status"] == "ok" for r in rows), rows
    return rows[0]


# -- bytes ------------------------------------------------------------------------------------------------


# Published configs (config.json): layers, KV heads, head_dim. Written out here, not read from the cards,
# so a card that drifted from its source fails the test.
PUBLISHED = {"qwen2.5-0.5b": (24, 2, 64), "qwen2.5-1.5b": (28, 2, 128), "llama-3.2-1b": (16, 8, 64),
             "qwen3-0.6b": (28, 8, 128)}


def kv_per_token(card: str, element_bytes: float) -> float:
    layers, heads, dim = PUBLISHED[card]
    return 2 * layers * heads * dim * element_bytes


def test_case_study_kv_bytes_per_token_are_the_sum_of_the_four_senders_cards(store: ModelStore) -> None:
    """≈ 88 KB per token in the paper; the cards give 86,016 B at bf16 (2 B per element)."""
    sc = load_scenario(FEDREFINE)
    senders = [sc.topology.nodes[s.node].models[0].charged_as for s in sc.policy.senders]
    total = sum(KVCache(store.card(c), 1, dtype="bf16").bytes_per_token for c in senders)
    assert total == sum(kv_per_token(c, 2) for c in senders) == 86_016


@pytest.mark.parametrize("dtype,element,scale", [("bf16", 2, 0), ("fp32", 4, 0), ("int8", 1, 2)])
def test_each_senders_kv_payload_is_its_prompt_tokens_times_its_cards_kv_bytes(
        store: ModelStore, dtype: str, element: int, scale: int) -> None:
    results = run(store, f"policy.wire_dtype={dtype}")
    sc = results.scenario
    kv = results.events.filter((pl.col("kind") == "tx") & (pl.col("detail") == "kv_cache"))
    prompt_text = _prompt(sc)
    for spec in sc.policy.senders:
        ref = sc.topology.nodes[spec.node].models[0]
        # the sender prefills its start token, then its tokens of the text
        n_tokens = 1 + len(store.load(ref.name).tokenizer.encode(prompt_text, add_special_tokens=False))
        layers, heads, dim = PUBLISHED[ref.charged_as]
        expected = MESSAGE_HEADER_BYTES + n_tokens * 2 * layers * heads * (dim * element + scale)
        first_hop = kv.filter(pl.col("node").str.starts_with(f"{spec.node}->"))
        assert first_hop["bytes"].to_list() == [expected], spec.node


def test_kv_payload_of_a_real_geometry_is_exact(store: ModelStore) -> None:
    """Without `charged_as` the payload follows the bundled model's own geometry."""
    g = store.load("shakespeare-llm").geometry
    payload = KVCache(g, 37, dtype="fp16")
    assert payload.nbytes == MESSAGE_HEADER_BYTES + 37 * 2 * g.n_layers * g.n_kv_heads * g.head_dim * 2


def _prompt(sc) -> str:
    from netsim.workload import make_requests
    from netsim.world import STREAM_WORKLOAD, rng_for
    return make_requests(sc, rng_for(sc.seed, STREAM_WORKLOAD))[0].prompt


# -- latency decomposes into recorded events ---------------------------------------------------------


def critical_path_s(events: pl.DataFrame, t_arrival: float, t_done: float) -> float:
    """Walk back from the request's last event: each step takes an event ending where the walk stands and
    moves to its start. Returns the summed durations; the walk must reach the arrival without a gap."""
    spans = [(t - d, t) for t, d in zip(events["t_s"], events["duration_s"], strict=True) if d > 0]
    at, total = t_done, 0.0
    while at > t_arrival + 1e-9:
        ending = [(s, e) for s, e in spans if abs(e - at) < 1e-9]
        assert ending, f"gap in the critical path at t = {at}"
        start = min(s for s, _ in ending)  # the longest event ending here is the one that held it
        total += at - start
        at = start
    assert abs(at - t_arrival) < 1e-9
    return total


@pytest.mark.parametrize("policy", ["c2c", "t2t"])
@pytest.mark.parametrize("rate", ["0.5", "200"])
def test_end_to_end_latency_is_the_sum_of_the_critical_path_events(store: ModelStore, policy: str,
                                                                     rate: str) -> None:
    results = run(store, f"policy.name={policy}", f"topology.cells[0].uplink_mbps={rate}")
    row = ok_row(results)
    events = results.events.filter(pl.col("request_id") == row["request_id"])
    t_done = row["t_arrival_s"] + row["e2e_s"]
    assert critical_path_s(events, row["t_arrival_s"], t_done) == pytest.approx(row["e2e_s"], abs=1e-9)


# -- the crossover and the adaptive choice -----------------------------------------------------------


def test_t2t_wins_on_a_starved_uplink_and_c2c_on_a_fast_one(store: ModelStore) -> None:
    e2e = {(rate, p): ok_row(run(store, f"policy.name={p}", f"topology.cells[0].uplink_mbps={rate}"))["e2e_s"]
           for rate in ("0.1", "1000") for p in ("t2t", "c2c")}
    assert e2e[("0.1", "t2t")] < e2e[("0.1", "c2c")]
    assert e2e[("1000", "c2c")] < e2e[("1000", "t2t")]


def test_adaptive_is_never_worse_than_the_better_protocol(store: ModelStore) -> None:
    """The estimate costs no simulated time, so its only overhead is a wrong pick: none on this grid."""
    for rate in ("0.1", "3", "1000"):
        e2e = {p: ok_row(run(store, f"policy.name={p}", f"topology.cells[0].uplink_mbps={rate}"))
               for p in ("t2t", "c2c", "adaptive")}
        best = min(e2e["t2t"]["e2e_s"], e2e["c2c"]["e2e_s"])
        assert e2e["adaptive"]["e2e_s"] <= best * 1.001, (rate, e2e)
        assert e2e["adaptive"]["choice"] in ("t2t", "c2c") and e2e["adaptive"]["reason"] == "faster"


def test_choice_with_a_deadline_prefers_c2c_when_it_fits() -> None:
    assert choose(2.0, 1.0, None) == ("t2t", "faster")
    assert choose(2.0, 1.0, 3.0) == ("c2c", "c2c meets the deadline")
    assert choose(4.0, 1.0, 3.0) == ("t2t", "only t2t meets the deadline")
    assert choose(4.0, 5.0, 3.0) == ("c2c", "neither meets the deadline: faster")


# -- failures: nothing lost ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fallback", ["alone", "t2t"])
def test_senders_cut_off_mid_transfer_fall_back_after_the_timeout(store: ModelStore, fallback: str) -> None:
    """The cell goes down while the caches are on their way and stays down past the timeout; the request
    completes with the fallback and the bytes already sent are counted as abandoned."""
    results = run(store, "policy.name=c2c", "topology.cells[0].uplink_mbps=1", "policy.timeout_s=5",
                  f"policy.fallback={fallback}", "policy.senders=[{node: phone2}, {node: jetson}]",
                  "topology.cells[0].outages=[{start_s: 0.3, end_s: 60}]",
                  "topology.transport.outage_timeout_s=100",
                  "workload.arrival={process: all_at_once}")
    rows = results.requests.to_dicts()
    assert len(rows) == 1
    row = rows[0]
    if fallback == "alone":
        assert row["status"] == "ok" and row["fallback"] == "alone" and row["senders_used"] == 0
        assert row["n_output_tokens"] == 6
    else:  # the text answers must cross the same dead cell: they time out too, then the receiver decodes
        assert row["status"] == "ok" and row["fallback"] == "t2t" and row["senders_used"] == 0
    abandoned = results.events.filter(pl.col("kind") == "abandon")
    kv = abandoned.filter(pl.col("detail") == "kv_cache")
    assert kv.height == 2 and kv["bytes"].sum() > 0  # one per sender, what had left counted
    if fallback == "t2t":  # then the input, sent again as text for the answers, is given up as well
        assert abandoned.filter(pl.col("detail") == "text").height == 2


# -- content: exact fusion and its memo ----------------------------------------------------------------------


TEXT = "Now is the winter of our discontent made glorious summer by this sun of York"


def test_parallel_fusion_adds_each_fusers_correction_and_sequential_chains_them(store: ModelStore) -> None:
    receiver = store.load("shakespeare-slm")
    r_ids, r_ends = tokens_with_ends(receiver, TEXT)
    own = receiver.kv_cache(r_ids[:-1])
    inputs = []
    for name in ("shakespeare-llm", "shakespeare-llm-qwen"):
        lm = store.load(name)
        ids, ends = tokens_with_ends(lm, TEXT)
        inputs.append(SenderInput(store.fuser(name, "shakespeare-slm"), lm, ids, ends))
    fused = store.fusion.fused_cache(receiver, r_ids, r_ends, inputs, "parallel")
    singles = [s.fuser.fuse(s.lm.kv_cache(s.ids), own, np.arange(len(r_ids) - 1)) for s in inputs]
    for layer, (k, v) in enumerate(fused.layers):
        own_k, own_v = own.layers[layer]
        expect_k = own_k + sum(s.layers[layer][0] - own_k for s in singles)
        expect_v = own_v + sum(s.layers[layer][1] - own_v for s in singles)
        np.testing.assert_allclose(k, expect_k, atol=1e-5)
        np.testing.assert_allclose(v, expect_v, atol=1e-5)
    mean = store.fusion.fused_cache(receiver, r_ids, r_ends, inputs, "mean")
    own_k = own.layers[-1][0]
    np.testing.assert_allclose(mean.layers[-1][0], own_k + sum(s.layers[-1][0] - own_k for s in singles) / 2,
                               atol=1e-5)
    chained = store.fusion.fused_cache(receiver, r_ids, r_ends, inputs, "sequential")
    second = inputs[1].fuser.fuse(inputs[1].lm.kv_cache(inputs[1].ids), singles[0], np.arange(len(r_ids) - 1))
    np.testing.assert_allclose(chained.layers[-1][0], second.layers[-1][0], atol=1e-6)
    assert not np.allclose(chained.layers[-1][0], fused.layers[-1][0])


def test_fused_generation_is_memoised_by_sender_prefix_not_only_receiver_prefix(store: ModelStore) -> None:
    receiver, sender = store.load("shakespeare-slm"), store.load("shakespeare-llm")
    fuser = store.fuser("shakespeare-llm", "shakespeare-slm")
    r_ids, r_ends = tokens_with_ends(receiver, TEXT)
    s_ids, s_ends = tokens_with_ends(sender, TEXT)
    other_ids, other_ends = tokens_with_ends(sender, TEXT.replace("York", "Rome"))
    spec = SamplingSpec()
    memo = store.fusion
    before = memo.n_fusions
    same = SenderInput(fuser, sender, s_ids, s_ends)
    other = SenderInput(fuser, sender, other_ids, other_ends)
    a = memo.generate(receiver, r_ids, r_ends, [same], 8, spec, (1, 2))
    assert memo.n_fusions == before + 1
    again = memo.generate(receiver, r_ids, r_ends, [same], 8, spec, (1, 2))
    assert again == a and memo.n_fusions == before + 1
    memo.generate(receiver, r_ids, r_ends, [other], 8, spec, (1, 2))
    assert memo.n_fusions == before + 2  # same receiver prefix, another sender prefix: fused anew


def test_fuser_charge_uses_the_architectures_parameter_count() -> None:
    """fuser_n_params reproduces the shipped fusers' own counts from their geometry: the formula that bills
    a fuser sized for the cost cards is the architecture's."""
    for d in sorted((ROOT / "models" / "fusers").iterdir()):
        m = read_fuser_manifest(d)
        dims = [m.sender.n_kv_heads * m.sender.head_dim] * len(m.layer_map)
        assert fuser_n_params(dims, m.receiver.n_kv_heads, m.receiver.head_dim, m.hidden_size) == m.n_params


# -- Co-C2C and privacy ------------------------------------------------------------------------------------


def test_co_c2c_each_participant_receives_for_its_task_and_sends_for_the_others(store: ModelStore) -> None:
    results = run(store, "policy.name=c2c", "workload.n_requests=2", "workload.devices=[phone, phone2]",
                  "workload.arrival={process: all_at_once}", "policy.senders=[{node: phone}, {node: phone2}]")
    rows = {r["device"]: r for r in results.requests.to_dicts()}
    assert set(rows) == {"phone", "phone2"}
    assert all(r["status"] == "ok" and r["senders_used"] == 1 for r in rows.values())
    assert {rows["phone"]["model"], rows["phone2"]["model"]} == {"shakespeare-slm", "shakespeare-llm"}
    kv = results.events.filter((pl.col("kind") == "tx") & (pl.col("detail") == "kv_cache"))
    assert kv.filter(pl.col("node").str.starts_with("phone->")).height == 1
    assert kv.filter(pl.col("node").str.starts_with("phone2->")).height == 1


def test_privacy_rewrites_the_input_on_the_device_for_every_protocol_alike(store: ModelStore) -> None:
    out = {p: run(store, f"policy.name={p}", "policy.privacy={fraction: 0.5}") for p in ("t2t", "c2c")}
    fractions = {p: ok_row(r)["rephrased_fraction"] for p, r in out.items()}
    assert 0.2 < fractions["t2t"] < 0.8 and fractions["t2t"] == fractions["c2c"]  # same draws (CRN)
    plain = ok_row(run(store, "policy.name=c2c"))
    private = ok_row(out["c2c"])
    assert private["energy_compute_j"] > plain["energy_compute_j"]  # the rewrite is charged on the device
    assert private["ttft_s"] > plain["ttft_s"]


# -- bad input: exit 2, one line naming the YAML path ------------------------------------------------------


def netsim_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    from netsim.cli import main
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out + err


@pytest.mark.parametrize(("overrides", "expected"), [
    (["policy.wire_dtype=int3"], "policy.wire_dtype"),
    (["policy.senders=[{node: nowhere}]"], "policy.senders[0].node: unknown node 'nowhere'"),
    (["policy.senders=[{node: phone}]"], "policy.senders: topology.nodes.phone is the only sender listed"),
    (["policy.fuser_at=attic"], "policy.fuser_at: unknown node 'attic'"),
    (["policy.group_size=32"], "policy.group_size: applies to int8/int4, not bf16"),
    # a pair without a trained fuser: shakespeare-slm → shakespeare-llm-qwen has none
    (["topology.nodes.phone.models=[shakespeare-llm-qwen]", "policy.senders=[{node: phone2}, {node: edge}]",
      "topology.nodes.phone2.models=[shakespeare-slm]"],
     "policy.senders[0]: no fuser for the pair shakespeare-slm → shakespeare-llm-qwen"),
    (["policy.sendrs=[]"], "policy.sendrs"),
])
def test_bad_fedrefine_input_is_one_line_naming_the_yaml_path(capsys: pytest.CaptureFixture[str],
                                                              overrides: list[str], expected: str) -> None:
    argv = ["validate", str(FEDREFINE)]
    for item in overrides:
        argv += ["--set", item]
    code, text = netsim_cli(capsys, *argv)
    lines = [line for line in text.splitlines() if line.strip()]
    assert code == 2, text
    assert any(expected in line for line in lines), text
    assert "Traceback" not in text


def test_switching_policy_keeps_only_the_parameters_the_new_policy_takes() -> None:
    sc = load_scenario(FEDREFINE, ["policy.name=cloud_only"])
    assert sc.policy.name == "cloud_only"
    with pytest.raises(ScenarioError, match=r"policy\.sendrs"):  # a key no policy takes is still refused
        load_scenario(FEDREFINE, ["policy.sendrs=[]", "policy.name=cloud_only"])


# -- across tokenizers (the SmolLM2-135M build from the cache; skipped where it is not built) ---------------


NOT_BUILT = "smollm2-135m is not built (`netsim models build smollm2-135m`)"


def _smollm2_built() -> bool:
    return "smollm2-135m" in ModelStore().names()


@pytest.mark.skipif(not _smollm2_built(), reason=NOT_BUILT)
def test_a_pair_whose_tokenizers_cannot_be_aligned_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import netsim.policies.c2c as c2c
    assert c2c._fuser_problem("smollm2-135m", "shakespeare-slm") is None
    reason = "receiver tokenizer reports no character offsets"
    monkeypatch.setattr(c2c, "check_alignable", lambda s, r: reason)
    assert c2c._fuser_problem("smollm2-135m", "shakespeare-slm") == (
        "the tokenizers of smollm2-135m and shakespeare-slm cannot be aligned: receiver tokenizer reports no "
        "character offsets")


@pytest.mark.slow
@pytest.mark.skipif(not _smollm2_built(), reason=NOT_BUILT)
def test_c2c_across_tokenizers_aligns_by_character_offsets(store: ModelStore) -> None:
    """A SmolLM2 sender (49k-token vocabulary) and the bundled receiver: the run completes, the sender's cache
    is sized by its own tokens."""
    results = run(store, "policy.name=c2c", "policy.senders=[{node: phone2}]",
                  "topology.nodes.phone2.models=[{name: smollm2-135m, charged_as: smollm2-135m}]")
    row = ok_row(results)
    assert row["senders_used"] == 1 and row["fallback"] == ""
    n_tokens = 1 + len(store.load("smollm2-135m").tokenizer.encode(_prompt(results.scenario),
                                                                    add_special_tokens=False))
    kv = results.events.filter((pl.col("kind") == "tx") & (pl.col("detail") == "kv_cache")
                               & pl.col("node").str.starts_with("phone2->"))
    per_token = int(kv_per_token_card(store, "smollm2-135m"))
    assert kv["bytes"].to_list() == [MESSAGE_HEADER_BYTES + n_tokens * per_token]


def kv_per_token_card(store: ModelStore, card: str) -> float:
    g = store.card(card)
    return 2 * g.n_layers * g.n_kv_heads * g.head_dim * 2  # bf16 on the wire


def test_a_char_offset_fuser_between_unalignable_tokenizers_is_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs without the SmolLM2 build: the bundled pair's fuser presented as a two-tokenizer fuser; the real
    check passes on the bundled tokenizers, and a tokenizer without offsets is named in one line."""
    import netsim.policies.c2c as c2c
    real = c2c.read_fuser_manifest

    def as_char_end(path: Path) -> FuserManifest:
        return real(path).model_copy(update={"alignment": "char_end"})

    monkeypatch.setattr(c2c, "read_fuser_manifest", as_char_end)
    assert c2c._fuser_problem("shakespeare-llm", "shakespeare-slm") is None
    monkeypatch.setattr(c2c, "check_alignable", lambda s, r: "sender tokenizer reports no character offsets")
    problem = c2c._fuser_problem("shakespeare-llm", "shakespeare-slm")
    assert problem == ("the tokenizers of shakespeare-llm and shakespeare-slm cannot be aligned: sender "
                       "tokenizer reports no character offsets")
