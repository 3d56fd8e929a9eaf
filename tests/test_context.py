"""RequestContext, the policy's door to the world: content verbs give the real model's numbers (checked
against a bare onnxruntime session built here and the memo switched off) and take no simulated time;
time verbs advance the clock by exactly the roofline of the charged geometry and record what they did;
`send` books a typed payload's bytes and radio energy; `rng(purpose)` streams depend on their key only."""

from __future__ import annotations

import zlib
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import simpy
from onnx import numpy_helper

from netsim.context import RequestContext
from netsim.hardware.cost import Cost, call_time_s, decode_cost, prefill_cost
from netsim.hardware.profile import load_profile
from netsim.lm.cards import load_card
from netsim.lm.memo import LanguageModel
from netsim.lm.zoo import ModelStore
from netsim.metrics import RequestRecord
from netsim.payload import MESSAGE_HEADER_BYTES, Payload, Text, TokenIds
from netsim.scenario import parse_scenario
from netsim.workload import Request
from netsim.world import HostedModel, World, build_world

SLM = "shakespeare-slm"
CARD = "qwen3-4b"
LINE = "ROMEO. But, soft! what light through yonder window breaks?"
RATE_MBPS, DELAY_MS = 100.0, 5.0

RAW: dict[str, Any] = {
    "name": "ctx",
    "seed": 42,
    "topology": {
        "nodes": {
            "phone": {"role": "device", "profile": "oneplus-12",
                      "models": [{"name": SLM, "charged_as": CARD}]},
            "edge": {"role": "edge", "profile": "nvidia-l4", "models": [SLM]},
            "cloud": {"role": "cloud", "profile": "nvidia-a100-80gb", "models": [SLM]},
        },
        "links": [{"src": "phone", "dst": "edge", "rate_mbps": RATE_MBPS, "delay_ms": DELAY_MS},
                  {"src": "edge", "dst": "cloud", "rate_mbps": 1000, "delay_ms": 1}],
    },
    "workload": {"n_requests": 1},
    "policy": {"name": "device_only"},
}


def _world(seed: int = 42) -> World:
    return build_world(parse_scenario({**RAW, "seed": seed}), ModelStore())


def _ctx(world: World, request_id: int = 7) -> RequestContext:
    request = Request(request_id, "phone", 0.0, LINE)
    return RequestContext(world, request, RequestRecord(request_id, "phone", "device_only", 0.0))


def _run(world: World, steps: Generator[simpy.Event, Any, Any]) -> Any:
    proc = world.env.process(steps)
    world.env.run()
    assert proc.ok
    return proc.value


def _phone_model(ctx: RequestContext) -> HostedModel:
    return ctx.world.nodes["phone"].model()


@pytest.fixture(scope="module")
def onnx_path() -> Path:
    return ModelStore().path(SLM) / "model.onnx"


