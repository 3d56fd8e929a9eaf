"""The radio channel of one cell member in one direction: its peak rate as a function of simulated time.

Large-scale terms (path loss, log-normal shadowing) are fixed per member — devices do not move during
a run — and shadowing is reciprocal, so uplink and downlink share one draw. Rayleigh block fading
multiplies the received power by |h|² ~ Exp(1), redrawn independently per direction every coherence
time.

Common random numbers: every draw is addressed by what it is for — shadowing by (cell, member), the
fading of block k by (cell, member, direction, k), a packet loss by (link, request, message, hop) — never
by how many draws came before. So a member's channel at time t, or a message's losses, are the same
whatever other traffic ran first, and two policies on one scenario and seed see the same channel
(the variance-reduction technique of common random numbers, Law, *Simulation Modeling and Analysis*,
5th ed., §11.2). `KeyedStreams` gives such addressed streams cheaply.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

from netsim.network import wireless
from netsim.network.spec import CellSpec

Direction = Literal["up", "down"]
DIRECTION_CODE: dict[Direction, int] = {"up": 0, "down": 1}

MASK64 = (1 << 64) - 1
FADING_CHUNK_BLOCKS = 256
"""Fading blocks drawn per generator positioning: one vectorised draw covers 256 coherence times
(11 s at the default 43 ms), so a block costs ~0.02 µs instead of a generator seeded per block (~17 µs,
benchmarks/bench_network.py). Block k is value k mod 256 of the stream of chunk k // 256: still a pure
function of (cell, member, direction, k)."""


def stable_hash(name: str) -> int:
    """A 64-bit hash of `name` that is the same in every process and on every machine.

    Python's `hash()` of a str is salted per process (PYTHONHASHSEED), so it cannot key random streams.
    64 bits rather than zlib.crc32's 32: among 10⁴ device names a 32-bit hash collides with probability
    ≈ n²/2³³ ≈ 1% (two devices would then share a fading stream), a 64-bit one ≈ 3·10⁻¹².
    """
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")


def block_index(t_s: float, coherence_s: float) -> int:
    """Index of the fading block holding `t_s`; a time that lands on a block edge up to float rounding
    (k·T_c computed as a sum of delays) belongs to the block starting there, so timers always advance.

    Far out (k ≈ 1e8) the 1e-9 nudge is below the float spacing of t/T_c, so an edge can still land
    one block early; the check with the very product `next_change_s` uses, (k+1)·T_c, moves it on, so
    the next change is always strictly later than `t_s`."""
    k = math.floor(t_s / coherence_s + 1e-9)
    return k + 1 if (k + 1) * coherence_s <= t_s else k


class KeyedStreams:
    """Random streams addressed by identity (three 64-bit words) instead of drawn in sequence.

    Philox4x64-10 is counter-based (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11):
    its output for counter c is a keyed bijection of c, so every counter value starts an independent
    stream with no state carried between draws. One key per purpose (fading, shadowing, loss); the
    identity of a draw goes in the three upper counter words, and the lowest word counts the draws within
    it (2⁶⁴ per identity, never reached). Re-positioning one bit generator costs ~1 µs, against 15–20 µs
    to seed a fresh `default_rng` per identity through SeedSequence.
    """

    __slots__ = ("_bitgen", "_counter", "_gen", "_key", "_state")

    def __init__(self, key: Sequence[int] | np.ndarray) -> None:
        self._key = np.asarray(key, dtype=np.uint64).reshape(2)
        self._bitgen = np.random.Philox(key=self._key)
        self._gen = np.random.Generator(self._bitgen)
        self._counter = np.zeros(4, dtype=np.uint64)
        # the state a re-positioning installs: counter (0, a, b, c), output buffer empty; the setter copies
        # it into the bit generator, so one dict and one array serve every call
        self._state = {"bit_generator": "Philox", "state": {"counter": self._counter, "key": self._key},
                       "buffer": np.zeros(4, dtype=np.uint64), "buffer_pos": 4, "has_uint32": 0,
                       "uinteger": 0}

    def at(self, a: int, b: int, c: int) -> np.random.Generator:
        """The generator at the start of stream (a, b, c) — the same numbers as a fresh
        `Generator(Philox(key, counter=[0, a, b, c]))`. It is shared: draw from it before calling `at`
        again."""
        counter = self._counter
        counter[0] = 0
        counter[1] = a & MASK64
        counter[2] = b & MASK64
        counter[3] = c & MASK64
        self._bitgen.state = self._state
        return self._gen

    def __repr__(self) -> str:
        return f"KeyedStreams(Philox key {int(self._key[0]):016x}{int(self._key[1]):016x})"


class Channel:
    """Peak rate of one member-direction; constant unless block fading is on.

    With fading, the rate of block k is a pure function of (stream, k): blocks are drawn
    `FADING_CHUNK_BLOCKS` at a time from the stream `streams.at(cell, member, chunk·2 + direction)` and
    cached, so queries may come in any order and never depend on other channels' draws.
    """

    __slots__ = ("_block", "_chunk", "_chunk_rates", "_rate_bps", "_stream", "_streams", "chunks_drawn",
                 "coherence_s", "effective_bandwidth_hz", "fraction", "max_se_bps_hz", "mean_rate_bps",
                 "mean_snr_db", "min_snr_db")

    def __init__(self, mean_snr_db: float, effective_bandwidth_hz: float, fraction: float, min_snr_db: float,
                 max_se_bps_hz: float, coherence_s: float | None = None, streams: KeyedStreams | None = None,
                 stream: tuple[int, int, int] = (0, 0, 0)) -> None:
        if coherence_s is not None and streams is None:
            raise ValueError(f"a fading channel needs random streams (mean SNR {mean_snr_db:.1f} dB, "
                             f"coherence {coherence_s * 1e3:g} ms)")
        self.mean_snr_db = mean_snr_db
        self.effective_bandwidth_hz = effective_bandwidth_hz
        """Carrier bandwidth × the airtime share of this direction (TDD), the B of the Shannon rate."""
        self.fraction = fraction
        self.min_snr_db = min_snr_db
        self.max_se_bps_hz = max_se_bps_hz
        self.coherence_s = coherence_s
        self._streams = streams
        self._stream = stream
        """(cell hash, member hash, direction code): the identity of this channel's fading draws."""
        self._block = -1
        self._chunk = -1
        self._chunk_rates: list[float] = []
        self.chunks_drawn = 0
        """How many chunks of blocks were drawn (inspection: displaying a channel must draw none)."""
        self.mean_rate_bps = wireless.shannon_rate_bps(effective_bandwidth_hz, mean_snr_db, fraction,
                                                       min_snr_db, max_se_bps_hz)
        """Rate at the mean SNR (the static rate; with fading, the figure RTT and BDP are sized from)."""
        self._rate_bps = self.mean_rate_bps

    @property
    def varying(self) -> bool:
        return self.coherence_s is not None

    def rate_bps(self, t_s: float) -> float:
        """Peak rate at `t_s`; with fading, the rate of the block containing `t_s`."""
        if self.coherence_s is None:
            return self._rate_bps
        block = block_index(t_s, self.coherence_s)
        if block != self._block:
            chunk, i = divmod(block, FADING_CHUNK_BLOCKS)
            if chunk != self._chunk:
                self._chunk_rates = self._draw_chunk(chunk)
                self._chunk = chunk
            self._block = block
            self._rate_bps = self._chunk_rates[i]
        return self._rate_bps

    def _draw_chunk(self, chunk: int) -> list[float]:
        """Rates of blocks [chunk·K, (chunk+1)·K): |h|² ~ Exp(1) per block, one vectorised draw."""
        assert self._streams is not None
        cell, member, direction = self._stream
        gains = self._streams.at(cell, member, (chunk << 1) | direction).exponential(size=FADING_CHUNK_BLOCKS)
        with np.errstate(divide="ignore"):  # |h|² = 0 (probability 0, but representable): SNR −∞, rate 0
            snr_db = self.mean_snr_db + 10.0 * np.log10(gains)
        self.chunks_drawn += 1
        return wireless.shannon_rates_bps(self.effective_bandwidth_hz, snr_db, self.fraction, self.min_snr_db,
                                          self.max_se_bps_hz).tolist()

    @property
    def last_rate_bps(self) -> float:
        """The rate of the block last visited, without drawing (for display)."""
        return self._rate_bps

    def next_change_s(self, t_s: float) -> float:
        """Start of the next fading block after `t_s` (infinity for a static channel)."""
        if self.coherence_s is None:
            return math.inf
        return (block_index(t_s, self.coherence_s) + 1) * self.coherence_s

    def __repr__(self) -> str:
        fading = f", Rayleigh blocks of {self.coherence_s * 1e3:g} ms" if self.coherence_s else ""
        return f"Channel(mean SNR {self.mean_snr_db:.1f} dB, {self._rate_bps / 1e6:.1f} Mbit/s{fading})"


