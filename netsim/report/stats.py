"""The numbers a report states: means with confidence intervals, crossovers, payload bytes per message.

Each is a small pure function of result frames, so the figures and the page draw the same numbers and a
test can check each against a hand computation.

- `mean_ci`: the mean with a Student-t 95% interval, t·s/√n. Requests of one point and of its repeats are
  pooled as independent samples; requests that queue behind each other are correlated, so the interval
  is a guide to the spread, not an exact coverage statement. The t quantile is computed here (regularised
  incomplete beta, Numerical Recipes §6.4) because scipy is not a dependency.
- `crossovers`: where one series' mean overtakes another's, interpolated linearly in the coordinates the
  figure draws (log x on a log axis), so the annotation sits where the drawn lines cross.
- `first_hop_payloads`: payload bytes per message, each counted once (docs/reports.md "Bytes per kind").
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import polars as pl

CONFIDENCE = 0.95
HOP_TOLERANCE_S = 1e-9
"""A hop starting within this of a matching message's arrival at its source node continues that message:
start = t_s − duration_s is recomputed from two floats, so it can differ from the arrival by an ulp."""


@dataclass(frozen=True)
class MeanCI:
    """A sample mean and its confidence interval; `low`/`high` are NaN below two samples."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2.0


def mean_ci(values: Sequence[float] | np.ndarray, confidence: float = CONFIDENCE) -> MeanCI:
    """Mean ± t_{(1+c)/2, n−1} · s / √n over the finite values (nulls and NaNs dropped)."""
    data = np.asarray([v for v in values if v is not None], dtype=float)
    data = data[np.isfinite(data)]
    n = int(data.size)
    if n == 0:
        return MeanCI(math.nan, math.nan, math.nan, 0)
    mean = float(data.mean())
    if n < 2:
        return MeanCI(mean, math.nan, math.nan, 1)
    half = t_quantile((1.0 + confidence) / 2.0, n - 1) * float(data.std(ddof=1)) / math.sqrt(n)
    return MeanCI(mean, mean - half, mean + half, n)


@lru_cache(maxsize=4096)
def t_quantile(p: float, df: int) -> float:
    """The p-quantile of Student's t with `df` degrees of freedom, p in (0.5, 1): bisection on the CDF.

    80 halvings of a bracket at most a few hundred wide leave an error far below any printed digit; the
    cache makes it once per sample size.
    """
    if not 0.5 < p < 1.0 or df < 1:
        raise ValueError(f"t_quantile needs 0.5 < p < 1 and df >= 1, got p={p}, df={df}")
    lo, hi = 0.0, 1.0
    while _t_upper(hi, df) > 1.0 - p:
        lo, hi = hi, hi * 2.0
    for _ in range(80):
        mid = (lo + hi) / 2.0
        if _t_upper(mid, df) > 1.0 - p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0


def _t_upper(t: float, df: int) -> float:
    """P(T > t) for t ≥ 0: ½ · I_{df/(df+t²)}(df/2, ½) (Abramowitz & Stegun 26.7.1 via 26.5.27)."""
    return 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b); the continued fraction converges fast on the side chosen."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x)
                     + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta, modified Lentz (Numerical Recipes eq. 6.4.5)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)),
                   -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


# ------------------------------------------------------------------------------------------ crossovers


@dataclass(frozen=True)
class Crossover:
    """`above` has the lower y beyond `x`, `below` before it; (x_lo, x_hi) are the bracketing points."""

    x: float
    y: float
    below: str
    above: str
    x_lo: float
    x_hi: float


