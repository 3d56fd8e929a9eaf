"""Network engine against closed forms: serialization + propagation, processor sharing, FIFO M/M/1,
outages, loss with retransmission, conservation of bytes per link, determinism, routes and specs."""

from __future__ import annotations

import math
import re
from collections.abc import Generator, Sequence
from dataclasses import astuple
from itertools import pairwise
from typing import Any

import numpy as np
import pydantic
import pytest
import simpy

from netsim.errors import InputError
from netsim.network import (
    CellSpec,
    Delivery,
    LinkSpec,
    Network,
    OutageSpec,
    TransferFailed,
    TransportSpec,
    build_graph,
    build_network,
)
from netsim.recorder import Recorder


def wire_nbytes(nbytes: int, mtu: int = 1500, header: int = 52) -> int:
    """Payload + one header per MTU-sized packet (at least one packet)."""
    return nbytes + max(1, math.ceil(nbytes / (mtu - header))) * header


def make_net(env: simpy.Environment, recorder: Recorder, links: Sequence[LinkSpec],
             cells: Sequence[CellSpec] = (), transport: TransportSpec | None = None, seed: int = 0
             ) -> Network:
    names = {end for link in links for end in (link.src, link.dst)}
    names |= {n for cell in cells for n in (cell.ap, *cell.members)}
    return build_network(env, sorted(names), links, cells, transport or TransportSpec(),
                         np.random.default_rng(seed), recorder)


def launch(env: simpy.Environment, net: Network, src: str, dst: str, nbytes: int, at_s: float = 0.0,
           **kw: Any) -> dict[str, Any]:
    """Start a transfer at `at_s`; the returned dict gets `delivery` or `failed` when it ends."""
    box: dict[str, Any] = {}

    def proc() -> Generator[simpy.Event, Any, None]:
        if at_s:
            yield env.timeout(at_s)
        try:
            box["delivery"] = yield from net.send(src, dst, nbytes, **kw)
        except TransferFailed as exc:
            box["failed"] = exc

    env.process(proc())
    return box


# -- one transfer: bytes·8/rate + propagation, with headers, per hop ------------------------------------


@pytest.mark.parametrize("nbytes", [0, 1, 1448, 1449, 100_000])
def test_single_transfer_is_serialization_plus_propagation(env, recorder, nbytes):
    net = make_net(env, recorder, [LinkSpec(src="a", dst="b", rate_mbps=10, delay_ms=5)])
    box = launch(env, net, "a", "b", nbytes, request_id=3, kind="kv")
    env.run()
    d: Delivery = box["delivery"]
    on_wire = wire_nbytes(nbytes)
    assert d.t_end_s == pytest.approx(on_wire * 8 / 10e6 + 0.005, rel=1e-12)
    assert d.bytes_on_wire == on_wire and d.hops == ("a", "b") and d.retransmissions == 0
    link = net.links[("a", "b")]
    assert (link.bytes_sent, link.bytes_received, link.bytes_lost) == (on_wire, on_wire, 0)
    (event,) = recorder.events
    assert (event.node, event.kind, event.request_id, event.nbytes, event.detail) == (
        "a->b", "tx", 3, nbytes, "kv")
    assert event.duration_s == pytest.approx(d.t_end_s)


def test_multi_hop_is_store_and_forward_with_per_hop_packetisation(env, recorder):
    links = [LinkSpec(src="a", dst="b", rate_mbps=10, delay_ms=5),
             LinkSpec(src="b", dst="c", rate_mbps=100, delay_ms=20, mtu_bytes=9000, header_bytes=52)]
    net = make_net(env, recorder, links)
    box = launch(env, net, "a", "c", 1_000_000, at_s=1.0)
    env.run()
    hop1, hop2 = wire_nbytes(1_000_000), wire_nbytes(1_000_000, mtu=9000, header=52)
    expected_s = hop1 * 8 / 10e6 + 0.005 + hop2 * 8 / 100e6 + 0.020
    d = box["delivery"]
    assert d.t_start_s == 1.0
    assert d.duration_s == pytest.approx(expected_s, rel=1e-12)
    assert d.hop_nbytes_on_wire == (hop1, hop2) and d.hops == ("a", "b", "c")
    assert [e.node for e in recorder.events] == ["a->b", "b->c"]
    assert recorder.events[0].t_s == pytest.approx(1.0 + hop1 * 8 / 10e6 + 0.005, rel=1e-12)


