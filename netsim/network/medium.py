"""A shared transmission medium: one wired link direction, or a cell's uplink or downlink.

Flows are bursts of bits (a message on one hop, or one TCP round of it). The medium is a fluid
server: between two arrivals/departures every flow progresses at a constant rate, so it keeps a single
timer for the next departure and re-plans at every arrival, departure, cancellation, outage edge and
fading-block edge — never per packet. Disciplines (a registry, `SHARING`):
  fair — processor sharing: the n flows with a usable channel each get 1/n of the airtime, so flow i
         moves at peak_i / n (on a wire every peak is the line rate; in a cell it is the member's PHY
         rate: airtime fairness, as a round-robin scheduler gives). Kept in virtual time, so an arrival
         or departure costs O(log n), not O(n) (see `FairMedium`);
  fifo — the flow at the head moves at its peak; the others wait in arrival order.
Outages stop every flow; a flow held longer than the transport's timeout fails with a reason. A sender
that gives up (its process was interrupted) takes its flow off at once with `cancel`.
"""

from __future__ import annotations

import heapq
import math
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Generator
from functools import partial
from typing import Any, ClassVar, Protocol

import simpy
from simpy.events import NORMAL

from netsim.network.channel import Channel, block_index


class Link(Protocol):
    """What a medium needs of a link (netsim.network.link.Link, which imports this module)."""

    src: str
    dst: str
    peak_bps: float
    channel: Channel | None

FINISH_TOLERANCE_S = 1e-9
"""A flow whose last bits would leave within this time of a timer counts as finished (float rounding)."""

GONE, RUNNING, WAITING = 0, 1, 2
"""Flow states: off the medium (arrived, failed or cancelled); moving; present but not moving (queued
behind a FIFO head, held by an outage, or in a fade below the SNR floor)."""


class Flow(simpy.Event):
    """Bits crossing one medium; the event triggers when the last bit is on the wire, or on failure.

    A failed flow triggers successfully too and carries `fail_reason`: failure is an outcome the
    sender turns into `TransferFailed` after accounting the bytes, not a crash of the simulation.
    """

    __slots__ = ("bits_left", "bits_total", "delay_s", "fail_reason", "link", "outage_wait_s", "peak_bps",
                 "state", "t_blocked_s", "tag")

    def __init__(self, env: simpy.Environment, link: Link, nbits: float, delay_s: float) -> None:
        super().__init__(env)
        self.link = link
        self.delay_s = delay_s
        self.bits_total = nbits
        self.bits_left = nbits
        """Bits still to send, as of the medium's last update of this flow (exact once it left)."""
        self.peak_bps = 0.0
        self.tag = 0.0
        """Fair sharing: virtual time at which the flow finishes (see FairMedium)."""
        self.state = WAITING
        self.t_blocked_s: float | None = None
        self.outage_wait_s = 0.0
        self.fail_reason: str | None = None

    def arrive(self) -> None:
        """Trigger `delay_s` after the last bit left: propagation costs no extra event or process step.

        This is how simpy.Timeout schedules itself (value set, then `env.schedule` with a delay).
        """
        self._ok = True
        self._value = None
        self.env.schedule(self, NORMAL, self.delay_s)

    @property
    def nbytes_sent(self) -> int:
        """Whole bytes that left the sender (valid once the flow is off the medium: arrived, cut off by an
        outage, or cancelled part-way). Bits left come from rate × time, so a byte boundary may be missed
        by float rounding: within 10⁻⁹ of a whole byte counts as that byte."""
        nbytes = (self.bits_total - max(self.bits_left, 0.0)) / 8.0
        return int(nbytes + 1e-9 * max(1.0, nbytes))


