"""Requests: which device asks what, and when. Everything here is drawn before the simulation starts,
from the scenario seed alone, so the same scenario and seed always issue the same requests."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from netsim.errors import InputError
from netsim.scenario import AllAtOnce, CorpusPrompts, FilePrompts, Poisson, Scenario, Trace


@dataclass(frozen=True)
class Request:
    request_id: int
    device: str
    t_arrival_s: float
    prompt: str


def make_requests(scenario: Scenario, rng: np.random.Generator) -> list[Request]:
    """Arrival times from the arrival process; devices round-robin unless a trace names them; prompts
    in order from the prompt source (cycled if there are fewer prompts than requests)."""
    wl = scenario.workload
    devices = scenario.request_devices
    times, named = _arrivals(wl.arrival, wl.n_requests, rng, devices)
    prompts = _prompts(wl.prompts, len(times), scenario.seed)
    return [
        Request(i, named[i] or devices[i % len(devices)], t, prompts[i % len(prompts)])
        for i, t in enumerate(times)
    ]


def _arrivals(arrival: AllAtOnce | Poisson | Trace, n: int, rng: np.random.Generator, devices: list[str]
              ) -> tuple[list[float], list[str | None]]:
    if isinstance(arrival, AllAtOnce):
        return [0.0] * n, [None] * n
    if isinstance(arrival, Poisson):
        gaps = rng.exponential(1.0 / arrival.rate_per_s, size=n)
        return np.cumsum(gaps).tolist(), [None] * n
    return _read_trace(arrival.path, n, devices)


def _read_trace(path: Path, n: int, devices: list[str]) -> tuple[list[float], list[str | None]]:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        raise InputError(f"workload.arrival.path: cannot read {path} ({exc.strerror})") from None
    if not rows or "t_s" not in rows[0]:
        raise InputError(f"workload.arrival.path: {path} needs a header with a t_s column")
    times: list[float] = []
    named: list[str | None] = []
    for line, row in enumerate(rows[:n], start=2):
        try:
            t = float(row["t_s"])
        except (TypeError, ValueError):
            raise InputError(
                f"workload.arrival.path: {path}:{line}: t_s {row['t_s']!r} is not a number") from None
        if t < 0:
            raise InputError(f"workload.arrival.path: {path}:{line}: t_s must be >= 0")
        device = (row.get("device") or "").strip() or None
        if device is not None and device not in devices:
            raise InputError(f"workload.arrival.path: {path}:{line}: {device!r} is not a requesting device")
        times.append(t)
        named.append(device)
    order = sorted(range(len(times)), key=lambda i: times[i])
    return [times[i] for i in order], [named[i] for i in order]


def _prompts(source: CorpusPrompts | FilePrompts, n: int, seed: int) -> list[str]:
    if isinstance(source, FilePrompts):
        try:
            lines = source.path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise InputError(f"workload.prompts.path: cannot read {source.path} ({exc.strerror})") from None
        prompts = [line.strip() for line in lines if line.strip()]
        if not prompts:
            raise InputError(f"workload.prompts.path: {source.path} holds no prompt")
        return prompts
    from netsim.lm.corpus import prompt_texts  # the corpus is fetched on first use only

    return prompt_texts(n, seed=seed, min_chars=source.min_chars, max_chars=source.max_chars)