def test_same_node_delivers_at_once(env, recorder):
    net = make_net(env, recorder, [LinkSpec(src="a", dst="b", rate_mbps=1)])
    box = launch(env, net, "a", "a", 10**6, at_s=2.0)
    env.run()
    assert box["delivery"].duration_s == 0.0 and box["delivery"].bytes_on_wire == 0


# -- sharing disciplines ------------------------------------------------------------------------------


@pytest.mark.parametrize("n_flows", [1, 2, 5, 16])
def test_n_equal_fair_flows_each_take_n_times_as_long(env, recorder, n_flows):
    net = make_net(env, recorder, [LinkSpec(src="a", dst="b", rate_mbps=50, delay_ms=2)])
    boxes = [launch(env, net, "a", "b", 300_000) for _ in range(n_flows)]
    env.run()
    alone_s = wire_nbytes(300_000) * 8 / 50e6
    for box in boxes:
        assert box["delivery"].t_end_s == pytest.approx(n_flows * alone_s + 0.002, rel=1e-12)


def test_processor_sharing_with_staggered_arrival(env, recorder):
    """A (1 MB) alone at 1 MB/s for 0.5 s, then A and B (250 kB) share: B done at 1.0, A at 1.25."""
    net = make_net(env, recorder, [LinkSpec(src="a", dst="b", rate_mbps=8, header_bytes=0)])
    a = launch(env, net, "a", "b", 1_000_000)
    b = launch(env, net, "a", "b", 250_000, at_s=0.5)
    env.run()
    assert b["delivery"].t_end_s == pytest.approx(1.0, rel=1e-12)
    assert a["delivery"].t_end_s == pytest.approx(1.25, rel=1e-12)


def test_fair_flows_of_different_sizes_finish_in_size_order(env, recorder):
    """Processor sharing with all flows present from 0: sorted sizes s_1 ≤ … ≤ s_N, the k-th finishes
    at t_k = t_(k−1) + (s_k − s_(k−1))·(N − k + 1)·8/R."""
    sizes = [40_000, 10_000, 250_000, 10_000, 120_000]
    net = make_net(env, recorder, [LinkSpec(src="a", dst="b", rate_mbps=8, header_bytes=0)])
    boxes = [launch(env, net, "a", "b", nbytes) for nbytes in sizes]
    env.run()
    t_s, prev, expected = 0.0, 0, {}
    for k, nbytes in enumerate(sorted(sizes)):
        t_s += (nbytes - prev) * (len(sizes) - k) * 8 / 8e6
        prev = nbytes
        expected[nbytes] = t_s
    for box, nbytes in zip(boxes, sizes, strict=True):
        assert box["delivery"].t_end_s == pytest.approx(expected[nbytes], rel=1e-12)