class Medium(ABC):
    """Capacity shared by the flows of one or more links, with explicit hooks: `transmit` (arrival),
    `cancel` (the sender gave up), `go_down`/`go_up` (outage edges). Subclasses are the disciplines."""

    discipline: ClassVar[str]

    def __init__(self, env: simpy.Environment, name: str, outage_timeout_s: float,
                 coherence_s: float | None = None) -> None:
        self.env = env
        self.name = name
        self.outage_timeout_s = outage_timeout_s
        self.coherence_s = coherence_s
        """Fading block length of the channels on this medium (None: constant peaks). Peaks change only
        at block edges, common to every member of a cell, so the medium re-plans there."""
        self.down_until_s: float | None = None
        self.n_flows = 0
        """Flows present (moving or waiting)."""
        self._varying = coherence_s is not None
        self._epoch = -1
        """Fading block the current peaks belong to."""
        self._t_s = 0.0
        self._timer: simpy.Timeout | None = None

    def _peak_bps(self, link: Link, now_s: float) -> float:
        channel = link.channel
        return channel.rate_bps(now_s) if channel is not None else link.peak_bps

    def _block_at(self, now_s: float) -> int:
        """Fading block holding `now_s` (0 on a medium whose peaks never change)."""
        return block_index(now_s, self.coherence_s) if self.coherence_s is not None else 0

    def _next_edge_s(self, now_s: float) -> float:
        assert self.coherence_s is not None
        return (block_index(now_s, self.coherence_s) + 1) * self.coherence_s

    def _arm(self, dt_s: float) -> None:
        timer = self.env.timeout(dt_s if dt_s > 0.0 else 0.0)
        timer.callbacks.append(self._on_timer)
        self._timer = timer

    @abstractmethod
    def _on_timer(self, event: simpy.Event) -> None:
        """The timer fired: departures (and, with fading, a new block's peaks)."""

    @abstractmethod
    def transmit(self, link: Link, nbits: float, delay_s: float = 0.0) -> Flow:
        """Admit `nbits` sent over `link`; the returned flow triggers `delay_s` after the last bit left
        (pass the propagation delay to wait for arrival at the far end)."""

    @abstractmethod
    def cancel(self, flow: Flow) -> None:
        """The sender gave up: take `flow` off at once; its `bits_left` then tells what it had sent.
        A flow already off the medium (arrived, propagating, failed) is left as it is."""

    @abstractmethod
    def go_down(self, until_s: float) -> None:
        """Outage edge: every flow stops; those that would wait beyond the timeout are set to fail."""

    @abstractmethod
    def go_up(self) -> None:
        """Outage ends: held flows resume, their wait added to `outage_wait_s`."""

    @abstractmethod
    def rate_in_use_bps(self, link: Link | None = None) -> float:
        """Sum of the current rates of the moving flows (of one link, if given); for display."""

    # -- outages ------------------------------------------------------------------------------------

    def _block(self, flow: Flow) -> None:
        now = self.env.now
        flow.t_blocked_s = now
        assert self.down_until_s is not None
        if self.down_until_s - now > self.outage_timeout_s:
            timer = self.env.timeout(self.outage_timeout_s)
            timer.callbacks.append(partial(self._expire, flow))

    def _unblock(self, flow: Flow) -> None:
        if flow.t_blocked_s is not None:
            flow.outage_wait_s += self.env.now - flow.t_blocked_s
            flow.t_blocked_s = None

    def _expire(self, flow: Flow, _event: simpy.Event) -> None:
        if flow.state == GONE or flow.t_blocked_s is None:
            return  # delivered, cancelled, or the outage ended first
        self._leave(flow)
        self._unblock(flow)
        link = flow.link
        flow.fail_reason = (f"outage on {link.src}->{link.dst}: down until {self.down_until_s:.6g} s, "
                            f"gave up after {self.outage_timeout_s:g} s")
        flow.succeed()

    @abstractmethod
    def _leave(self, flow: Flow) -> None:
        """Forget a flow held by an outage that gives up (the timeout passed)."""

    def __repr__(self) -> str:
        state = f"down until {self.down_until_s:g} s" if self.down_until_s is not None else "up"
        return f"Medium({self.name!r}, {self.n_flows} flows, {self.discipline}, {state})"


