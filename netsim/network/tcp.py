"""TCP-like window dynamics on top of the fluid media, one round trip at a time.

A message's bytes leave the sender in rounds: each round puts min(cwnd, rwnd) segments on the first hop
at the full share the medium gives, then the sender waits for the first ACK, one path RTT after the
round began (if the burst took longer than the RTT the ACKs were already flowing and the next round
starts at once). Between rounds the flow is absent from the medium, so others use the idle capacity.
Window updates follow RFC 5681 with NewReno fast recovery:
  slow start          cwnd += segments ACKed         (doubles per RTT, from the RFC 6928 window of 10)
  congestion avoid.   cwnd += 1 segment per RTT      (once cwnd ≥ ssthresh)
  a round with loss   ssthresh = max(cwnd/2, 2); cwnd = ssthresh
and cwnd never grows past max(IW, BDP) of the first hop — beyond the bandwidth-delay product a round's
burst outlasts the RTT, the pipe is full and more window changes nothing. Once the window fills the pipe
and no loss lies ahead, the rest of the message goes as one burst (no per-round events). An idle
connection restarts from min(cwnd, IW) after one RTO (RFC 5681 §4.1, Linux slow-start-after-idle).
A sender that gives up part-way (its process interrupted) has sent the rounds already out plus the part
of the current one; `WindowSender` keeps both so the network can count them as abandoned.

Connection set-up is the three-way handshake, serialised packet by packet: SYN, SYN-ACK and the final
ACK, after which the first data segment follows the ACK onto the wire (`handshake_nbytes`).
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import simpy

from netsim.network.link import Link, WirePlan
from netsim.network.medium import Flow

SYN_OPTION_BYTES = 4
"""What a SYN or SYN-ACK carries beyond a data segment's header, with timestamps on. Every segment has
the timestamps option (10 bytes, RFC 7323 §3, padded to 12); a SYN adds window scale (3 bytes, RFC 7323
§2) and SACK-permitted (2 bytes, RFC 2018), so its options are 15 bytes, padded to 16: 4 more. This is
ns-3's TcpSocketBase (Timestamp, WindowScaling and Sack on by default; `SendEmptyPacket` adds WS and
SACK-permitted to SYNs, `TcpHeader::CalculateHeaderLength` pads to 32-bit words). Linux also puts MSS
(4 bytes) in its SYNs, 8 more than a data header: 4 bytes per SYN are not modelled for Linux."""


def handshake_nbytes(header_bytes: int) -> int:
    """Wire bytes serialised before the first data segment: SYN and SYN-ACK (header + SYN options) and
    the final ACK (a bare header). ns-3 point-to-point defaults (header_bytes 54 = PPP 2 + IPv4 20 + TCP
    20 + timestamps 12): 58 + 58 + 54 = 170 bytes."""
    return 2 * (header_bytes + SYN_OPTION_BYTES) + header_bytes


@dataclass(slots=True)
class Window:
    """Congestion state of one direction of a connection, in segments."""

    cwnd_segments: float
    last_active_s: float
    ssthresh_segments: float = math.inf

    def after_round(self, acked_segments: int, lost_segments: int, cap_segments: float) -> None:
        if lost_segments:
            self.ssthresh_segments = max(self.cwnd_segments / 2.0, 2.0)
            self.cwnd_segments = self.ssthresh_segments
        elif self.cwnd_segments < self.ssthresh_segments:
            self.cwnd_segments = min(self.cwnd_segments + acked_segments, self.ssthresh_segments)
        else:
            self.cwnd_segments += 1.0
        self.cwnd_segments = min(self.cwnd_segments, cap_segments)

    def restart_after_idle(self, now_s: float, rto_s: float, init_segments: int) -> None:
        if now_s - self.last_active_s > rto_s:
            self.cwnd_segments = min(self.cwnd_segments, float(init_segments))


@dataclass(slots=True)
class Connection:
    """An open (or opening) connection between two nodes; one window per sending end."""

    established_s: float
    windows: dict[str, Window] = field(default_factory=dict)


def bdp_segments(link: Link, rtt_s: float) -> int:
    """Packets of this hop's MTU that fill its rate × the path RTT."""
    return max(1, math.ceil(link.peak_bps * rtt_s / (8.0 * link.mtu_bytes)))


def round_segments(window: Window, rwnd_segments: int) -> int:
    """Segments the sender may put out in the next round: min(cwnd, rwnd), at least one."""
    return min(int(window.cwnd_segments), rwnd_segments) or 1


def is_last_round(w_segments: int, remaining_segments: int, bdp: int, loss_ahead: bool) -> bool:
    """The rest goes in this round: it fits in the window, or the window fills the pipe (≥ BDP) and no
    loss lies ahead, so the rest streams at the full share with no more window changes."""
    return remaining_segments <= w_segments or (w_segments >= bdp and not loss_ahead)


class WindowSender:
    """Sends one message's transmissions (`plan`) over the first hop in congestion-window rounds (see
    the module docstring), keeping what a sender that gives up must account: the slots of the rounds
    already through and the flow of the round in progress."""

    __slots__ = ("bdp_segments", "flow", "init_segments", "link", "plan", "rtt_s", "rwnd_segments", "slot",
                 "window")

    def __init__(self, link: Link, plan: WirePlan, window: Window, rtt_s: float, bdp_segments: int,
                 init_segments: int, rwnd_segments: int) -> None:
        self.link = link
        self.plan = plan
        self.window = window
        self.rtt_s = rtt_s
        self.bdp_segments = bdp_segments
        self.init_segments = init_segments
        self.rwnd_segments = rwnd_segments
        self.slot = 0
        """First slot of the round in progress (slots before it are through)."""
        self.flow: Flow | None = None
        """The round on the medium, None between rounds."""

    def run(self, env: simpy.Environment) -> Generator[simpy.Event, Any, tuple[str | None, int, float]]:
        """Send every round; returns (failure reason or None, bytes that left the sender, time held by
        outages)."""
        link, plan, window = self.link, self.plan, self.window
        bdp = self.bdp_segments
        cap = float(max(self.init_segments, bdp))
        slot, n_slots = 0, plan.n_slots
        lossy = plan.slot_lost is not None
        wait_s = 0.0
        while True:
            w = round_segments(window, self.rwnd_segments)
            end = slot + w
            if is_last_round(w, n_slots - slot, bdp, lossy and plan.losses_between(slot, n_slots) > 0):
                end = n_slots
            t_round_s = env.now
            last = end == n_slots  # the last round waits for its bits to reach the far end
            flow = self.flow = link.medium.transmit(link, plan.nbytes_between(slot, end) * 8,
                                                    link.delay_s if last and not plan.failed else 0.0)
            yield flow
            if flow.outage_wait_s:
                wait_s += flow.outage_wait_s
            if flow.fail_reason is not None:
                return flow.fail_reason, plan.nbytes_between(0, slot) + flow.nbytes_sent, wait_s
            lost = plan.losses_between(slot, end) if lossy else 0
            window.after_round(end - slot - lost, lost, cap)
            if last:
                return None, plan.sent_nbytes, wait_s
            self.slot = slot = end
            self.flow = None
            ack_wait_s = t_round_s + self.rtt_s - env.now
            if ack_wait_s > 0.0:
                yield env.timeout(ack_wait_s)

    def nbytes_sent(self) -> int:
        """Bytes that left the sender so far (take the round in progress off its medium first)."""
        done = self.plan.nbytes_between(0, self.slot)
        return done + self.flow.nbytes_sent if self.flow is not None else done
