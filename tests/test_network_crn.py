"""Common random numbers: fading, shadowing and loss draws are addressed by identity — (cell, member,
direction, block), (cell, member), (link, request, message, hop) — so they do not depend on other traffic,
on the order of queries, or on which other members and requests exist."""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

import numpy as np
import pytest
import simpy

from netsim.network import CellSpec, LinkSpec, Network, TransferFailed, TransportSpec, build_network
from netsim.network.channel import KeyedStreams, stable_hash
from netsim.recorder import Recorder

FADING = {"fading": "rayleigh", "coherence_ms": 5.0, "shadowing": True}
Send = tuple[float, str, str, int, int | None]
"""(start s, src, dst, payload bytes, request id)"""


def make_net(links: Sequence[LinkSpec] = (), cells: Sequence[CellSpec] = (), seed: int = 11,
             **transport: Any) -> tuple[simpy.Environment, Network, Recorder]:
    env, recorder = simpy.Environment(), Recorder()
    names = {end for link in links for end in (link.src, link.dst)}
    names |= {n for cell in cells for n in (cell.ap, *cell.members)}
    net = build_network(env, sorted(names), links, cells, TransportSpec(**transport),
                        np.random.default_rng(seed), recorder)
    return env, net, recorder


def run_sends(env: simpy.Environment, net: Network, sends: list[Send]) -> list[Any]:
    """Each send in its own process; returns a Delivery or TransferFailed per send."""
    out: list[Any] = [None] * len(sends)

    def one(i: int, at_s: float, src: str, dst: str, nbytes: int, request_id: int | None
            ) -> Generator[simpy.Event, Any, None]:
        yield env.timeout(at_s)
        try:
            out[i] = yield from net.send(src, dst, nbytes, request_id=request_id)
        except TransferFailed as exc:
            out[i] = exc

    for i, send in enumerate(sends):
        env.process(one(i, *send))
    env.run()
    return out


# -- fading and shadowing ------------------------------------------------------------------------------


def _cell(members: dict[str, float]) -> CellSpec:
    return CellSpec(name="c", ap="gnb", members=members, **FADING)  # type: ignore[arg-type]


def test_member_rate_at_a_time_does_not_depend_on_earlier_traffic():
    """p1's uplink and downlink rates over 2–3 s are the same whether p1, p2 and p3 moved megabytes
    through the cell before (visiting hundreds of fading blocks) or nothing happened."""
    times_s = [2.0 + 0.0013 * k for k in range(800)]
    env_a, busy, _ = make_net(cells=[_cell({"p1": 100, "p2": 200, "p3": 300})])
    run_sends(env_a, busy, [(0.0, "p2", "gnb", 2_000_000, 1), (0.1, "p3", "p1", 500_000, 2),
                            (0.3, "p1", "gnb", 300_000, 3), (0.5, "gnb", "p1", 3_000_000, 4)])
    assert env_a.now < 2.0  # the traffic is over before the sampled span
    _, idle, _ = make_net(cells=[_cell({"p1": 100, "p2": 200, "p3": 300})])
    for key in [("p1", "gnb"), ("gnb", "p1")]:
        after_traffic = [busy.links[key].channel.rate_bps(t) for t in times_s]  # type: ignore[union-attr]
        untouched = [idle.links[key].channel.rate_bps(t) for t in times_s]  # type: ignore[union-attr]
        assert after_traffic == untouched
        assert len(set(untouched)) > 100  # it does fade


def test_same_transfer_takes_the_same_time_with_or_without_other_members_traffic():
    """A p1 upload at 2 s crosses the same fading blocks, so it takes exactly as long whether or not p2
    and p3 (and p1 itself) sent before."""
    cell = _cell({"p1": 150, "p2": 200, "p3": 300})
    probe = (2.0, "p1", "gnb", 400_000, 7)
    env_a, busy, _ = make_net(cells=[cell])
    *_, with_traffic = run_sends(env_a, busy, [(0.0, "p2", "gnb", 1_000_000, 1),
                                               (0.2, "p1", "p3", 200_000, 2),
                                               (0.4, "p3", "gnb", 300_000, 3), probe])
    env_b, quiet, _ = make_net(cells=[cell])
    (alone,) = run_sends(env_b, quiet, [probe])
    assert with_traffic.duration_s == alone.duration_s


def test_rates_do_not_depend_on_the_order_of_queries():
    _, a, _ = make_net(cells=[_cell({"p1": 100})])
    _, b, _ = make_net(cells=[_cell({"p1": 100})])
    times_s = [0.001 * k for k in range(3000)]
    ch_a, ch_b = a.links[("p1", "gnb")].channel, b.links[("p1", "gnb")].channel
    assert ch_a is not None and ch_b is not None
    forward = [ch_a.rate_bps(t) for t in times_s]
    shuffled = np.random.default_rng(0).permutation(len(times_s))
    backward = {int(i): ch_b.rate_bps(times_s[int(i)]) for i in shuffled}
    assert forward == [backward[i] for i in range(len(times_s))]


def test_shadowing_and_fading_of_a_member_do_not_depend_on_the_other_members():
    _, small, _ = make_net(cells=[_cell({"p1": 120})])
    _, large, _ = make_net(cells=[_cell({"p0": 50, "p2": 300, "p1": 120, "p9": 80})])
    _, other_seed, _ = make_net(cells=[_cell({"p1": 120})], seed=12)
    for key in [("p1", "gnb"), ("gnb", "p1")]:
        a, b, c = small.links[key].channel, large.links[key].channel, other_seed.links[key].channel
        assert a is not None and b is not None and c is not None
        assert a.mean_snr_db == b.mean_snr_db != c.mean_snr_db  # the same shadowing draw, seed-dependent
        assert [a.rate_bps(0.005 * k) for k in range(300)] == [b.rate_bps(0.005 * k) for k in range(300)]
    up, down = small.links[("p1", "gnb")].channel, small.links[("gnb", "p1")].channel
    assert up is not None and down is not None
    ups, downs = ([ch.rate_bps(0.005 * k) / ch.mean_rate_bps for k in range(300)] for ch in (up, down))
    assert ups != downs  # each direction fades on its own