class FairMedium(Medium):
    """Processor sharing in virtual time (the GPS/WFQ bookkeeping of Parekh & Gallager, IEEE/ACM ToN 1993,
    and Demers, Keshav & Shenker, SIGCOMM 1989, with equal weights).

    Virtual time V is the airtime each moving flow has received: dV/dt = 1/n with n moving flows. A flow
    of b bits arriving at V_a with peak p needs b/p seconds of airtime, so it finishes when V reaches its
    tag F = V_a + b/p — whatever arrives or leaves meanwhile. Tags never change between fading-block
    edges, so the flows sit in a heap on F; the next departure is the heap's minimum, due after
    (F_min − V)·n seconds. An arrival, a departure or a cancellation is then O(log n) — one heap
    operation and one timer — instead of updating n rates. Bits left of a moving flow are (F − V)·p.
    Only the events that change every flow's rate are O(n): an outage edge (every flow stops or
    resumes) and a fading-block edge (every member's peak changes, so tags are recomputed). V restarts
    from 0 whenever the medium empties and at those O(n) re-plans, which bounds float rounding.
    Cancelled flows stay in the heap until they surface (lazy deletion), so a cancellation is O(1)
    plus the re-arm of the timer.
    """

    discipline = "fair"

    def __init__(self, env: simpy.Environment, name: str, outage_timeout_s: float,
                 coherence_s: float | None = None) -> None:
        super().__init__(env, name, outage_timeout_s, coherence_s)
        self._heap: list[tuple[float, int, Flow]] = []
        """(tag, arrival number, flow) of the moving flows (and cancelled ones not yet popped)."""
        self._moving = 0
        self._v = 0.0
        self._seq = 0
        self._waiting: dict[Flow, int] = {}
        """Flows present but not moving (outage, or a fade below the SNR floor) → arrival number."""
        self._due_tag = -math.inf
        """Tag of the departure the timer is set for (−∞ when it is set for a block edge): that flow
        leaves when the timer fires even if float rounding left V a hair short of its tag, so the
        clock always moves on."""

    # -- hooks --------------------------------------------------------------------------------------

    def transmit(self, link: Link, nbits: float, delay_s: float = 0.0) -> Flow:
        env = self.env
        now = env.now
        flow = Flow(env, link, nbits, delay_s)
        self.n_flows += 1
        self._seq = seq = self._seq + 1
        if not self._moving and not self._varying and self.down_until_s is None:
            # idle medium, constant rate: the flow alone sets the timer (one timeout per message)
            peak = flow.peak_bps = link.peak_bps
            flow.tag = tag = nbits / peak
            flow.state = RUNNING
            self._heap.append((tag, seq, flow))
            self._moving = 1
            self._t_s = now
            self._due_tag = tag
            self._arm(tag)
            return flow
        if self.down_until_s is not None:
            flow.peak_bps = link.peak_bps
            self._waiting[flow] = seq
            self._block(flow)
            return flow
        if self._moving:
            dt_s = now - self._t_s
            if dt_s > 0.0:
                self._v += dt_s / self._moving
        self._t_s = now
        if self._varying and self._block_at(now) != self._epoch:
            self._retag(now)
        peak = flow.peak_bps = self._peak_bps(link, now) if self._varying else link.peak_bps
        if peak > 0.0:
            flow.tag = tag = self._v + nbits / peak
            flow.state = RUNNING
            heapq.heappush(self._heap, (tag, seq, flow))
            self._moving += 1
        else:  # faded below the floor: waits for the next block
            self._waiting[flow] = seq
        self._arm_next(now)
        return flow

    def cancel(self, flow: Flow) -> None:
        if flow.state == GONE:
            return
        now = self.env.now
        self._unblock(flow)
        self.n_flows -= 1
        if flow.state == WAITING:
            del self._waiting[flow]
            flow.state = GONE
            return
        self._advance(now)
        flow.bits_left = (flow.tag - self._v) * flow.peak_bps
        flow.state = GONE  # its heap entry is dropped when it reaches the top
        self._moving -= 1
        if not self._moving:
            self._heap.clear()
            self._v = 0.0
        if self._varying and self._block_at(now) != self._epoch:
            self._retag(now)  # on a block edge, before its timer: the re-arm below replaces that timer
        self._arm_next(now)

    def go_down(self, until_s: float) -> None:
        now = self.env.now
        self._advance(now)
        self.down_until_s = until_s
        v = self._v
        for _, seq, flow in self._heap:
            if flow.state == RUNNING:
                flow.bits_left = (flow.tag - v) * flow.peak_bps
                flow.state = WAITING
                self._waiting[flow] = seq
        self._heap.clear()
        self._moving = 0
        self._v = 0.0
        for flow in self._waiting:
            self._block(flow)
        self._timer = None

    def go_up(self) -> None:
        now = self.env.now
        self._t_s = now
        self.down_until_s = None
        for flow in self._waiting:
            self._unblock(flow)
        self._admit_waiting(now)
        self._arm_next(now)

    def rate_in_use_bps(self, link: Link | None = None) -> float:
        n = self._moving
        return sum(f.peak_bps / n for _, _, f in self._heap
                   if f.state == RUNNING and (link is None or f.link is link))

    # -- planning -----------------------------------------------------------------------------------

    def _advance(self, now: float) -> None:
        """Move virtual time forward to now."""
        if self._moving:
            dt_s = now - self._t_s
            if dt_s > 0.0:
                self._v += dt_s / self._moving
        self._t_s = now

    def _arm_next(self, now: float) -> None:
        """Set the timer for the next departure (or fading-block edge)."""
        heap = self._heap
        while heap and heap[0][2].state != RUNNING:
            heapq.heappop(heap)  # cancelled
        if heap:
            self._due_tag = heap[0][0]
            dt_s = (self._due_tag - self._v) * self._moving
        else:
            dt_s = math.inf
        if self._varying and (heap or self._waiting) and self.down_until_s is None:
            edge_dt_s = self._next_edge_s(now) - now
            if edge_dt_s < dt_s:
                dt_s = edge_dt_s
                self._due_tag = -math.inf
        if dt_s < math.inf:
            self._arm(dt_s)
        else:
            self._timer = None

    def _on_timer(self, event: simpy.Event) -> None:
        if event is not self._timer:
            return  # superseded by a later re-plan
        now = self.env.now
        self._advance(now)
        n = self._moving
        if n:
            heap = self._heap
            limit = max(self._v + FINISH_TOLERANCE_S / n, self._due_tag)
            while heap and heap[0][0] <= limit:
                flow = heapq.heappop(heap)[2]
                if flow.state != RUNNING:
                    continue  # cancelled
                flow.state = GONE
                flow.bits_left = 0.0
                n -= 1
                flow.arrive()
            self.n_flows -= self._moving - n
            self._moving = n
            if not n:
                heap.clear()
                self._v = 0.0
                if not self._varying:
                    self._timer = None
                    return
        if self._varying and self._block_at(now) != self._epoch:
            self._retag(now)
        self._arm_next(now)

    def _retag(self, now: float) -> None:
        """New fading block: every peak changed. Bits left are kept, tags recomputed from V = 0 (O(n))."""
        self._epoch = self._block_at(now)
        if self.down_until_s is not None:
            return  # nothing moves; go_up re-admits with the block's peaks then
        v = self._v
        for _, seq, flow in self._heap:
            if flow.state == RUNNING:
                flow.bits_left = (flow.tag - v) * flow.peak_bps
                flow.state = WAITING
                self._waiting[flow] = seq
        self._heap.clear()
        self._moving = 0
        self._v = 0.0
        self._admit_waiting(now)

    def _admit_waiting(self, now: float) -> None:
        """Put every waiting flow with a usable channel into the heap, from the current V."""
        v, heap, still = self._v, self._heap, {}
        for flow, seq in self._waiting.items():
            peak = flow.peak_bps = self._peak_bps(flow.link, now)
            if peak > 0.0:
                flow.tag = v + flow.bits_left / peak
                flow.state = RUNNING
                heap.append((flow.tag, seq, flow))
                self._moving += 1
            else:
                still[flow] = seq
        heapq.heapify(heap)
        self._waiting = still
        if self._varying:
            self._epoch = self._block_at(now)

    def _leave(self, flow: Flow) -> None:
        del self._waiting[flow]
        flow.state = GONE
        self.n_flows -= 1


