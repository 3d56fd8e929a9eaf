"""`write_report`: read a run or sweep dir, draw its figures, write the page and the figure files.

Where the page goes: a sweep's report lives in the sweep dir (`DIR/report.html`), since netsim never
replaces a sweep dir; a run's report lives beside it (`DIR-report/report.html`), because a run dir must
hold only what `netsim run` wrote for `--overwrite` to replace it (netsim/rundir.py). Figures go to
`figures/` beside the page. An existing page is replaced only if this command wrote it, and a figure file
only if an earlier page listed it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from netsim.errors import InputError
from netsim.report.figures import (
    Drawn,
    bytes_run_figure,
    bytes_sweep_figure,
    crossover_sentence,
    e2e_figure,
    energy_sweep_figure,
    latency_cdf_run_figure,
    latency_cdf_sweep_figure,
    latency_figure,
    quality_figure,
    rounds_figure,
    tokens_figure,
)
from netsim.report.frames import SweepFrames, run_frames, sweep_frames
from netsim.report.html import FIGURES_META, GENERATOR, run_page, sweep_page
from netsim.report.load import RunData, SweepData, load
from netsim.report.provenance import provenance
from netsim.report.stats import Crossover

FIGURE_DIR = "figures"
_RUN_MARKER = ".netsim-run"  # netsim/rundir.py MARKER: a directory `netsim run --overwrite` may replace
_HEAD_BYTES = 4096


@dataclass(frozen=True)
class Report:
    """What `write_report` wrote, and the sentence about crossovers the page states."""

    kind: str
    html: Path
    figures: tuple[Path, ...]
    crossovers: tuple[Crossover, ...]
    finding: str


def default_output(source: Path, data: RunData | SweepData) -> Path:
    if isinstance(data, SweepData):
        return source / "report.html"
    return source.parent / f"{source.resolve().name}-report" / "report.html"


def write_report(source: str | Path, out: str | Path | None = None) -> Report:
    """Read the run or sweep in `source`; write its figures and page to `out` (or the default)."""
    src = Path(source)
    data = load(src)
    target = Path(out) if out is not None else default_output(src, data)
    old_figures = _check_target(target)
    if isinstance(data, SweepData):
        frames = sweep_frames(data)
        drawn = _sweep_figures(data, frames)
        versions = [str(data.plan["netsim_version"])] if data.plan.get("netsim_version") else []
        text = sweep_page(data, frames, drawn, FIGURE_DIR, provenance(data.points.values(), versions),
                          _bytes_note(frames.payloads, frames.requests))
        found, finding, kind = tuple(frames.crossovers), crossover_sentence(frames), "sweep"
    else:
        run = run_frames(data)
        policy = str(data.summary.get("policy"))
        rounds = (rounds_figure({"run": data.tables["rounds"]}, {"run": policy}, [policy])
                  if "rounds" in data.tables else None)
        drawn = [d for d in (latency_cdf_run_figure(data.requests), bytes_run_figure(run.payloads),
                             tokens_figure(run.tokens, None), rounds, quality_figure(run.quality, None))
                 if d is not None]
        text = run_page(data, drawn, FIGURE_DIR, provenance([data]), run.payloads,
                        _bytes_note(run.payloads, data.requests))
        found, finding, kind = (), "", "run"
    written = _write(target, drawn, text, old_figures)
    return Report(kind, target, written, found, finding)


def _sweep_figures(sweep: SweepData, frames: SweepFrames) -> list[Drawn]:
    rounds = {pid: run.tables["rounds"] for pid, run in sweep.points.items() if "rounds" in run.tables}
    series_of = {}
    if rounds and not frames.requests.is_empty():
        series_of = dict(frames.requests.select("point", "series").unique(subset=["point"]).iter_rows())
    figures = (e2e_figure(frames), latency_figure(frames), latency_cdf_sweep_figure(frames),
               bytes_sweep_figure(frames), energy_sweep_figure(frames), tokens_figure(frames.tokens, frames),
               rounds_figure(rounds, series_of, frames.series) if rounds else None,
               quality_figure(frames.quality, frames))
    return [d for d in figures if d is not None]


def _bytes_note(payloads: pl.DataFrame, requests: pl.DataFrame) -> str | None:
    """A sentence when the per-kind bytes (messages at their first hop) differ from the requests' own
    count (messages delivered), so a reader comparing the figure with summary.json is not left guessing."""
    if "bytes_total" not in requests.columns or "status" not in requests.columns:
        return None
    counted = int(payloads["bytes"].sum()) if not payloads.is_empty() else 0
    delivered = int(requests.filter(pl.col("status") == "ok")["bytes_total"].sum() or 0)
    if counted == delivered:
        return None
    return (f"The bytes by payload kind sum to {counted:,} B, the ok requests' bytes_total to "
            f"{delivered:,} B: messages that belong to no request, messages abandoned after their first "
            "hop, and a node's sends to itself count in one and not the other (docs/reports.md).")


def _check_target(target: Path) -> set[str]:
    """Refuse a target this command did not write; return the figure files an earlier page listed."""
    if target.suffix.lower() not in (".html", ".htm"):
        raise InputError(f"-o {target}: the report is one HTML file; name it *.html")
    parent = target.parent
    if (parent / _RUN_MARKER).exists():
        raise InputError(f"-o {target}: {parent} is a netsim run dir, which holds only what `netsim run` "
                         f"wrote (so --overwrite can replace it); write the report beside it, e.g. "
                         f"{parent}-report/report.html")
    if target.is_symlink() or (target.exists() and not target.is_file()):
        raise InputError(f"-o {target}: exists and is not a regular file")
    if not target.exists():
        old: set[str] = set()
    else:
        head = _head(target)
        if f'<meta name="generator" content="{GENERATOR}' not in head:
            raise InputError(f"-o {target}: exists and was not written by netsim report; name another file")
        listed = re.search(rf'<meta name="{FIGURES_META}" content="([^"]*)">', head)
        old = set(listed.group(1).split()) if listed else set()
    return old


def _head(path: Path) -> str:
    try:
        with path.open("rb") as f:
            return f.read(_HEAD_BYTES).decode("utf-8", errors="replace")
    except OSError as exc:
        raise InputError(f"-o {path}: cannot be read ({exc.strerror or exc})") from None


def _write(target: Path, drawn: list[Drawn], text: str, old_figures: set[str]) -> tuple[Path, ...]:
    """Figures first, then the page (staged and renamed in), then the figures the old page listed and this
    one does not draw. A figure file already there and not listed by an earlier page is not ours: refused."""
    figure_dir = target.parent / FIGURE_DIR
    files = {f"{FIGURE_DIR}/{d.name}.{ext}": data
             for d in drawn for ext, data in (("png", d.png), ("svg", d.svg))}
    foreign = [name for name in files if (target.parent / name).exists() and name not in old_figures]
    if foreign:
        raise InputError(f"-o {target}: {target.parent / foreign[0]} exists and was not written by netsim "
                         "report; name another directory")
    try:
        figure_dir.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            _write_atomic(target.parent / name, data)
        _write_atomic(target, text.encode("utf-8"))
        for name in sorted(old_figures - files.keys()):
            stale = target.parent / name
            ours = name.startswith(f"{FIGURE_DIR}/") and "/" not in name[len(FIGURE_DIR) + 1:]
            if ours and stale.is_file():  # a name that leaves figures/ is not one this command writes
                stale.unlink()  # only what netsim created
    except OSError as exc:
        raise InputError(f"-o {target}: cannot write the report ({exc.strerror or exc})") from None
    return tuple(target.parent / name for name in files)


def _write_atomic(path: Path, data: bytes) -> None:
    staging = path.with_name(f".{path.name}.tmp")
    staging.write_bytes(data)
    os.replace(staging, path)
