"""The network engine: routes over the topology graph and message transfers hop by hop.

`send` is a generator used inside a SimPy process:
    delivery = yield from net.send("phone1", "cloud", 4096, request_id=7, kind="tokens")
A message crosses its route store-and-forward: on each hop it occupies the medium for its bytes on the
wire (payload, a header per MTU-sized packet, retransmitted packets), then propagates; the next hop
starts once the whole message has arrived. With the `tcp` transport the first hop is paced by the
connection's window (tcp.py) after a handshake round trip when the connection is not open. The
transfer ends in a `Delivery` or raises `TransferFailed` with a reason (outage longer than the timeout,
a packet out of retries, a device out of coverage). One Recorder event per message-hop, plus events for
retransmissions, outage waits, handshakes and failures.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Sequence
from itertools import pairwise
from typing import Any

import networkx as nx
import numpy as np
import simpy

from netsim.errors import InputError
from netsim.network.channel import Channel, cell_channels
from netsim.network.delivery import Delivery, TransferFailed
from netsim.network.link import Link, WirePlan
from netsim.network.medium import Medium, outage_schedule
from netsim.network.spec import CellSpec, LinkSpec, TransportSpec
from netsim.network.tcp import Connection, Window, window_rounds
from netsim.network.topology import build_graph, shortest_route
from netsim.recorder import Recorder

__all__ = ["Delivery", "Network", "TransferFailed", "build_network"]


class Network:
    """Links, media and routes of one simulation; all state lives here (no globals)."""

    def __init__(self, env: simpy.Environment, graph: nx.DiGraph, links: dict[tuple[str, str], Link],
                 media: dict[str, Medium], transport: TransportSpec, loss_rng: np.random.Generator,
                 recorder: Recorder) -> None:
        self.env = env
        self.graph = graph
        self.links = links
        """Directed hop (src, dst) → Link, with bytes_sent/bytes_received/bytes_lost counters."""
        self.media = media
        self.transport = transport
        self.recorder = recorder
        self._loss_rng = loss_rng
        self._tcp = transport.kind == "tcp"
        self._routes: dict[tuple[str, str], tuple[str, ...]] = {}
        self._hops: dict[tuple[str, str], tuple[Link, ...]] = {}
        self._connections: dict[tuple[str, str], Connection] = {}
        self._rwnd_segments: dict[Link, int] = {}
        self._rtts: dict[tuple[str, str], float] = {}

    # -- routes -------------------------------------------------------------------------------------

    def route(self, src: str, dst: str) -> list[str]:
        """Node names from src to dst on the least-latency path (cached)."""
        return list(self._route(src, dst))

    def _route(self, src: str, dst: str) -> tuple[str, ...]:
        key = (src, dst)
        path = self._routes.get(key)
        if path is None:
            path = self._routes[key] = tuple(shortest_route(self.graph, src, dst))
        return path

    def has_route(self, src: str, dst: str) -> bool:
        return src == dst or (src in self.graph and dst in self.graph and nx.has_path(self.graph, src, dst))

    def route_delay_s(self, src: str, dst: str) -> float:
        """One-way propagation latency along the route (no serialization, no queueing)."""
        return sum(link.delay_s for link in self.hops(src, dst))

    def hops(self, src: str, dst: str) -> tuple[Link, ...]:
        key = (src, dst)
        hops = self._hops.get(key)
        if hops is None:
            path = self._route(src, dst)
            hops = self._hops[key] = tuple(self.links[pair] for pair in pairwise(path))
        return hops

    def rtt_s(self, src: str, dst: str) -> float:
        """Idle round trip the TCP model uses: per hop 2·delay + one data packet and one ACK serialized
        at the hop's peak rate (a faded cell member: its mean-SNR rate). Cached per pair."""
        key = (src, dst)
        rtt_s = self._rtts.get(key)
        if rtt_s is None:
            rtt_s = self._rtts[key] = sum(
                2.0 * link.delay_s + (link.mtu_bytes + link.header_bytes) * 8.0 / link.peak_bps
                for link in self.hops(src, dst))
        return rtt_s

    def handshake_s(self, src: str, dst: str) -> float:
        """SYN and SYN-ACK: per hop 2·delay + two header-only packets serialized."""
        return sum(2.0 * link.delay_s + 2.0 * link.header_bytes * 8.0 / link.peak_bps
                   for link in self.hops(src, dst))

    # -- transfers ----------------------------------------------------------------------------------

    def send(self, src: str, dst: str, nbytes: int, *, request_id: int | None = None, kind: str = "data"
             ) -> Generator[simpy.Event, Any, Delivery]:
        """Carry `nbytes` of payload from src to dst; returns a Delivery or raises TransferFailed."""
        env = self.env
        t_start_s = env.now
        if src == dst:
            return Delivery(src, dst, nbytes, t_start_s, t_start_s, (src,), (), 0)
        hops = self.hops(src, dst)
        record = self.recorder.event
        hop_nbytes: list[int] = []
        retransmissions = 0
        wait_s = 0.0
        handshake_s = 0.0
        first = 0
        if self._tcp:
            # 1. open the connection (handshake round trip unless kept open), 2. window rounds on hop 1
            link = hops[0]
            self._check_coverage(link, src, dst, nbytes, request_id, kind)
            window = self._open_window(src, dst)
            if window is None:
                window, handshake_s = yield from self._open(src, dst, request_id)
            t_hop_s = env.now
            plan = link.plan(nbytes, self._loss_rng, self.transport.max_retx)
            outcome = yield from window_rounds(env, link, plan, window, self.rtt_s(src, dst),
                                               self.transport.init_cwnd_segments, self._rwnd(link))
            window.last_active_s = env.now
            wait_s += self._settle(link, plan, outcome.fail_reason, outcome.sent_nbytes,
                                   outcome.outage_wait_s, src, dst, nbytes, request_id, kind, t_hop_s)
            hop_nbytes.append(plan.sent_nbytes)
            retransmissions += plan.retransmissions
            record(env.now, link.name, "tx", request_id, nbytes, env.now - t_hop_s, kind)
            first = 1
        for link in hops[first:]:
            # store-and-forward: the whole message is on this hop's medium, then propagates
            t_hop_s = env.now
            if link.peak_bps <= 0.0:
                self._check_coverage(link, src, dst, nbytes, request_id, kind)
            if link.loss > 0.0:
                plan = link.plan(nbytes, self._loss_rng, self.transport.max_retx)
                sent = plan.sent_nbytes
                flow = link.medium.transmit(link, sent * 8, 0.0 if plan.failed else link.delay_s)
                yield flow
                wait_s += self._settle(link, plan, flow.fail_reason, flow.nbytes_sent, flow.outage_wait_s,
                                       src, dst, nbytes, request_id, kind, t_hop_s)
                retransmissions += plan.retransmissions
            else:
                sent = nbytes + max(1, -(-nbytes // link.mss_bytes)) * link.header_bytes
                flow = link.medium.transmit(link, sent * 8, link.delay_s)
                yield flow
                if flow.fail_reason is not None or flow.outage_wait_s > 0.0:
                    wait_s += self._settle(link, None, flow.fail_reason, flow.nbytes_sent, flow.outage_wait_s,
                                           src, dst, nbytes, request_id, kind, t_hop_s, sent)
                else:
                    link.account(sent, sent, 0)
            hop_nbytes.append(sent)
            record(env.now, link.name, "tx", request_id, nbytes, env.now - t_hop_s, kind)
        return Delivery(src, dst, nbytes, t_start_s, env.now, self._route(src, dst), tuple(hop_nbytes),
                        retransmissions, handshake_s, wait_s)

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
            self._fail(f"retries exhausted on {link.name}: a packet was lost {self.transport.max_retx + 1} "
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

    def _open_window(self, src: str, dst: str) -> Window | None:
        """The sender's window if the connection is kept open and established (no waiting needed)."""
        spec = self.transport
        if not spec.keep_alive:
            return None
        conn = self._connections.get((src, dst) if src < dst else (dst, src))
        if conn is None or conn.established_s > self.env.now:
            return None
        window = conn.windows.get(src)
        if window is None:
            window = conn.windows[src] = Window(float(spec.init_cwnd_segments), self.env.now)
        else:
            window.restart_after_idle(self.env.now, spec.rto_min_s + self.rtt_s(src, dst),
                                      spec.init_cwnd_segments)
        return window

    def _open(self, src: str, dst: str, request_id: int | None
              ) -> Generator[simpy.Event, Any, tuple[Window, float]]:
        """The sender's window on an open connection, after a handshake round trip if needed."""
        env, spec = self.env, self.transport
        t0_s = env.now
        rtt_s = self.rtt_s(src, dst)
        key = (src, dst) if src < dst else (dst, src)
        conn = self._connections.get(key) if spec.keep_alive else None
        if conn is None:
            handshake_s = self.handshake_s(src, dst)
            conn = Connection(t0_s + handshake_s)
            if spec.keep_alive:
                self._connections[key] = conn
            yield env.timeout(handshake_s)
            self.recorder.event(env.now, f"{src}->{dst}", "handshake", request_id, 0, handshake_s, "")
        elif conn.established_s > t0_s:  # another message is opening it: wait for that handshake
            yield env.timeout(conn.established_s - t0_s)
        window = conn.windows.get(src)
        if window is None:
            window = conn.windows[src] = Window(float(spec.init_cwnd_segments), env.now)
        else:
            window.restart_after_idle(env.now, spec.rto_min_s + rtt_s, spec.init_cwnd_segments)
        return window, env.now - t0_s

    def _rwnd(self, link: Link) -> int:
        rwnd = self._rwnd_segments.get(link)
        if rwnd is None:
            rwnd = self._rwnd_segments[link] = max(1, self.transport.rcv_buffer_bytes // link.mss_bytes)
        return rwnd

    def __repr__(self) -> str:
        return (f"Network({self.graph.number_of_nodes()} nodes, {len(self.links)} links, "
                f"{len(self.media)} media, {self.transport.kind})")


def build_network(env: simpy.Environment, nodes: Iterable[str], links: Sequence[LinkSpec],
                  cells: Sequence[CellSpec], transport: TransportSpec, rng: np.random.Generator,
                  recorder: Recorder) -> Network:
    """Build media, links and outage processes for one run; `rng` is the network's own stream."""
    graph = build_graph(nodes, links, cells)
    loss_rng = rng.spawn(1)[0]
    timeout_s = transport.outage_timeout_s
    media: dict[str, Medium] = {}
    out: dict[tuple[str, str], Link] = {}
    for spec in links:
        ends = [(spec.src, spec.dst), (spec.dst, spec.src)] if spec.duplex else [(spec.src, spec.dst)]
        for src, dst in ends:
            medium = media[f"{src}->{dst}"] = Medium(env, f"{src}->{dst}", spec.discipline, timeout_s)
            out[(src, dst)] = Link(src, dst, medium, spec.rate_mbps * 1e6, spec.delay_ms * 1e-3, spec.loss,
                                   spec.mtu_bytes, spec.header_bytes)
            if spec.outages:
                env.process(outage_schedule(env, medium, [(o.start_s, o.end_s) for o in spec.outages]))
    for cell in cells:
        channels = cell_channels(cell, rng)
        varying = cell.fading != "none"
        for direction in ("up", "down"):
            name = f"{cell.name}:{direction}"
            medium = media[name] = Medium(env, name, cell.discipline, timeout_s, varying=varying)
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
    return Network(env, graph, out, media, transport, loss_rng, recorder)
