"""What a message transfer ends with: a `Delivery`, or a `TransferFailed` carrying the reason."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Delivery:
    """A message that arrived: when, over which hops, and what it cost on the wire.

    `bytes_on_wire` sums every hop's packets — payload, one header per packet and retransmitted
    packets — so it is what radios and links actually carried; `nbytes` is the payload alone.
    """

    src: str
    dst: str
    nbytes: int
    t_start_s: float
    t_end_s: float
    hops: tuple[str, ...]
    hop_nbytes_on_wire: tuple[int, ...]
    retransmissions: int
    handshake_s: float = 0.0
    outage_wait_s: float = 0.0

    @property
    def duration_s(self) -> float:
        return self.t_end_s - self.t_start_s

    @property
    def bytes_on_wire(self) -> int:
        return sum(self.hop_nbytes_on_wire)


class TransferFailed(Exception):
    """A message that could not be delivered; `str(exc)` is the one-line reason a request fails with."""

    def __init__(self, reason: str, *, src: str = "", dst: str = "", hop: str = "", t_s: float = 0.0,
                 nbytes: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.src = src
        self.dst = dst
        self.hop = hop
        self.t_s = t_s
        self.nbytes = nbytes