def fluid_reference(flows: list[tuple[float, float, float | None]], rate_bps: float) -> list[float | None]:
    """Processor sharing computed the direct way, O(n) per event: every present flow moves at R/n.
    `flows` are (arrival s, bits, give-up time or None); returns each one's finish time (None if it
    gave up first)."""
    present: dict[int, float] = {}
    done: list[float | None] = [None] * len(flows)
    order = sorted(range(len(flows)), key=lambda i: flows[i][0])
    t_s, nxt = 0.0, 0
    while nxt < len(order) or present:
        n = len(present)
        t_finish = t_s + min(present.values()) * n / rate_bps if present else math.inf
        t_arrive = flows[order[nxt]][0] if nxt < len(order) else math.inf
        cancels = [(c, i) for i in present if (c := flows[i][2]) is not None]
        t_cancel = min(cancels)[0] if cancels else math.inf
        t_next = min(t_finish, t_arrive, t_cancel)
        for i in present:
            present[i] -= (t_next - t_s) * rate_bps / n
        t_s = t_next
        if t_next == t_finish:
            for i in [i for i, left in present.items() if left <= rate_bps * 1e-9]:
                del present[i]
                done[i] = t_s
        elif t_next == t_arrive:
            present[order[nxt]] = flows[order[nxt]][1]
            nxt += 1
        else:
            del present[min(cancels)[1]]
    return done


def test_virtual_time_sharing_matches_the_direct_fluid_computation(env, recorder):
    """400 flows with random arrivals, sizes and a quarter giving up: the heap of virtual finish tags
    gives every flow the finish time of the O(n)-per-event fluid computation."""
    rng = np.random.default_rng(21)
    rate_bps = 8e6
    flows: list[tuple[float, float, float | None]] = []
    arrival_s = 0.0
    for _ in range(400):
        arrival_s += float(rng.exponential(0.004))
        nbytes = int(rng.integers(1, 20_000))
        give_up_s = arrival_s + float(rng.exponential(0.2)) if rng.random() < 0.25 else None
        flows.append((arrival_s, nbytes * 8.0, give_up_s))
    net = make_net(env, recorder, [LinkSpec(src="a", dst="b", rate_mbps=rate_bps / 1e6, header_bytes=0)])
    boxes = []
    for arrival_s, bits, give_up_s in flows:
        box: dict[str, Any] = {}

        def proc(box: dict[str, Any] = box, arrival_s: float = arrival_s, nbytes: int = int(bits) // 8
                 ) -> Generator[simpy.Event, Any, None]:
            yield env.timeout(arrival_s)
            try:
                box["t_s"] = (yield from net.send("a", "b", nbytes)).t_end_s
            except simpy.Interrupt:
                box["t_s"] = None

        process = env.process(proc())
        if give_up_s is not None:
            env.process(_interrupt_at(env, process, give_up_s))
        boxes.append(box)
    env.run()
    expected = fluid_reference(flows, rate_bps)
    assert sum(e is None for e in expected) > 20  # some did give up first
    for box, t_s in zip(boxes, expected, strict=True):
        assert box["t_s"] == (None if t_s is None else pytest.approx(t_s, rel=1e-9))


def _interrupt_at(env: simpy.Environment, process: simpy.Process, t_s: float
                  ) -> Generator[simpy.Event, Any, None]:
    yield env.timeout(t_s)
    if process.is_alive:
        process.interrupt("deadline")


def test_fifo_serves_one_message_at_a_time_in_arrival_order(env, recorder):
    link = LinkSpec(src="a", dst="b", rate_mbps=8, header_bytes=0, discipline="fifo")
    net = make_net(env, recorder, [link])
    first = launch(env, net, "a", "b", 1_000_000)
    second = launch(env, net, "a", "b", 250_000, at_s=0.5)
    env.run()
    assert first["delivery"].t_end_s == pytest.approx(1.0, rel=1e-12)
    assert second["delivery"].t_end_s == pytest.approx(1.25, rel=1e-12)


