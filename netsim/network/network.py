"""The network engine: routes over the topology graph and message transfers hop by hop.

`send` is a generator used inside a SimPy process:
    delivery = yield from net.send("phone1", "cloud", 4096, request_id=7, kind="tokens")
A message crosses its route store-and-forward: on each hop it occupies the medium for its bytes on the
wire (payload, a header per MTU-sized packet, retransmitted packets), then propagates; the next hop
starts once the whole message has arrived. With the `tcp` transport the first hop is paced by the
connection's window (tcp.py) after a handshake round trip when the connection is not open. The
transfer ends in a `Delivery` or raises `TransferFailed` with a reason (outage longer than the timeout,
a packet out of retries, a device out of coverage). One Recorder event per message-hop, plus events for
retransmissions, outage waits, handshakes, failures and abandons.

Cancellation: when the sending process is interrupted (`process.interrupt(cause)`: a deadline passed, a
timeout fired, a peer gave up), the message leaves its medium at once — the others speed up from that
instant, a FIFO queue drops it — the bytes it had put on the wire are counted as `bytes_abandoned` on that
hop, an `abandon` event is recorded, and the `simpy.Interrupt` propagates unchanged to the caller. We
re-raise SimPy's own exception rather than a netsim one: the interrupter chose the cause and the caller
already has to handle `Interrupt` around any other yield (SimPy used as-is, not wrapped).

Random draws are common random numbers: a message's losses come from the stream keyed by (link,
request id, the request's message number, hop index) — see channel.KeyedStreams — so they do not depend on
other traffic, and a message with `request_id=None` is numbered among such messages only.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import networkx as nx
import numpy as np
import simpy

from netsim.errors import InputError
from netsim.network.channel import MASK64, Channel, KeyedStreams, cell_channels
from netsim.network.delivery import Delivery, TransferFailed
from netsim.network.link import Link, WirePlan
from netsim.network.medium import SHARING, Flow, Medium, outage_schedule
from netsim.network.spec import CellSpec, LinkSpec, TransportSpec
from netsim.network.tcp import (
    Connection,
    Window,
    WindowSender,
    bdp_segments,
    handshake_nbytes,
    is_last_round,
    round_segments,
)
from netsim.network.topology import build_graph, cell_medium_name, route_weight, shortest_route
from netsim.recorder import Recorder

__all__ = ["Delivery", "Network", "Path", "TransferFailed", "build_network"]


@dataclass(frozen=True, slots=True)
class Path:
    """A cached route and the figures the transports need from it."""

    nodes: tuple[str, ...]
    hops: tuple[Link, ...]
    delay_s: float
    """one-way propagation latency (no serialization, no queueing)"""
    rtt_s: float
    """idle round trip of the TCP model: per hop 2·delay + one data packet and its ACK serialized at the
    hop's peak rate (a faded cell member: its mean-SNR rate)"""
    handshake_s: float
    """SYN, SYN-ACK and the final ACK: per hop 2·delay + the three packets serialised (`handshake_nbytes`),
    after which the first data segment goes out"""
    connection: tuple[str, str]
    """the unordered node pair a TCP connection is keyed by"""
    rwnd_segments: int
    """receive-buffer cap on the window, in first-hop segments"""
    bdp_segments: int
    """first-hop packets that fill its rate × the path RTT"""
    window_cap_segments: float
    """largest congestion window: max(IW, BDP) — beyond the BDP more window changes nothing"""


