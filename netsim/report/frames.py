"""From loaded results to the frames the figures and tables draw: one row per (x, series) and metric.

A sweep is seen as lines against one numeric axis: `x` is the first swept axis whose values are numbers
(and take more than one value); every other swept axis and the policy make the *series*, one line each.
Repeats of a point are pooled. A sweep with no numeric axis (say, over `policy.name` alone) has no x:
each series is drawn as one point.

Per (x, series), over the ok requests of every repeat:
- latency: mean of TTFT, TPOT, e2e with a 95% Student-t interval (stats.mean_ci);
- bytes per generated token by payload kind: first-hop payload bytes (stats.first_hop_payloads) of the
  ok requests, plus messages that belong to no request, ÷ the ok requests' output tokens;
- energy per token: Σ energy_device_j (and its compute and radio parts) ÷ Σ output tokens — a ratio of
  sums, as summary.json's energy_per_token_j;
- token sources (only when some policy resolves tokens at several tiers — the requests have a
  `tokens_p2p` or `tokens_edge` column, or one request took tokens from two tiers — as the HLM policies
  do): Σ tokens_<tier> ÷ Σ output tokens, tiers local, p2p, edge, llm;
- quality against bytes (only when the requests have an accuracy column — `accuracy`, `accuracy_*` or
  `*_accuracy`, as a teacher-forced HLM run writes): the mean accuracy with its 95% interval against
  Σ bytes_total ÷ Σ output tokens of the same requests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import polars as pl

from netsim.report.load import RunData, SweepData, sweep_payloads, sweep_requests
from netsim.report.stats import Crossover, crossovers, mean_ci

LATENCY_METRICS = (("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("e2e_s", "end-to-end"))
ENERGY_PARTS = (("energy_device_j", "device total"), ("energy_compute_j", "compute"),
                ("energy_radio_j", "radio"))
TOKEN_TIERS = ("local", "p2p", "edge", "llm")
"""Where an output token can be resolved, nearest first: `tokens_<tier>` request columns (docs/metrics.md)."""
TOKEN_BREAKDOWN_MARKERS = ("tokens_p2p", "tokens_edge")
"""Columns whose presence means some policy resolves tokens at more than the device and one LLM."""
LOG_SPAN = 100.0
"""An axis goes logarithmic when its positive values span more than two decades."""
_UNITS = (("_mbps", "Mbit/s"), ("_kbps", "kbit/s"), ("_ghz", "GHz"), ("_mhz", "MHz"), ("_dbm", "dBm"),
          ("_dbi", "dBi"), ("_db", "dB"), ("_ms", "ms"), ("_s", "s"), ("_m", "m"), ("_bytes", "B"),
          ("_w", "W"), ("_per_s", "1/s"))
"""Unit of a swept field from its name's suffix (network fields carry their unit: docs/design.md)."""


@dataclass(frozen=True)
class SweepFrames:
    x: str | None
    """the numeric axis on the x axis (a sweep.parquet column), or None"""
    unit: str
    log_x: bool
    series: list[str]
    """series labels in order of first appearance"""
    requests: pl.DataFrame
    """every request of the loaded points, with `x` (when there is one) and `series` columns"""
    latency: pl.DataFrame
    """x, series, metric, mean, low, high, n"""
    payloads: pl.DataFrame
    """x, series, kind, bytes, bytes_per_token"""
    energy: pl.DataFrame
    """x, series, part, j_per_token"""
    tokens: pl.DataFrame | None
    """x, series, source, share; None unless a policy resolves tokens at several tiers"""
    crossovers: list[Crossover]
    """where one series' mean e2e overtakes another's"""
    quality: pl.DataFrame | None = None
    """x, series, metric, mean, low, high, n, bytes_per_token; None without an accuracy column"""


def unit_of(path: str) -> str:
    leaf = path.rsplit(".", 1)[-1]
    return next((unit for suffix, unit in _UNITS if leaf.endswith(suffix)), "")


def spans_decades(values: list[float]) -> bool:
    positive = [v for v in values if v is not None and math.isfinite(v)]
    return bool(positive) and min(positive) > 0 and max(positive) / min(positive) > LOG_SPAN


