"""The sweep directory: its plan, the ledger of finished points, the run dirs and `sweep.parquet`.

Only the driver writes here: a finished point's run dir (staged and renamed in, as `netsim run` writes
one), then one fsynced line in the ledger `sweep-index.jsonl`. `sweep.parquet` is rebuilt from the ledger
in point order, so a sweep killed and resumed leaves the same table as one never stopped: a point is done
once its line is written, runs (again) if it has no line or failed, and the last line of a point wins.
Workers need no shared file system: their results travel back to the driver.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from netsim.errors import InputError
from netsim.paths import staged_dir
from netsim.rundir import check_run_dir
from netsim.sweep.executors import Executor, PointOutcome, PointTask, local_processes
from netsim.sweep.plan import SweepPlan, canonical

PLAN_FILE = "sweep.json"
INDEX_FILE = "sweep-index.jsonl"
TABLE_FILE = "sweep.parquet"
POINTS_DIR = "points"
FIXED_COLUMNS = ("point", "repeat", "seed", "status", "error", "run_dir")
_DROPPED_SUMMARY_KEYS = ("scenario", "seed", "netsim_version")  # constant over a sweep, or a column already


@dataclass(frozen=True)
class SweepProgress:
    """Where a sweep stands; `last` is the record of the point that just finished (None at the start)."""

    done: int
    failed: int
    total: int
    last: dict[str, Any] | None


def default_sweep_dir(name: str, resume: bool) -> Path:
    """`sweeps/<name>`; a new sweep that would land on an existing one gets `sweeps/<name>-2`, `-3`, …"""
    base = Path("sweeps") / name
    if resume:
        return base
    for n in range(1, 10_001):
        candidate = base if n == 1 else base.with_name(f"{name}-{n}")
        if not (candidate.exists() or candidate.is_symlink()):
            return candidate
    raise InputError(f"sweep dir {base}: {base}-2 … {base}-10000 exist too; pass -o DIR")


def run_sweep(plan: SweepPlan, out_dir: str | Path, *, executor: Executor | None = None, resume: bool = False,
              disk_memo: bool = True, on_progress: Callable[[SweepProgress], None] | None = None
              ) -> pl.DataFrame:
    """Run the plan's points not yet done in `out_dir` and write `sweep.parquet`; return its frame.

    A fresh sweep needs a new (or empty) directory. With `resume`, a directory holding this very plan
    is continued: points with an `ok` line in the ledger are kept, the others run.
    """
    out = Path(out_dir)
    made = _prepare(out, plan, resume)
    index_path = out / INDEX_FILE
    records = _read_index(index_path, plan)
    ok = {pid for pid, rec in records.items() if rec["status"] == "ok"}
    todo = [p for p in plan.points if p.id not in ok]
    tasks = [PointTask(p.id, p.key, p.scenario, disk_memo) for p in todo]
    done, failed = len(plan.points) - len(todo), 0
    if on_progress is not None:
        on_progress(SweepProgress(done, failed, len(plan.points), None))
    run = executor or local_processes()
    fd = os.open(index_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    finished = 0
    try:
        try:
            with contextlib.closing(run(tasks)) as outcomes:
                for outcome in outcomes:
                    record = _finish(out, outcome, resume)
                    _append(fd, record)
                    finished += 1
                    done, failed = done + 1, failed + (record["status"] != "ok")
                    if on_progress is not None:
                        on_progress(SweepProgress(done, failed, len(plan.points), record))
        finally:
            os.close(fd)
    except InputError:  # e.g. no scheduler at --scheduler: a sweep that never began leaves no directory
        if made and not finished:
            _unmake(out, made)
        raise
    table = sweep_table(plan, _read_index(index_path, plan))
    staging = out / f".{TABLE_FILE}.tmp"
    table.write_parquet(staging)
    os.replace(staging, out / TABLE_FILE)
    return table


def _prepare(out: Path, plan: SweepPlan, resume: bool) -> str | None:
    """Make the sweep dir with its plan, or check that `--resume` points at this plan's directory.

    netsim writes only into a directory it made (or an empty one): an existing one is continued only
    when its `sweep.json` holds this plan, and refused otherwise, never cleared. Returns what it made:
    "dir" (the directory), "files" (the plan, in an empty directory), or None (resumed).
    """
    plan_file = out / PLAN_FILE
    text = json.dumps(_plan_json(plan), indent=1, default=str) + "\n"
    if resume and plan_file.is_file() and not plan_file.is_symlink():
        try:
            stored = json.loads(plan_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            raise InputError(f"{out}/{PLAN_FILE}: unreadable; not a netsim sweep directory") from None
        if not isinstance(stored, dict) or stored.get("fingerprint") != plan.fingerprint:
            raise InputError(f"{out}: holds another sweep (other scenario, axes, values or repeats); "
                             "--resume continues only the same sweep: name a new -o")
        return None
    if plan_file.exists():
        raise InputError(f"{out}: holds a sweep already; pass --resume to finish it, or name a new -o")
    if out.is_dir() and not out.is_symlink():
        if any(out.iterdir()):
            raise InputError(f"{out}: exists and is not a netsim sweep directory; name a new directory")
        if (problem := check_run_dir(out / PLAN_FILE)) is not None:  # cwd, system dirs, permissions
            raise InputError(problem)
        _write_atomic(plan_file, text)
        return "files"
    if (problem := check_run_dir(out)) is not None:
        raise InputError(problem)
    try:
        with staged_dir(out) as staging:  # the directory appears with its plan, or not at all
            (staging / PLAN_FILE).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{out}: cannot create the sweep directory ({exc.strerror or exc})") from None
    return "dir"


def _unmake(out: Path, made: str) -> None:
    """Remove the plan and the empty ledger `_prepare` wrote, and the directory if it made it."""
    for name in (PLAN_FILE, INDEX_FILE):
        (out / name).unlink(missing_ok=True)  # only what netsim created
    if made == "dir":
        with contextlib.suppress(OSError):  # not empty after all: leave it
            out.rmdir()


def _plan_json(plan: SweepPlan) -> dict[str, Any]:
    from netsim.version import __version__

    return {
        "netsim_version": __version__, "scenario": plan.name, "source": str(plan.source.resolve()),
        "fingerprint": plan.fingerprint, "repeat": plan.repeat,
        "axes": [{"path": a.path, "kind": "zip" if a.zipped else "grid", "values": list(a.values)}
                 for a in plan.axes],
        "points": [{"point": p.id, "key": p.key, "params": dict(p.params), "repeat": p.repeat, "seed": p.seed}
                   for p in plan.points],
    }


def _finish(out: Path, outcome: PointOutcome, overwrite: bool) -> dict[str, Any]:
    """Write a finished point's run dir and return its ledger record.

    `overwrite` (on resume) lets a point killed after its run dir was renamed in, but before its line was
    written, replace that earlier run of its own; rundir refuses anything that is not a netsim run.
    """
    run_dir = f"{POINTS_DIR}/{outcome.point_id}"
    record: dict[str, Any] = {"point": outcome.point_id, "key": outcome.key, "status": "failed",
                              "error": outcome.error, "run_dir": None, "summary": {}}
    if outcome.results is None:
        return record
    try:
        outcome.results.write(out / run_dir, overwrite=overwrite)
    except InputError as exc:
        return {**record, "error": f"writing the run dir: {exc}"}
    return {**record, "status": "ok", "run_dir": run_dir, "summary": summary_scalars(outcome.results.summary)}


def _append(fd: int, record: dict[str, Any]) -> None:
    """One whole line per write on an O_APPEND descriptor, then fsync: after a kill the ledger holds
    every finished point's line, at worst followed by one torn line (dropped on resume)."""
    data = (json.dumps(record, separators=(",", ":")) + "\n").encode()
    while data:
        data = data[os.write(fd, data):]
    os.fsync(fd)