def test_displaying_links_and_channels_never_draws():
    _, net, _ = make_net(cells=[_cell({"p1": 100, "p2": 200})])
    channels = [link.channel for link in net.links.values() if link.channel is not None]
    text = " ".join(map(repr, [net, *net.links.values(), *net.media.values(), *channels]))
    assert "Link('p1'->'gnb'" in text and "Rayleigh blocks of 5 ms" in text
    assert all(ch.chunks_drawn == 0 for ch in channels)
    assert all(ch.last_rate_bps == ch.mean_rate_bps for ch in channels)


# -- loss -----------------------------------------------------------------------------------------------


def _lossy(loss: float = 0.2) -> list[LinkSpec]:
    return [LinkSpec(src="a", dst="b", rate_mbps=20, delay_ms=2, loss=loss),
            LinkSpec(src="b", dst="c", rate_mbps=50, delay_ms=1, loss=loss, discipline="fifo")]


def _request_losses(recorder: Recorder, request_id: int | None) -> list[tuple[str, int, str]]:
    return [(e.node, e.nbytes, e.detail) for e in recorder.events if e.kind == "retx"
            and e.request_id == request_id]


@pytest.mark.parametrize("kind", ["ideal", "tcp"])
def test_a_message_loses_the_same_packets_with_or_without_unrelated_traffic(kind):
    """Request 7's three messages (over 1 or 2 lossy hops) lose the same packets whether they run alone
    or amid other requests' messages, sent before and during them, on the same links."""
    mine: list[Send] = [
        (0.5, "a", "c", 200_000, 7), (0.9, "c", "a", 50_000, 7), (1.3, "a", "b", 120_000, 7)]
    rng = np.random.default_rng(4)
    others: list[Send] = [
        (float(rng.uniform(0, 1.5)), *[("a", "c"), ("b", "c"), ("c", "a")][int(rng.integers(3))],
         int(rng.integers(1, 100_000)), int(rng.integers(0, 6))) for _ in range(40)]
    env_a, alone, rec_alone = make_net(_lossy(), kind=kind)
    solo = run_sends(env_a, alone, mine)
    env_b, crowded, rec_crowded = make_net(_lossy(), kind=kind)
    amid = run_sends(env_b, crowded, others + mine)[len(others):]
    assert _request_losses(rec_alone, 7) and _request_losses(rec_alone, 7) == _request_losses(rec_crowded, 7)
    assert [(d.retransmissions, d.hop_nbytes_on_wire) for d in solo] == [
        (d.retransmissions, d.hop_nbytes_on_wire) for d in amid]
    assert [d.duration_s for d in solo] != [d.duration_s for d in amid]  # the traffic did interfere


def test_messages_without_a_request_are_numbered_among_themselves():
    """request_id=None messages keep their loss patterns when other requests send between them, and are
    not the same stream as request 0's."""
    nones: list[Send] = [(0.1 * k, "a", "b", 150_000, None) for k in range(4)]
    zeros: list[Send] = [(0.1 * k, "a", "b", 150_000, 0) for k in range(4)]
    between: list[Send] = [(0.05 + 0.1 * k, "a", "b", 80_000, 3) for k in range(4)]
    env_a, net_a, _ = make_net(_lossy())
    alone = run_sends(env_a, net_a, nones)
    env_b, net_b, _ = make_net(_lossy())
    mixed = run_sends(env_b, net_b, nones + between)[: len(nones)]
    env_c, net_c, _ = make_net(_lossy())
    request0 = run_sends(env_c, net_c, zeros)
    assert [d.retransmissions for d in alone] == [d.retransmissions for d in mixed]
    assert [d.retransmissions for d in alone] != [d.retransmissions for d in request0]


def test_loss_statistics_are_unchanged_by_keying():
    """Keyed per message-hop, losses still hit a fraction p of transmissions (p = 0.2, 10⁴ packets)."""
    env, net, _ = make_net(_lossy(0.2)[:1])
    run_sends(env, net, [(0.0, "a", "b", 1460 * 100, r) for r in range(100)])
    link = net.links[("a", "b")]
    assert link.bytes_lost / link.bytes_sent == pytest.approx(0.2, abs=0.01)


# -- the streams themselves ------------------------------------------------------------------------------


def test_keyed_streams_equal_fresh_philox_generators_at_the_same_counter():
    streams = KeyedStreams((2**64 - 5, 42))
    for a, b, c in [(1, 2, 3), (2**64 - 1, 0, 7), (1, 2, 3)]:
        fresh = np.random.Generator(np.random.Philox(key=np.array([2**64 - 5, 42], dtype=np.uint64),
                                                     counter=np.array([0, a, b, c], dtype=np.uint64)))
        assert np.array_equal(streams.at(a, b, c).exponential(size=50), fresh.exponential(size=50))
    first = streams.at(1, 2, 3).random(4)
    assert not np.array_equal(first, streams.at(1, 2, 4).random(4))


def test_stable_hash_is_fixed_across_processes():
    """Literal values: Python's hash() of a str changes with PYTHONHASHSEED, this must not."""
    assert stable_hash("phone1") == 7942026151450864906
    assert stable_hash("a->b") == 5824565486178523631
