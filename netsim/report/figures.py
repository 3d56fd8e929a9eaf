"""Matplotlib figures of a run or a sweep, drawn from the report's frames (netsim/report/frames.py).

Figures are built on `matplotlib.figure.Figure` with the Agg canvas — no pyplot, so no global figure
state and no display backend — inside an `rc_context` that fixes sizes, fonts and the SVG id salt, so the
same results give byte-identical PNG and SVG files (SVG `Date` metadata is dropped). Each `*_figure`
function returns None when the results hold nothing to draw, so the page lists only what exists: the
token-resolution breakdown appears once a policy resolves tokens at several tiers (`tokens_p2p`,
`tokens_edge`, or local and LLM tokens in one request), convergence over rounds once a run writes
`rounds.parquet`, accuracy against bytes once the requests carry an accuracy column, and the crossover
annotation once two lines of the e2e figure cross.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import matplotlib
import numpy as np
import polars as pl
from cycler import cycler
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from netsim.report.frames import ENERGY_PARTS, LATENCY_METRICS, SweepFrames, spans_decades
from netsim.report.stats import Crossover

DPI = 100
RC = {
    "svg.hashsalt": "netsim-report",  # ids in SVG files from a fixed salt, not a random one
    "svg.fonttype": "path",  # text as paths: the SVG renders the same without the font installed
    "font.family": "DejaVu Sans",  # bundled with matplotlib, so every machine draws the same glyphs
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.grid": True,
    "axes.formatter.useoffset": False,  # "+1.458e1" under an axis reads as noise; print the values
    "grid.alpha": 0.3,
    "legend.fontsize": 8,
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "lines.linewidth": 1.6,
    "axes.prop_cycle": cycler(color=matplotlib.color_sequences["tab10"]),
}
_COLORS = matplotlib.color_sequences["tab10"]
_STYLES = ("-", "--", ":", "-.")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
"""A marker per series as well as a colour, so lines that coincide (two policies with equal bytes) stay
visible as two."""
_CDF_COLUMNS = 3
"""A sweep's latency CDFs are drawn at up to three x values: the lowest, the middle and the highest."""


@dataclass(frozen=True)
class Drawn:
    """A finished figure: its file stem, caption, PNG and SVG bytes and PNG size in pixels."""

    name: str
    title: str
    caption: str
    png: bytes
    svg: bytes
    width_px: int
    height_px: int


@contextmanager
def _style() -> Iterator[None]:
    with matplotlib.rc_context(RC):
        yield


def render(name: str, title: str, caption: str, fig: Figure) -> Drawn:
    """PNG and SVG bytes of `fig`, with no timestamp in either."""
    FigureCanvasAgg(fig)
    png, svg = io.BytesIO(), io.BytesIO()
    with _style():
        fig.savefig(png, format="png", metadata={"Software": None})
        fig.savefig(svg, format="svg", metadata={"Date": None, "Creator": None})
    width, height = (round(v * DPI) for v in fig.get_size_inches())
    return Drawn(name, title, caption, png.getvalue(), svg.getvalue(), width, height)


def _figure(width_in: float, height_in: float) -> Figure:
    with _style():
        return Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")


