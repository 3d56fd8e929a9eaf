"""Reading result directories into frames: a run dir (`netsim run`) or a sweep dir (`netsim sweep`).

The report only reads what the runs wrote — never a scenario to re-run, never the simulator — so a
report can be drawn from results copied off a cluster. The file names are the contracts of
netsim/results.py (a run dir) and netsim/sweep/ledger.py (a sweep dir); they are repeated here rather than
imported because importing netsim.sweep pulls in the runtime, which a report never needs.

Every unreadable file is one InputError line naming it (exit 2 on the command line).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from netsim.errors import InputError
from netsim.inputfile import YAML_MAX_BYTES, parse_yaml, read_text
from netsim.report.stats import first_hop_payloads

RUN_FILES = ("summary.json", "requests.parquet", "events.parquet")
SWEEP_TABLE = "sweep.parquet"
SWEEP_PLAN = "sweep.json"
RESOLVED = "scenario.resolved.yaml"
_RESULT_TABLES = {"requests.parquet", "events.parquet"}
"""Every other `*.parquet` in a run dir is a policy's extra table (`rounds.parquet`, ...)."""
_REQUEST_COLUMNS_DROPPED = ("output_text",)  # the answers' text is large and no figure reads it


@dataclass(frozen=True)
class RunData:
    """One run dir: its summary, requests, payload bytes per message kind, resolved scenario, extras."""

    path: Path
    summary: dict[str, Any]
    requests: pl.DataFrame
    payloads: pl.DataFrame
    """first-hop payload bytes per (request_id, kind): stats.first_hop_payloads of the `tx` events"""
    resolved_text: str | None
    resolved: dict[str, Any] | None
    tables: dict[str, pl.DataFrame] = field(default_factory=dict)
    """a policy's extra tables by name (`rounds` for rounds.parquet)"""


@dataclass(frozen=True)
class SweepData:
    """One sweep dir: its table (one row per point), the axes, and the run data of its ok points."""

    path: Path
    table: pl.DataFrame
    plan: dict[str, Any]
    axes: list[str]
    """axis columns of the table, in the order written (the sweep's own numbering order)"""
    points: dict[str, RunData]
    """point id → its run, for the points whose status is ok and whose run dir is readable"""


def is_run_dir(path: Path) -> bool:
    return all((path / name).is_file() for name in RUN_FILES)


def is_sweep_dir(path: Path) -> bool:
    return (path / SWEEP_TABLE).is_file()


def load(path: str | Path) -> RunData | SweepData:
    """The run or sweep in `path`; InputError (one line) for anything else."""
    folder = Path(path)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such directory; give a run dir (netsim run) or a sweep dir "
                         "(netsim sweep)")
    if is_sweep_dir(folder):
        return load_sweep(folder)
    if is_run_dir(folder):
        return load_run(folder)
    raise InputError(f"{folder}: neither a run dir ({', '.join(RUN_FILES)}) nor a sweep dir ({SWEEP_TABLE})")


def load_run(folder: Path) -> RunData:
    summary = _json(folder / "summary.json")
    requests = _parquet(folder / "requests.parquet")
    requests = requests.drop([c for c in _REQUEST_COLUMNS_DROPPED if c in requests.columns])
    events = _parquet(folder / "events.parquet", columns=["t_s", "node", "kind", "request_id", "bytes",
                                                          "duration_s", "detail"],
                      where=pl.col("kind") == "tx")
    resolved_text, resolved = _resolved(folder / RESOLVED)
    tables = {p.stem: _parquet(p) for p in sorted(folder.glob("*.parquet")) if p.name not in _RESULT_TABLES}
    return RunData(folder, summary, requests, first_hop_payloads(events), resolved_text, resolved, tables)


def load_sweep(folder: Path) -> SweepData:
    table = _parquet(folder / SWEEP_TABLE)
    plan = _json(folder / SWEEP_PLAN) if (folder / SWEEP_PLAN).is_file() else {}
    columns = table.columns
    if "point" not in columns or "repeat" not in columns or "status" not in columns:
        raise InputError(f"{folder / SWEEP_TABLE}: not a netsim sweep table (no point/repeat/status columns)")
    axes = columns[columns.index("point") + 1: columns.index("repeat")]  # ledger.sweep_table's order
    points: dict[str, RunData] = {}
    for row in table.filter(pl.col("status") == "ok").iter_rows(named=True):
        run_dir = row.get("run_dir")
        if run_dir and is_run_dir(folder / run_dir):
            points[row["point"]] = load_run(folder / run_dir)
    return SweepData(folder, table, plan, axes, points)


def sweep_requests(sweep: SweepData) -> pl.DataFrame:
    """Requests of every loaded point, with its `point`, axis values and `repeat` in front."""
    return _stack(sweep, lambda run: run.requests)


def sweep_payloads(sweep: SweepData) -> pl.DataFrame:
    """First-hop payload bytes per (point, request, kind), with the point's axis values and repeat."""
    return _stack(sweep, lambda run: run.payloads)


def _stack(sweep: SweepData, part: Any) -> pl.DataFrame:
    keys = sweep.table.select("point", *sweep.axes, "repeat")
    frames = [part(run).with_columns(pl.lit(pid).alias("point")) for pid, run in sweep.points.items()]
    frames = [f for f in frames if f.height]
    if not frames:
        return pl.DataFrame()
    stacked = pl.concat(frames, how="diagonal_relaxed")
    clash = [c for c in stacked.columns if c in keys.columns and c != "point"]
    return keys.join(stacked.drop(clash), on="point", how="inner")


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: unreadable ({_reason(exc)})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: not a JSON object")
    return data


def _parquet(path: Path, columns: list[str] | None = None, where: pl.Expr | None = None) -> pl.DataFrame:
    try:
        frame = pl.scan_parquet(path)
        if where is not None:
            frame = frame.filter(where)
        if columns is not None:
            frame = frame.select(columns)
        return frame.collect()
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise InputError(f"{path}: unreadable Parquet ({_reason(exc)})") from None


def _resolved(path: Path) -> tuple[str | None, dict[str, Any] | None]:
    """The resolved scenario as written (shown verbatim) and parsed (provenance); None if absent."""
    if not path.is_file():
        return None, None
    text = read_text(path, "resolved scenario", YAML_MAX_BYTES)
    data = parse_yaml(text, f"resolved scenario {path}")
    return text, data if isinstance(data, dict) else None


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] if text else type(exc).__name__
