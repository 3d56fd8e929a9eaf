"""One self-contained HTML page: figures embedded as base64 PNG, tables, resolved scenario, provenance.

Nothing on the page is fetched: no script, no web font, no stylesheet link; the page opens from a file
on a machine with no network, and the SVG and PNG files beside it are only linked for download. The page
carries no timestamp, so the same results give the same bytes. Every number shown is read from the
result files (or, for profiles and cost cards, from the installed netsim's data, as the page says).

Two `<meta>` tags make a page recognisable as this command's output: `generator` (refusing to overwrite
a file netsim did not write) and `netsim-figures` (the figure files it wrote, so a rerun removes the ones
it no longer draws).
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Sequence
from typing import Any

import polars as pl

from netsim.report.figures import Drawn, crossover_sentence, fmt_number
from netsim.report.frames import LATENCY_METRICS, SweepFrames
from netsim.report.load import RunData, SweepData
from netsim.report.provenance import Provenance

GENERATOR = "netsim report"
FIGURES_META = "netsim-figures"

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:1240px;
padding:1.2em;color:#1d1d1f}
h1{font-size:1.6em;margin-bottom:.2em}
h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{border:1px solid #d6d6d6;padding:.25em .55em;text-align:left;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums}
th{background:#f4f4f6}
figure{margin:1.2em 0}
figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#444;max-width:75em}
pre{background:#f7f7f9;border:1px solid #e3e3e8;padding:.8em;overflow:auto;max-height:32em;font-size:.85em}
.derived{background:#fff1d6;color:#8a4b00;border-radius:3px;padding:0 .35em;font-size:.85em;font-weight:600}
.nw{white-space:nowrap}
.note{color:#555}
.lead{font-size:1.05em}
code{background:#f3f3f6;padding:0 .2em}
"""