def sweep_frames(sweep: SweepData) -> SweepFrames:
    table = sweep.table
    numeric = [a for a in sweep.axes if table[a].dtype.is_numeric() and table[a].drop_nulls().n_unique() > 1]
    x = numeric[0] if numeric else None
    extra_axes = [a for a in sweep.axes if a != x and a != "policy.name" and table[a].n_unique() > 1]
    requests = sweep_requests(sweep)
    if requests.is_empty():
        requests = pl.DataFrame(schema={"point": pl.Utf8, "series": pl.Utf8, "status": pl.Utf8,
                                        "n_output_tokens": pl.Int64, **({"x": pl.Float64} if x else {})})
    else:
        requests = requests.with_columns(_series_expr(extra_axes).alias("series"),
                                         *([pl.col(x).cast(pl.Float64).alias("x")] if x else []))
    series = list(dict.fromkeys(requests["series"].to_list()))
    keys = ["x", "series"] if x else ["series"]
    ok = requests.filter(pl.col("status") == "ok")
    latency = _latency(ok, keys)
    log_x = x is not None and spans_decades(table[x].cast(pl.Float64).to_list())
    e2e = latency.filter(pl.col("metric") == "e2e_s")
    found = crossovers(e2e, "x", "series", "mean", log_x=log_x,
                       log_y=spans_decades(e2e["mean"].to_list())) if x else []
    payloads = _payloads(sweep, requests, ok, keys, extra_axes, x)
    return SweepFrames(x, unit_of(x) if x else "", log_x, series, requests, latency, payloads,
                       _energy(ok, keys), _tokens(ok, keys), found, _quality(ok, keys))


@dataclass(frozen=True)
class RunFrames:
    payloads: pl.DataFrame
    """series, kind, bytes, bytes_per_token (series is the run's policy)"""
    tokens: pl.DataFrame | None
    quality: pl.DataFrame | None


def run_frames(run: RunData) -> RunFrames:
    """Payload bytes per generated token by kind, token sources and quality of one run."""
    policy = str(run.summary.get("policy") or "run")
    requests = run.requests.with_columns(pl.lit(policy).alias("series"))
    ok = requests.filter(pl.col("status") == "ok")
    counted = _counted_payloads(run.payloads, ok).with_columns(pl.lit(policy).alias("series"))
    payloads = _per_token_payloads(counted, ok, ["series"])
    return RunFrames(payloads, _tokens(ok, ["series"]), _quality(ok, ["series"]))


def _series_expr(extra_axes: list[str]) -> pl.Expr:
    """`policy` plus `leaf=value` of every other axis that varies: the line's label."""
    parts: list[pl.Expr] = [pl.col("policy").cast(pl.Utf8)]
    for axis in extra_axes:
        leaf = axis.rsplit(".", 1)[-1]
        parts.append(pl.lit(f", {leaf}=") + pl.col(axis).cast(pl.Utf8))
    return pl.concat_str(parts)


