"""Cancellation: an interrupted transfer leaves its medium at once, its bytes are accounted as abandoned
(sent = received + lost + abandoned on every link), an `abandon` event is recorded, and the
`simpy.Interrupt` reaches the caller with its cause."""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from typing import Any

import numpy as np
import pytest
import simpy

from netsim.network import (
    CellSpec,
    LinkSpec,
    Network,
    OutageSpec,
    TransferFailed,
    TransportSpec,
    build_network,
)
from netsim.recorder import Recorder


def wire_nbytes(nbytes: int, mtu: int = 1500, header: int = 52) -> int:
    return nbytes + max(1, math.ceil(nbytes / (mtu - header))) * header


def make_net(env: simpy.Environment, recorder: Recorder, links: Sequence[LinkSpec],
             cells: Sequence[CellSpec] = (), transport: TransportSpec | None = None, seed: int = 0
             ) -> Network:
    names = {end for link in links for end in (link.src, link.dst)}
    names |= {n for cell in cells for n in (cell.ap, *cell.members)}
    return build_network(env, sorted(names), links, cells, transport or TransportSpec(),
                         np.random.default_rng(seed), recorder)


def launch(env: simpy.Environment, net: Network, src: str, dst: str, nbytes: int, at_s: float = 0.0,
           give_up_at_s: float | None = None, **kw: Any) -> dict[str, Any]:
    """Start a transfer at `at_s`; interrupt it at `give_up_at_s` if still running. The returned dict gets
    `delivery`, `failed` or `interrupted` (the cause)."""
    box: dict[str, Any] = {}

    def proc() -> Generator[simpy.Event, Any, None]:
        if at_s:
            yield env.timeout(at_s)
        try:
            box["delivery"] = yield from net.send(src, dst, nbytes, **kw)
        except TransferFailed as exc:
            box["failed"] = exc
        except simpy.Interrupt as exc:
            box["interrupted"] = exc.cause

    process = env.process(proc())
    if give_up_at_s is not None:
        def watchdog() -> Generator[simpy.Event, Any, None]:
            yield env.timeout(give_up_at_s)
            if process.is_alive:
                process.interrupt("deadline")

        env.process(watchdog())
    return box


def assert_conserved(net: Network) -> None:
    for link in net.links.values():
        assert link.bytes_sent == link.bytes_received + link.bytes_lost + link.bytes_abandoned, link
    for medium in net.media.values():
        assert medium.n_flows == 0, medium


# -- fair link: the closed form of the issue -------------------------------------------------------------


