"""Requests: which device asks what, and when. Everything here is drawn before the simulation starts,
from the scenario seed alone, so the same scenario and seed always issue the same requests.

A prompt file or an arrival trace is read by `read_prompts` / `read_trace` both when a run makes its
requests and when `netsim validate` checks the scenario (`check_workload_files`), so validation refuses
exactly what a run would, file by file and line by line.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from netsim.errors import InputError
from netsim.inputfile import PROMPTS_MAX_BYTES, TRACE_MAX_BYTES, read_text, show_key, show_path
from netsim.scenario import (
    AllAtOnce,
    ClosedLoop,
    CorpusPrompts,
    FilePrompts,
    PartitionPrompts,
    Poisson,
    Scenario,
    TokenRange,
    Trace,
)


@dataclass(frozen=True)
class Request:
    request_id: int
    device: str
    t_arrival_s: float
    prompt: str
    max_new_tokens: int | None = None
    """This request's answer length when the workload draws one per request (`answer_tokens`);
    None: the workload's `max_new_tokens`."""
    prompt_tokens: int | None = None
    """Tokens of the prompt kept when the workload draws prompt lengths (`prompt_tokens`); None: all."""
    think_s: float | None = None
    """Closed loop: issued this long after the device's previous request ended (its first request:
    after this long from the start); None: open loop, issued at `t_arrival_s`."""


def make_requests(scenario: Scenario, rng: np.random.Generator) -> list[Request]:
    """Arrival times from the arrival process; devices round-robin unless a trace names them; prompts
    in order from the prompt source (cycled if there are fewer prompts than requests)."""
    wl = scenario.workload
    devices = scenario.request_devices
    times, named = _arrivals(wl.arrival, wl.n_requests, rng, devices)
    prompts = _prompts(wl.prompts, len(times), scenario.seed)
    requests = [
        Request(i, named[i] or devices[i % len(devices)], t, prompts[i % len(prompts)])
        for i, t in enumerate(times)
    ]
    if isinstance(wl.prompts, PartitionPrompts):
        requests = _partition_prompts(requests, wl.prompts, devices, scenario.seed)
    if not (isinstance(wl.arrival, ClosedLoop) or wl.answer_tokens or wl.prompt_tokens):
        return requests
    # Each drawn quantity has a stream of its own, so drawing one never moves another's numbers.
    n = len(requests)
    answers = _lengths(wl.answer_tokens, n, scenario.seed, LENGTHS_ANSWER)
    # A prompt keeps its drawn length each time it is reused (prompts cycle when fewer than requests):
    # the length belongs to the prompt, so a fleet reusing a few prompts reuses their model work too.
    per_prompt = n if isinstance(wl.prompts, PartitionPrompts) else len(prompts)
    prompt_len = _lengths(wl.prompt_tokens, per_prompt, scenario.seed, LENGTHS_PROMPT)
    prompt_n = [prompt_len[i % per_prompt] for i in range(n)]
    think = [None] * n
    if isinstance(wl.arrival, ClosedLoop):
        sigma = wl.arrival.think_sigma
        mu = math.log(wl.arrival.think_mean_s) - sigma**2 / 2  # E[T] = exp(μ + σ²/2) = mean
        think = np.random.default_rng([scenario.seed, STREAM_WORKLOAD, THINK_TIMES]).lognormal(
            mu, sigma, size=n).tolist()
    return [replace(r, max_new_tokens=answers[i], prompt_tokens=prompt_n[i], think_s=think[i])
            for i, r in enumerate(requests)]


STREAM_WORKLOAD = 2
"""The workload's random stream (world.py's STREAM_WORKLOAD; imported there would be a cycle)."""
LENGTHS_ANSWER, LENGTHS_PROMPT, THINK_TIMES = 1, 2, 3
"""Sub-streams of the workload stream for the per-request draws."""


def _lengths(spec: TokenRange | None, n: int, seed: int, sub: int) -> list[int | None]:
    if spec is None:
        return [None] * n
    rng = np.random.default_rng([seed, STREAM_WORKLOAD, sub])
    return rng.integers(spec.min, spec.max, endpoint=True, size=n).tolist()


def conversations(requests: Sequence[Request]) -> list[list[Request]]:
    """Closed loop: each device's requests in order, one list per device (devices in order of their
    first request)."""
    by_device: dict[str, list[Request]] = {}
    for r in requests:
        by_device.setdefault(r.device, []).append(r)
    return list(by_device.values())


def check_workload_files(scenario: Scenario) -> list[str]:
    """One line per problem with the scenario's prompt file or trace, found by reading them as a run
    would; empty when the workload names no file or the files are fine."""
    wl = scenario.workload
    problems: list[str] = []
    if isinstance(wl.prompts, FilePrompts):
        try:
            read_prompts(wl.prompts.path)
        except InputError as exc:
            problems.append(str(exc))
    if isinstance(wl.arrival, Trace):
        try:
            read_trace(wl.arrival.path, wl.n_requests, scenario.request_devices)
        except InputError as exc:
            problems.append(str(exc))
    return problems


def read_prompts(path: Path) -> list[str]:
    """One prompt per non-empty line (stripped) of a UTF-8 text file of at most PROMPTS_MAX_BYTES."""
    try:
        text = read_text(path, "prompt file", PROMPTS_MAX_BYTES)
    except InputError as exc:
        raise InputError(f"workload.prompts.path: {exc}") from None
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise InputError(f"workload.prompts.path: prompt file {show_path(path)}: holds no prompt "
                         "(one prompt per non-empty line)")
    return prompts