def test_fifo_mm1_mean_sojourn_matches_queueing_theory(env, recorder):
    """Poisson arrivals (λ = 50/s), exponential sizes (μ = 100/s): mean sojourn 1/(μ − λ) = 20 ms, ≤ 3%."""
    rate_bps, lam, mu, n_jobs = 8e6, 50.0, 100.0, 100_000
    mean_nbytes = rate_bps / 8 / mu
    net = make_net(env, recorder, [LinkSpec(src="a", dst="b", rate_mbps=rate_bps / 1e6, header_bytes=0,
                                            mtu_bytes=65535, discipline="fifo")])  # no headers: W(S) = S
    rng = np.random.default_rng(12345)
    gaps_s = rng.exponential(1 / lam, n_jobs)
    sizes = np.maximum(1, np.rint(rng.exponential(mean_nbytes, n_jobs))).astype(int)
    sojourns_s: list[float] = []

    def job(nbytes: int) -> Generator[simpy.Event, Any, None]:
        d = yield from net.send("a", "b", nbytes)
        sojourns_s.append(d.duration_s)

    def arrivals() -> Generator[simpy.Event, Any, None]:
        for gap_s, nbytes in zip(gaps_s, sizes, strict=True):
            yield env.timeout(gap_s)
            env.process(job(int(nbytes)))

    env.process(arrivals())
    env.run()
    assert len(sojourns_s) == n_jobs
    assert np.mean(sojourns_s) == pytest.approx(1 / (mu - lam), rel=0.03)


# -- outages ------------------------------------------------------------------------------------------


def test_outage_pauses_transfers_which_then_resume(env, recorder):
    link = LinkSpec(src="a", dst="b", rate_mbps=8, header_bytes=0, delay_ms=1,
                    outages=[OutageSpec(start_s=0.1, end_s=0.4)])
    net = make_net(env, recorder, [link], transport=TransportSpec(outage_timeout_s=1.0))
    running = launch(env, net, "a", "b", 200_000)          # 0.1 s sent, 0.3 s paused, 0.1 s more
    arriving = launch(env, net, "a", "b", 100_000, at_s=0.2)  # waits 0.2 s, then shares the link
    env.run()
    d1, d2 = running["delivery"], arriving["delivery"]
    # from 0.4 both share 1 MB/s: 100 kB each left → both done at 0.6
    assert d1.t_end_s == pytest.approx(0.601, rel=1e-12) and d1.outage_wait_s == pytest.approx(0.3)
    assert d2.t_end_s == pytest.approx(0.601, rel=1e-12) and d2.outage_wait_s == pytest.approx(0.2)
    waits = [e for e in recorder.events if e.kind == "outage_wait"]
    assert sorted(e.duration_s for e in waits) == pytest.approx([0.2, 0.3])


def test_outage_longer_than_timeout_fails_and_counts_partial_bytes(env, recorder):
    link = LinkSpec(src="a", dst="b", rate_mbps=8, header_bytes=0,
                    outages=[OutageSpec(start_s=0.1, end_s=20)])
    net = make_net(env, recorder, [link], transport=TransportSpec(outage_timeout_s=1.0))
    cut = launch(env, net, "a", "b", 200_000)
    during = launch(env, net, "a", "b", 1000, at_s=5.0)
    after = launch(env, net, "a", "b", 1000, at_s=20.0)
    env.run()
    assert "outage on a->b" in str(cut["failed"]) and cut["failed"].t_s == pytest.approx(1.1)
    assert during["failed"].t_s == pytest.approx(6.0)
    assert after["delivery"].t_end_s == pytest.approx(20.001)
    ab = net.links[("a", "b")]
    assert ab.bytes_sent == 100_000 + 1000 and ab.bytes_lost == 100_000 and ab.bytes_received == 1000
    assert [e.kind for e in recorder.events].count("tx_failed") == 2


def test_outage_shorter_than_timeout_only_delays(env, recorder):
    link = LinkSpec(src="a", dst="b", rate_mbps=8, header_bytes=0,
                    outages=[OutageSpec(start_s=0.0, end_s=2.0)])
    net = make_net(env, recorder, [link], transport=TransportSpec(outage_timeout_s=2.0))
    box = launch(env, net, "a", "b", 1000)
    env.run()
    assert box["delivery"].t_end_s == pytest.approx(2.001)


# -- loss, conservation, determinism ------------------------------------------------------------------