def _look(series: list[str]) -> Callable[[str], dict[str, object]]:
    """One colour (and, past ten series, a line style) per series, the same in every figure."""
    index = {s: k for k, s in enumerate(series)}

    def look(name: str) -> dict[str, object]:
        k = index.get(name, 0)
        return {"color": _COLORS[k % len(_COLORS)], "linestyle": _STYLES[(k // len(_COLORS)) % len(_STYLES)],
                "marker": _MARKERS[k % len(_MARKERS)]}

    return look


def _x_axis(ax: Axes, frames: SweepFrames) -> None:
    assert frames.x is not None
    ax.set_xlabel(f"{frames.x} ({frames.unit})" if frames.unit else frames.x)
    if frames.log_x:
        ax.set_xscale("log")


def _y_log_if_spread(ax: Axes, values: list[float]) -> bool:
    if spans_decades(values):
        ax.set_yscale("log")
        return True
    return False


def _band(ax: Axes, xs: np.ndarray, low: np.ndarray, high: np.ndarray, color: object, log_y: bool) -> None:
    ok = np.isfinite(low) & np.isfinite(high)
    if log_y:
        ok &= low > 0  # a CI reaching below zero has no place on a log axis: drawn only where positive
    if ok.any():
        ax.fill_between(xs[ok], low[ok], high[ok], color=color, alpha=0.18, linewidth=0)


def _latency_panel(ax: Axes, frames: SweepFrames, metric: str, label: str) -> bool:
    """Mean and 95% CI per series against x (or one point per series without x); True if log y."""
    data = frames.latency.filter(pl.col("metric") == metric)
    look = _look(frames.series)
    log_y = _y_log_if_spread(ax, [*data["mean"].to_list(), *data["high"].to_list()])
    if frames.x is None:
        for k, name in enumerate(frames.series):
            row = data.filter(pl.col("series") == name)
            if row.is_empty():
                continue
            mean, low, high = (float(row[c][0]) for c in ("mean", "low", "high"))
            err = [[mean - low], [high - mean]] if math.isfinite(low) else None
            ax.errorbar([k], [mean * 1e3], yerr=None if err is None else np.array(err) * 1e3,
                        marker=look(name)["marker"], linestyle="none", capsize=4, color=look(name)["color"],
                        label=name)
        ax.set_xticks(range(len(frames.series)), frames.series, rotation=20, ha="right")
        ax.set_xlim(-0.5, len(frames.series) - 0.5)
    else:
        for name in frames.series:
            line = data.filter(pl.col("series") == name).sort("x")
            if line.is_empty():
                continue
            xs = line["x"].to_numpy()
            style = look(name)
            ax.plot(xs, line["mean"].to_numpy() * 1e3, markersize=4, label=name, **style)
            _band(ax, xs, line["low"].to_numpy() * 1e3, line["high"].to_numpy() * 1e3, style["color"], log_y)
        _x_axis(ax, frames)
    ax.set_ylabel(f"{label} (ms)")
    ax.set_title(f"mean {label} ± 95% CI")
    return log_y


# ------------------------------------------------------------------------------------------------ sweep


def e2e_figure(frames: SweepFrames) -> Drawn | None:
    if frames.latency.is_empty():
        return None
    fig = _figure(7.0, 4.2)
    ax = fig.add_subplot()
    _latency_panel(ax, frames, "e2e_s", "end-to-end latency")
    for c in frames.crossovers:
        _mark_crossover(ax, c, frames.unit)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside right upper", title="policy")
    caption = ("Mean end-to-end latency of the ok requests (all repeats pooled) with its 95% Student-t "
               "interval, one line per policy" + (f" against {frames.x}" if frames.x else "") + ". "
               + crossover_sentence(frames))
    return render("e2e", "End-to-end latency", caption, fig)


def _mark_crossover(ax: Axes, c: Crossover, unit: str) -> None:
    y_ms = c.y * 1e3
    ax.axvline(c.x, color="0.35", linewidth=0.8, linestyle=":")
    ax.plot([c.x], [y_ms], marker="X", markersize=8, color="black", zorder=5)
    ax.annotate(f"{c.above} overtakes {c.below}\nat {fmt_number(c.x)} {unit}".rstrip(), (c.x, y_ms),
                xytext=(8, 12), textcoords="offset points", fontsize=8,
                bbox={"boxstyle": "round,pad=0.25", "facecolor": "white", "edgecolor": "0.6"})


def crossover_sentence(frames: SweepFrames) -> str:
    """The crossovers in words (the page's findings and the e2e caption say the same)."""
    if not frames.series:
        return "No point has an ok request: there is nothing to compare."
    if frames.x is None:
        return "No numeric axis was swept, so there is no crossover to find."
    if len(frames.series) < 2:
        return "One series only: no crossover to find."
    if not frames.crossovers:
        xs = frames.latency["x"]
        where = f"between {fmt_number(xs.min())} and {fmt_number(xs.max())} {frames.unit}".rstrip()
        return (f"No crossover of mean end-to-end latency {where}: the order of the lines does not change "
                "over the swept range.")
    how = "log" if frames.log_x else "linear"
    parts = [f"{c.above} overtakes {c.below} at {fmt_number(c.x)} {frames.unit} (between the points at "
             f"{fmt_number(c.x_lo)} and {fmt_number(c.x_hi)}, interpolated in {how} {frames.x})"
             for c in frames.crossovers]
    return "Crossovers of mean end-to-end latency: " + "; ".join(parts) + "."


def latency_figure(frames: SweepFrames) -> Drawn | None:
    if frames.latency.is_empty():
        return None
    fig = _figure(12.0, 3.8)
    axes = fig.subplots(1, 3)
    for ax, (metric, label) in zip(axes, LATENCY_METRICS, strict=True):
        _latency_panel(ax, frames, metric, label)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right upper", title="policy")
    caption = ("Time to first token, time per output token after the first, and end-to-end latency "
               "(docs/metrics.md): mean over the ok requests of every repeat with a 95% Student-t "
               "interval. Requests are pooled as independent samples, so the band shows the spread, not "
               "an exact coverage.")
    return render("latency", "Latency", caption, fig)


def latency_cdf_sweep_figure(frames: SweepFrames) -> Drawn | None:
    ok = frames.requests.filter(pl.col("status") == "ok") if "status" in frames.requests.columns else None
    if ok is None or ok.is_empty():
        return None
    xs = sorted(set(ok["x"].to_list())) if frames.x else [None]
    picks = [xs[0], xs[len(xs) // 2], xs[-1]] if len(xs) >= _CDF_COLUMNS else xs
    picks = list(dict.fromkeys(picks))
    fig = _figure(4.0 * len(picks), 2.9 * len(LATENCY_METRICS))
    axes = np.atleast_2d(fig.subplots(len(LATENCY_METRICS), len(picks), squeeze=False))
    look = _look(frames.series)
    for col, xv in enumerate(picks):
        at = ok if xv is None else ok.filter(pl.col("x") == xv)
        for row, (metric, label) in enumerate(LATENCY_METRICS):
            ax = axes[row][col]
            _cdf_lines(ax, at, metric, frames.series, look)
            ax.set_xlabel(f"{label} (ms)")
            ax.set_ylabel("fraction of requests")
            where = "" if xv is None else f" at {fmt_number(xv)} {frames.unit}".rstrip()
            ax.set_title(f"{label}{where}")
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="outside right upper", title="policy")
    caption = ("Empirical CDFs of per-request latency (ok requests, repeats pooled)"
               + (f" at the lowest, middle and highest {frames.x}" if frames.x and len(xs) > 1 else "")
               + "; one line per policy. TPOT is undefined for one-token answers, which are left out.")
    return render("latency_cdf", "Latency distributions", caption, fig)


def _cdf_lines(ax: Axes, frame: pl.DataFrame, metric: str, series: list[str],
               look: Callable[[str], dict[str, object]]) -> None:
    values_all: list[float] = []
    for name in series:
        values = frame.filter(pl.col("series") == name)[metric].drop_nulls().drop_nans().to_numpy() * 1e3
        if values.size:
            style = look(name)
            ax.ecdf(values, label=name, color=style["color"], linestyle=style["linestyle"])
            values_all += values.tolist()
    if spans_decades(values_all):
        ax.set_xscale("log")


def bytes_sweep_figure(frames: SweepFrames) -> Drawn | None:
    if frames.payloads.is_empty():
        return None
    kinds = sorted(set(frames.payloads["kind"].to_list()))
    n = len(frames.series)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = _figure(4.2 * cols, 3.2 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False, sharey=True)).ravel()
    kind_color = {k: _COLORS[i % len(_COLORS)] for i, k in enumerate(kinds)}
    for ax, name in zip(axes, frames.series, strict=False):
        mine = frames.payloads.filter(pl.col("series") == name)
        ax.set_title(name)
        if mine.is_empty() or mine["bytes"].sum() == 0:
            ax.text(0.5, 0.5, "no payload crossed the network", ha="center", va="center",
                    transform=ax.transAxes, color="0.4")
            if frames.x is not None:
                _x_axis(ax, frames)
                ax.set_xlim(frames.requests["x"].min(), frames.requests["x"].max())
        elif frames.x is None:
            bottom = 0.0
            for kind in kinds:
                value = float(mine.filter(pl.col("kind") == kind)["bytes_per_token"].sum())
                ax.bar([0], [value], bottom=bottom, color=kind_color[kind], label=kind, width=0.5)
                bottom += value
            ax.set_xticks([])
        else:
            wide = (mine.pivot(on="kind", index="x", values="bytes_per_token").sort("x").fill_null(0.0))
            present = [k for k in kinds if k in wide.columns]
            ax.stackplot(wide["x"].to_numpy(), *(wide[k].to_numpy() for k in present),
                         labels=present, colors=[kind_color[k] for k in present], alpha=0.85)
            _x_axis(ax, frames)
        ax.set_ylabel("payload B / generated token")
    for ax in axes[n:]:
        ax.set_visible(False)
    handles = [Patch(color=kind_color[k], label=k) for k in kinds]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(kinds), 6), title="payload kind")
    caption = ("Application payload bytes per generated token, stacked by payload kind (the `detail` of "
               "`tx` events). Each message counts once, at its first hop; ok requests' messages and "
               "messages of no request are counted, over the ok requests' output tokens "
               "(docs/reports.md).")
    return render("bytes_per_token", "Bytes per generated token by payload kind", caption, fig)


