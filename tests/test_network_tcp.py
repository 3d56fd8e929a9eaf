"""The `tcp` transport against the slow-start closed form.

On an idle path with rate R, one-way delay d and no loss, a message of n segments sent from a window of
W0 segments that never fills the pipe needs k = ⌈log2(n/W0 + 1)⌉ rounds (W0, 2W0, 4W0, … segments), one
RTT apart; the last round's segments then take their serialization time plus d to arrive:
    T = handshake + (k − 1)·RTT + wire(last round)·8/R + d,
with RTT = 2d + (MTU + header)·8/R (first data packet out, its ACK back) and
    handshake = 2d + (SYN + SYN-ACK + ACK)·8/R = 2d + (2·(header + 4) + header)·8/R
(a SYN carries window scale and SACK-permitted beside the timestamps every segment has: 4 bytes more).
Defaults: MTU 1500, header 52 (IPv4 20 + TCP 20 + timestamps 12), MSS 1448.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Generator
from typing import Any

import numpy as np
import pytest
import simpy

from netsim.network import LinkSpec, Network, TransportSpec, build_network
from netsim.network.tcp import Window, handshake_nbytes
from netsim.recorder import Recorder

MTU, HEADER, MSS = 1500, 52, 1448


def net_for(env: simpy.Environment, recorder: Recorder, links: list[LinkSpec], **transport: Any) -> Network:
    names = sorted({end for link in links for end in (link.src, link.dst)})
    return build_network(env, names, links, [], TransportSpec(kind="tcp", **transport),
                         np.random.default_rng(0), recorder)


def segments(nbytes: int) -> int:
    return max(1, math.ceil(nbytes / MSS))


def wire_of_segments(nbytes: int, first: int, last: int) -> int:
    """Wire bytes of segments [first, last) of an nbytes message (only the final segment may be short)."""
    n = segments(nbytes)
    full = (last - first) * MTU
    return full - (MTU - (nbytes - (n - 1) * MSS + HEADER) if last == n else 0)


def rtt_s(rate_bps: float, delay_s: float) -> float:
    return 2 * delay_s + (MTU + HEADER) * 8 / rate_bps


def handshake_s(rate_bps: float, delay_s: float, header: int = HEADER) -> float:
    return 2 * delay_s + (2 * (header + 4) + header) * 8 / rate_bps


def slow_start_s(nbytes: int, w0: int, rate_bps: float, delay_s: float) -> float:
    """Closed form above without the handshake (the window never reaches the pipe's BDP)."""
    n = segments(nbytes)
    k = math.ceil(math.log2(n / w0 + 1))
    sent_before_last = w0 * (2 ** (k - 1) - 1)
    last_round_s = wire_of_segments(nbytes, sent_before_last, n) * 8 / rate_bps
    return (k - 1) * rtt_s(rate_bps, delay_s) + last_round_s + delay_s


def run_sends(env: simpy.Environment, net: Network, plan: list[tuple[float, int]]) -> list[Any]:
    """Send messages a->b one after another, each `gap` seconds after the previous arrived."""
    out: list[Any] = []

    def proc() -> Generator[simpy.Event, Any, None]:
        for gap_s, nbytes in plan:
            if gap_s:
                yield env.timeout(gap_s)
            out.append((yield from net.send("a", "b", nbytes)))

    env.process(proc())
    env.run()
    return out


@pytest.mark.parametrize("nbytes", [1, 14_480, 14_481, 1_000_000])
def test_slow_start_takes_the_closed_form_number_of_round_trips(env, recorder, nbytes):
    rate_bps, delay_s = 100e6, 0.050  # BDP ≈ 835 packets: 1 MB (691 segments) never fills the pipe
    net = net_for(env, recorder, [LinkSpec(src="a", dst="b", rate_mbps=100, delay_ms=50)])
    (d,) = run_sends(env, net, [(0.0, nbytes)])
    assert d.handshake_s == pytest.approx(handshake_s(rate_bps, delay_s), rel=1e-12)
    expected_s = handshake_s(rate_bps, delay_s) + slow_start_s(nbytes, 10, rate_bps, delay_s)
    assert d.duration_s == pytest.approx(expected_s, rel=1e-12)
    if nbytes == 1_000_000:  # 7 rounds: 10+20+40+80+160+320 segments, then the last 61
        assert d.duration_s == pytest.approx(handshake_s(rate_bps, delay_s) + 6 * rtt_s(rate_bps, delay_s)
                                             + wire_of_segments(nbytes, 630, 691) * 8 / rate_bps + delay_s)
        assert d.duration_s > 5 * (d.bytes_on_wire * 8 / rate_bps + delay_s)  # slow start dominates


def test_once_the_window_fills_the_pipe_the_rest_streams_at_line_rate(env, recorder):
    rate_bps, delay_s, nbytes = 10e6, 0.010, 5_000_000  # BDP = ⌈R·RTT / (8·MTU)⌉ = 18 packets
    assert math.ceil(rate_bps * rtt_s(rate_bps, delay_s) / (8 * MTU)) == 18
    net = net_for(env, recorder, [LinkSpec(src="a", dst="b", rate_mbps=10, delay_ms=10)])
    (d,) = run_sends(env, net, [(0.0, nbytes)])
    # round 1: 10 segments (< 18) then wait one RTT; round 2: window 20 ≥ 18, everything else back to back
    n = segments(nbytes)
    expected_s = (handshake_s(rate_bps, delay_s) + rtt_s(rate_bps, delay_s)
                  + wire_of_segments(nbytes, 10, n) * 8 / rate_bps + delay_s)
    assert d.duration_s == pytest.approx(expected_s, rel=1e-12)


def test_receive_buffer_caps_the_window(env, recorder):
    rate_bps, delay_s, nbytes = 100e6, 0.050, 1_000_000
    net = net_for(env, recorder, [LinkSpec(src="a", dst="b", rate_mbps=100, delay_ms=50)],
                  rcv_buffer_bytes=10 * MSS)
    (d,) = run_sends(env, net, [(0.0, nbytes)])
    n = segments(nbytes)  # 691 segments, 10 per round trip → 70 rounds
    rounds = math.ceil(n / 10)
    expected_s = (handshake_s(rate_bps, delay_s) + (rounds - 1) * rtt_s(rate_bps, delay_s)
                  + wire_of_segments(nbytes, (rounds - 1) * 10, n) * 8 / rate_bps + delay_s)
    assert d.duration_s == pytest.approx(expected_s, rel=1e-12)


def test_kept_alive_connection_skips_the_handshake_and_keeps_its_window(env, recorder):
    rate_bps, delay_s = 100e6, 0.050
    net = net_for(env, recorder, [LinkSpec(src="a", dst="b", rate_mbps=100, delay_ms=50)])
    first, second = run_sends(env, net, [(0.0, 100_000), (0.0, 1_000_000)])
    # slow start adds one segment per segment ACKed: after 70 segments from IW 10 the window is 80
    assert second.handshake_s == 0.0
    assert second.duration_s == pytest.approx(slow_start_s(1_000_000, 10 + 70, rate_bps, delay_s), rel=1e-12)
    assert [e.kind for e in recorder.events].count("handshake") == 1
    assert first.handshake_s > 0


def test_idle_connection_restarts_slow_start_after_an_rto(env, recorder):
    rate_bps, delay_s = 100e6, 0.050
    net = net_for(env, recorder, [LinkSpec(src="a", dst="b", rate_mbps=100, delay_ms=50)])
    rto_s = 0.2 + rtt_s(rate_bps, delay_s)
    _, soon, late = run_sends(env, net, [(0.0, 100_000), (rto_s / 2, 300_000), (2 * rto_s, 300_000)])
    assert soon.duration_s == pytest.approx(slow_start_s(300_000, 80, rate_bps, delay_s), rel=1e-12)
    assert late.duration_s == pytest.approx(slow_start_s(300_000, 10, rate_bps, delay_s), rel=1e-12)


def test_without_keep_alive_every_message_pays_a_handshake_from_the_initial_window(env, recorder):
    rate_bps, delay_s = 100e6, 0.050
    net = net_for(env, recorder, [LinkSpec(src="a", dst="b", rate_mbps=100, delay_ms=50)], keep_alive=False)
    sends = run_sends(env, net, [(0.0, 300_000), (0.0, 300_000)])
    for d in sends:
        expected_s = handshake_s(rate_bps, delay_s) + slow_start_s(300_000, 10, rate_bps, delay_s)
        assert d.duration_s == pytest.approx(expected_s, rel=1e-12)


def test_concurrent_messages_share_one_handshake(env, recorder):
    net = net_for(env, recorder, [LinkSpec(src="a", dst="b", rate_mbps=100, delay_ms=50)])
    out = []

    def one() -> Generator[simpy.Event, Any, None]:
        out.append((yield from net.send("a", "b", 1000)))

    env.process(one())
    env.process(one())
    env.run()
    assert [d.handshake_s for d in out] == pytest.approx([handshake_s(100e6, 0.05)] * 2)
    assert [e.kind for e in recorder.events].count("handshake") == 1


def test_two_hop_tcp_paces_the_first_hop_with_the_path_rtt_then_stores_and_forwards(env, recorder):
    links = [LinkSpec(src="a", dst="r", rate_mbps=100, delay_ms=10),
             LinkSpec(src="r", dst="b", rate_mbps=50, delay_ms=40)]
    net = net_for(env, recorder, links)
    (d,) = run_sends(env, net, [(0.0, 500_000)])
    rtt_path_s = rtt_s(100e6, 0.010) + rtt_s(50e6, 0.040)
    hs_path_s = handshake_s(100e6, 0.010) + handshake_s(50e6, 0.040)
    n = segments(500_000)  # 346 segments: rounds 10, 20, 40, 80, 160 (BDP of hop 1 ≈ 835) then 36
    hop1_s = 5 * rtt_path_s + wire_of_segments(500_000, 310, n) * 8 / 100e6 + 0.010
    hop2_s = wire_of_segments(500_000, 0, n) * 8 / 50e6 + 0.040
    assert d.handshake_s == pytest.approx(hs_path_s, rel=1e-12)
    assert d.duration_s == pytest.approx(hs_path_s + hop1_s + hop2_s, rel=1e-12)


def test_window_halves_on_loss_then_grows_one_segment_per_round():
    w = Window(cwnd_segments=10, last_active_s=0.0)
    w.after_round(acked_segments=10, lost_segments=0, cap_segments=1000)
    assert w.cwnd_segments == 20  # slow start: +1 per segment ACKed
    w.after_round(acked_segments=18, lost_segments=2, cap_segments=1000)
    assert (w.cwnd_segments, w.ssthresh_segments) == (10, 10)  # multiplicative decrease
    w.after_round(acked_segments=10, lost_segments=0, cap_segments=1000)
    assert w.cwnd_segments == 11  # congestion avoidance: +1 per RTT
    w.after_round(acked_segments=1, lost_segments=1, cap_segments=1000)
    w.after_round(acked_segments=1, lost_segments=1, cap_segments=1000)
    w.after_round(acked_segments=1, lost_segments=1, cap_segments=1000)
    assert w.cwnd_segments == 2  # never below two segments
    w.after_round(acked_segments=2, lost_segments=0, cap_segments=2.5)
    assert w.cwnd_segments == 2.5  # capped at the pipe's BDP


def test_loss_slows_tcp_more_than_it_costs_in_retransmitted_bytes(env, recorder):
    """With 2% loss the window keeps halving: the transfer takes far longer than the ideal transport's
    serialization of the same retransmitted bytes, which is what makes TCP loss-sensitive."""
    link = LinkSpec(src="a", dst="b", rate_mbps=100, delay_ms=20, loss=0.02)
    tcp_net = net_for(env, recorder, [link])
    (tcp,) = run_sends(env, tcp_net, [(0.0, 5_000_000)])
    env2 = simpy.Environment()
    ideal_net = build_network(env2, ["a", "b"], [link], [], TransportSpec(), np.random.default_rng(0),
                              Recorder())
    (ideal,) = run_sends(env2, ideal_net, [(0.0, 5_000_000)])
    assert tcp.retransmissions > 0 and ideal.retransmissions > 0
    assert ideal.duration_s == pytest.approx(ideal.bytes_on_wire * 8 / 100e6 + 0.020, rel=1e-12)
    assert tcp.duration_s > 3 * ideal.duration_s


def test_handshake_serialises_syn_syn_ack_and_the_final_ack(env, recorder):
    """ns-3 point-to-point defaults: SYN and SYN-ACK are IPv4 20 + TCP 20 + options 16 (timestamps 10,
    window scale 3, SACK-permitted 2, padded) + PPP 2 = 58 bytes, the final ACK 20 + 20 + 12 + 2 = 54:
    170 bytes serialised before the first data segment (the model before counted two bare headers)."""
    assert handshake_nbytes(54) == 58 + 58 + 54 == 170
    assert handshake_nbytes(HEADER) == 2 * 56 + 52  # the default stack, no link layer
    net = net_for(env, recorder, [LinkSpec(src="a", dst="b", rate_mbps=1, delay_ms=2, header_bytes=54,
                                           mtu_bytes=1502)])
    (d,) = run_sends(env, net, [(0.0, 1448)])
    # ns-3's convention: Connect() at 0; SYN out, SYN-ACK back, ACK then the one 1448-byte segment
    # (1448 + 54 = 1502 bytes on the wire) behind it; done when its last bit reaches the sink
    assert d.handshake_s == pytest.approx(2 * 0.002 + 170 * 8 / 1e6, rel=1e-12)
    assert d.duration_s == pytest.approx(2 * 0.002 + 170 * 8 / 1e6 + 1502 * 8 / 1e6 + 0.002, rel=1e-12)


def bulk_tcp_s(nbytes: int, rate_bps: float, delay_s: float, iw: int = 10) -> float:
    """The handshake-corrected closed form of a bulk transfer on one idle link (docs/network.md, "Closed
    forms"): round j carries IW·2^j segments one RTT after round j−1, until the round that reaches the
    pipe (IW·2^j ≥ BDP) or holds the rest of the message (IW·(2^(j+1) − 1) ≥ n) sends everything left
    back to back: T = HS + j·RTT + wire(rest)·8/R + d."""
    n = segments(nbytes)
    bdp = max(1, math.ceil(rate_bps * rtt_s(rate_bps, delay_s) / (8 * MTU)))
    j = next(j for j in itertools.count() if iw * 2**j >= bdp or iw * (2 ** (j + 1) - 1) >= n)
    sent = iw * (2**j - 1)  # full segments of the rounds before
    wire_rest = nbytes - sent * MSS + (n - sent) * HEADER
    return handshake_s(rate_bps, delay_s) + j * rtt_s(rate_bps, delay_s) + wire_rest * 8 / rate_bps + delay_s


@pytest.mark.parametrize("rate_mbps", [1, 10, 100, 1000])
@pytest.mark.parametrize("delay_ms", [0.5, 5, 50])
def test_bulk_transfers_take_the_closed_form_on_a_grid(rate_mbps, delay_ms):
    """Sizes from one byte to 10 MB (one segment, one and a bit initial windows, slow start that never fills
    the pipe, and transfers that reach it) on a new connection. The receive buffer is set past every
    BDP here (2^30 B): the default 6 MiB would cap 1 Gbit/s × 100 ms, a case with its own form."""
    rate_bps, delay_s = rate_mbps * 1e6, delay_ms * 1e-3
    for nbytes in (1, MSS, 10 * MSS, 10 * MSS + 1, 100_000, 1_000_000, 10_000_000):
        env, recorder = simpy.Environment(), Recorder()
        net = net_for(env, recorder, [LinkSpec(src="a", dst="b", rate_mbps=rate_mbps, delay_ms=delay_ms)],
                      rcv_buffer_bytes=2**30)
        (d,) = run_sends(env, net, [(0.0, nbytes)])
        assert d.duration_s == pytest.approx(bulk_tcp_s(nbytes, rate_bps, delay_s), rel=1e-12), nbytes
