"""Sweeps: one scenario run at many points (grid × zip × repeat), in parallel, resumable.

    from netsim.sweep import plan_sweep, run_sweep
    plan = plan_sweep("scenarios/quickstart.yaml", grid=["topology.links[1].rate_mbps=10,100,1000"])
    table = run_sweep(plan, "sweeps/quickstart")     # polars frame of sweep.parquet, one row per point

A sweep is a plan and a ledger: `plan.py` expands the axes and checks every point before any runs,
`executors.py` runs them (local processes, this process, or Dask), `ledger.py` owns the sweep directory
(run dirs, the resumable index, `sweep.parquet`). The command is `netsim sweep` (netsim/cli/sweep.py);
syntax, columns and the seed rule are in docs/sweeps.md.

The public names load on first use (PEP 562): the modules import one another downwards (ledger →
executors, plan), never this package's `__init__`.
"""

from __future__ import annotations

from typing import Any

_PUBLIC = {
    "plan_sweep": "plan", "SweepPlan": "plan", "Point": "plan", "Axis": "plan", "POINTS_MAX": "plan",
    "run_sweep": "ledger", "sweep_table": "ledger", "default_sweep_dir": "ledger", "SweepProgress": "ledger",
    "PLAN_FILE": "ledger", "INDEX_FILE": "ledger", "TABLE_FILE": "ledger", "POINTS_DIR": "ledger",
    "local_processes": "executors", "in_process": "executors", "dask_cluster": "executors",
    "run_point": "executors", "memo_dir": "executors",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(f"netsim.sweep.{_PUBLIC[name]}"), name)
    raise AttributeError(f"module 'netsim.sweep' has no attribute {name!r}")