@pytest.fixture(scope="module")
def session(onnx_path: Path) -> ort.InferenceSession:
    """The model file in a bare onnxruntime session: no netsim code between the test and the weights."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


def _recompute(session: ort.InferenceSession, ids: list[int]) -> np.ndarray:
    """Logits (T, V) of one forward pass over `ids` from an empty cache."""
    n = len(ids)
    feeds: dict[str, np.ndarray] = {
        "input_ids": np.array([ids], dtype=np.int64),
        "attention_mask": np.ones((1, n), dtype=np.int64),
        "position_ids": np.arange(n, dtype=np.int64).reshape(1, n),
    }
    for inp in session.get_inputs():
        if inp.name.startswith("past_key_values."):
            _, heads, _, head_dim = inp.shape
            feeds[inp.name] = np.zeros((1, heads, 0, head_dim), dtype=np.float32)
    return session.run(["logits"], feeds)[0][0]


def _memo_off(model: HostedModel) -> LanguageModel:
    return LanguageModel(model.lm.lm, logits_memo_nbytes=0, kv_memo_nbytes=0, generate_memo_entries=0)


# -- content verbs -------------------------------------------------------------------------------------


def test_next_logits_are_the_models_and_a_full_recompute(session: ort.InferenceSession) -> None:
    ctx = _ctx(_world())
    model = _phone_model(ctx)
    reference = _memo_off(model)
    prompt = ctx.prompt_ids(model)
    assert prompt == model.lm.tokenizer.encode(LINE) and len(prompt) > 5
    # one token, a fresh prefix, then stepping forward from memoised caches
    prefixes = [prompt[:1], prompt[:2], prompt, [*prompt, 17], [*prompt, 17, 900], prompt[:4]]
    for prefix in prefixes:
        row = ctx.next_logits(model, prefix)
        assert row.shape == (model.lm.geometry.vocab_size,)
        np.testing.assert_array_equal(row, model.lm.next_logits(prefix))
        np.testing.assert_array_equal(row, reference.next_logits(prefix))
        np.testing.assert_allclose(row, _recompute(session, prefix)[-1], rtol=0, atol=1e-5)
    # the test can tell prefixes apart: a shifted prefix has other logits
    assert np.abs(ctx.next_logits(model, prompt) - ctx.next_logits(model, prompt[:-1])).max() > 1e-2


def test_verify_logits_row_i_follows_prefix_plus_first_i_drafts(session: ort.InferenceSession) -> None:
    drafts = [5, 1200, 77, 3001, 9]
    for warm in (False, True):  # a cold memo, and one that already holds the prefix's cache
        ctx = _ctx(_world())
        model = _phone_model(ctx)
        reference = _memo_off(model)
        prefix = ctx.prompt_ids(model)
        full = _recompute(session, prefix + drafts)
        if warm:
            ctx.next_logits(model, prefix)
        block = ctx.verify_logits(model, prefix, drafts)
        assert block.shape == (len(drafts), model.lm.geometry.vocab_size)
        for i in range(len(drafts)):
            expected = reference.next_logits(prefix + drafts[: i + 1])
            np.testing.assert_allclose(block[i], expected, rtol=0, atol=1e-5)
            np.testing.assert_allclose(block[i], full[len(prefix) + i], rtol=0, atol=1e-5)


def test_embed_rows_are_the_input_embedding_matrix(onnx_path: Path) -> None:
    ctx = _ctx(_world())
    model = _phone_model(ctx)
    graph = onnx.load(str(onnx_path)).graph
    (table,) = [numpy_helper.to_array(t).astype(np.float32) for t in graph.initializer
                if t.name.startswith("model.model.embed_tokens.weight")]
    assert table.shape == (model.lm.geometry.vocab_size, model.lm.geometry.hidden_size)
    ids = [0, 3, 3, 4095, 1234]
    rows = ctx.embed(model, ids)
    assert rows.shape == (5, model.lm.geometry.hidden_size) and rows.dtype == np.float32
    np.testing.assert_array_equal(rows, table[ids])


def test_content_verbs_take_no_simulated_time_and_record_nothing() -> None:
    world = _world()
    ctx = _ctx(world)
    model = _phone_model(ctx)
    prefix = ctx.prompt_ids(model)
    seen: list[tuple[float, int]] = []

    def steps() -> Generator[simpy.Event, Any, None]:
        yield world.env.timeout(1.5)
        n_events = len(world.recorder.events)
        ctx.next_logits(model, prefix)
        ctx.verify_logits(model, prefix, [1, 2, 3])
        ctx.kv_cache(model, prefix)
        ctx.embed(model, prefix)
        seen.append((world.env.now, len(world.recorder.events) - n_events))

    _run(world, steps())
    assert seen == [(1.5, 0)]


# -- per-request random streams ------------------------------------------------------------------------


def test_rng_streams_are_keyed_by_seed_request_and_purpose_only() -> None:
    world = _world(seed=42)
    first = _ctx(world).rng("routing").random(8)
    # another context on the same request, after other purposes drew first, draws the same numbers
    other = _ctx(world)
    other.rng("acceptance").random(1000)
    other.rng("sampling").integers(0, 10, 50)
    np.testing.assert_array_equal(other.rng("routing").random(8), first)
    # ... and they are the documented stream default_rng([seed, 3, request, crc32(purpose)])
    documented = np.random.default_rng([42, 3, 7, zlib.crc32(b"routing")]).random(8)
    np.testing.assert_array_equal(first, documented)
    # a different purpose, request or seed is another stream
    assert not np.array_equal(_ctx(world).rng("acceptance").random(8), first)
    assert not np.array_equal(_ctx(world, request_id=8).rng("routing").random(8), first)
    assert not np.array_equal(_ctx(_world(seed=43)).rng("routing").random(8), first)


# -- time verbs: compute -------------------------------------------------------------------------------


def test_charge_verbs_advance_time_by_the_roofline_of_the_charged_geometry() -> None:
    world = _world()
    ctx = _ctx(world)
    phone, edge = world.nodes["phone"], world.nodes["edge"]
    on_phone, on_edge = phone.model(), edge.model()
    card, slm = load_card(CARD), on_edge.lm.geometry
    oneplus, l4 = load_profile("oneplus-12"), load_profile("nvidia-l4")
    assert on_phone.charged == card and on_edge.charged == slm  # charged_as bills the card

    calls: list[tuple[str, str, float, float, Cost]] = []  # (kind, node, elapsed, returned, cost)

    def timed(kind: str, node: str, cost: Cost, step: Generator[simpy.Event, Any, float]
              ) -> Generator[simpy.Event, Any, None]:
        t0 = world.env.now
        returned = yield from step
        calls.append((kind, node, world.env.now - t0, returned, cost))

    def steps() -> Generator[simpy.Event, Any, None]:
        yield from timed("prefill", "phone", prefill_cost(card, 37, past_len=5),
                         ctx.charge_prefill(phone, on_phone, 37, past_len=5))
        yield from timed("decode", "phone", decode_cost(card, 40),
                         ctx.charge_decode(phone, on_phone, past_len=40))
        yield from timed("verify", "phone", decode_cost(card, 40, n_tokens=6),
                         ctx.charge_verify(phone, on_phone, past_len=40, n_tokens=6))
        yield from timed("prefill", "edge", prefill_cost(slm, 37),
                         ctx.charge_prefill(edge, on_edge, 37))

    _run(world, steps())
    profiles = {"phone": oneplus, "edge": l4}
    total = 0.0
    for kind, node, elapsed, returned, cost in calls:
        expected = call_time_s(profiles[node], cost)
        assert returned == expected, kind
        assert elapsed == pytest.approx(expected, rel=1e-12), kind
        total += expected
    assert world.env.now == pytest.approx(total, rel=1e-12)

    # the expectations are sharp: each neighbouring call shape would take another time
    others = [prefill_cost(card, 37), prefill_cost(slm, 37, past_len=5), decode_cost(card, 41),
              decode_cost(card, 39), decode_cost(card, 40, n_tokens=5), prefill_cost(card, 6, past_len=40)]
    shapes = {round(call_time_s(oneplus, c), 12) for c in others}
    assert not shapes & {round(call_time_s(oneplus, c[4]), 12) for c in calls[:3]}

    compute_events = [e for e in world.recorder.events if e.kind in ("prefill", "decode", "verify")]
    assert [(e.kind, e.node, e.request_id) for e in compute_events] == [
        ("prefill", "phone", 7), ("decode", "phone", 7), ("verify", "phone", 7), ("prefill", "edge", 7)]
    assert [e.duration_s for e in compute_events] == [c[3] for c in calls]
    assert [e.detail for e in compute_events] == [f"{SLM} as {CARD}"] * 3 + [SLM]
    # energy: P_active · duration, charged to the request on the node that computed
    phone_s = sum(c[3] for c in calls[:3])
    assert phone.compute.energy_j(7) == pytest.approx(oneplus.power_active_w * phone_s, rel=1e-12)
    assert edge.compute.energy_j(7) == pytest.approx(l4.power_active_w * calls[3][3], rel=1e-12)


# -- time verbs: network -------------------------------------------------------------------------------


def test_send_books_payload_bytes_direction_energy_and_kind() -> None:
    world = _world()
    ctx = _ctx(world)
    up = TokenIds((11, 22, 33))
    down = Text("wherefore art thou — Romeo?")
    across = TokenIds((1,) * 10, probs=(0.5,) * 10)
    assert up.nbytes == MESSAGE_HEADER_BYTES + 3 * 4
    assert down.nbytes == MESSAGE_HEADER_BYTES + len("wherefore art thou — Romeo?".encode())
    assert across.nbytes == MESSAGE_HEADER_BYTES + 10 * (4 + 2)
    times: list[float] = []

    def move(src: str, dst: str, payload: Payload) -> Generator[simpy.Event, Any, None]:
        t0 = world.env.now
        delivery = yield from ctx.send(src, dst, payload)
        assert delivery.nbytes == payload.nbytes
        times.append(world.env.now - t0)

    def steps() -> Generator[simpy.Event, Any, None]:
        yield from move("phone", "edge", up)
        yield from move("edge", "phone", down)
        yield from move("edge", "cloud", across)  # server to server: neither up nor down

    _run(world, steps())
    rec = ctx.record
    assert (rec.bytes_up, rec.bytes_down, rec.bytes_total) == (
        up.nbytes, down.nbytes, up.nbytes + down.nbytes + across.nbytes)
    oneplus = load_profile("oneplus-12")
    assert oneplus.radio_tx_j_per_bit is not None and oneplus.radio_rx_j_per_bit is not None
    radio_j = oneplus.radio_tx_j_per_bit * 8 * up.nbytes + oneplus.radio_rx_j_per_bit * 8 * down.nbytes
    assert rec.energy_radio_j == pytest.approx(radio_j, rel=1e-12)
    # ideal transport, one flow, one packet: (payload + 52 B TCP/IP header) at line rate, plus propagation
    for payload, elapsed in zip((up, down), times[:2], strict=True):
        assert elapsed == pytest.approx(8 * (payload.nbytes + 52) / (RATE_MBPS * 1e6) + DELAY_MS / 1e3,
                                        rel=1e-9)
    # each hop is one `tx` event carrying the payload's size, tagged with the payload's kind
    tx = [(e.node, e.nbytes, e.detail, e.request_id) for e in world.recorder.events if e.kind == "tx"]
    assert tx == [("phone->edge", up.nbytes, "token_ids", 7), ("edge->phone", down.nbytes, "text", 7),
                  ("edge->cloud", across.nbytes, "token_ids", 7)]