def energy_sweep_figure(frames: SweepFrames) -> Drawn | None:
    if frames.energy.is_empty():
        return None
    parts = [(c, label) for c, label in ENERGY_PARTS if c in set(frames.energy["part"].to_list())]
    fig = _figure(4.0 * len(parts), 3.6)
    axes = np.atleast_1d(fig.subplots(1, len(parts), squeeze=False)).ravel()
    look = _look(frames.series)
    for ax, (part, label) in zip(axes, parts, strict=True):
        data = frames.energy.filter(pl.col("part") == part)
        values = [v for v in data["j_per_token"].to_list() if v is not None and v > 0]
        _y_log_if_spread(ax, values)
        for k, name in enumerate(frames.series):
            line = data.filter(pl.col("series") == name)
            if frames.x is None:
                ax.bar([k], [float(line["j_per_token"].fill_null(0.0).sum())], color=look(name)["color"],
                       label=name)
            else:
                line = line.sort("x")
                ax.plot(line["x"].to_numpy(), line["j_per_token"].to_numpy(), markersize=4, label=name,
                        **look(name))
        if frames.x is None:
            ax.set_xticks(range(len(frames.series)), frames.series, rotation=20, ha="right")
        else:
            _x_axis(ax, frames)
        ax.set_ylabel("J per generated token")
        ax.set_title(f"requesting device: {label}")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right upper", title="policy")
    caption = ("Energy of the requesting devices per generated token (Σ energy ÷ Σ output tokens over the "
               "ok requests of every repeat): the total and its compute and radio parts (docs/metrics.md). "
               "Servers' energy and idle energy are not per request and are left out.")
    return render("energy_per_token", "Energy per generated token", caption, fig)


