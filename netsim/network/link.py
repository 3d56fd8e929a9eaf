"""One direction of one hop: medium, propagation delay, packetisation, loss, and byte counters.

A message of S payload bytes crosses a hop as n = max(1, ⌈S / MSS⌉) packets, MSS = MTU − header, so
it puts S + n·header bytes on the wire. With loss probability p each packet is retransmitted until it
gets through (attempts ~ Geometric(1 − p), drawn per packet in one numpy call per message-hop, from the
stream the network keys by (link, request, message, hop)); a packet lost `max_retx + 1` times makes the
hop fail. Counters are in bytes on the wire (headers and retransmissions included):
sent = received + lost + abandoned holds exactly for every link, where abandoned counts what left the
sender of a message-hop whose sender gave up (an interrupted transfer).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from netsim.network.channel import Channel, stable_hash
from netsim.network.medium import Medium


@dataclass(slots=True)
class WirePlan:
    """The transmissions (packets and retransmissions, in order) one message makes on one hop.

    Slots are transmissions on the wire; `slot_end_nbytes[i]` is the byte count of slots [0, i) and
    `slot_lost[i]` the number of lost slots among them (both None when nothing is lost: the slots are
    then n − 1 full packets and a last one, and arithmetic replaces the arrays).
    """

    n_slots: int
    mtu_bytes: int
    last_nbytes: int
    sent_nbytes: int
    received_nbytes: int
    lost_nbytes: int
    retransmissions: int
    failed: bool
    slot_end_nbytes: np.ndarray | None = None
    slot_lost: np.ndarray | None = None

    def nbytes_between(self, a: int, b: int) -> int:
        """Bytes on the wire of slots [a, b)."""
        if self.slot_end_nbytes is not None:
            return int(self.slot_end_nbytes[b] - self.slot_end_nbytes[a])
        return (b - a) * self.mtu_bytes - (self.mtu_bytes - self.last_nbytes if b == self.n_slots else 0)

    def losses_between(self, a: int, b: int) -> int:
        """Lost transmissions among slots [a, b)."""
        if self.slot_lost is None:
            return 0
        return int(self.slot_lost[b] - self.slot_lost[a])


class Link:
    """A directed hop `src -> dst` over a (possibly shared) medium."""

    __slots__ = ("abandoned", "bytes_abandoned", "bytes_lost", "bytes_received", "bytes_sent", "channel",
                 "delay_s", "dst", "header_bytes", "jitter", "loss", "medium", "messages", "mss_bytes",
                 "mtu_bytes", "peak_bps", "src", "stream_key")

    def __init__(self, src: str, dst: str, medium: Medium, peak_bps: float, delay_s: float, loss: float,
                 mtu_bytes: int, header_bytes: int, channel: Channel | None = None, jitter: float = 0.0
                 ) -> None:
        self.src = src
        self.dst = dst
        self.medium = medium
        self.peak_bps = peak_bps
        """Peak rate when alone on the medium (the PHY rate of a cell member, at the current block)."""
        self.channel = channel if channel is not None and channel.varying else None
        self.delay_s = delay_s
        self.jitter = jitter
        """Relative half-width of the uniform spread of a message's delay on this hop (LinkSpec.jitter)."""
        self.loss = loss
        self.mtu_bytes = mtu_bytes
        self.header_bytes = header_bytes
        self.mss_bytes = mtu_bytes - header_bytes
        self.bytes_sent = 0
        self.bytes_received = 0
        self.bytes_lost = 0
        self.bytes_abandoned = 0
        self.messages = 0
        """Message-hops that ended on this link, delivered or failed."""
        self.abandoned = 0
        """Message-hops whose sender gave up on this link (their bytes are in `bytes_abandoned`)."""
        self.stream_key = stable_hash(self.name)
        """Identity of this hop in the loss streams (the same in every run and process)."""

    @property
    def name(self) -> str:
        return f"{self.src}->{self.dst}"

    def wire_nbytes(self, nbytes: int) -> int:
        """Payload plus one header per packet, without loss."""
        n_packets = max(1, -(-nbytes // self.mss_bytes))
        return nbytes + n_packets * self.header_bytes

    def plan(self, nbytes: int, rng: np.random.Generator | None, max_retx: int) -> WirePlan:
        """Draw this message's losses on this hop and lay out its transmissions; `rng` is the stream of
        this message-hop alone, needed only when the link is lossy."""
        mss, mtu = self.mss_bytes, self.mtu_bytes
        n_packets = max(1, -(-nbytes // mss))
        last = nbytes - (n_packets - 1) * mss + self.header_bytes
        wire = (n_packets - 1) * mtu + last
        if self.loss == 0.0:
            return WirePlan(n_packets, mtu, last, wire, wire, 0, 0, False)
        assert rng is not None, f"{self!r} is lossy: its plan needs the message's loss stream"
        # failures before the first success of each packet: Geometric(1 − p) − 1
        failures = rng.geometric(1.0 - self.loss, size=n_packets) - 1
        sizes = np.full(n_packets, mtu, dtype=np.int64)
        sizes[-1] = last
        attempts = failures + 1
        delivered = np.ones(n_packets, dtype=np.int64)
        over = np.flatnonzero(failures > max_retx)
        failed = over.size > 0
        if failed:
            j = int(over[0])  # the first packet that exhausts its retries; the sender stops there
            attempts, sizes, delivered = attempts[: j + 1], sizes[: j + 1], delivered[: j + 1]
            attempts[j] = max_retx + 1
            delivered[j] = 0
        slot_sizes = np.repeat(sizes, attempts)
        slot_is_lost = np.ones(slot_sizes.size, dtype=np.int64)
        success_slot = np.cumsum(attempts)[delivered == 1] - 1
        slot_is_lost[success_slot] = 0
        slot_end = np.concatenate(([0], np.cumsum(slot_sizes)))
        slot_lost = np.concatenate(([0], np.cumsum(slot_is_lost)))
        sent = int(slot_end[-1])
        received = int((sizes * delivered).sum())
        lost = int((sizes * (attempts - delivered)).sum())
        return WirePlan(int(slot_sizes.size), mtu, last, sent, received, lost,
                        int(attempts.sum()) - attempts.size, failed, slot_end, slot_lost)

    def account(self, sent_nbytes: int, received_nbytes: int, lost_nbytes: int) -> None:
        """Add one message-hop to the counters (each counted from its own source, so the tests can
        check sent = received + lost + abandoned rather than have it hold by construction)."""
        self.bytes_sent += sent_nbytes
        self.bytes_received += received_nbytes
        self.bytes_lost += lost_nbytes
        self.messages += 1

    def abandon(self, sent_nbytes: int) -> None:
        """Count a message-hop the sender gave up on: what left the sender was sent, and is abandoned
        (neither received as a message nor lost to the channel)."""
        self.bytes_sent += sent_nbytes
        self.bytes_abandoned += sent_nbytes
        self.abandoned += 1

    def __repr__(self) -> str:
        peak_bps = self.channel.last_rate_bps if self.channel is not None else self.peak_bps
        used_mbps = self.medium.rate_in_use_bps(self) / 1e6
        return (f"Link({self.src!r}->{self.dst!r}, {used_mbps:.1f}/{peak_bps / 1e6:.1f} Mbit/s, "
                f"{self.delay_s * 1e3:g} ms)")