def _latency(ok: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    rows = []
    for group, frame in ok.group_by(keys, maintain_order=True):
        where = dict(zip(keys, group, strict=True))
        for metric, _ in LATENCY_METRICS:
            ci = mean_ci(frame[metric].to_list()) if metric in frame.columns else mean_ci([])
            rows.append({**where, "metric": metric, "mean": ci.mean, "low": ci.low, "high": ci.high,
                         "n": ci.n})
    schema = {**({"x": pl.Float64} if "x" in keys else {}), "series": pl.Utf8, "metric": pl.Utf8,
              "mean": pl.Float64, "low": pl.Float64, "high": pl.Float64, "n": pl.Int64}
    return pl.DataFrame(rows, schema=schema)


def _counted_payloads(payloads: pl.DataFrame, ok: pl.DataFrame, by: list[str] | None = None
                      ) -> pl.DataFrame:
    """The payload rows that count: those of ok requests, and those of no request (null id)."""
    on = [*(by or []), "request_id"]
    okeys = ok.select(*on).unique()
    mine = payloads.join(okeys, on=on, how="inner")
    orphan = payloads.filter(pl.col("request_id").is_null())
    return pl.concat([mine, orphan.select(mine.columns)], how="vertical_relaxed")


def _payloads(sweep: SweepData, requests: pl.DataFrame, ok: pl.DataFrame, keys: list[str],
              extra_axes: list[str], x: str | None) -> pl.DataFrame:
    raw = sweep_payloads(sweep)
    if raw.is_empty() or ok.is_empty():
        return _per_token_payloads(pl.DataFrame(), ok, keys)
    # a point's series: every request of a point shares its policy and axis values
    point_keys = requests.select("point", *keys).unique(subset=["point"])
    raw = raw.join(point_keys, on="point", how="inner")
    return _per_token_payloads(_counted_payloads(raw, ok, ["point"]), ok, keys)


def _per_token_payloads(counted: pl.DataFrame, ok: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    tokens = (ok.group_by(keys, maintain_order=True).agg(pl.col("n_output_tokens").sum().alias("tokens"))
              if not ok.is_empty() else pl.DataFrame())
    if counted.is_empty() or tokens.is_empty():
        schema = {**({"x": pl.Float64} if "x" in keys else {}), "series": pl.Utf8, "kind": pl.Utf8,
                  "bytes": pl.Int64, "bytes_per_token": pl.Float64}
        return pl.DataFrame(schema=schema)
    by_kind = counted.group_by(*keys, "kind", maintain_order=True).agg(pl.col("bytes").sum())
    return (by_kind.join(tokens, on=keys, how="inner")
            .with_columns((pl.col("bytes") / pl.col("tokens")).alias("bytes_per_token"))
            .drop("tokens").sort(*keys, "kind"))


def _energy(ok: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    parts = [(col, label) for col, label in ENERGY_PARTS if col in ok.columns]
    if ok.is_empty() or not parts:
        return pl.DataFrame(schema={**({"x": pl.Float64} if "x" in keys else {}), "series": pl.Utf8,
                                    "part": pl.Utf8, "j_per_token": pl.Float64})
    sums = ok.group_by(keys, maintain_order=True).agg(pl.col("n_output_tokens").sum().alias("tokens"),
                                                       *(pl.col(c).sum() for c, _ in parts))
    long = sums.unpivot(index=[*keys, "tokens"], on=[c for c, _ in parts], variable_name="part",
                        value_name="joules")
    return (long.with_columns(pl.when(pl.col("tokens") > 0).then(pl.col("joules") / pl.col("tokens"))
                              .alias("j_per_token"))
            .select(*keys, "part", "j_per_token"))


def _tokens(ok: pl.DataFrame, keys: list[str]) -> pl.DataFrame | None:
    sources = [f"tokens_{t}" for t in TOKEN_TIERS if f"tokens_{t}" in ok.columns]
    if ok.is_empty() or not sources:
        return None
    several = ok.select(pl.sum_horizontal(*((pl.col(c).fill_null(0) > 0).cast(pl.Int32) for c in sources))
                        .alias("tiers"))["tiers"].max()
    if not any(m in ok.columns for m in TOKEN_BREAKDOWN_MARKERS) and not (several or 0) > 1:
        return None  # every request from one tier: the breakdown says no more than the policy's name
    sums = ok.group_by(keys, maintain_order=True).agg(pl.col("n_output_tokens").sum().alias("tokens"),
                                                       *(pl.col(c).fill_null(0).sum() for c in sources))
    long = sums.unpivot(index=[*keys, "tokens"], on=sources, variable_name="source", value_name="count")
    return (long.with_columns(pl.col("source").str.strip_prefix("tokens_"),
                              pl.when(pl.col("tokens") > 0).then(pl.col("count") / pl.col("tokens"))
                              .alias("share"))
            .select(*keys, "source", "share"))


def quality_columns(frame: pl.DataFrame) -> list[str]:
    """Request columns holding a per-request accuracy in [0, 1]."""
    return [c for c in frame.columns
            if (c == "accuracy" or c.startswith("accuracy_") or c.endswith("_accuracy"))
            and frame[c].dtype.is_numeric()]


def _quality(ok: pl.DataFrame, keys: list[str]) -> pl.DataFrame | None:
    """Mean accuracy (95% CI over requests) and payload bytes per output token per (x, series).

    Bytes are the ok requests' `bytes_total` (every payload byte a request moved, docs/metrics.md) ÷ their
    output tokens, so the point a series sits at on the bytes axis is what that accuracy cost.
    """
    metrics = quality_columns(ok)
    if ok.is_empty() or not metrics or "bytes_total" not in ok.columns:
        return None
    rows = []
    for group, frame in ok.group_by(keys, maintain_order=True):
        where = dict(zip(keys, group, strict=True))
        tokens = int(frame["n_output_tokens"].sum())
        per_token = float(frame["bytes_total"].sum()) / tokens if tokens > 0 else math.nan
        for metric in metrics:
            ci = mean_ci(frame[metric].to_list())
            if ci.n:
                rows.append({**where, "metric": metric, "mean": ci.mean, "low": ci.low, "high": ci.high,
                             "n": ci.n, "bytes_per_token": per_token})
    if not rows:
        return None
    schema = {**({"x": pl.Float64} if "x" in keys else {}), "series": pl.Utf8, "metric": pl.Utf8,
              "mean": pl.Float64, "low": pl.Float64, "high": pl.Float64, "n": pl.Int64,
              "bytes_per_token": pl.Float64}
    return pl.DataFrame(rows, schema=schema)
