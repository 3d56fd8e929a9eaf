"""Where the points of a sweep run: this process, a pool of local processes, or a Dask cluster.

An executor takes the tasks and yields their outcomes as they finish; closing it cancels what is left.
A worker keeps one ModelStore per process (per thread, for a multi-threaded Dask worker), built there on
the first point it runs and never pickled, so its models and their inference memo serve every point it
runs; with the on-disk memo the processes of a machine share inference too. A point's failure is caught
in the worker and travels back as an outcome with its error: the sweep goes on.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import threading
from collections.abc import Callable, Generator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netsim.errors import InputError
from netsim.lm.memo import LanguageModel
from netsim.lm.zoo import ModelStore
from netsim.paths import cache_dir
from netsim.results import Results
from netsim.scenario import Scenario


@dataclass(frozen=True)
class PointTask:
    """What a worker gets: the checked scenario (not its file: a remote worker need not see it)."""

    point_id: str
    key: str
    scenario: Scenario
    disk_memo: bool


@dataclass(frozen=True)
class PointOutcome:
    point_id: str
    key: str
    results: Results | None
    error: str | None


Outcomes = Generator[PointOutcome, None, None]
Executor = Callable[[list[PointTask]], Outcomes]
"""Runs tasks and yields their outcomes as they finish; closing the iterator cancels what is left."""


class WorkerStore(ModelStore):
    """A worker's ModelStore that can flush the disk memos of the models it handed out.

    The on-disk memo batches its writes (netsim/lm/memo.py DiskMemo); a worker flushes after every
    point, so what one point computed is on disk for the other processes before the next point starts,
    and nothing is left pending when the pool ends the process (which runs no finalisers).
    """

    def __init__(self, disk_memo: Path | None) -> None:
        super().__init__(disk_memo=disk_memo)
        self._handed: dict[str, LanguageModel] = {}

    def load(self, name: str) -> LanguageModel:
        model = super().load(name)
        self._handed[name] = model
        return model

    def flush(self) -> None:
        for model in self._handed.values():
            model.flush()


def run_point(task: PointTask, store: ModelStore) -> PointOutcome:
    """One point, any failure caught: a failed point is a row with its error, and the sweep goes on."""
    from netsim.simulation import run

    try:
        return PointOutcome(task.point_id, task.key, run(task.scenario, store), None)
    except Exception as exc:
        text = " ".join(str(exc).split())[:500]  # one line in sweep.parquet's error column
        error = text if isinstance(exc, InputError) else f"{type(exc).__name__}: {text}"
        return PointOutcome(task.point_id, task.key, None, error)
    finally:
        if isinstance(store, WorkerStore):
            store.flush()


def _run_in_worker(task: PointTask) -> PointOutcome:
    return run_point(task, _worker_store(os.getpid(), threading.get_ident(), task.disk_memo))


@functools.cache
def _worker_store(pid: int, thread: int, disk_memo: bool) -> WorkerStore:
    """The ModelStore of one worker process (per thread: a memo's SQLite handle stays in its thread).

    Built on the first point a worker runs, never in the driver, and never pickled. The pid in the key
    keeps a forked child from using its parent's entry.
    """
    del pid, thread  # only the cache key
    return WorkerStore(memo_dir() if disk_memo else None)


def memo_dir() -> Path:
    """The on-disk inference memo, per machine (`<cache>/memo/<model sha256>.sqlite`, safe to delete):
    local to every worker, shared by the processes of one machine and by later sweeps."""
    return cache_dir() / "memo"


def in_process() -> Executor:
    """Every point in this process, one after another (`-j 1`): for debugging, with the same results.
    The store lives as long as the sweep, not the process."""

    def outcomes(tasks: list[PointTask]) -> Outcomes:
        store: WorkerStore | None = None
        for task in tasks:
            store = store or WorkerStore(memo_dir() if task.disk_memo else None)
            yield run_point(task, store)

    return outcomes


def local_processes(jobs: int | None = None) -> Executor:
    """A pool of `jobs` processes (default: one per usable CPU), started fresh (forkserver or spawn),
    not forked: a fork of a process whose onnxruntime or polars threads run can deadlock."""

    def outcomes(tasks: list[PointTask]) -> Outcomes:
        if not tasks:
            return
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
        n = min(jobs or usable_cpus(), len(tasks))
        pool = ProcessPoolExecutor(max_workers=n, mp_context=context)
        futures: dict[Future[PointOutcome], PointTask] = {}
        finished = False
        try:
            futures = {pool.submit(_run_in_worker, task): task for task in tasks}
            for future in as_completed(futures):
                yield _outcome(future, futures[future])
            finished = True
        finally:
            pool.shutdown(wait=finished, cancel_futures=True)

    return outcomes


def dask_cluster(workers: int | None = None, scheduler: str | None = None) -> Executor:
    """Points as tasks of a Dask distributed cluster: a running one at `scheduler`, else a LocalCluster of
    `workers` single-threaded worker processes. Workers import netsim from their own installation."""

    def outcomes(tasks: list[PointTask]) -> Outcomes:
        import logging

        try:
            from distributed import Client, LocalCluster
            from distributed import as_completed as dask_completed
        except ImportError:  # an optional extra: say how to get it rather than fail with a traceback
            raise InputError("--workers/--scheduler run on Dask: pip install 'netsim[sweep]'") from None

        with contextlib.ExitStack() as stack:
            if scheduler is not None:
                try:
                    client = stack.enter_context(Client(scheduler, timeout="10s"))
                except (OSError, TimeoutError, ValueError) as exc:
                    raise InputError(f"--scheduler {scheduler}: cannot connect ({exc})") from None
            else:
                cluster = stack.enter_context(LocalCluster(
                    n_workers=workers or usable_cpus(), threads_per_worker=1, processes=True,
                    dashboard_address=None, silence_logs=logging.ERROR))
                client = stack.enter_context(Client(cluster))
            futures = {client.submit(_run_in_worker, task, key=f"netsim-{task.key}-{task.point_id}"): task
                       for task in tasks}
            try:
                for future in dask_completed(futures):
                    yield _outcome(future, futures[future])
            finally:
                client.cancel(list(futures))

    return outcomes


def _outcome(future: Any, task: PointTask) -> PointOutcome:
    """A finished future's outcome; a worker lost (killed, out of memory) fails its point, not the sweep."""
    try:
        return future.result()
    except Exception as exc:
        return PointOutcome(task.point_id, task.key, None,
                            f"worker lost ({type(exc).__name__}: {' '.join(str(exc).split())})")


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