def member_snr_db(cell: CellSpec, member: str, direction: Direction, shadow_db: float = 0.0) -> float:
    """Mean SNR of `member` in `direction`: transmit power + gains − path loss − shadowing − noise."""
    spec = cell.members[member]
    model = spec.pathloss or cell.pathloss
    h_ut_m = spec.h_ut_m or cell.h_ut_m
    d3d_m = wireless.distance_3d_m(spec.distance_m, cell.h_bs_m, h_ut_m)
    loss_db = wireless.pathloss_db(model, cell.carrier_ghz, d3d_m, cell.h_bs_m, h_ut_m) + shadow_db
    bandwidth_hz = cell.bandwidth_mhz * 1e6
    gains_db = cell.ue_antenna_gain_dbi + cell.ap_antenna_gain_dbi
    if direction == "up":
        tx_dbm = spec.ue_tx_power_dbm if spec.ue_tx_power_dbm is not None else cell.ue_tx_power_dbm
        noise_dbm = wireless.noise_dbm(bandwidth_hz, cell.ap_noise_figure_db)
    else:
        tx_dbm = cell.ap_tx_power_dbm
        noise_dbm = wireless.noise_dbm(bandwidth_hz, cell.ue_noise_figure_db)
    return wireless.snr_db(tx_dbm, loss_db, noise_dbm, gains_db)