def _lossy_workload(env: simpy.Environment, net: Network, n_messages: int, seed: int
                    ) -> tuple[list[Delivery], list[TransferFailed], int]:
    """Messages of random sizes between random pairs of a chain; returns outcomes and the number started."""
    rng = np.random.default_rng(seed)
    delivered: list[Delivery] = []
    failed: list[TransferFailed] = []
    pairs = [("a", "c"), ("c", "a"), ("a", "b"), ("b", "c")]

    def message(src: str, dst: str, nbytes: int) -> Generator[simpy.Event, Any, None]:
        try:
            delivered.append((yield from net.send(src, dst, nbytes)))
        except TransferFailed as exc:
            failed.append(exc)

    def arrivals() -> Generator[simpy.Event, Any, None]:
        for _ in range(n_messages):
            yield env.timeout(float(rng.exponential(0.02)))
            src, dst = pairs[int(rng.integers(len(pairs)))]
            env.process(message(src, dst, int(rng.integers(1, 60_000))))

    env.process(arrivals())
    env.run()
    return delivered, failed, n_messages


def _chain(loss: float, outages: list[OutageSpec]) -> list[LinkSpec]:
    return [LinkSpec(src="a", dst="b", rate_mbps=20, delay_ms=3, loss=loss, outages=outages),
            LinkSpec(src="b", dst="c", rate_mbps=50, delay_ms=10, loss=loss, discipline="fifo")]


@pytest.mark.parametrize("kind", ["ideal", "tcp"])
def test_30pct_loss_with_outages_every_transfer_ends_and_bytes_are_conserved(env, recorder, kind):
    outages = [OutageSpec(start_s=1.0, end_s=1.3), OutageSpec(start_s=2.0, end_s=9.0)]
    transport = TransportSpec(kind=kind, max_retx=3, outage_timeout_s=0.5)
    net = make_net(env, recorder, _chain(0.3, outages), transport=transport, seed=7)
    delivered, failed, n = _lossy_workload(env, net, 400, seed=1)
    assert len(delivered) + len(failed) == n
    reasons = {re.sub(r" on .*", "", str(f)) for f in failed}
    assert reasons == {"retries exhausted", "outage"}  # both failure modes occur and nothing else
    assert delivered and all(d.retransmissions > 0 for d in delivered if d.nbytes > 20_000)
    for link in net.links.values():
        assert link.bytes_sent == link.bytes_received + link.bytes_lost
    assert sum(link.bytes_lost for link in net.links.values()) > 0
    failures = [e for e in recorder.events if e.kind == "tx_failed"]
    assert len(failures) == len(failed)


def test_loss_fraction_and_received_bytes_match_delivered_messages(env, recorder):
    """No give-ups (max_retx 15): every packet gets through, so each link received exactly the wire bytes
    of the messages that crossed it, and lost transmissions are a fraction p of those sent."""
    net = make_net(env, recorder, _chain(0.3, []), transport=TransportSpec(max_retx=15), seed=3)
    delivered, failed, n = _lossy_workload(env, net, 300, seed=2)
    assert not failed and len(delivered) == n
    for (src, dst), link in net.links.items():
        crossing = [d for d in delivered if (src, dst) in set(pairwise(d.hops))]
        assert link.bytes_received == sum(wire_nbytes(d.nbytes) for d in crossing)
        if link.bytes_sent:
            assert link.bytes_sent == link.bytes_received + link.bytes_lost
            assert link.bytes_lost / link.bytes_sent == pytest.approx(0.3, abs=0.02)
    hop_bytes = sum(sum(d.hop_nbytes_on_wire) for d in delivered)
    assert hop_bytes == sum(link.bytes_sent for link in net.links.values())