class Network:
    """Links, media and routes of one simulation; all state lives here (no globals)."""

    def __init__(self, env: simpy.Environment, graph: nx.DiGraph, links: dict[tuple[str, str], Link],
                 media: dict[str, Medium], transport: TransportSpec, loss_streams: KeyedStreams,
                 recorder: Recorder) -> None:
        self.env = env
        self.graph = graph
        self.links = links
        """Directed hop (src, dst) → Link, with bytes_sent/received/lost/abandoned counters."""
        self.media = media
        self.transport = transport
        self.recorder = recorder
        self._loss_streams = loss_streams
        self._messages: dict[int | None, int] = {}
        """Messages carried so far per request id (a send to the node itself is none): the message
        number that keys a message's loss draws."""
        self._tcp = transport.kind == "tcp"
        self._max_retx = transport.max_retx
        self._paths: dict[tuple[str, str], Path] = {}
        self._trees_to: dict[str, dict[str, list[str]]] = {}
        """dst → {src: route from dst to src in the reversed graph}: every route into a hub"""
        self._trees_from: dict[str, dict[str, list[str]]] = {}
        """src → {dst: route}: every route out of a hub"""
        self._seen_dst: dict[str, int] = {}
        self._seen_src: dict[str, int] = {}
        self._connections: dict[tuple[str, str], Connection] = {}

    # -- routes -------------------------------------------------------------------------------------

    def path(self, src: str, dst: str) -> Path:
        """The least-latency route from src to dst with its figures (computed once per pair)."""
        key = (src, dst)
        path = self._paths.get(key)
        if path is None:
            nodes = tuple(self._route(src, dst))
            hops = tuple(self.links[pair] for pair in pairwise(nodes))
            rtt_s = sum(2.0 * link.delay_s + _serialization_s(link.mtu_bytes + link.header_bytes, link)
                        for link in hops)
            bdp = bdp_segments(hops[0], rtt_s) if hops and rtt_s < math.inf else 1
            path = self._paths[key] = Path(
                nodes, hops,
                delay_s=sum(link.delay_s for link in hops),
                rtt_s=rtt_s,
                handshake_s=sum(2.0 * link.delay_s + _serialization_s(handshake_nbytes(link.header_bytes),
                                                                       link) for link in hops),
                connection=(src, dst) if src < dst else (dst, src),
                rwnd_segments=max(1, self.transport.rcv_buffer_bytes // hops[0].mss_bytes) if hops else 1,
                bdp_segments=bdp,
                window_cap_segments=float(max(self.transport.init_cwnd_segments, bdp)))
        return path

    def _route(self, src: str, dst: str) -> list[str]:
        """Least-latency route, from a shortest-path tree when one endpoint is a hub.

        One search per (src, dst) pair explores the whole cell again and again: 10,000 phones talking to
        one cloud cost 10,000 searches of 10,000 nodes. An endpoint seen in ROUTE_TREE_AFTER pair searches
        becomes the root of a tree (toward it, or away from it) that answers every later pair through it,
        so a fleet around a few servers costs one search per server and direction. Not sooner: a tree
        searches the whole graph and holds a route to every node (~2 MB at 10,000 nodes), so 2,000
        verifiers that each serve 16 of 10,000 devices keep their pair searches, which explore only the
        neighbourhood of the two ends, instead of 4,000 whole-graph trees. Ties between equal-latency
        routes are broken by hop count (route_weight); exact ties beyond that may resolve differently by
        tree or pair search, which no bundled topology has.
        """
        tree = self._trees_to.get(dst)
        if tree is not None and src in tree:
            return tree[src][::-1]
        tree = self._trees_from.get(src)
        if tree is not None and dst in tree:
            return tree[dst]
        self._seen_dst[dst] = self._seen_dst.get(dst, 0) + 1
        self._seen_src[src] = self._seen_src.get(src, 0) + 1
        if self._seen_dst[dst] >= ROUTE_TREE_AFTER and dst in self.graph:
            # paths from dst in the reversed graph are the routes into dst, reversed
            tree = self._trees_to[dst] = nx.single_source_dijkstra_path(
                self.graph.reverse(copy=False), dst, weight=route_weight)
            if src in tree:
                return tree[src][::-1]
        elif self._seen_src[src] >= ROUTE_TREE_AFTER and src in self.graph:
            tree = self._trees_from[src] = nx.single_source_dijkstra_path(
                self.graph, src, weight=route_weight)
            if dst in tree:
                return tree[dst]
        return shortest_route(self.graph, src, dst)

    def route(self, src: str, dst: str) -> list[str]:
        """Node names from src to dst on the least-latency path (cached); InputError if none."""
        return list(self.path(src, dst).nodes)

    def has_route(self, src: str, dst: str) -> bool:
        return src == dst or (src in self.graph and dst in self.graph and nx.has_path(self.graph, src, dst))

    def route_delay_s(self, src: str, dst: str) -> float:
        """One-way propagation latency along the route (no serialization, no queueing)."""
        return self.path(src, dst).delay_s

    def rtt_s(self, src: str, dst: str) -> float:
        return self.path(src, dst).rtt_s

    def estimate_transfer_s(self, src: str, dst: str, nbytes: int) -> float:
        """What carrying `nbytes` from src to dst would take if it started now: for policies that choose by
        the network's state (FedRefine's cache-or-token choice, FedHLM's eq. 13). Never moves a byte.

        Per hop: wire bytes (headers included) at the hop's current peak rate shared equally with the flows
        already on its medium, plus propagation; with `tcp`, the handshake when no connection is open and
        at least one round trip per slow-start round the first hop needs (window doubling from the initial
        one up to the path's cap). Loss, fading after now and flows arriving later are not foreseen; a hop
        that is down or out of coverage makes the estimate infinite.
        """
        if src == dst:
            return 0.0
        path = self.path(src, dst)
        now = self.env.now
        total_s = 0.0
        for i, link in enumerate(path.hops):
            medium = link.medium
            peak = link.channel.rate_bps(now) if link.channel is not None else link.peak_bps
            if peak <= 0.0 or (medium.down_until_s is not None and medium.down_until_s > now):
                return math.inf
            serial_s = link.wire_nbytes(nbytes) * 8 / (peak / (medium.n_flows + 1))
            if i == 0 and self._tcp:
                if self._open_window_s(path) is None:
                    total_s += path.handshake_s
                n_packets = max(1, -(-nbytes // link.mss_bytes))
                window, sent, rounds = float(self.transport.init_cwnd_segments), 0, 0
                while sent < n_packets:
                    sent += int(min(window, path.rwnd_segments))
                    window = min(2 * window, path.window_cap_segments)
                    rounds += 1
                serial_s = max(serial_s, (rounds - 1) * path.rtt_s)
            total_s += serial_s + link.delay_s
        return total_s

    def _open_window_s(self, path: Path) -> float | None:
        """When the kept-open connection of `path` was established, or None (a handshake is due)."""
        conn = self._connections.get(path.connection) if self.transport.keep_alive else None
        return None if conn is None or conn.established_s > self.env.now else conn.established_s

    # -- transfers ----------------------------------------------------------------------------------

    def send(self, src: str, dst: str, nbytes: int, *, request_id: int | None = None, kind: str = "data"
             ) -> Generator[simpy.Event, Any, Delivery]:
        """Carry `nbytes` of payload from src to dst; returns a Delivery or raises TransferFailed.

        If the calling process is interrupted meanwhile, the message is abandoned where it is (see the
        module docstring) and the `simpy.Interrupt` is re-raised.
        """
        env = self.env
        t_start_s = env.now
        if src == dst:
            return Delivery(src, dst, nbytes, t_start_s, t_start_s, (src,), (), 0)
        path = self.path(src, dst)
        hops = path.hops
        message = self._messages.get(request_id, 0)
        self._messages[request_id] = message + 1
        record = self.recorder.event
        hop_nbytes: list[int] = []
        retransmissions = 0
        wait_s = 0.0
        handshake_s = 0.0
        first = 0
        link = hops[0]
        t_hop_s = t_start_s
        flow: Flow | None = None
        sender: WindowSender | None = None
        window: Window | None = None
        try:
            if self._tcp:
                # 1. open the connection (handshake round trip unless kept open), 2. window rounds on hop 1
                if link.peak_bps <= 0.0:
                    self._check_coverage(link, src, dst, nbytes, request_id, kind)
                window = self._open_window(src, path, t_start_s)
                if window is None:
                    window, handshake_s = yield from self._open(src, dst, path, request_id)
                t_hop_s = env.now
                n_packets = max(1, -(-nbytes // link.mss_bytes))
                if link.loss == 0.0 and is_last_round(round_segments(window, path.rwnd_segments), n_packets,
                                                      path.bdp_segments, False):
                    # one round carries the whole message: one flow, as with `ideal`, then the window
                    sent = nbytes + n_packets * link.header_bytes
                    flow = link.medium.transmit(link, sent * 8, self._delay_s(link, request_id, message, 0))
                    yield flow
                    t_now_s = window.last_active_s = env.now
                    if flow.fail_reason is not None or flow.outage_wait_s > 0.0:
                        wait_s += self._settle(link, None, flow.fail_reason, flow.nbytes_sent,
                                               flow.outage_wait_s, src, dst, nbytes, request_id, kind,
                                               t_hop_s, sent)
                    else:
                        link.account(sent, sent, 0)
                    window.after_round(n_packets, 0, path.window_cap_segments)
                else:
                    rng = self._loss_stream(link, request_id, message, 0) if link.loss > 0.0 else None
                    plan = link.plan(nbytes, rng, self._max_retx)
                    sender = WindowSender(link, plan, window, path.rtt_s, path.bdp_segments,
                                          self.transport.init_cwnd_segments, path.rwnd_segments)
                    fail_reason, sent_nbytes, outage_wait_s = yield from sender.run(env)
                    sender = None
                    t_now_s = window.last_active_s = env.now
                    if fail_reason is not None or outage_wait_s > 0.0 or plan.retransmissions or plan.failed:
                        wait_s += self._settle(link, plan, fail_reason, sent_nbytes, outage_wait_s, src, dst,
                                               nbytes, request_id, kind, t_hop_s)
                        retransmissions += plan.retransmissions
                    else:
                        link.account(plan.sent_nbytes, plan.received_nbytes, 0)
                    sent = plan.sent_nbytes
                hop_nbytes.append(sent)
                record(t_now_s, link.name, "tx", request_id, nbytes, t_now_s - t_hop_s, kind)
                first = 1
            for hop in range(first, len(hops)):
                # store-and-forward: the whole message is on this hop's medium, then propagates
                link = hops[hop]
                t_hop_s = env.now
                if link.peak_bps <= 0.0:
                    self._check_coverage(link, src, dst, nbytes, request_id, kind)
                if link.loss > 0.0:
                    rng = self._loss_stream(link, request_id, message, hop)
                    plan = link.plan(nbytes, rng, self._max_retx)
                    sent = plan.sent_nbytes
                    flow = link.medium.transmit(link, sent * 8, 0.0 if plan.failed
                                                else self._delay_s(link, request_id, message, hop))
                    yield flow
                    wait_s += self._settle(link, plan, flow.fail_reason, flow.nbytes_sent, flow.outage_wait_s,
                                           src, dst, nbytes, request_id, kind, t_hop_s)
                    retransmissions += plan.retransmissions
                else:
                    sent = nbytes + max(1, -(-nbytes // link.mss_bytes)) * link.header_bytes
                    flow = link.medium.transmit(link, sent * 8, self._delay_s(link, request_id, message, hop))
                    yield flow
                    if flow.fail_reason is not None or flow.outage_wait_s > 0.0:
                        wait_s += self._settle(link, None, flow.fail_reason, flow.nbytes_sent,
                                               flow.outage_wait_s, src, dst, nbytes, request_id, kind,
                                               t_hop_s, sent)
                    else:
                        link.account(sent, sent, 0)
                hop_nbytes.append(sent)
                t_now_s = env.now
                record(t_now_s, link.name, "tx", request_id, nbytes, t_now_s - t_hop_s, kind)
        except simpy.Interrupt:
            self._abandon(link, flow, sender, request_id, kind, t_hop_s)
            if window is not None and not first:  # gave up on the first hop: the connection was in use
                window.last_active_s = env.now
            raise
        return Delivery(src, dst, nbytes, t_start_s, env.now, path.nodes, tuple(hop_nbytes), retransmissions,
                        handshake_s, wait_s)

    def _delay_s(self, link: Link, request_id: int | None, message: int, hop: int) -> float:
        """This message's propagation delay on this hop: the link's, spread uniformly by ±jitter, drawn from
        a stream keyed like the loss draws (another identity per link), so it ignores other traffic."""
        if link.jitter == 0.0:
            return link.delay_s
        request_key = 0 if request_id is None else ((request_id << 1) | 1) & MASK64
        rng = self._loss_streams.at(link.stream_key ^ _JITTER_STREAM, request_key, (message << 16) | hop)
        return link.delay_s * (1.0 + link.jitter * (2.0 * rng.random() - 1.0))

    def _loss_stream(self, link: Link, request_id: int | None, message: int, hop: int) -> np.random.Generator:
        """The generator of this message-hop's loss draws: keyed by (link, request, message, hop), never by
        how many draws other messages made (request ids are tagged odd so that None, 0, has its own
        numbering)."""
        request_key = 0 if request_id is None else ((request_id << 1) | 1) & MASK64
        return self._loss_streams.at(link.stream_key, request_key, (message << 16) | hop)

    def _abandon(self, link: Link, flow: Flow | None, sender: WindowSender | None, request_id: int | None,
                 kind: str, t_hop_s: float) -> None:
        """The sender gave up during this hop: free the medium, count what had left as abandoned."""
        now = self.env.now
        if sender is not None:  # TCP rounds on the first hop
            if sender.flow is not None:
                link.medium.cancel(sender.flow)
            abandoned = sender.nbytes_sent()
        elif flow is not None:  # on the medium, or propagating (then every byte had left)
            link.medium.cancel(flow)
            abandoned = flow.nbytes_sent
        else:  # waiting for the TCP handshake: nothing on the wire yet
            abandoned = 0
        link.abandon(abandoned)
        self.recorder.event(now, link.name, "abandon", request_id, abandoned, now - t_hop_s, kind)

    def _settle(self, link: Link, plan: WirePlan | None, fail_reason: str | None, partial_nbytes: int,
                outage_wait_s: float, src: str, dst: str, nbytes: int, request_id: int | None, kind: str,
                t_hop_s: float, sent_nbytes: int = 0) -> float:
        """Account a hop whose bytes are through (or cut off); note waits and losses; raise on failure.

        `plan` is None on a loss-free hop, which then sent `sent_nbytes`. Returns the outage wait.
        """
        now = self.env.now
        if outage_wait_s > 0.0:
            self.recorder.event(now, link.name, "outage_wait", request_id, nbytes, outage_wait_s, kind)
        if fail_reason is not None:  # cut off by an outage: whatever left the sender is lost
            link.account(partial_nbytes, 0, partial_nbytes)
            self._fail(fail_reason, link, src, dst, nbytes, request_id, kind, t_hop_s)
        if plan is None:
            link.account(sent_nbytes, sent_nbytes, 0)
            return outage_wait_s
        link.account(plan.sent_nbytes, plan.received_nbytes, plan.lost_nbytes)
        if plan.retransmissions:
            self.recorder.event(now, link.name, "retx", request_id, plan.lost_nbytes, 0.0,
                                f"{kind}: {plan.retransmissions} packets")
        if plan.failed:
            self._fail(f"retries exhausted on {link.name}: a packet was lost {self._max_retx + 1} "
                       "times", link, src, dst, nbytes, request_id, kind, t_hop_s)
        return outage_wait_s

    def _check_coverage(self, link: Link, src: str, dst: str, nbytes: int, request_id: int | None,
                        kind: str) -> None:
        if link.peak_bps <= 0.0:
            self._fail(f"{link.src} and {link.dst} are out of coverage (SNR below the floor)", link, src, dst,
                       nbytes, request_id, kind, self.env.now)

    def _fail(self, reason: str, link: Link, src: str, dst: str, nbytes: int, request_id: int | None,
              kind: str, t_hop_s: float) -> None:
        now = self.env.now
        self.recorder.event(now, link.name, "tx_failed", request_id, nbytes, now - t_hop_s,
                            f"{kind}: {reason}")
        raise TransferFailed(reason, src=src, dst=dst, hop=link.name, t_s=now, nbytes=nbytes)

    # -- TCP connections ----------------------------------------------------------------------------

    def _open_window(self, src: str, path: Path, now_s: float) -> Window | None:
        """The sender's window if the connection is kept open and established (no waiting needed)."""
        spec = self.transport
        conn = self._connections.get(path.connection) if spec.keep_alive else None
        if conn is None or conn.established_s > now_s:
            return None
        window = conn.windows.get(src)
        if window is None:
            window = conn.windows[src] = Window(float(spec.init_cwnd_segments), now_s)
        else:
            window.restart_after_idle(now_s, spec.rto_min_s + path.rtt_s, spec.init_cwnd_segments)
        return window

    def _open(self, src: str, dst: str, path: Path, request_id: int | None
              ) -> Generator[simpy.Event, Any, tuple[Window, float]]:
        """The sender's window on an open connection, after a handshake round trip if needed."""
        env, spec = self.env, self.transport
        t0_s = env.now
        conn = self._connections.get(path.connection) if spec.keep_alive else None
        if conn is None:
            conn = Connection(t0_s + path.handshake_s)
            if spec.keep_alive:
                self._connections[path.connection] = conn
            yield env.timeout(path.handshake_s)
            self.recorder.event(env.now, f"{src}->{dst}", "handshake", request_id, 0, path.handshake_s, "")
        elif conn.established_s > t0_s:  # another message is opening it: wait for that handshake
            yield env.timeout(conn.established_s - t0_s)
        window = conn.windows.get(src)
        if window is None:
            window = conn.windows[src] = Window(float(spec.init_cwnd_segments), env.now)
        else:
            window.restart_after_idle(env.now, spec.rto_min_s + path.rtt_s, spec.init_cwnd_segments)
        return window, env.now - t0_s

    def __repr__(self) -> str:
        return (f"Network({self.graph.number_of_nodes()} nodes, {len(self.links)} links, "
                f"{len(self.media)} media, {self.transport.kind})")


ROUTE_TREE_AFTER = 32
"""Pair searches through one endpoint before it becomes the root of a shortest-path tree (`_route`)."""

_JITTER_STREAM = 0x6A17_7E12_D3C4_B5A6
"""Flips a link's loss-stream identity into its jitter-stream identity: the two never share draws."""


def _serialization_s(nbytes: int, link: Link) -> float:
    """Time to put `nbytes` on an idle hop (infinite for a member out of coverage)."""
    return nbytes * 8.0 / link.peak_bps if link.peak_bps > 0.0 else math.inf


def build_network(env: simpy.Environment, nodes: Iterable[str], links: Sequence[LinkSpec],
                  cells: Sequence[CellSpec], transport: TransportSpec, rng: np.random.Generator,
                  recorder: Recorder) -> Network:
    """Build media, links and outage processes for one run; `rng` is the network's own stream.

    Three 128-bit keys are drawn from `rng`, in this order, for the fading, shadowing and loss streams
    (channel.KeyedStreams); every later draw is addressed by identity, not taken in sequence.
    """
    graph = build_graph(nodes, links, cells)
    fading, shadowing, loss = (KeyedStreams(key) for key in rng.integers(0, 2**64, size=(3, 2),
                                                                          dtype=np.uint64))
    timeout_s = transport.outage_timeout_s
    media: dict[str, Medium] = {}
    out: dict[tuple[str, str], Link] = {}
    for spec in links:
        ends = [(spec.src, spec.dst), (spec.dst, spec.src)] if spec.duplex else [(spec.src, spec.dst)]
        for src, dst in ends:
            medium = media[f"{src}->{dst}"] = SHARING[spec.discipline](env, f"{src}->{dst}", timeout_s)
            out[(src, dst)] = Link(src, dst, medium, spec.rate_mbps * 1e6, spec.delay_ms * 1e-3, spec.loss,
                                   spec.mtu_bytes, spec.header_bytes, jitter=spec.jitter)
            if spec.outages:
                env.process(outage_schedule(env, medium, [(o.start_s, o.end_s) for o in spec.outages]))
    for cell in cells:
        channels = cell_channels(cell, fading, shadowing)
        coherence_s = cell.coherence_ms * 1e-3 if cell.fading != "none" else None
        for direction in ("up", "down"):
            name = cell_medium_name(cell, direction)
            medium = media.get(name)
            if medium is None:  # a `shared` cell uses one medium for both directions
                medium = media[name] = SHARING[cell.discipline](env, name, timeout_s, coherence_s)
                if cell.outages:
                    env.process(outage_schedule(env, medium, [(o.start_s, o.end_s) for o in cell.outages]))
            for member in cell.members:
                src, dst = (member, cell.ap) if direction == "up" else (cell.ap, member)
                source = channels[(member, direction)]
                channel = source if isinstance(source, Channel) else None
                peak_bps = channel.mean_rate_bps if channel is not None else float(source)
                out[(src, dst)] = Link(src, dst, medium, peak_bps, cell.delay_ms * 1e-3, cell.loss,
                                       cell.mtu_bytes, cell.header_bytes, channel)
    if set(out) != set(graph.edges):
        raise InputError("network links do not match the topology graph")  # guards build_graph drift
    return Network(env, graph, out, media, transport, loss, recorder)
