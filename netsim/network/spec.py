"""Configuration of the network: wired links, wireless cells and the transport, validated once at load.

Field names carry their unit (`rate_mbps`, `delay_ms`, `distance_m`) and YAML holds plain numbers, so a
scenario reads like an ns-3 script. Inner code converts to SI once (`rate_bps`, `delay_s`) and trusts it.
Defaults of the cell describe a 5G NR n78 macro cell; each cites where the number comes from.

Every number is finite and inside a documented physical range (the `description` of each field, which
`netsim validate --schema` prints). The ranges are wide enough for any real link or radio and narrow
enough that the simulation terminates: an infinite or 1e308 ms delay, a 1e-9 Mbit/s link or a 1e-9 ms
fading block would each leave the event loop stepping through time it can never finish.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

RATE_MIN_MBPS = 1e-3
"""1 kbit/s, the slowest link worth modelling (NB-IoT and LoRa uplinks run at 0.3–60 kbit/s): one
1500-byte packet then takes 12 s. Slower rates turn a token into hours of simulated time."""
RATE_MAX_MBPS = 1e7
"""10 Tbit/s, above any single fibre or interconnect in service (800G Ethernet, NVLink 4 at 7.2 Tbit/s)."""
DELAY_MAX_MS = 1e5
"""100 s one way: a geostationary hop is ~280 ms, so this leaves room for any terrestrial or satellite
path plus queueing, while keeping simulated clocks far from where float64 time steps get coarse."""
TIME_MAX_S = 1e7
"""Latest simulated instant a scenario may name (≈ 116 days). Beyond 2²⁴ s ≈ 1.7e7 s a float64 time
has steps coarser than the 1 ns tolerance the media use to decide that a flow has finished."""
DISTANCE_MAX_M = 1e5
"""100 km, the LTE/NR maximum cell range (timing advance of extended-range cells); the 3GPP path-loss
models themselves stop at 5–10 km (checked separately, per model)."""
HEIGHT_MIN_M, HEIGHT_MAX_M = 0.5, 1000.0
"""Antenna heights: a device on a table or in a pocket (0.5 m) to a mast on a hill or an aerial
platform (1 km); TR 38.901 itself covers 1–22.5 m for devices and 10–150 m for base stations."""
TX_POWER_MIN_DBM, TX_POWER_MAX_DBM = -50.0, 80.0
"""−50 dBm (10 nW, an ambient backscatter tag) to 80 dBm (100 kW, a broadcast transmitter); a phone
sends 23 dBm (TS 38.101-1 class 3) and a macro base station 46–49 dBm."""
GAIN_MIN_DBI, GAIN_MAX_DBI = -20.0, 50.0
"""Antenna gains: a detuned or body-shadowed handset antenna (−20 dBi) to a large dish (50 dBi)."""
NOISE_FIGURE_MAX_DB = 30.0
"""Receivers range from ~1 dB (base-station LNA) to ~15 dB (cheap IoT front ends); 30 dB leaves room."""
COHERENCE_MIN_MS = 0.1
"""Shortest fading block, 0.1 ms. Clarke's T_c = 0.423/f_D gives 0.26 ms at 500 km/h on 3.5 GHz and
0.14 ms at 120 km/h on 28 GHz, and NR's shortest common slot is 0.125 ms (120 kHz SCS): the scheduler
cannot follow a faster channel. Every block edge is an event of the medium, so a 1e-9 ms block would
make a second of simulated time cost 10¹² events."""

PathLossName = Literal["free_space", "uma_los", "uma_nlos", "umi_los", "umi_nlos", "rma_los", "rma_nlos"]
Discipline = Literal["fair", "fifo"]

# TR 38.901 Table 7.4.1-1 validity ranges: d2D (m) per model, and h_UT (m) for UMa/UMi (RMa: 1–10 m).
_D2D_RANGE_M = {"uma_los": (10.0, 5000.0), "uma_nlos": (10.0, 5000.0), "umi_los": (10.0, 5000.0),
                "umi_nlos": (10.0, 5000.0), "rma_los": (10.0, 10000.0), "rma_nlos": (10.0, 5000.0)}
_H_UT_RANGE_M = {"uma": (1.5, 22.5), "umi": (1.5, 22.5), "rma": (1.0, 10.0)}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class OutageSpec(_Strict):
    """The medium carries nothing from `start_s` to `end_s` (a cut cable, a handover gap, a blocked beam)."""

    start_s: float = Field(ge=0, le=TIME_MAX_S, description="simulated time the outage begins, s: 0 to 1e7")
    end_s: float = Field(
        ge=0, le=TIME_MAX_S, description="simulated time the outage ends, s: after start_s, at most 1e7")

    @model_validator(mode="after")
    def _ordered(self) -> OutageSpec:
        if not self.end_s > self.start_s:
            raise ValueError(f"end_s ({self.end_s}) must be greater than start_s ({self.start_s})")
        return self


def _check_outages(outages: list[OutageSpec]) -> None:
    spans = sorted((o.start_s, o.end_s) for o in outages)
    for (s0, e0), (s1, e1) in pairwise(spans):
        if s1 < e0:
            raise ValueError(f"outages [{s0}, {e0}] s and [{s1}, {e1}] s overlap")


class LinkSpec(_Strict):
    """A wired (or fixed-rate) point-to-point link; `duplex` adds the reverse direction, same parameters."""

    src: str = Field(description="node the link starts at")
    dst: str = Field(description="node the link ends at")
    rate_mbps: float = Field(
        ge=RATE_MIN_MBPS, le=RATE_MAX_MBPS,
        description="line rate in Mbit/s (10^6 bit/s), before header overhead: 0.001 (1 kbit/s) to 1e7 "
                    "(10 Tbit/s)")
    delay_ms: float = Field(
        0.0, ge=0, le=DELAY_MAX_MS, description="one-way propagation delay, ms: 0 to 1e5 (100 s)")
    jitter: float = Field(
        0.0, ge=0, lt=1,
        description="delay jitter: each message's delay on this hop is delay_ms × (1 + jitter × U[−1, 1]), "
                    "drawn per message and hop; 0 (none) to below 1 (0.12: ±12%)")
    duplex: bool = Field(True, description="also create dst->src with the same parameters (full duplex)")
    discipline: Discipline = Field(
        "fair", description="`fair`: processor sharing among concurrent flows; `fifo`: one message at a time")
    loss: float = Field(
        0.0, ge=0, lt=1, description="per-packet loss probability (Bernoulli), retransmitted: 0 to below 1")
    mtu_bytes: int = Field(
        1500, ge=68, le=65535,
        description="largest packet on the wire, headers included, bytes: 68 (IPv4 minimum, RFC 791) to "
                    "65535 (IPv4 maximum)")
    header_bytes: int = Field(
        52, ge=0, le=1024,
        description="header bytes per packet, 0 to 1024, below mtu_bytes; default IPv4 20 + TCP 20 + the "
                    "timestamps option 12 (on by default in Linux, RFC 7323), no link layer: add its framing "
                    "to header_bytes and mtu_bytes to count it (docs/network.md)")
    outages: list[OutageSpec] = Field(default_factory=list, description="intervals when the link is down")

    @model_validator(mode="after")
    def _consistent(self) -> LinkSpec:
        if self.src == self.dst:
            raise ValueError(f"a link needs two different ends, got {self.src!r} twice")
        if self.mtu_bytes <= self.header_bytes:
            raise ValueError(f"mtu_bytes ({self.mtu_bytes}) must exceed header_bytes ({self.header_bytes})")
        _check_outages(self.outages)
        return self


class MemberSpec(_Strict):
    """A device attached to a cell; the optional fields override the cell's value for this device only.

    A bare number in YAML is read as the distance: `members: {phone1: 120}`.
    """

    distance_m: float = Field(
        gt=0, le=DISTANCE_MAX_M,
        description="ground (2D) distance from the base station/AP, metres: above 0 to 1e5 (100 km)")
    h_ut_m: float | None = Field(
        None, ge=HEIGHT_MIN_M, le=HEIGHT_MAX_M,
        description="device antenna height, m: 0.5 to 1000 (cell default)")
    pathloss: PathLossName | None = Field(None, description="path-loss model for this device (cell default)")
    ue_tx_power_dbm: float | None = Field(
        None, ge=TX_POWER_MIN_DBM, le=TX_POWER_MAX_DBM,
        description="device transmit power, dBm: -50 to 80 (cell default)")
    uplink_mbps: float | None = Field(
        None, ge=RATE_MIN_MBPS, le=RATE_MAX_MBPS,
        description="fixed uplink rate, Mbit/s, replaces the PHY rate: 0.001 to 1e7")
    downlink_mbps: float | None = Field(
        None, ge=RATE_MIN_MBPS, le=RATE_MAX_MBPS,
        description="fixed downlink rate, Mbit/s, replaces the PHY rate: 0.001 to 1e7")

    @model_validator(mode="before")
    @classmethod
    def _distance_shorthand(cls, value: object) -> object:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return {"distance_m": value}
        return value


class CellSpec(_Strict):
    """A wireless cell or access point: members share its uplink and its downlink (airtime fairness).

    Each member's peak rate comes from its link budget — transmit power − path loss (− shadowing, + fading)
    against thermal noise — through an attenuated, capped Shannon curve; `uplink_mbps`/`downlink_mbps`
    replace the PHY with fixed rates for bandwidth sweeps.
    """

    name: str = Field(description="cell name, used in event logs (`cell:up`, `cell:down`)")
    ap: str = Field(description="the node that is the base station / access point")
    members: dict[str, MemberSpec] = Field(min_length=1, description="device node → its placement")
    carrier_ghz: float = Field(
        3.5, ge=0.4, le=100.0,
        description="carrier frequency, GHz: 0.4 (LTE/NR 450 MHz bands) to 100 (the top of TR 38.901's "
                    "0.5–100 GHz validity); default NR band n78, 3.3–3.8 GHz")
    bandwidth_mhz: float = Field(
        100.0, ge=0.1, le=2000.0,
        description="channel bandwidth, MHz: 0.1 (below an NB-IoT carrier, 0.18) to 2000 (NR FR2-2 maximum, "
                    "TS 38.101-2); default the n78 maximum, TS 38.101-1 Table 5.3.5-1")
    ue_tx_power_dbm: float = Field(
        23.0, ge=TX_POWER_MIN_DBM, le=TX_POWER_MAX_DBM,
        description="device transmit power, dBm: -50 to 80 (default class 3, TS 38.101-1)")
    ap_tx_power_dbm: float = Field(
        46.0, ge=TX_POWER_MIN_DBM, le=TX_POWER_MAX_DBM,
        description="base-station transmit power, dBm: -50 to 80 (default macro BS, TR 36.814 Table "
                    "A.2.1.1-2)")
    ue_noise_figure_db: float = Field(
        9.0, ge=0, le=NOISE_FIGURE_MAX_DB,
        description="device receiver noise figure, dB: 0 to 30 (TR 38.802)")
    ap_noise_figure_db: float = Field(
        5.0, ge=0, le=NOISE_FIGURE_MAX_DB, description="base-station noise figure, dB: 0 to 30 (TR 38.802)")
    ue_antenna_gain_dbi: float = Field(
        0.0, ge=GAIN_MIN_DBI, le=GAIN_MAX_DBI, description="device antenna gain, dBi: -20 to 50")
    ap_antenna_gain_dbi: float = Field(
        8.0, ge=GAIN_MIN_DBI, le=GAIN_MAX_DBI,
        description="base-station antenna gain, dBi: -20 to 50 (default element gain G_E,max, TR 38.901 "
                    "Table 7.3-1)")
    duplex_mode: Literal["tdd", "fdd", "shared"] = Field(
        "tdd", description="`tdd`: fixed UL/DL slot split of one carrier (n78); `fdd`: a carrier per "
        "direction; `shared`: both directions contend for one medium (Wi-Fi)")
    tdd_uplink_fraction: float = Field(
        0.2, gt=0, lt=1, description="share of TDD slots that carry uplink (pattern DDDSU: 1 of 5)")
    pathloss: PathLossName = Field("uma_nlos", description="path-loss model (TR 38.901 Table 7.4.1-1)")
    h_bs_m: float = Field(
        25.0, ge=HEIGHT_MIN_M, le=HEIGHT_MAX_M,
        description="base-station antenna height, m: 0.5 to 1000 (UMa 25, UMi 10, RMa 35)")
    h_ut_m: float = Field(
        1.5, ge=HEIGHT_MIN_M, le=HEIGHT_MAX_M,
        description="device antenna height, m: 0.5 to 1000 (TR 38.901 UMa/UMi: 1.5–22.5)")
    shadowing: bool = Field(
        False, description="draw log-normal shadowing per device (σ from TR 38.901); off = median budget")
    fading: Literal["none", "rayleigh"] = Field("none", description="small-scale fading model")
    coherence_ms: float = Field(
        43.0, ge=COHERENCE_MIN_MS, le=1e5,
        description="fading block length, ms: 0.1 to 1e5 (Clarke: 0.423/f_D, 3 km/h at 3.5 GHz ≈ 43 ms)")
    shannon_fraction: float = Field(
        0.6, gt=0, le=1, description="attenuation α of the Shannon bound (TR 36.942 Annex A.2)")
    min_snr_db: float = Field(
        -10.0, ge=-50.0, le=50.0,
        description="SNR below which the rate is zero, dB: -50 to 50 (TR 36.942 Annex A.2: -10)")
    max_spectral_efficiency_bps_hz: float = Field(
        7.4063, gt=0, le=100.0,
        description="spectral-efficiency cap, bit/s/Hz: above 0 to 100 (default NR 256QAM, TS 38.214 Table "
                    "5.2.2.1-3, CQI 15; 8 MIMO layers of 1024QAM stay below 80)")
    delay_ms: float = Field(
        5.0, ge=0, le=DELAY_MAX_MS,
        description="one-way air + core latency, ms: 0 to 1e5 (default ITU-R M.2410: 4 ms user plane)")
    discipline: Discipline = Field("fair", description="`fair`: airtime fairness; `fifo`: one at a time")
    loss: float = Field(
        0.0, ge=0, lt=1, description="per-packet loss probability after HARQ, retransmitted: 0 to below 1")
    mtu_bytes: int = Field(
        1500, ge=68, le=65535, description="largest packet on the air, headers included, bytes: 68 to 65535")
    header_bytes: int = Field(
        52, ge=0, le=1024,
        description="header bytes per packet, 0 to 1024; default IPv4 20 + TCP 20 + timestamps 12, "
                    "no link layer")
    outages: list[OutageSpec] = Field(default_factory=list, description="intervals when the cell is down")
    uplink_mbps: float | None = Field(
        None, ge=RATE_MIN_MBPS, le=RATE_MAX_MBPS,
        description="fixed uplink rate per device (no PHY), Mbit/s: 0.001 to 1e7")
    downlink_mbps: float | None = Field(
        None, ge=RATE_MIN_MBPS, le=RATE_MAX_MBPS,
        description="fixed downlink rate per device (no PHY), Mbit/s: 0.001 to 1e7")

    @model_validator(mode="after")
    def _consistent(self) -> CellSpec:
        if self.ap in self.members:
            raise ValueError(f"the AP {self.ap!r} cannot also be a member")
        if self.mtu_bytes <= self.header_bytes:
            raise ValueError(f"mtu_bytes ({self.mtu_bytes}) must exceed header_bytes ({self.header_bytes})")
        _check_outages(self.outages)
        for name, member in self.members.items():
            uses_phy = (member.uplink_mbps or self.uplink_mbps) is None or (
                member.downlink_mbps or self.downlink_mbps) is None
            model = member.pathloss or self.pathloss
            if not uses_phy or model == "free_space":
                continue
            h_ut = member.h_ut_m or self.h_ut_m
            d_min, d_max = _D2D_RANGE_M[model]
            if not d_min <= member.distance_m <= d_max:
                raise ValueError(f"members.{name}.distance_m: TR 38.901 {model} holds for "
                                 f"{d_min:g}–{d_max:g} m, got {member.distance_m:g}")
            h_min, h_max = _H_UT_RANGE_M[model[:3]]
            if not h_min <= h_ut <= h_max:
                raise ValueError(f"members.{name}: TR 38.901 {model} needs h_ut_m in "
                                 f"{h_min:g}–{h_max:g} m, got {h_ut:g}")
            if h_ut >= self.h_bs_m:
                raise ValueError(f"members.{name}: h_ut_m ({h_ut:g}) must be below h_bs_m ({self.h_bs_m:g})")
        return self


class TransportSpec(_Strict):
    """How a message is carried end to end: `ideal` fluid transfer, or a TCP-like window (see docs)."""

    kind: Literal["ideal", "tcp"] = Field(
        "ideal", description="`ideal`: fluid, full share at once; `tcp`: handshake, slow start, AIMD")
    init_cwnd_segments: int = Field(
        10, ge=1, le=1000, description="TCP initial window, segments: 1 to 1000 (default 10, RFC 6928)")
    rcv_buffer_bytes: int = Field(
        6_291_456, ge=1, le=2**30,
        description="receive window cap, bytes: 1 to 2^30 (the largest scaled window, RFC 7323 §2.3); "
                    "default Linux tcp_rmem max, 6 MiB")
    keep_alive: bool = Field(
        True, description="connections stay open between messages (no handshake after the first)")
    rto_min_s: float = Field(
        0.2, ge=1e-3, le=120.0,
        description="minimum RTO, s: 0.001 to 120 (default Linux 0.2); idle longer than RTO restarts slow "
                    "start (RFC 5681)")
    outage_timeout_s: float = Field(
        10.0, gt=0, le=TIME_MAX_S,
        description="a transfer held by an outage longer than this fails, s: above 0 to 1e7")
    max_retx: int = Field(
        15, ge=0, le=100,
        description="retransmissions of one packet before the transfer fails: 0 to 100 (default Linux "
                    "tcp_retries2, 15)")