def test_transfer_abandoned_half_way_no_longer_slows_the_next(env, recorder):
    """100 kB at 8 Mbit/s: W = 102,760 B on the wire take 0.10276 s. Abandoned at half that time, it has
    sent W/2; the next 100 kB transfer, started then, takes W·8/R + d exactly, as on an idle link (before
    cancellation it shared the link with the abandoned one and took 1.5× as long)."""
    rate_bps, delay_s, nbytes = 8e6, 0.005, 100_000
    link = LinkSpec(src="a", dst="b", rate_mbps=rate_bps / 1e6, delay_ms=delay_s * 1e3)
    net = make_net(env, recorder, [link])
    on_wire = wire_nbytes(nbytes)
    half_s = on_wire * 8 / rate_bps / 2
    first = launch(env, net, "a", "b", nbytes, give_up_at_s=half_s, request_id=1, kind="kv")
    second = launch(env, net, "a", "b", nbytes, at_s=half_s, request_id=2, kind="kv")
    env.run()
    assert first == {"interrupted": "deadline"}
    assert second["delivery"].duration_s == pytest.approx(on_wire * 8 / rate_bps + delay_s, rel=1e-12)
    ab = net.links[("a", "b")]
    assert ab.bytes_abandoned == on_wire // 2 and ab.abandoned == 1
    assert (ab.bytes_sent, ab.bytes_received, ab.bytes_lost) == (on_wire // 2 + on_wire, on_wire, 0)
    (abandon,) = [e for e in recorder.events if e.kind == "abandon"]
    assert (abandon.node, abandon.request_id, abandon.nbytes, abandon.detail) == (
        "a->b", 1, on_wire // 2, "kv")
    assert abandon.t_s == pytest.approx(half_s) and abandon.duration_s == pytest.approx(half_s)
    assert [e.request_id for e in recorder.events if e.kind == "tx"] == [2]
    assert_conserved(net)


def test_cancelled_flow_among_many_speeds_up_the_others_at_once(env, recorder):
    """Four equal flows share 1 MB/s; one gives up at 0.2 s (each has 50 kB through). The other three
    then have 200 kB left each at 1/3 MB/s: done at 0.2 + 0.6 = 0.8 s."""
    net = make_net(env, recorder, [LinkSpec(src="a", dst="b", rate_mbps=8, header_bytes=0)])
    boxes = [launch(env, net, "a", "b", 250_000, give_up_at_s=0.2 if i == 2 else None) for i in range(4)]
    env.run()
    assert boxes[2] == {"interrupted": "deadline"}
    for box in boxes[:2] + boxes[3:]:
        assert box["delivery"].t_end_s == pytest.approx(0.8, rel=1e-12)
    assert net.links[("a", "b")].bytes_abandoned == 50_000
    assert_conserved(net)


def test_interrupt_during_propagation_abandons_every_byte_sent(env, recorder):
    net = make_net(env, recorder, [LinkSpec(src="a", dst="b", rate_mbps=8, header_bytes=0, delay_ms=100)])
    box = launch(env, net, "a", "b", 10_000, give_up_at_s=0.05)  # last bit out at 0.01 s, arrives 0.11 s
    env.run()
    ab = net.links[("a", "b")]
    assert box == {"interrupted": "deadline"}
    assert (ab.bytes_sent, ab.bytes_received, ab.bytes_abandoned) == (10_000, 0, 10_000)
    assert_conserved(net)


def test_interrupt_on_a_later_hop_keeps_the_earlier_hops_delivered(env, recorder):
    links = [LinkSpec(src="a", dst="b", rate_mbps=8, header_bytes=0),
             LinkSpec(src="b", dst="c", rate_mbps=8, header_bytes=0)]
    net = make_net(env, recorder, links)
    box = launch(env, net, "a", "c", 100_000, give_up_at_s=0.15)  # hop 1 done at 0.1 s; hop 2 half-way
    env.run()
    assert box == {"interrupted": "deadline"}
    ab, bc = net.links[("a", "b")], net.links[("b", "c")]
    assert (ab.bytes_received, ab.bytes_abandoned) == (100_000, 0)
    assert (bc.bytes_sent, bc.bytes_received, bc.bytes_abandoned) == (50_000, 0, 50_000)
    assert [(e.node, e.kind) for e in recorder.events] == [("a->b", "tx"), ("b->c", "abandon")]
    assert_conserved(net)


# -- FIFO: a queued transfer leaves the queue ------------------------------------------------------------


def test_fifo_queued_transfer_cancelled_leaves_the_queue(env, recorder):
    """1 MB at 1 MB/s from 0; 250 kB queued at 0.5 gives up at 0.7 without a byte sent; 250 kB arriving at
    0.8 starts when the first is done: 1.0 + 0.25 s, not 1.5 s."""
    fifo = LinkSpec(src="a", dst="b", rate_mbps=8, header_bytes=0, discipline="fifo")
    net = make_net(env, recorder, [fifo])
    head = launch(env, net, "a", "b", 1_000_000)
    queued = launch(env, net, "a", "b", 250_000, at_s=0.5, give_up_at_s=0.7, request_id=9)
    later = launch(env, net, "a", "b", 250_000, at_s=0.8)
    env.run()
    assert head["delivery"].t_end_s == pytest.approx(1.0, rel=1e-12)
    assert queued == {"interrupted": "deadline"}
    assert later["delivery"].t_end_s == pytest.approx(1.25, rel=1e-12)
    (abandon,) = [e for e in recorder.events if e.kind == "abandon"]
    assert (abandon.request_id, abandon.nbytes) == (9, 0)
    assert net.links[("a", "b")].bytes_abandoned == 0
    assert_conserved(net)


def test_fifo_head_cancelled_lets_the_next_start_at_once(env, recorder):
    fifo = LinkSpec(src="a", dst="b", rate_mbps=8, header_bytes=0, discipline="fifo")
    net = make_net(env, recorder, [fifo])
    head = launch(env, net, "a", "b", 1_000_000, give_up_at_s=0.5)
    queued = launch(env, net, "a", "b", 250_000, at_s=0.2)
    env.run()
    assert head == {"interrupted": "deadline"}
    assert queued["delivery"].t_end_s == pytest.approx(0.75, rel=1e-12)
    assert net.links[("a", "b")].bytes_abandoned == 500_000
    assert_conserved(net)


# -- outages and TCP ------------------------------------------------------------------------------------


@pytest.mark.parametrize("discipline", ["fair", "fifo"])
def test_cancel_while_held_by_an_outage(env, recorder, discipline):
    """Held from 0.1 s by an outage until 5 s (timeout 1 s), given up at 0.5 s: no failure follows, the
    0.1 s already sent is abandoned, and a later transfer runs as on an idle link."""
    link = LinkSpec(src="a", dst="b", rate_mbps=8, header_bytes=0, discipline=discipline,
                    outages=[OutageSpec(start_s=0.1, end_s=5.0)])
    net = make_net(env, recorder, [link], transport=TransportSpec(outage_timeout_s=1.0))
    held = launch(env, net, "a", "b", 200_000, give_up_at_s=0.5)
    after = launch(env, net, "a", "b", 100_000, at_s=6.0)
    env.run()
    assert held == {"interrupted": "deadline"}
    assert after["delivery"].t_end_s == pytest.approx(6.1, rel=1e-12)
    assert not [e for e in recorder.events if e.kind == "tx_failed"]
    assert net.links[("a", "b")].bytes_abandoned == 100_000
    assert_conserved(net)


def test_tcp_abandoned_between_rounds_counts_the_rounds_sent(env, recorder):
    """10 Mbit/s, 20 ms: round 1 (IW = 10 full segments, 15,000 B) takes 12 ms, then the sender waits for
    the ACK (RTT ≈ 41.2 ms). Interrupted at 30 ms, inside that wait: 15,000 B abandoned, none pending."""
    link = LinkSpec(src="a", dst="b", rate_mbps=10, delay_ms=20)
    net = make_net(env, recorder, [link], transport=TransportSpec(kind="tcp"))
    handshake_s = 2 * 0.020 + (2 * (52 + 4) + 52) * 8 / 10e6  # SYN, SYN-ACK (+4 B options), ACK
    box = launch(env, net, "a", "b", 1_000_000, give_up_at_s=handshake_s + 0.030)
    env.run()
    assert box == {"interrupted": "deadline"}
    ab = net.links[("a", "b")]
    assert (ab.bytes_sent, ab.bytes_abandoned) == (15_000, 15_000)
    assert_conserved(net)


def test_tcp_abandoned_mid_round_and_during_handshake(env, recorder):
    link = LinkSpec(src="a", dst="b", rate_mbps=10, delay_ms=20)
    net = make_net(env, recorder, [link], transport=TransportSpec(kind="tcp"))
    handshake_s = 2 * 0.020 + (2 * (52 + 4) + 52) * 8 / 10e6  # SYN, SYN-ACK (+4 B options), ACK
    mid = launch(env, net, "a", "b", 1_000_000, give_up_at_s=handshake_s + 0.006)  # round 1 half out
    shaking = launch(env, net, "b", "a", 1000, at_s=0.001, give_up_at_s=0.002)  # waits for the handshake
    env.run()
    assert mid == {"interrupted": "deadline"} and shaking == {"interrupted": "deadline"}
    ab, ba = net.links[("a", "b")], net.links[("b", "a")]
    assert ab.bytes_abandoned == 7_500 and ab.medium.n_flows == 0
    assert (ba.bytes_sent, ba.abandoned) == (0, 1)
    assert sorted(e.nbytes for e in recorder.events if e.kind == "abandon") == [0, 7_500]
    assert_conserved(net)


def test_interrupt_cause_reaches_the_caller_unchanged(env, recorder):
    net = make_net(env, recorder, [LinkSpec(src="a", dst="b", rate_mbps=1)])
    causes: list[object] = []

    def proc() -> Generator[simpy.Event, Any, None]:
        try:
            yield from net.send("a", "b", 10**6)
        except simpy.Interrupt as exc:
            causes.append(exc.cause)

    p = env.process(proc())

    def peer() -> Generator[simpy.Event, Any, None]:
        yield env.timeout(1.0)
        p.interrupt({"why": "peer gave up"})

    env.process(peer())
    env.run()
    assert causes == [{"why": "peer gave up"}]


# -- the identity under everything at once ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ideal", "tcp"])
def test_random_deadlines_with_loss_outages_and_a_faded_cell_conserve_bytes(env, recorder, kind):
    """Messages over lossy wires and a fading cell, through outages, each with a random deadline: every
    transfer ends once (delivered, failed or interrupted), every medium ends empty, and
    sent = received + lost + abandoned holds exactly on every link."""
    cell = CellSpec(name="c", ap="gnb", members={"p1": 100, "p2": 400}, fading="rayleigh", coherence_ms=2,
                    loss=0.05, outages=[OutageSpec(start_s=0.7, end_s=0.9)])
    links = [LinkSpec(src="gnb", dst="a", rate_mbps=50, delay_ms=2, loss=0.2,
                      outages=[OutageSpec(start_s=1.5, end_s=3.5)]),
             LinkSpec(src="a", dst="b", rate_mbps=20, delay_ms=5, loss=0.1, discipline="fifo")]
    transport = TransportSpec(kind=kind, max_retx=3, outage_timeout_s=0.1)
    net = make_net(env, recorder, links, [cell], transport, seed=3)
    rng = np.random.default_rng(8)
    ends = {"delivery": 0, "failed": 0, "interrupted": 0}
    boxes = []
    pairs = [("p1", "b"), ("b", "p2"), ("p2", "a"), ("a", "b"), ("gnb", "p1")]
    t_s = 0.0
    for i in range(300):
        t_s += float(rng.exponential(0.015))
        src, dst = pairs[int(rng.integers(len(pairs)))]
        boxes.append(launch(env, net, src, dst, int(rng.integers(1, 80_000)), at_s=t_s,
                            give_up_at_s=t_s + float(rng.exponential(0.15)), request_id=i))
    env.run()
    for box in boxes:
        (outcome,) = box
        ends[outcome] += 1
    assert all(ends.values()), ends  # each way of ending occurs
    assert sum(link.bytes_abandoned for link in net.links.values()) > 0
    assert len([e for e in recorder.events if e.kind == "abandon"]) == ends["interrupted"]
    assert_conserved(net)