def _run_for_seed(seed: int) -> tuple[list[tuple[Any, ...]], list[str]]:
    env, recorder = simpy.Environment(), Recorder()
    cell = CellSpec(name="cell", ap="gnb", members={"p1": 80, "p2": 300}, shadowing=True, fading="rayleigh",
                    coherence_ms=5, loss=0.05)
    links = [*_chain(0.1, [OutageSpec(start_s=0.5, end_s=0.8)]),
             LinkSpec(src="gnb", dst="a", rate_mbps=1000, delay_ms=1)]
    net = make_net(env, recorder, links, [cell], TransportSpec(kind="tcp", max_retx=2), seed=seed)
    outcomes: list[str] = []

    def user(src: str) -> Generator[simpy.Event, Any, None]:
        for i in range(20):
            try:
                d = yield from net.send(src, "c", 20_000 * (i + 1))
                outcomes.append(f"{src} ok {d.t_end_s!r} {d.retransmissions}")
            except TransferFailed as exc:
                outcomes.append(f"{src} failed {exc}")

    for src in ("p1", "p2", "b"):
        env.process(user(src))
    env.run()
    return [astuple(e) for e in recorder.events], outcomes


def test_same_seed_gives_identical_results_and_another_seed_differs():
    events_a, outcomes_a = _run_for_seed(11)
    events_b, outcomes_b = _run_for_seed(11)
    _, outcomes_c = _run_for_seed(12)
    assert events_a == events_b and outcomes_a == outcomes_b
    assert outcomes_a != outcomes_c


def test_network_draws_from_the_generator_passed_in_not_the_global_one(env, recorder):
    np.random.seed(0)
    before = np.random.get_state()[1].copy()
    net = make_net(env, recorder, _chain(0.3, []), seed=5)
    launch(env, net, "a", "c", 500_000)
    env.run()
    assert np.array_equal(np.random.get_state()[1], before)


# -- routes and topology -------------------------------------------------------------------------------


def test_route_is_shortest_by_latency_and_prefers_fewer_hops_on_ties(env, recorder):
    def route_with_direct_delay(delay_ms: float) -> list[str]:
        links = [LinkSpec(src="a", dst="b", rate_mbps=1, delay_ms=10),
                 LinkSpec(src="b", dst="c", rate_mbps=1, delay_ms=10),
                 LinkSpec(src="a", dst="c", rate_mbps=1, delay_ms=delay_ms)]
        return make_net(simpy.Environment(), Recorder(), links).route("a", "c")

    assert route_with_direct_delay(30) == ["a", "b", "c"]
    assert route_with_direct_delay(15) == ["a", "c"]
    assert route_with_direct_delay(20) == ["a", "c"]


def test_route_helpers_and_errors(env, recorder):
    links = [LinkSpec(src="a", dst="b", rate_mbps=1, delay_ms=10),
             LinkSpec(src="b", dst="c", rate_mbps=1, delay_ms=5, duplex=False)]
    net = build_network(env, ["a", "b", "c", "island"], links, [], TransportSpec(), np.random.default_rng(0),
                        recorder)
    assert net.route("a", "c") == ["a", "b", "c"] and net.route_delay_s("a", "c") == pytest.approx(0.015)
    assert net.has_route("a", "c") and not net.has_route("c", "a") and not net.has_route("a", "island")
    with pytest.raises(InputError, match="no route from c to a"):
        net.route("c", "a")


def test_build_graph_edges_and_validation():
    graph = build_graph(["a", "b", "gnb", "p1"], [LinkSpec(src="a", dst="b", rate_mbps=100, delay_ms=4)],
                        [CellSpec(name="c5g", ap="gnb", members={"p1": 100}, uplink_mbps=20)])
    assert graph.edges["a", "b"]["delay_s"] == pytest.approx(0.004)
    assert graph.edges["b", "a"]["rate_bps"] == pytest.approx(100e6)
    assert graph.edges["p1", "gnb"]["rate_bps"] == pytest.approx(20e6)
    assert graph.edges["p1", "gnb"]["medium"] == "c5g:up" and graph.edges["gnb", "p1"]["medium"] == "c5g:down"
    with pytest.raises(InputError, match=r"links\[0\]: unknown node 'x'"):
        build_graph(["a"], [LinkSpec(src="a", dst="x", rate_mbps=1)], [])
    with pytest.raises(InputError, match=r"links\[1\]: a second hop b->a"):
        build_graph(["a", "b"], [LinkSpec(src="a", dst="b", rate_mbps=1),
                                 LinkSpec(src="b", dst="a", rate_mbps=2)], [])