def read_trace(path: Path, n: int, devices: Sequence[str]) -> tuple[list[float], list[str | None]]:
    """Arrival times and named devices (None: round-robin) of the first `n` rows of a trace CSV.

    The header names a `t_s` column and optionally `device`; rows after the first `n` are not read.
    Every time must be a finite number >= 0, and times must not decrease: an out-of-order row is far
    more often a pasted or merged file than an intent, and sorting it quietly would also reorder which
    prompt goes with which request. A trace shorter than `n` rows is an error rather than a shorter run.
    Messages name the file and line, and print parsed numbers, never the raw text of a row.
    """
    where = f"workload.arrival.path: trace {show_path(path)}"
    try:
        text = read_text(path, "trace", TRACE_MAX_BYTES)
    except InputError as exc:
        raise InputError(f"workload.arrival.path: {exc}") from None
    rows = csv.reader(io.StringIO(text, newline=""))
    times: list[float] = []
    named: list[str | None] = []
    try:
        header = [name.strip() for name in next(rows, [])]
        if "t_s" not in header:
            raise InputError(f"{where}: needs a header line with a t_s column (and optionally device)")
        t_col = header.index("t_s")
        device_col = header.index("device") if "device" in header else None
        for row in rows:
            if len(times) == n:
                break
            if not any(cell.strip() for cell in row):
                continue
            line = f"{where}:{rows.line_num}"
            times.append(_time(row, t_col, line, times[-1] if times else None))
            named.append(_device(row, device_col, line, devices))
    except csv.Error as exc:
        raise InputError(f"{where}:{rows.line_num}: not valid CSV ({exc})") from None
    if len(times) < n:
        raise InputError(f"{where}: {len(times)} request row{'s' if len(times) != 1 else ''} but "
                         f"workload.n_requests is {n}; add rows or lower n_requests")
    return times, named


def _time(row: list[str], col: int, line: str, previous: float | None) -> float:
    cell = row[col].strip() if col < len(row) else ""
    if not cell:
        raise InputError(f"{line}: t_s is empty")
    try:
        t = float(cell)
    except ValueError:
        raise InputError(f"{line}: t_s is not a number") from None
    if not math.isfinite(t):
        raise InputError(f"{line}: t_s must be a finite number of seconds, got {t}")
    if t < 0:
        raise InputError(f"{line}: t_s must be >= 0, got {t:g}")
    if previous is not None and t < previous:
        raise InputError(f"{line}: t_s {t:g} is earlier than the row before ({previous:g}); "
                         "sort the trace by t_s")
    return t


def _device(row: list[str], col: int | None, line: str, devices: Sequence[str]) -> str | None:
    device = row[col].strip() if col is not None and col < len(row) else ""
    if not device:
        return None
    if device not in devices:
        raise InputError(f"{line}: device '{show_key(device)}' is not a requesting device "
                         f"({', '.join(devices)})")
    return device


def _arrivals(arrival: AllAtOnce | Poisson | Trace | ClosedLoop, n: int, rng: np.random.Generator,
              devices: list[str]) -> tuple[list[float], list[str | None]]:
    if isinstance(arrival, AllAtOnce | ClosedLoop):  # closed loop: issued as earlier requests end
        return [0.0] * n, [None] * n
    if isinstance(arrival, Poisson):
        gaps = rng.exponential(1.0 / arrival.rate_per_s, size=n)
        return np.cumsum(gaps).tolist(), [None] * n
    return read_trace(arrival.path, n, devices)


def _prompts(source: CorpusPrompts | FilePrompts | PartitionPrompts, n: int, seed: int) -> list[str]:
    if isinstance(source, FilePrompts):
        return read_prompts(source.path)
    if isinstance(source, PartitionPrompts):
        return [""]  # drawn per device by _partition_prompts
    from netsim.lm.corpus import prompt_texts  # the corpus is fetched on first use only

    return prompt_texts(min(n, source.distinct or n), seed=seed, min_chars=source.min_chars,
                        max_chars=source.max_chars)


PARTITION_ORDER = 4
"""Sub-stream of the workload stream that orders each client's held-out passages."""


def _partition_prompts(requests: list[Request], spec: PartitionPrompts, devices: Sequence[str], seed: int
                       ) -> list[Request]:
    """Device i of the requesting devices is client i of a Dirichlet(α) partition; its k-th request gets
    the k-th of its held-out passages in an order drawn per client (cycled when it has fewer)."""
    from netsim.lm.partition import dirichlet_partition  # the corpus is fetched on first use only

    clients = dirichlet_partition(len(devices), spec.alpha, seed, passage_chars=spec.passage_chars)
    index = {d: i for i, d in enumerate(devices)}
    orders = [np.random.default_rng([seed, STREAM_WORKLOAD, PARTITION_ORDER, i]).permutation(len(c.heldout))
              for i, c in enumerate(clients)]
    seen = dict.fromkeys(devices, 0)
    out = []
    for r in requests:
        i = index[r.device]
        k, seen[r.device] = seen[r.device], seen[r.device] + 1
        out.append(replace(r, prompt=clients[i].heldout[int(orders[i][k % len(orders[i])])]))
    return out