def tokens_figure(tokens: pl.DataFrame | None, frames: SweepFrames | None) -> Drawn | None:
    """Share of output tokens resolved at each tier (device, peers, edge, cloud LLM), stacked; drawn only
    when some policy resolves tokens at several tiers (frames._tokens)."""
    if tokens is None or tokens.is_empty():
        return None
    sources = list(dict.fromkeys(tokens["source"].to_list()))
    color = {s: _COLORS[i % len(_COLORS)] for i, s in enumerate(sources)}
    series = frames.series if frames is not None else list(dict.fromkeys(tokens["series"].to_list()))
    n = len(series)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = _figure(4.2 * cols, 3.2 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False, sharey=True)).ravel()
    for ax, name in zip(axes, series, strict=False):
        mine = tokens.filter(pl.col("series") == name)
        if frames is not None and frames.x is not None:
            wide = mine.pivot(on="source", index="x", values="share").sort("x").fill_null(0.0)
            ax.stackplot(wide["x"].to_numpy(), *(wide[s].to_numpy() for s in sources if s in wide.columns),
                         colors=[color[s] for s in sources if s in wide.columns], alpha=0.85)
            _x_axis(ax, frames)
        else:
            bottom = 0.0
            for s in sources:
                value = float(mine.filter(pl.col("source") == s)["share"].fill_null(0.0).sum())
                ax.bar([0], [value], bottom=bottom, color=color[s], width=0.5)
                bottom += value
            ax.set_xticks([])
        ax.set_ylim(0, 1.05)
        ax.set_title(name)
        ax.set_ylabel("share of output tokens")
    for ax in axes[n:]:
        ax.set_visible(False)
    handles = [Patch(color=color[s], label=s) for s in sources]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(sources), 6), title="resolved by")
    caption = ("Where the output tokens were resolved: Σ tokens_<tier> ÷ Σ output tokens over the ok "
               "requests (the requests' tokens_* columns).")
    return render("token_breakdown", "Token resolution by tier", caption, fig)


ROUND_KEYS = ("round", "client", "point", "request_id")
"""Columns of rounds.parquet that say where a row belongs, not what was measured."""
_ROUNDS_FIRST = ("threshold", "loss", "transmission_rate")
"""Drawn first when present: the learned threshold and what it trades (FedHLM eqs. 4-6)."""
_ROUNDS_MAX = 6