def test_link_repr_shows_use_against_capacity(env, recorder):
    net = make_net(env, recorder, [LinkSpec(src="ue3", dst="gnb", rate_mbps=50, delay_ms=5)])
    launch(env, net, "ue3", "gnb", 10**6)
    launch(env, net, "ue3", "gnb", 10**6)
    env.run(until=0.01)
    link = net.links[("ue3", "gnb")]
    assert repr(link) == "Link('ue3'->'gnb', 50.0/50.0 Mbit/s, 5 ms)"
    env.run()
    assert repr(link) == "Link('ue3'->'gnb', 0.0/50.0 Mbit/s, 5 ms)"


# -- specs --------------------------------------------------------------------------------------------


def test_spec_errors_name_the_field():
    with pytest.raises(pydantic.ValidationError) as info:
        LinkSpec(src="a", dst="b", rate_mbps=0)
    (error,) = info.value.errors()
    assert error["loc"] == ("rate_mbps",) and "greater than" in error["msg"]
    with pytest.raises(pydantic.ValidationError, match="extra"):
        LinkSpec(src="a", dst="b", rate_mbps=1, bandwidth=3)
    with pytest.raises(pydantic.ValidationError, match="must be greater than start_s"):
        OutageSpec(start_s=2, end_s=1)
    with pytest.raises(pydantic.ValidationError, match="overlap"):
        LinkSpec(src="a", dst="b", rate_mbps=1,
                 outages=[{"start_s": 0, "end_s": 2}, {"start_s": 1, "end_s": 3}])
    with pytest.raises(pydantic.ValidationError, match="loss"):
        LinkSpec(src="a", dst="b", rate_mbps=1, loss=1.0)
    with pytest.raises(pydantic.ValidationError, match="exceed header_bytes"):
        LinkSpec(src="a", dst="b", rate_mbps=1, mtu_bytes=100, header_bytes=100)


def test_routes_from_hub_trees_equal_pairwise_shortest_routes() -> None:
    """Routes answered from a hub's shortest-path tree equal the per-pair search, on a random graph with
    one-way links and distinct latencies (no exact ties), whichever order the pairs are asked in."""
    import random

    import networkx as nx

    from netsim.network.topology import shortest_route

    rnd = random.Random(7)
    names = [f"n{i}" for i in range(40)]
    links = []
    for i in range(1, 40):
        j = rnd.randrange(i)
        links.append(LinkSpec(src=names[i], dst=names[j], rate_mbps=10, delay_ms=rnd.uniform(1, 9)))
    for _ in range(30):
        a, b = rnd.sample(names, 2)
        duplex = rnd.random() < 0.5
        links.append(LinkSpec(src=a, dst=b, rate_mbps=10, delay_ms=rnd.uniform(1, 9), duplex=duplex))
    links = [link for k, link in enumerate(links)
             if all((link.src, link.dst) != (o.src, o.dst) and (link.src, link.dst) != (o.dst, o.src)
                    for o in links[:k])]
    net = build_network(simpy.Environment(), names, links, [], TransportSpec(), np.random.default_rng(0),
                        Recorder())
    pairs = [(a, b) for a in names for b in names if a != b and nx.has_path(net.graph, a, b)]
    rnd.shuffle(pairs)
    for a, b in pairs:
        assert net.route(a, b) == shortest_route(net.graph, a, b)
    assert net._trees_to and net._trees_from  # the hubs did get trees