class FifoMedium(Medium):
    """One message at a time in arrival order: the head moves at its peak, the rest wait. An arrival
    behind a busy head costs an append; a departure a popleft. Cancelled flows behind the head are
    dropped when they reach it (lazy deletion)."""

    discipline = "fifo"

    def __init__(self, env: simpy.Environment, name: str, outage_timeout_s: float,
                 coherence_s: float | None = None) -> None:
        super().__init__(env, name, outage_timeout_s, coherence_s)
        self._queue: deque[Flow] = deque()
        self._rate_bps = 0.0
        """Rate of the head (0 while down or faded below the floor)."""
        self._due = False
        """The timer is set for the head's last bit (not a block edge): the head leaves when it fires,
        whatever float rounding left of its bits."""

    def transmit(self, link: Link, nbits: float, delay_s: float = 0.0) -> Flow:
        flow = Flow(self.env, link, nbits, delay_s)
        self.n_flows += 1
        queue = self._queue
        queue.append(flow)
        if self.down_until_s is not None:
            self._block(flow)
        elif len(queue) == 1:
            self._t_s = self.env.now
            self._plan()
        # else: queued behind the head, nothing to re-plan
        return flow

    def cancel(self, flow: Flow) -> None:
        if flow.state == GONE:
            return
        self._unblock(flow)
        self.n_flows -= 1
        queue = self._queue
        if queue[0] is flow:
            self._advance()
            queue.popleft()
            flow.state = GONE
            self._plan()
        else:
            flow.state = GONE  # never started: nothing sent; dropped when it reaches the head

    def go_down(self, until_s: float) -> None:
        self._advance()
        self.down_until_s = until_s
        for flow in self._queue:
            if flow.state != GONE:
                self._block(flow)
        self._rate_bps = 0.0
        self._timer = None

    def go_up(self) -> None:
        self._t_s = self.env.now
        self.down_until_s = None
        for flow in self._queue:
            self._unblock(flow)
        self._plan()

    def rate_in_use_bps(self, link: Link | None = None) -> float:
        queue = self._queue
        if not queue or (link is not None and queue[0].link is not link):
            return 0.0
        return self._rate_bps

    def _advance(self) -> None:
        now = self.env.now
        if self._queue and self._rate_bps > 0.0:
            self._queue[0].bits_left -= self._rate_bps * (now - self._t_s)
        self._t_s = now

    def _plan(self) -> None:
        """Serve the first live flow at its peak; time the next departure (or block edge)."""
        queue = self._queue
        while queue and queue[0].state == GONE:
            queue.popleft()
        self._rate_bps = 0.0
        if not queue or self.down_until_s is not None:
            self._timer = None
            return
        head = queue[0]
        now = self.env.now
        head.state = RUNNING
        peak = head.peak_bps = self._peak_bps(head.link, now) if self._varying else head.link.peak_bps
        self._rate_bps = peak
        dt_s = head.bits_left / peak if peak > 0.0 else math.inf
        self._due = True
        if self._varying:
            edge_dt_s = self._next_edge_s(now) - now
            if edge_dt_s < dt_s:
                dt_s = edge_dt_s
                self._due = False
        if dt_s < math.inf:
            self._arm(dt_s)
        else:
            self._timer = None

    def _on_timer(self, event: simpy.Event) -> None:
        if event is not self._timer:
            return  # superseded by a later re-plan
        self._advance()
        head = self._queue[0]
        if self._due or head.bits_left <= self._rate_bps * FINISH_TOLERANCE_S:
            self._queue.popleft()
            head.state = GONE
            head.bits_left = 0.0
            self.n_flows -= 1
            head.arrive()
        self._plan()

    def _leave(self, flow: Flow) -> None:
        flow.state = GONE  # dropped from the queue when it reaches the head
        self.n_flows -= 1


SHARING: dict[str, type[Medium]] = {"fair": FairMedium, "fifo": FifoMedium}
"""Sharing disciplines by the name a LinkSpec/CellSpec `discipline` gives."""


def outage_schedule(env: simpy.Environment, medium: Medium,
                    spans_s: list[tuple[float, float]]) -> Generator[simpy.Event, Any, None]:
    """Process that takes `medium` down and up at the scheduled times (adjacent spans merged)."""
    merged: list[tuple[float, float]] = []
    for start_s, end_s in sorted(spans_s):
        if merged and start_s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end_s))
        else:
            merged.append((start_s, end_s))
    for start_s, end_s in merged:
        if start_s > env.now:
            yield env.timeout(start_s - env.now)
        medium.go_down(end_s)
        yield env.timeout(end_s - env.now)
        medium.go_up()