def airtime_fraction(cell: CellSpec, direction: Direction) -> float:
    """Share of time the carrier serves `direction`: TDD splits the slots, FDD has a carrier per direction,
    and a shared medium (Wi-Fi) gives each direction the whole channel to contend for."""
    if cell.duplex_mode != "tdd":
        return 1.0
    return cell.tdd_uplink_fraction if direction == "up" else 1.0 - cell.tdd_uplink_fraction


def fixed_rate_bps(cell: CellSpec, member: str, direction: Direction) -> float | None:
    """The fixed rate that replaces the PHY for this member-direction, if the scenario sets one."""
    spec = cell.members[member]
    mbps = ((spec.uplink_mbps or cell.uplink_mbps) if direction == "up"
            else (spec.downlink_mbps or cell.downlink_mbps))
    return None if mbps is None else mbps * 1e6


def nominal_rate_bps(cell: CellSpec, member: str, direction: Direction) -> float:
    """Peak rate of the median link budget (no shadowing, no fading), or the fixed rate."""
    fixed = fixed_rate_bps(cell, member, direction)
    if fixed is not None:
        return fixed
    return wireless.shannon_rate_bps(cell.bandwidth_mhz * 1e6 * airtime_fraction(cell, direction),
                                     member_snr_db(cell, member, direction), cell.shannon_fraction,
                                     cell.min_snr_db, cell.max_spectral_efficiency_bps_hz)


def cell_channels(cell: CellSpec, fading: KeyedStreams, shadowing: KeyedStreams
                  ) -> dict[tuple[str, Direction], Channel | float]:
    """Channel (or fixed rate in bit/s) per (member, direction).

    Shadowing is drawn from the stream keyed (cell, member), fading blocks from (cell, member, direction,
    block): adding, removing or reordering members changes no other member's channel.
    """
    out: dict[tuple[str, Direction], Channel | float] = {}
    cell_key = stable_hash(cell.name)
    for member, spec in cell.members.items():
        member_key = stable_hash(member)
        model = spec.pathloss or cell.pathloss
        shadow_db = (wireless.shadowing_db(shadowing.at(cell_key, member_key, 0), model) if cell.shadowing
                     else 0.0)
        for direction in ("up", "down"):
            fixed = fixed_rate_bps(cell, member, direction)
            if fixed is not None:
                out[(member, direction)] = fixed
                continue
            faded = cell.fading == "rayleigh"
            # the rate scales with the airtime the duplexing leaves; the noise band stays the carrier's
            out[(member, direction)] = Channel(
                member_snr_db(cell, member, direction, shadow_db),
                cell.bandwidth_mhz * 1e6 * airtime_fraction(cell, direction),
                cell.shannon_fraction, cell.min_snr_db, cell.max_spectral_efficiency_bps_hz,
                coherence_s=cell.coherence_ms * 1e-3 if faded else None,
                streams=fading if faded else None,
                stream=(cell_key, member_key, DIRECTION_CODE[direction]))
    return out