def _read_index(path: Path, plan: SweepPlan) -> dict[str, dict[str, Any]]:
    """The last record of each point of this plan. A torn last line (a kill mid-write) is cut off, so
    the next append starts on a line of its own."""
    if not path.exists():
        return {}
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        with path.open("r+b") as f:
            f.truncate(keep)
        data = data[:keep]
    keys = {p.id: p.key for p in plan.points}
    records: dict[str, dict[str, Any]] = {}
    for n, line in enumerate(data.splitlines(), 1):
        try:
            record = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise InputError(f"{path}: line {n} is not a sweep record; the ledger was edited") from None
        if isinstance(record, dict) and keys.get(record.get("point")) == record.get("key"):
            records[record["point"]] = record
    return records


def summary_scalars(summary: dict[str, Any]) -> dict[str, Any]:
    """summary.json's numbers as flat columns: `ttft_s: {mean, p50, p95}` → `ttft_s_mean`, …;
    `fail_reasons: {outage: 2}` → `fail_reasons_outage`. Lists (models, token accounting) stay in the
    run dir."""
    flat: dict[str, Any] = {}
    for key, value in summary.items():
        if key in _DROPPED_SUMMARY_KEYS:
            continue
        if isinstance(value, dict):
            flat.update({f"{key}_{k}": v for k, v in value.items() if _scalar(v)})
        elif _scalar(value):
            flat[key] = value
    return flat


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, int | float | str)


def sweep_table(plan: SweepPlan, records: dict[str, dict[str, Any]]) -> pl.DataFrame:
    """One row per recorded point in point order: `point`, one column per axis (named by its path,
    `sweep.<path>` if that clashes with another column), repeat, seed, status, error, run_dir, then the
    summary's scalars. Types follow the values: integers, floats, booleans, strings; mixed values and
    lists are written as JSON text."""
    summary_names: dict[str, None] = {}
    for point in plan.points:
        summary_names.update(dict.fromkeys(records.get(point.id, {}).get("summary", {})))
    taken = set(FIXED_COLUMNS) | set(summary_names)
    param_names = [f"sweep.{a.path}" if a.path in taken else a.path for a in plan.axes]
    columns: dict[str, list[Any]] = {name: [] for name in ("point", *param_names, *FIXED_COLUMNS[1:],
                                                            *summary_names)}
    for point in plan.points:
        record = records.get(point.id)
        if record is None:
            continue
        row = {"point": point.id, **{name: v for name, (_, v) in zip(param_names, point.params, strict=True)},
               "repeat": point.repeat, "seed": point.seed, "status": record["status"],
               "error": record["error"], "run_dir": record["run_dir"], **record["summary"]}
        for name, values in columns.items():
            values.append(row.get(name))
    return pl.DataFrame([_series(name, values) for name, values in columns.items()])


def _series(name: str, values: list[Any]) -> pl.Series:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return pl.Series(name, values, dtype=pl.Boolean)
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pl.Series(name, values, dtype=pl.Int64)
    if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return pl.Series(name, [None if v is None else float(v) for v in values], dtype=pl.Float64)
    return pl.Series(name, [v if v is None or isinstance(v, str) else canonical(v) for v in values],
                     dtype=pl.String)


def _write_atomic(path: Path, text: str) -> None:
    staging = path.with_name(f".{path.name}.tmp")
    staging.write_text(text, encoding="utf-8")
    os.replace(staging, path)