def crossovers(frame: pl.DataFrame, x: str, series: str, y: str, *, log_x: bool, log_y: bool = False
               ) -> list[Crossover]:
    """Every point where one series' `y` overtakes another's, for every pair of series.

    Only x values where both series have a value count. A sign change of the difference between two
    neighbouring x values is interpolated linearly in the plotted coordinates (log x when `log_x`);
    a difference that is exactly zero at a point where the sign changes puts the crossover there.
    """
    names = list(dict.fromkeys(frame[series].to_list()))
    found: list[Crossover] = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            pair = (frame.filter(pl.col(series) == a).select(x, pl.col(y).alias("ya"))
                    .join(frame.filter(pl.col(series) == b).select(x, pl.col(y).alias("yb")), on=x)
                    .drop_nulls().filter(pl.col("ya").is_finite() & pl.col("yb").is_finite()).sort(x))
            xs, ya, yb = (pair[c].to_numpy().astype(float) for c in (x, "ya", "yb"))
            found += _pair_crossovers(xs, ya, yb, a, b, log_x, log_y)
    return sorted(found, key=lambda c: (c.x, c.below, c.above))


def _pair_crossovers(xs: np.ndarray, ya: np.ndarray, yb: np.ndarray, a: str, b: str, log_x: bool,
                     log_y: bool) -> list[Crossover]:
    diff = ya - yb
    nonzero = [k for k in range(len(xs)) if diff[k] != 0.0]
    out: list[Crossover] = []
    for i, j in itertools.pairwise(nonzero):
        if (diff[i] > 0) == (diff[j] > 0):
            continue
        below, above = (b, a) if diff[i] > 0 else (a, b)  # the lower one before the crossing is `below`
        if j > i + 1:  # equal at the points between: the crossing is the first of them
            out.append(Crossover(float(xs[i + 1]), float(ya[i + 1]), below, above, float(xs[i]),
                                 float(xs[j])))
            continue
        t = diff[i] / (diff[i] - diff[j])
        fx = _interp(xs[i], xs[j], t, log_x)
        out.append(Crossover(fx, _interp(ya[i], ya[j], t, log_y), below, above, float(xs[i]), float(xs[j])))
    return out


def _interp(lo: float, hi: float, t: float, log: bool) -> float:
    if log and lo > 0 and hi > 0:
        return float(math.exp(math.log(lo) + t * (math.log(hi) - math.log(lo))))
    return float(lo + t * (hi - lo))


# ------------------------------------------------------------------------------------- payload bytes


def first_hop_payloads(events: pl.DataFrame) -> pl.DataFrame:
    """Payload bytes and messages per (request_id, kind), each message counted once, at its first hop.

    The network records one `tx` event per message and hop (`node` = "src->dst", `bytes` = the payload,
    `detail` = its kind, `t_s` when the hop ended, `duration_s` how long it took), and a hop starts the
    instant the previous one delivered the whole message (store-and-forward). So a `tx` row continues a
    message when a row of the same request, kind and size ended at this hop's source node at this hop's
    start; every other row is a message's first hop. A message that crossed its first hop counts even if
    a later hop dropped it — those bytes did leave the sender. Request-less messages keep a null id.
    """
    tx = (events.filter(pl.col("kind") == "tx")
          .with_columns(pl.col("node").str.split_exact("->", 1).struct.rename_fields(["src", "dst"]))
          .unnest("node")
          .with_columns((pl.col("t_s") - pl.col("duration_s")).alias("start_s"),
                        pl.col("request_id").fill_null(-1).alias("rid"))
          .with_row_index("row"))
    if tx.is_empty():
        return pl.DataFrame(schema={"request_id": pl.Int64, "kind": pl.Utf8, "bytes": pl.Int64,
                                    "messages": pl.UInt32})
    arrivals = tx.select("rid", "detail", "bytes", pl.col("dst").alias("src"),
                         pl.col("t_s").alias("arrived_s"), pl.col("row").alias("previous")).sort("arrived_s")
    matched = tx.sort("start_s").join_asof(arrivals, left_on="start_s", right_on="arrived_s",
                                           by=["rid", "detail", "bytes", "src"], strategy="nearest",
                                           tolerance=HOP_TOLERANCE_S,
                                           check_sortedness=False)  # sorted by time as a whole, so per group
    first = matched.filter(pl.col("previous").is_null())
    return (first.group_by("request_id", "detail", maintain_order=True)
            .agg(pl.col("bytes").sum().cast(pl.Int64), pl.len().alias("messages"))
            .rename({"detail": "kind"}).sort("request_id", "kind", nulls_last=True))
