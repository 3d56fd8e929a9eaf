"""Radio link budget as pure functions: path loss, shadowing, fading, noise, SNR → rate.

Path loss follows 3GPP TR 38.901 Table 7.4.1-1 (UMa, UMi street canyon and RMa, LOS and NLOS) with the
effective environment height h_E = 1 m and the RMa defaults h = 5 m, W = 20 m, as ns-3's
ThreeGpp*PropagationLossModel does with a fixed channel condition. The rate is the attenuated,
truncated Shannon curve of 3GPP TR 36.942 Annex A.2:
    rate = 0                                  if SNR < SNR_min
         = B · min(α · log2(1 + SNR), SE_max) otherwise.
Frequencies are in GHz and distances in metres, as in the 38.901 formulas.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import MappingProxyType

import numpy as np

SPEED_OF_LIGHT_M_S = 3.0e8
"""TR 38.901 Table 7.4.1-1 note 1 uses c = 3.0·10^8 m/s in the breakpoint distance."""

H_E_M = 1.0
"""Effective environment height h_E (TR 38.901 Table 7.4.1-1 notes 1 and 3; fixed at 1 m as in ns-3)."""

THERMAL_NOISE_DBM_HZ = 10.0 * math.log10(1.380649e-23 * 290.0 * 1e3)
"""kT at T0 = 290 K in dBm/Hz (≈ −173.98)."""


def free_space_db(fc_ghz: float, d3d_m: float) -> float:
    """Friis: FSPL = 20·log10(4π·d·f/c) = 32.45 + 20·log10(fc[GHz]) + 20·log10(d[m])."""
    return 20.0 * math.log10(4.0 * math.pi * d3d_m * fc_ghz * 1e9 / SPEED_OF_LIGHT_M_S)


def breakpoint_distance_m(fc_ghz: float, h_bs_m: float, h_ut_m: float) -> float:
    """d'_BP = 4·h'_BS·h'_UT·f_c/c with h' = h − h_E (TR 38.901 Table 7.4.1-1 note 1)."""
    return 4.0 * (h_bs_m - H_E_M) * (h_ut_m - H_E_M) * fc_ghz * 1e9 / SPEED_OF_LIGHT_M_S


def _d2d_m(d3d_m: float, h_bs_m: float, h_ut_m: float) -> float:
    return math.sqrt(max(d3d_m**2 - (h_bs_m - h_ut_m) ** 2, 0.0))


def uma_los_db(fc_ghz: float, d3d_m: float, h_bs_m: float, h_ut_m: float) -> float:
    """UMa LOS: PL1 up to the breakpoint, PL2 beyond it (the breakpoint is compared with d_2D)."""
    d_bp = breakpoint_distance_m(fc_ghz, h_bs_m, h_ut_m)
    if _d2d_m(d3d_m, h_bs_m, h_ut_m) <= d_bp:
        return 28.0 + 22.0 * math.log10(d3d_m) + 20.0 * math.log10(fc_ghz)
    return (28.0 + 40.0 * math.log10(d3d_m) + 20.0 * math.log10(fc_ghz)
            - 9.0 * math.log10(d_bp**2 + (h_bs_m - h_ut_m) ** 2))


def uma_nlos_db(fc_ghz: float, d3d_m: float, h_bs_m: float, h_ut_m: float) -> float:
    """UMa NLOS: max(PL_LOS, PL'_NLOS), PL'_NLOS = 13.54 + 39.08·log10 d3D + 20·log10 fc − 0.6(h_UT − 1.5)."""
    nlos = 13.54 + 39.08 * math.log10(d3d_m) + 20.0 * math.log10(fc_ghz) - 0.6 * (h_ut_m - 1.5)
    return max(uma_los_db(fc_ghz, d3d_m, h_bs_m, h_ut_m), nlos)


def umi_los_db(fc_ghz: float, d3d_m: float, h_bs_m: float, h_ut_m: float) -> float:
    """UMi street canyon LOS: 32.4 + 21·log10 d3D + 20·log10 fc, with a 40·log10 slope past the breakpoint."""
    d_bp = breakpoint_distance_m(fc_ghz, h_bs_m, h_ut_m)
    if _d2d_m(d3d_m, h_bs_m, h_ut_m) <= d_bp:
        return 32.4 + 21.0 * math.log10(d3d_m) + 20.0 * math.log10(fc_ghz)
    return (32.4 + 40.0 * math.log10(d3d_m) + 20.0 * math.log10(fc_ghz)
            - 9.5 * math.log10(d_bp**2 + (h_bs_m - h_ut_m) ** 2))


def umi_nlos_db(fc_ghz: float, d3d_m: float, h_bs_m: float, h_ut_m: float) -> float:
    """UMi NLOS: max(PL_LOS, 35.3·log10 d3D + 22.4 + 21.3·log10 fc − 0.3(h_UT − 1.5))."""
    nlos = 35.3 * math.log10(d3d_m) + 22.4 + 21.3 * math.log10(fc_ghz) - 0.3 * (h_ut_m - 1.5)
    return max(umi_los_db(fc_ghz, d3d_m, h_bs_m, h_ut_m), nlos)


RMA_BUILDING_HEIGHT_M = 5.0
"""Average building height h of the RMa formulas (TR 38.901 Table 7.4.1-1 default, valid 5–50 m)."""
RMA_STREET_WIDTH_M = 20.0
"""Average street width W of the RMa NLOS formula (TR 38.901 Table 7.4.1-1 default, valid 5–50 m)."""


def rma_breakpoint_distance_m(fc_ghz: float, h_bs_m: float, h_ut_m: float) -> float:
    """RMa d_BP = 2π·h_BS·h_UT·f_c/c, with the actual antenna heights (TR 38.901 Table 7.4.1-1 note 5)."""
    return 2.0 * math.pi * h_bs_m * h_ut_m * fc_ghz * 1e9 / SPEED_OF_LIGHT_M_S


def _rma_pl1_db(fc_ghz: float, d3d_m: float) -> float:
    h = RMA_BUILDING_HEIGHT_M
    return (20.0 * math.log10(40.0 * math.pi * d3d_m * fc_ghz / 3.0)
            + min(0.03 * h**1.72, 10.0) * math.log10(d3d_m) - min(0.044 * h**1.72, 14.77)
            + 0.002 * math.log10(h) * d3d_m)


def rma_los_db(fc_ghz: float, d3d_m: float, h_bs_m: float, h_ut_m: float) -> float:
    """RMa LOS: PL1 up to d_BP, then PL2 = PL1(d_BP) + 40·log10(d3D/d_BP)."""
    d_bp = rma_breakpoint_distance_m(fc_ghz, h_bs_m, h_ut_m)
    if _d2d_m(d3d_m, h_bs_m, h_ut_m) <= d_bp:
        return _rma_pl1_db(fc_ghz, d3d_m)
    return _rma_pl1_db(fc_ghz, d_bp) + 40.0 * math.log10(d3d_m / d_bp)


def rma_nlos_db(fc_ghz: float, d3d_m: float, h_bs_m: float, h_ut_m: float) -> float:
    """RMa NLOS: max(PL_LOS, PL'_NLOS) with PL'_NLOS = 161.04 − 7.1·log10 W + 7.5·log10 h
    − (24.37 − 3.7(h/h_BS)²)·log10 h_BS + (43.42 − 3.1·log10 h_BS)(log10 d3D − 3) + 20·log10 fc
    − (3.2(log10(11.75·h_UT))² − 4.97)."""
    h, w = RMA_BUILDING_HEIGHT_M, RMA_STREET_WIDTH_M
    nlos = (161.04 - 7.1 * math.log10(w) + 7.5 * math.log10(h)
            - (24.37 - 3.7 * (h / h_bs_m) ** 2) * math.log10(h_bs_m)
            + (43.42 - 3.1 * math.log10(h_bs_m)) * (math.log10(d3d_m) - 3.0)
            + 20.0 * math.log10(fc_ghz) - (3.2 * math.log10(11.75 * h_ut_m) ** 2 - 4.97))
    return max(rma_los_db(fc_ghz, d3d_m, h_bs_m, h_ut_m), nlos)


PATHLOSS_MODELS: MappingProxyType[str, Callable[[float, float, float, float], float]] = MappingProxyType({
    "free_space": lambda fc_ghz, d3d_m, _h_bs, _h_ut: free_space_db(fc_ghz, d3d_m),
    "uma_los": uma_los_db,
    "uma_nlos": uma_nlos_db,
    "umi_los": umi_los_db,
    "umi_nlos": umi_nlos_db,
    "rma_los": rma_los_db,
    "rma_nlos": rma_nlos_db,
})
"""Registry of path-loss models by scenario name; each takes (fc_ghz, d3d_m, h_bs_m, h_ut_m)."""

SHADOWING_STD_DB: MappingProxyType[str, float] = MappingProxyType({
    "free_space": 0.0, "uma_los": 4.0, "uma_nlos": 6.0, "umi_los": 4.0, "umi_nlos": 7.82,
    "rma_los": 4.0, "rma_nlos": 8.0,
})
"""σ_SF of the log-normal shadow fading per model (TR 38.901 Table 7.4.1-1; RMa LOS uses its PL1 value,
6 dB beyond the breakpoint in the table)."""


def pathloss_db(model: str, fc_ghz: float, d3d_m: float, h_bs_m: float, h_ut_m: float) -> float:
    """Median path loss in dB of the named model (no shadowing)."""
    return PATHLOSS_MODELS[model](fc_ghz, d3d_m, h_bs_m, h_ut_m)


def distance_3d_m(d2d_m: float, h_bs_m: float, h_ut_m: float) -> float:
    return math.hypot(d2d_m, h_bs_m - h_ut_m)


def shadowing_db(rng: np.random.Generator, model: str) -> float:
    """One log-normal shadowing draw: a zero-mean Gaussian in dB with the model's σ_SF."""
    std_db = SHADOWING_STD_DB[model]
    return float(rng.normal(0.0, std_db)) if std_db > 0 else 0.0


def rayleigh_power_gain(rng: np.random.Generator) -> float:
    """|h|² of a unit-power Rayleigh channel: exponential with mean 1 (so the median budget is unchanged)."""
    return float(rng.exponential(1.0))


def noise_dbm(bandwidth_hz: float, noise_figure_db: float) -> float:
    """Thermal noise over the band plus the receiver noise figure: kT·B·F in dBm."""
    return THERMAL_NOISE_DBM_HZ + 10.0 * math.log10(bandwidth_hz) + noise_figure_db


def snr_db(tx_power_dbm: float, pathloss_db: float, noise_dbm: float, gains_db: float = 0.0) -> float:
    """Link budget: received power − noise, where received = P_tx + antenna gains − path loss."""
    return tx_power_dbm + gains_db - pathloss_db - noise_dbm


def shannon_rate_bps(bandwidth_hz: float, snr_db: float, fraction: float, min_snr_db: float,
                     max_spectral_efficiency_bps_hz: float) -> float:
    """Attenuated, truncated Shannon curve (TR 36.942 Annex A.2); 0 below the SNR floor."""
    if snr_db < min_snr_db:
        return 0.0
    efficiency = fraction * math.log2(1.0 + 10.0 ** (snr_db / 10.0))
    return bandwidth_hz * min(efficiency, max_spectral_efficiency_bps_hz)


def shannon_rates_bps(bandwidth_hz: float, snr_db: np.ndarray, fraction: float, min_snr_db: float,
                      max_spectral_efficiency_bps_hz: float) -> np.ndarray:
    """`shannon_rate_bps` over an array of SNRs (one per fading block), so a chunk of blocks costs one
    numpy pass rather than a Python call each."""
    efficiency = fraction * np.log2(1.0 + 10.0 ** (snr_db / 10.0))
    capped = np.minimum(efficiency, max_spectral_efficiency_bps_hz)
    return np.where(snr_db < min_snr_db, 0.0, bandwidth_hz * capped)
