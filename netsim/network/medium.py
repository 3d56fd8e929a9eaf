"""A shared transmission medium: one wired link direction, or a cell's uplink or downlink.

Flows are bursts of bits (a message on one hop, or one TCP round of it). The medium is a fluid
server: between two arrivals/departures every flow progresses at a constant rate, so it keeps a single
timer for the next departure and re-plans at every arrival, departure, outage edge and fading block —
never per packet. Disciplines:
  fair — processor sharing: the n flows with a usable channel each get 1/n of the airtime, so flow i
         moves at peak_i / n (on a wire every peak is the line rate; in a cell it is the member's PHY
         rate: airtime fairness, as a round-robin scheduler gives);
  fifo — the flow at the head moves at its peak; the others wait in arrival order.
Outages stop every flow; a flow held longer than the transport's timeout fails with a reason.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

import simpy
from simpy.events import NORMAL

if TYPE_CHECKING:
    from netsim.network.link import Link

FINISH_TOLERANCE_S = 1e-9
"""A flow whose last bits would leave within this time of a timer counts as finished (float rounding)."""


class Flow(simpy.Event):
    """Bits crossing one medium; the event triggers when the last bit is on the wire, or on failure.

    A failed flow triggers successfully too and carries `fail_reason`: failure is an outcome the
    sender turns into `TransferFailed` after accounting the bytes, not a crash of the simulation.
    """

    __slots__ = ("bits_left", "bits_total", "delay_s", "fail_reason", "link", "outage_wait_s", "peak_bps",
                 "rate_bps", "t_blocked_s")

    def __init__(self, env: simpy.Environment, link: Link, nbits: float, delay_s: float) -> None:
        super().__init__(env)
        self.link = link
        self.delay_s = delay_s
        self.bits_total = nbits
        self.bits_left = nbits
        self.peak_bps = 0.0
        self.rate_bps = 0.0
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
        """Whole bytes that left the sender so far (a flow cut by an outage has sent part of its bits)."""
        return int((self.bits_total - max(self.bits_left, 0.0)) // 8)


class Medium:
    """Capacity shared by the flows of one or more links, with explicit arrival/departure hooks."""

    def __init__(self, env: simpy.Environment, name: str, discipline: Literal["fair", "fifo"],
                 outage_timeout_s: float, varying: bool = False) -> None:
        self.env = env
        self.name = name
        self.discipline = discipline
        self.outage_timeout_s = outage_timeout_s
        self.varying = varying
        """True when a member's peak rate changes with time (block fading): re-plan at block edges."""
        self.flows: list[Flow] = []
        """Flows present, in arrival order (FIFO serves them in this order)."""
        self.down_until_s: float | None = None
        self._fifo = discipline == "fifo"
        self._active: list[Flow] = []
        self._t_s = 0.0
        self._timer: simpy.Timeout | None = None

    # -- hooks --------------------------------------------------------------------------------------

    def transmit(self, link: Link, nbits: float, delay_s: float = 0.0) -> Flow:
        """Admit `nbits` sent over `link`; the returned flow triggers `delay_s` after the last bit left
        (pass the propagation delay to wait for arrival at the far end)."""
        env = self.env
        flow = Flow(env, link, nbits, delay_s)
        if not self.flows and self.down_until_s is None and not self.varying:
            # Idle medium, constant rate: the flow alone sets the timer (one timeout per message).
            flow.peak_bps = flow.rate_bps = link.peak_bps
            self.flows.append(flow)
            self._active = [flow]
            self._t_s = env.now
            self._arm(nbits / flow.rate_bps)
            return flow
        flow.peak_bps = link.peak_bps
        if self._fifo and self.flows and self.down_until_s is None and not self.varying:
            self.flows.append(flow)  # queued behind the head: nothing to re-plan
            return flow
        self._advance()
        self.flows.append(flow)
        if self.down_until_s is not None:
            self._block(flow)
        self._plan()
        return flow

    def go_down(self, until_s: float) -> None:
        """Outage edge: every flow stops; those that would wait beyond the timeout are set to fail."""
        self._advance()
        self.down_until_s = until_s
        for flow in self.flows:
            self._block(flow)
        self._plan()

    def go_up(self) -> None:
        now = self.env.now
        self._advance()
        self.down_until_s = None
        for flow in self.flows:
            if flow.t_blocked_s is not None:
                flow.outage_wait_s += now - flow.t_blocked_s
                flow.t_blocked_s = None
        self._plan()

    # -- planning -----------------------------------------------------------------------------------

    def _advance(self) -> None:
        """Move every active flow forward at its current rate up to now."""
        now = self.env.now
        dt_s = now - self._t_s
        if dt_s > 0.0:
            for flow in self._active:
                flow.bits_left -= flow.rate_bps * dt_s
        self._t_s = now

    def _plan(self) -> None:
        """Assign rates for the current set of flows and set the timer for the next change."""
        self._timer = None
        flows = self.flows
        if not flows or self.down_until_s is not None:
            self._active = []
            return
        now = self.env.now
        if self.varying:
            for flow in flows:
                channel = flow.link.channel
                flow.peak_bps = channel.rate_bps(now) if channel is not None else flow.link.peak_bps
        if self._fifo:
            head = flows[0]
            head.rate_bps = head.peak_bps
            active = [head]
        else:
            active = [f for f in flows if f.peak_bps > 0.0]
            share = len(active)
            for flow in active:
                flow.rate_bps = flow.peak_bps / share
        self._active = active
        dt_s = math.inf
        for flow in active:
            if flow.rate_bps > 0.0:
                dt_s = min(dt_s, flow.bits_left / flow.rate_bps)
        if self.varying:
            for flow in flows:
                channel = flow.link.channel
                if channel is not None:
                    dt_s = min(dt_s, channel.next_change_s(now) - now)
        if dt_s < math.inf:
            self._arm(dt_s)

    def _arm(self, dt_s: float) -> None:
        timer = self.env.timeout(dt_s if dt_s > 0.0 else 0.0)
        timer.callbacks.append(self._on_timer)
        self._timer = timer

    def _on_timer(self, event: simpy.Event) -> None:
        if event is not self._timer:
            return  # superseded by a later re-plan
        self._advance()
        finished = [f for f in self._active if f.bits_left <= f.rate_bps * FINISH_TOLERANCE_S]
        if finished:
            if len(finished) == len(self.flows):
                self.flows = []
            else:
                self.flows = [f for f in self.flows if f not in finished]
            for flow in finished:
                flow.bits_left = 0.0
                flow.arrive()
        self._plan()

    # -- outages ------------------------------------------------------------------------------------

    def _block(self, flow: Flow) -> None:
        now = self.env.now
        flow.t_blocked_s = now
        assert self.down_until_s is not None
        if self.down_until_s - now > self.outage_timeout_s:
            timer = self.env.timeout(self.outage_timeout_s)
            timer.callbacks.append(partial(self._expire, flow))

    def _expire(self, flow: Flow, _event: simpy.Event) -> None:
        if flow.triggered or flow.t_blocked_s is None:
            return
        now = self.env.now
        self._advance()
        self.flows.remove(flow)
        flow.outage_wait_s += now - flow.t_blocked_s
        flow.t_blocked_s = None
        link = flow.link
        flow.fail_reason = (f"outage on {link.src}->{link.dst}: down until {self.down_until_s:.6g} s, "
                            f"gave up after {self.outage_timeout_s:g} s")
        flow.succeed()
        self._plan()

    # -- inspection ---------------------------------------------------------------------------------

    def rate_in_use_bps(self, link: Link | None = None) -> float:
        """Sum of the current rates of the active flows (of one link, if given)."""
        return sum(f.rate_bps for f in self._active if link is None or f.link is link)

    def __repr__(self) -> str:
        state = f"down until {self.down_until_s:g} s" if self.down_until_s is not None else "up"
        return f"Medium({self.name!r}, {len(self.flows)} flows, {self.discipline}, {state})"


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
