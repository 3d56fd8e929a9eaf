"""Typed event records, appended on the hot path and turned into a polars frame once at the end.

Every layer (network, hardware, policies) writes here; nothing reads it while the simulation runs, so
appending a small frozen dataclass is all a record costs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

EVENT_SCHEMA = {
    "t_s": pl.Float64,
    "node": pl.Utf8,
    "kind": pl.Utf8,
    "request_id": pl.Int64,
    "bytes": pl.Int64,
    "duration_s": pl.Float64,
    "detail": pl.Utf8,
}


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened: `t_s` is when it ended, `duration_s` how long it took.

    `node` is where it happened (a node name, or `src->dst` for a link), `kind` what it was
    (`tx`, `loss`, `retx`, `outage_wait`, `prefill`, `decode`, `request_start`, …), `bytes` the payload
    it concerns (0 when none), `detail` a short free-form note (payload kind, model name, reason).
    """

    t_s: float
    node: str
    kind: str
    request_id: int | None = None
    nbytes: int = 0
    duration_s: float = 0.0
    detail: str = ""


@dataclass
class Recorder:
    """Collects events in order of appending (which is simulated-time order within one run)."""

    events: list[Event] = field(default_factory=list)

    def event(
        self,
        t_s: float,
        node: str,
        kind: str,
        request_id: int | None = None,
        nbytes: int = 0,
        duration_s: float = 0.0,
        detail: str = "",
    ) -> None:
        self.events.append(Event(t_s, node, kind, request_id, int(nbytes), duration_s, detail))

    def frame(self) -> pl.DataFrame:
        """One column at a time, each a Series before the next is read: a fleet's millions of events
        never sit in memory a second time as per-event tuples."""
        events = self.events
        attrs = ("t_s", "node", "kind", "request_id", "nbytes", "duration_s", "detail")
        columns = [pl.Series(name, [getattr(e, attr) for e in events], dtype=dtype)
                   for (name, dtype), attr in zip(EVENT_SCHEMA.items(), attrs, strict=True)]
        return pl.DataFrame(columns)
