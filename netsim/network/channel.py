"""The radio channel of one cell member in one direction: its peak rate as a function of simulated time.

Large-scale terms (path loss, log-normal shadowing) are fixed per member — devices do not move during
a run — and shadowing is reciprocal, so uplink and downlink share one draw. Rayleigh block fading
multiplies the received power by |h|² ~ Exp(1), redrawn independently per direction every coherence
time: blocks are i.i.d., so drawing only the blocks a transfer actually visits is statistically the same
as drawing them all, and stays deterministic for a given seed.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from netsim.network import wireless
from netsim.network.spec import CellSpec

Direction = Literal["up", "down"]


class Channel:
    """Peak rate of one member-direction; constant unless block fading is on."""

    __slots__ = ("_block", "_rate_bps", "coherence_s", "effective_bandwidth_hz", "fraction", "max_se_bps_hz",
                 "mean_rate_bps", "mean_snr_db", "min_snr_db", "rng")

    def __init__(self, mean_snr_db: float, effective_bandwidth_hz: float, fraction: float, min_snr_db: float,
                 max_se_bps_hz: float, coherence_s: float | None = None,
                 rng: np.random.Generator | None = None) -> None:
        self.mean_snr_db = mean_snr_db
        self.effective_bandwidth_hz = effective_bandwidth_hz
        """Carrier bandwidth × the airtime share of this direction (TDD), the B of the Shannon rate."""
        self.fraction = fraction
        self.min_snr_db = min_snr_db
        self.max_se_bps_hz = max_se_bps_hz
        self.coherence_s = coherence_s
        self.rng = rng
        self._block = -1
        self.mean_rate_bps = self._rate_at(mean_snr_db)
        """Rate at the mean SNR (the static rate; with fading, the figure RTT and BDP are sized from)."""
        self._rate_bps = self.mean_rate_bps

    @property
    def varying(self) -> bool:
        return self.coherence_s is not None

    def _rate_at(self, snr_db: float) -> float:
        return wireless.shannon_rate_bps(self.effective_bandwidth_hz, snr_db, self.fraction, self.min_snr_db,
                                         self.max_se_bps_hz)

    def rate_bps(self, t_s: float) -> float:
        """Peak rate at `t_s`; with fading, the block containing `t_s` (queried at non-decreasing times)."""
        if self.coherence_s is None or self.rng is None:
            return self._rate_bps
        block = self._block_of(t_s)
        if block != self._block:
            self._block = block
            gain = wireless.rayleigh_power_gain(self.rng)
            snr_db = self.mean_snr_db + 10.0 * math.log10(gain) if gain > 0.0 else -math.inf
            self._rate_bps = self._rate_at(snr_db)
        return self._rate_bps

    @property
    def last_rate_bps(self) -> float:
        """The rate of the block last visited, without drawing a new one (for display)."""
        return self._rate_bps

    def next_change_s(self, t_s: float) -> float:
        """Start of the next fading block after `t_s` (infinity for a static channel)."""
        if self.coherence_s is None:
            return math.inf
        return (self._block_of(t_s) + 1) * self.coherence_s

    def _block_of(self, t_s: float) -> int:
        """Index of the fading block holding `t_s`; a time that lands on a block edge up to float rounding
        (k·T_c computed as a sum of delays) belongs to the block starting there, so timers always advance."""
        assert self.coherence_s is not None
        return math.floor(t_s / self.coherence_s + 1e-9)

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


def cell_channels(cell: CellSpec, rng: np.random.Generator) -> dict[tuple[str, Direction], Channel | float]:
    """Channel (or fixed rate in bit/s) per (member, direction); draws shadowing, seeds fading streams."""
    out: dict[tuple[str, Direction], Channel | float] = {}
    for member, spec in cell.members.items():
        model = spec.pathloss or cell.pathloss
        shadow_db = wireless.shadowing_db(rng, model) if cell.shadowing else 0.0
        for direction in ("up", "down"):
            fixed = fixed_rate_bps(cell, member, direction)
            if fixed is not None:
                out[(member, direction)] = fixed
                continue
            fading = cell.fading == "rayleigh"
            # the rate scales with the airtime the duplexing leaves; the noise band stays the carrier's
            out[(member, direction)] = Channel(
                member_snr_db(cell, member, direction, shadow_db),
                cell.bandwidth_mhz * 1e6 * airtime_fraction(cell, direction),
                cell.shannon_fraction, cell.min_snr_db, cell.max_spectral_efficiency_bps_hz,
                coherence_s=cell.coherence_ms * 1e-3 if fading else None,
                rng=rng.spawn(1)[0] if fading else None)
    return out