def rounds_figure(rounds: dict[str, pl.DataFrame], series_of: dict[str, str], series: list[str]
                  ) -> Drawn | None:
    """Convergence over federated rounds: every numeric column of `rounds.parquet` against its round.

    `rounds` maps a run (a point id, or "run") to its table; `series_of` gives the run's line label, so
    all runs of one policy share a colour. The table belongs to the policy that writes it, so only a
    `round` column (else the row order) is assumed. With a `client` column, a run's line is the mean over
    its clients at each round and the band their range (min to max), so a threshold learned per client
    shows both where the clients converge and how far apart they stay.
    """
    frames = [f for f in rounds.values() if not f.is_empty()]
    columns = rounds_columns(frames)
    if not columns:
        return None
    look = _look(series)
    rows, cols = math.ceil(len(columns) / 3), min(len(columns), 3)
    fig = _figure(4.0 * cols, 3.2 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    labelled: set[str] = set()
    per_client = any("client" in f.columns for f in frames)
    for run, table in rounds.items():
        name = series_of.get(run, run)
        style = look(name)
        for ax, column in zip(axes, columns, strict=False):
            if column not in table.columns:
                continue
            x, mean, low, high = _round_line(table, column)
            ax.plot(x, mean, linewidth=1.0, alpha=0.85, color=style["color"], linestyle=style["linestyle"],
                    label=None if name in labelled else name)
            if low is not None and high is not None and np.any(high > low):
                ax.fill_between(x, low, high, color=style["color"], alpha=0.12, linewidth=0)
        labelled.add(name)
    for ax, column in zip(axes, columns, strict=False):
        ax.set_xlabel("round")
        ax.set_title(column)
    if per_client:
        fig.suptitle("mean over clients per round; their min–max range shaded", fontsize=9)
    for ax in axes[len(columns):]:
        ax.set_visible(False)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right upper", title="policy")
    caption = ("Per-round values of the policy's rounds.parquet (e.g. the learned uncertainty threshold, its "
               "loss and the transmission rate), one line per run"
               + ("; with several clients, the line is their mean and the band their min–max range"
                  if per_client else "") + ". A line that flattens has converged.")
    return render("rounds", "Convergence over rounds", caption, fig)


def rounds_columns(tables: list[pl.DataFrame]) -> list[str]:
    """The measured columns to draw, the threshold and what it trades first, at most six."""
    numeric = [c for c in dict.fromkeys(c for f in tables for c in f.columns)
               if c not in ROUND_KEYS and all(f[c].dtype.is_numeric() for f in tables if c in f.columns)]
    return ([c for c in _ROUNDS_FIRST if c in numeric] + [c for c in numeric if c not in _ROUNDS_FIRST]
            )[:_ROUNDS_MAX]


def _round_line(table: pl.DataFrame, column: str
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(round, mean, min, max) of `column`; min/max are None with one row per round."""
    if "round" not in table.columns:
        return np.arange(table.height), table[column].to_numpy(), None, None
    by_round = (table.group_by("round").agg(pl.col(column).mean().alias("mean"),
                                             pl.col(column).min().alias("low"),
                                             pl.col(column).max().alias("high"), pl.len().alias("n"))
                .sort("round"))
    x = by_round["round"].to_numpy()
    if int(by_round["n"].max() or 0) <= 1:
        return x, by_round["mean"].to_numpy(), None, None
    return x, by_round["mean"].to_numpy(), by_round["low"].to_numpy(), by_round["high"].to_numpy()


def quality_figure(quality: pl.DataFrame | None, frames: SweepFrames | None) -> Drawn | None:
    """Accuracy against payload bytes per generated token: what each policy's quality costs on the wire.

    One panel per accuracy column; per series one marker per swept point (a line through them in the
    order of the swept axis, labelled at its ends), the 95% interval as a vertical bar.
    """
    if quality is None or quality.is_empty():
        return None
    metrics = list(dict.fromkeys(quality["metric"].to_list()))
    series = frames.series if frames is not None else list(dict.fromkeys(quality["series"].to_list()))
    look = _look(series)
    fig = _figure(5.2 * len(metrics), 4.0)
    axes = np.atleast_1d(fig.subplots(1, len(metrics), squeeze=False)).ravel()
    for ax, metric in zip(axes, metrics, strict=True):
        data = quality.filter(pl.col("metric") == metric)
        spread = [v for v in data["bytes_per_token"].to_list() if v is not None and v > 0]
        if spans_decades(spread):
            ax.set_xscale("symlog", linthresh=max(min(spread), 1e-9))  # zero bytes (device_only) stays drawn
        for name in series:
            mine = data.filter(pl.col("series") == name)
            if mine.is_empty():
                continue
            if "x" in mine.columns:
                mine = mine.sort("x")
            style = look(name)
            xs, ys = mine["bytes_per_token"].to_numpy(), mine["mean"].to_numpy()
            low, high = mine["low"].to_numpy(), mine["high"].to_numpy()
            finite = np.isfinite(low) & np.isfinite(high)
            err = np.vstack([np.where(finite, ys - low, 0.0), np.where(finite, high - ys, 0.0)])
            ax.errorbar(xs, ys, yerr=err, color=style["color"], linestyle=style["linestyle"],
                        marker=style["marker"], markersize=5, capsize=3, linewidth=1.0, label=name)
            if frames is not None and frames.x is not None and mine.height > 1 and xs[0] != xs[-1]:
                for k in (0, mine.height - 1):
                    ax.annotate(f"{fmt_number(mine['x'][k])} {frames.unit}".rstrip(), (xs[k], ys[k]),
                                xytext=(4, -10), textcoords="offset points", fontsize=7, color="0.3")
        ax.set_xlabel("payload B / generated token")
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} against bytes")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right upper", title="policy")
    caption = ("Mean per-request accuracy of the ok requests (95% Student-t interval) against the payload "
               "bytes those requests moved per generated token (Σ bytes_total ÷ Σ output tokens)"
               + (f"; one marker per {frames.x} value, the ends labelled" if frames is not None and frames.x
                  else "") + ". Up and to the left is better: the same accuracy for fewer bytes.")
    return render("accuracy_bytes", "Accuracy against bytes", caption, fig)


# -------------------------------------------------------------------------------------------------- run


def latency_cdf_run_figure(requests: pl.DataFrame) -> Drawn | None:
    ok = requests.filter(pl.col("status") == "ok")
    if ok.is_empty():
        return None
    fig = _figure(12.0, 3.6)
    axes = fig.subplots(1, 3)
    names = list(dict.fromkeys(ok["policy"].to_list()))
    ok = ok.with_columns(pl.col("policy").alias("series"))
    look = _look(names)
    for ax, (metric, label) in zip(axes, LATENCY_METRICS, strict=True):
        _cdf_lines(ax, ok, metric, names, look)
        ax.set_xlabel(f"{label} (ms)")
        ax.set_ylabel("fraction of requests")
        ax.set_title(label)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right upper", title="policy")
    caption = (f"Empirical CDFs of TTFT, TPOT and end-to-end latency over the {ok.height} ok requests "
               "(TPOT is undefined for one-token answers, which are left out).")
    return render("latency_cdf", "Latency distributions", caption, fig)


def bytes_run_figure(payloads: pl.DataFrame) -> Drawn | None:
    if payloads.is_empty():
        return None
    data = payloads.sort("bytes_per_token")
    fig = _figure(7.0, 0.6 + 0.45 * data.height + 0.8)
    ax = fig.add_subplot()
    kinds = data["kind"].to_list()
    values = data["bytes_per_token"].to_list()
    ax.barh(kinds, values, color=[_COLORS[i % len(_COLORS)] for i in range(len(kinds))])
    for k, v in enumerate(values):
        ax.annotate(f"{v:,.1f}", (v, k), xytext=(3, 0), textcoords="offset points", va="center", fontsize=8)
    ax.set_xlabel("payload bytes per generated token")
    ax.set_title(f"total {sum(values):,.1f} B per generated token")
    ax.margins(x=0.15)
    caption = ("Application payload bytes per generated token by payload kind; each message counts once, at "
               "its first hop, over the ok requests' output tokens (docs/reports.md).")
    return render("bytes_per_token", "Bytes per generated token by payload kind", caption, fig)


def fmt_number(value: float | None) -> str:
    """A number as a reader wants it on an axis: 3 significant digits, no exponent in ordinary ranges."""
    if value is None or not math.isfinite(value):
        return "–"
    if 1e3 <= abs(value) < 1e9:
        return f"{value:,.0f}"
    return f"{value:.3g}"
