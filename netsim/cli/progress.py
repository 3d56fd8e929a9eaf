"""Terminal presentation of a run: a rich progress bar while requests finish (only on a terminal)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from netsim.lm.zoo import ModelStore
from netsim.results import Results
from netsim.scenario import Scenario
from netsim.simulation import run


def run_with_progress(scenario: Scenario, console: Console, store: ModelStore | None = None) -> Results:
    if not console.is_terminal:
        return run(scenario, store)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[failed]} failed"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(scenario.name, total=scenario.workload.n_requests, failed=0)
        failed = 0

        def done(record) -> None:
            nonlocal failed
            failed += record.status == "failed"
            progress.update(task, advance=1, failed=failed)

        return run(scenario, store, on_request_done=done)