def page(title: str, figure_files: Sequence[str], body: Iterable[str]) -> str:
    from netsim.version import __version__

    head = (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="generator" content="{GENERATOR} {_e(__version__)}">\n'
            f'<meta name="{FIGURES_META}" content="{_e(" ".join(figure_files))}">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n")
    return head + "\n".join(body) + "\n</body>\n</html>\n"


# -------------------------------------------------------------------------------------------- sweep


def sweep_page(sweep: SweepData, frames: SweepFrames, drawn: Sequence[Drawn], figure_dir: str,
               prov: Provenance, bytes_note: str | None) -> str:
    table = sweep.table
    name = str(sweep.plan.get("scenario") or _first(sweep, "scenario") or sweep.path.name)
    n_ok = table.filter(pl.col("status") == "ok").height
    failed = table.filter(pl.col("status") != "ok")
    axes_text = "; ".join(f"<code>{_e(a)}</code> = {_e(_values(table[a]))}" for a in sweep.axes) or "none"
    repeats = table["repeat"].n_unique() if table.height else 0
    body = [
        f"<h1>{_e(name)}: sweep report</h1>",
        f'<p class="lead">{_e(_first(sweep, "description") or "")}</p>',
        f"<p>Sweep directory <code>{_e(str(sweep.path))}</code>: {table.height} points, {n_ok} ok, "
        f"{failed.height} failed; {repeats} repeat{'s' if repeats != 1 else ''} per point "
        f"(seeds differ by repeat, so every policy at a given repeat saw the same arrivals, prompts and "
        f"channel). Axes: {axes_text}.</p>",
        "<h2>Findings</h2>",
        f"<ul>{''.join(f'<li>{_e(s)}</li>' for s in _findings(frames))}</ul>",
        "<h2>Figures</h2>",
        *(_figure_html(d, figure_dir) for d in drawn),
    ]
    if bytes_note:
        body.append(f'<p class="note">{_e(bytes_note)}</p>')
    body += ["<h2>Summary by point</h2>",
             "<p>Means over the ok requests of every repeat of the point; ± is the half-width of the 95% "
             "Student-t interval. Bytes and energy per generated token are ratios of sums.</p>",
             _sweep_summary_table(frames)]
    if failed.height:
        body += ["<h2>Failed points</h2>",
                 _table(["point", *sweep.axes, "repeat", "error"],
                        [[r["point"], *(r[a] for a in sweep.axes), r["repeat"], r["error"]]
                         for r in failed.iter_rows(named=True)])]
    body += _provenance_html(prov)
    first = next(iter(sweep.points.values()), None)
    if first is not None and first.resolved_text is not None:
        body += ["<h2>Resolved scenario</h2>",
                 f"<p>Of point <code>{_e(first.path.name)}</code>, as written in its "
                 "<code>scenario.resolved.yaml</code>; the other points differ only in the swept fields "
                 "and the seed.</p>",
                 f"<pre>{_e(first.resolved_text)}</pre>"]
    return page(f"netsim report: {name} (sweep)", _files(drawn, figure_dir), body)


def _findings(frames: SweepFrames) -> list[str]:
    lines = [crossover_sentence(frames)]
    e2e = frames.latency.filter(pl.col("metric") == "e2e_s").drop_nans("mean")
    if frames.x is not None and not e2e.is_empty():
        for where in (e2e["x"].min(), e2e["x"].max()):
            at = e2e.filter(pl.col("x") == where).sort("mean")
            best = at.row(0, named=True)
            at_x = f"At {fmt_number(where)} {frames.unit}".rstrip()
            lines.append(f"{at_x}, {best['series']} has the lowest mean end-to-end latency "
                         f"({_ms(best['mean'])}"
                         + (f", next {at['series'][1]} at {_ms(at['mean'][1])}" if at.height > 1 else "")
                         + ").")
    elif not e2e.is_empty():
        best = e2e.sort("mean").row(0, named=True)
        lines.append(f"{best['series']} has the lowest mean end-to-end latency ({_ms(best['mean'])}).")
    return lines


def _sweep_summary_table(frames: SweepFrames) -> str:
    keys = ["x", "series"] if frames.x else ["series"]
    if frames.latency.is_empty():
        return "<p>No ok request: nothing to summarise.</p>"
    wide = frames.latency.select(*keys).unique(maintain_order=True)
    counts = frames.requests.group_by(keys).agg(pl.len().alias("requests"),
                                                (pl.col("status") == "ok").sum().alias("ok"))
    wide = wide.join(counts, on=keys, how="left")
    for metric, _ in LATENCY_METRICS:
        part = frames.latency.filter(pl.col("metric") == metric).select(
            *keys, pl.col("mean").alias(metric), ((pl.col("high") - pl.col("low")) / 2).alias(f"{metric}_ci"))
        wide = wide.join(part, on=keys, how="left")
    bpt = frames.payloads.group_by(keys).agg(pl.col("bytes_per_token").sum().alias("bpt"))
    energy = frames.energy.filter(pl.col("part") == "energy_device_j").select(*keys, pl.col("j_per_token"))
    wide = wide.join(bpt, on=keys, how="left").join(energy, on=keys, how="left")
    quality = frames.quality if frames.quality is not None else pl.DataFrame(schema={"metric": pl.Utf8})
    metrics = list(dict.fromkeys(quality["metric"].to_list()))
    for metric in metrics:  # accuracy columns, when the requests have them (frames.quality_columns)
        part = quality.filter(pl.col("metric") == metric).select(
            *keys, pl.col("mean").alias(f"q:{metric}"),
            ((pl.col("high") - pl.col("low")) / 2).alias(f"q:{metric}_ci"))
        wide = wide.join(part, on=keys, how="left")
    header = [*([f"{frames.x}" + (f" ({frames.unit})" if frames.unit else "")] if frames.x else []),
              "series", "ok / requests", "TTFT", "TPOT", "end-to-end", "B / token", "J / token", *metrics]
    rows = []
    for r in wide.iter_rows(named=True):
        rows.append([*([fmt_number(r["x"])] if frames.x else []), r["series"], f"{r['ok']} / {r['requests']}",
                     *(_ms_ci(r[m], r[f"{m}_ci"]) for m, _ in LATENCY_METRICS),
                     _num(r["bpt"] if r["bpt"] is not None else 0.0, ".1f"), _num(r["j_per_token"], ".3g"),
                     *(_ratio_ci(r[f"q:{m}"], r[f"q:{m}_ci"]) for m in metrics)])
    return _table(header, rows, numeric_from=1 if frames.x else 0)


def _ratio_ci(mean: Any, half: Any) -> str:
    """An accuracy as a percentage, ± the half-width of its interval when there is one."""
    if mean is None or not math.isfinite(mean):
        return "–"
    if half is None or not math.isfinite(half):
        return f"{mean:.1%}"
    return f"{mean:.1%} ± {half:.1%}"


# ---------------------------------------------------------------------------------------------- run


def run_page(run: RunData, drawn: Sequence[Drawn], figure_dir: str, prov: Provenance,
             payloads: pl.DataFrame, bytes_note: str | None) -> str:
    s = run.summary
    name = str(s.get("scenario") or run.path.name)
    description = ((run.resolved or {}).get("description") or "") if run.resolved else ""
    body = [
        f"<h1>{_e(name)}: run report</h1>",
        f'<p class="lead">{_e(str(description))}</p>',
        f"<p>Run directory <code>{_e(str(run.path))}</code>: policy <code>{_e(str(s.get('policy')))}</code>, "
        f"seed {_e(str(s.get('seed')))}, {s.get('n_ok', '–')} of {s.get('n_requests', '–')} requests ok, "
        f"{s.get('n_output_tokens', '–')} output tokens.</p>",
        "<h2>Figures</h2>",
        *(_figure_html(d, figure_dir) for d in drawn),
    ]
    if bytes_note:
        body.append(f'<p class="note">{_e(bytes_note)}</p>')
    body += ["<h2>Summary</h2>", _run_summary(s)]
    if not payloads.is_empty():
        body += ["<h3>Payload bytes by kind</h3>",
                 _table(["kind", "bytes", "bytes per generated token"],
                        [[r["kind"], f"{r['bytes']:,}", _num(r["bytes_per_token"], ",.2f")]
                         for r in payloads.iter_rows(named=True)])]
    if run.tables:
        body += ["<h3>Policy tables</h3>",
                 _table(["table", "rows", "columns"],
                        [[f"{k}.parquet", f"{t.height:,}", ", ".join(t.columns)]
                         for k, t in run.tables.items()])]
    body += _provenance_html(prov)
    if run.resolved_text is not None:
        body += ["<h2>Resolved scenario</h2>", "<p>As written in <code>scenario.resolved.yaml</code> "
                 "(runnable as it is; its <code>provenance:</code> block is ignored when loaded).</p>",
                 f"<pre>{_e(run.resolved_text)}</pre>"]
    return page(f"netsim report: {name} (run)", _files(drawn, figure_dir), body)


def _run_summary(s: dict[str, Any]) -> str:
    latency = _table(["latency over ok requests", "mean", "p50", "p95"],
                     [[label, *(_ms((s.get(m) or {}).get(q)) for q in ("mean", "p50", "p95"))]
                      for m, label in LATENCY_METRICS if isinstance(s.get(m), dict)])
    scalars = [[k, _scalar(v)] for k, v in s.items() if not isinstance(v, dict | list)]
    parts = [latency, _table(["summary.json", "value"], scalars)]
    if s.get("fail_reasons"):
        parts.append(_table(["fail_code", "requests"], [[k, v] for k, v in s["fail_reasons"].items()]))
    idle = s.get("energy_idle_j_by_profile")
    if isinstance(idle, list) and idle:
        parts.append(_table(["role", "profile", "nodes", "idle energy (J)"],
                            [[r.get("role"), r.get("profile"), r.get("n_nodes"),
                              _num(r.get("energy_idle_j"), ".4g")] for r in idle if isinstance(r, dict)]))
    return "\n".join(parts)


# ------------------------------------------------------------------------------------- provenance


def _provenance_html(prov: Provenance) -> list[str]:
    from netsim.version import __version__

    out = ["<h2>Provenance</h2>",
           f"<p>Results written by netsim {_e(', '.join(prov.netsim_versions) or 'unknown')}; this page "
           f"drawn by netsim {_e(__version__)}.</p>"]
    if prov.model_hashes:
        out += ["<h3>Models (weights that produced the tokens)</h3>",
                _table(["model", "sha256"], [[m, f"<code>{_e(h)}</code>"] for m, h in prov.model_hashes],
                       raw_columns={1})]
    if prov.nodes:
        out += ["<h3>Nodes, models and cost cards</h3>",
                "<p>Which model wrote the tokens on each kind of node, and the cost card (if any) its "
                "compute and bytes were billed as (summary.json <code>models</code>).</p>",
                _table(["role", "profile", "model", "billed as (cost card)", "nodes"],
                       [[r.get("role"), r.get("profile"), r.get("model"),
                         r.get("charged_as") or "itself (no card)", r.get("n_nodes")] for r in prov.nodes])]
    if prov.token_accounting:
        out += ["<h3>Which tokenizer counted the tokens</h3>",
                "<p>Per-token figures count tokens of the hosted model's tokenizer, not of the card's model "
                "(docs/metrics.md, summary.json <code>token_accounting</code>).</p>",
                _table(["model", "tokenizer vocab", "chars / token (measured)", "billed as", "card vocab",
                        "policies"],
                       [[r["model"], r["tokenizer_vocab"],
                         _range(r["chars_per_token_min"], r["chars_per_token_max"]),
                         r["charged_as"] or "itself", r["card_vocab"] or "–", ", ".join(r["policies"])]
                        for r in prov.token_accounting])]
    if prov.cards:
        out += ["<h3>Cost cards in use</h3>",
                "<p>Read from the installed netsim's cards (the runs record the card's name).</p>"]
        for card in prov.cards:
            if card.problem:
                out.append(f"<p><code>{_e(card.name)}</code>: not readable now ({_e(card.problem)}).</p>")
                continue
            out += [f"<p><b>{_e(card.name)}</b> — source: {_e(card.source)}</p>",
                    _table(list(card.geometry), [[_scalar(v) for v in card.geometry.values()]])]
    if prov.profiles:
        out += ["<h3>Device profiles</h3>",
                "<p>Every number with its source, read from the installed netsim's profiles (the runs "
                "record the profile's name). <span class=\"derived\">derived</span> marks a number computed "
                "or fitted from others rather than measured or taken from a data sheet.</p>"]
        for p in prov.profiles:
            if p.problem:
                out.append(f"<p><code>{_e(p.name)}</code>: not readable now ({_e(p.problem)}).</p>")
                continue
            n_derived = sum(n.derived for n in p.numbers)
            out += [f"<p><b>{_e(p.name)}</b> — {_e(p.description)}; runtime {_e(p.runtime)}; "
                    f"{n_derived} of {len(p.numbers)} numbers derived.</p>",
                    _table(["field", "value", "", "source"],
                           [[f"<code>{_e(n.field)}</code>", f'<span class="nw">{_e(n.value)}</span>',
                             '<span class="derived">derived</span>' if n.derived else "", _e(n.source)]
                            for n in p.numbers], raw_columns={0, 1, 2, 3})]
    return out


# ------------------------------------------------------------------------------------------ helpers


def _figure_html(d: Drawn, figure_dir: str) -> str:
    data = base64.b64encode(d.png).decode("ascii")
    return (f'<figure id="fig-{_e(d.name)}">\n<img src="data:image/png;base64,{data}" alt="{_e(d.title)}" '
            f'width="{d.width_px}" height="{d.height_px}">\n'
            f"<figcaption><b>{_e(d.title)}.</b> {_e(d.caption)} Files: "
            f'<a href="{_e(figure_dir)}/{_e(d.name)}.svg">SVG</a>, '
            f'<a href="{_e(figure_dir)}/{_e(d.name)}.png">PNG</a>.</figcaption>\n</figure>')


def _files(drawn: Sequence[Drawn], figure_dir: str) -> list[str]:
    return [f"{figure_dir}/{d.name}.{ext}" for d in drawn for ext in ("png", "svg")]


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]], numeric_from: int | None = None,
           raw_columns: set[int] | None = None) -> str:
    raw = raw_columns or set()
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for k, value in enumerate(row):
            text = str(value) if k in raw else _e(_scalar(value))
            cls = ' class="num"' if numeric_from is not None and k > numeric_from else ""
            cells.append(f"<td{cls}>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _first(sweep: SweepData, key: str) -> Any:
    for run in sweep.points.values():
        if key in run.summary:
            return run.summary[key]
        if run.resolved and key in run.resolved:
            return run.resolved[key]
    return None


def _values(column: pl.Series) -> str:
    values = list(dict.fromkeys(column.to_list()))
    shown = [fmt_number(v) if isinstance(v, float) else str(v) for v in values]
    return ", ".join(shown)


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _scalar(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return "–" if not math.isfinite(value) else f"{value:.6g}"
    return str(value)


def _num(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return format(value, spec)


def _ms(value: Any) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value * 1e3:,.1f} ms"


def _ms_ci(mean: Any, half: Any) -> str:
    if mean is None or not math.isfinite(mean):
        return "–"
    if half is None or not math.isfinite(half):
        return f"{mean * 1e3:,.1f} ms"
    return f"{mean * 1e3:,.1f} ± {half * 1e3:,.1f} ms"


def _range(lo: Any, hi: Any) -> str:
    if not isinstance(lo, int | float):
        return "–"
    return f"{lo:.3g}" if lo == hi else f"{lo:.3g}–{hi:.3g}"
