"""One run: scenario → world → policy → request processes → records → results. The whole flow of
DESIGN.md in one screen, so it can be read top to bottom."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import simpy

from netsim.context import ProcessGenerator, RequestContext
from netsim.lm.zoo import ModelStore
from netsim.metrics import RequestRecord, requests_frame, summarize, token_accounting
from netsim.network.delivery import TransferFailed
from netsim.policies.base import Policy
from netsim.policies.registry import POLICIES
from netsim.results import Results
from netsim.scenario import Scenario
from netsim.validation import check_scenario
from netsim.version import __version__
from netsim.workload import Request, conversations, make_requests
from netsim.world import STREAM_WORKLOAD, Catalog, World, build_world, rng_for

ProgressHook = Callable[[RequestRecord], None]


def run(scenario: Scenario, store: ModelStore | None = None, on_request_done: ProgressHook | None = None
        ) -> Results:
    """Simulate until every request has ended (ok or failed) and the policy's own processes are done."""
    store = store or ModelStore()
    catalog = Catalog(store)  # profiles, manifests and cards read once for the check and the build
    check_scenario(scenario, store, catalog=catalog)
    world = build_world(scenario, store, catalog=catalog)
    policy = POLICIES[scenario.policy.name](scenario.policy, world)
    requests = make_requests(scenario, rng_for(scenario.seed, STREAM_WORKLOAD))
    records: list[RequestRecord] = []

    # The end is explicit: the workload (which waits for its requests) and the policy's setup processes.
    # Daemon services a policy starts may keep events queued; they do not hold the run open.
    env = world.env
    jobs = [env.process(_workload(world, policy, requests, records, on_request_done)),
            *(env.process(p) for p in policy.setup())]
    env.run(until=env.all_of(jobs))
    tables = policy.finish()

    frame = requests_frame(records, policy.columns)
    summary = {
        "scenario": scenario.name,
        "policy": scenario.policy.name,
        "seed": scenario.seed,
        "netsim_version": __version__,
        **summarize(frame),
        "sim_end_s": env.now,
        "models": _models(world),
        "token_accounting": token_accounting(records, {r.request_id: len(r.prompt) for r in requests},
                                             _vocabularies(world)),
        "energy_idle_j_by_profile": _idle_energy(world),
    }
    provenance = {"netsim_version": __version__, "models": _model_hashes(world)}
    return Results(scenario, frame, world.recorder.frame(), summary, provenance, tables)


def _workload(world: World, policy: Policy, requests: list[Request], records: list[RequestRecord],
              on_done: ProgressHook | None) -> ProcessGenerator:
    env = world.env
    if requests and requests[0].think_s is not None:  # closed loop: one conversation per device
        yield env.all_of([env.process(_conversation(world, policy, chain, records, on_done))
                          for chain in conversations(requests)])
        return
    running = []
    for req in requests:
        if req.t_arrival_s > env.now:
            yield env.timeout(req.t_arrival_s - env.now)
        record = RequestRecord(req.request_id, req.device, policy.name, env.now)
        records.append(record)
        running.append(env.process(_request(world, policy, req, record, on_done)))
    yield env.all_of(running)


def _conversation(world: World, policy: Policy, chain: list[Request], records: list[RequestRecord],
                  on_done: ProgressHook | None) -> ProcessGenerator:
    """One device's requests one after another, each issued its think time after the last one ended."""
    env = world.env
    for req in chain:
        yield env.timeout(req.think_s or 0.0)
        record = RequestRecord(req.request_id, req.device, policy.name, env.now)
        records.append(record)
        yield env.process(_request(world, policy, req, record, on_done))


def _request(world: World, policy: Policy, req: Request, record: RequestRecord,
             on_done: ProgressHook | None) -> ProcessGenerator:
    env = world.env
    world.recorder.event(env.now, req.device, "request_start", req.request_id)
    try:
        yield from policy.serve(RequestContext(world, req, record))
        record.status = "ok"
    except (TransferFailed, simpy.Interrupt) as exc:
        record.fail(*failure(exc))
    device = world.nodes[req.device]
    record.energy_compute_j = device.compute.energy_j(req.request_id)
    world.recorder.event(env.now, req.device, "request_end", req.request_id, detail=record.status)
    if on_done is not None:
        on_done(record)


_TRANSFER_CODES = (("outage on ", "outage"), ("retries exhausted", "retx_exhausted"),
                   ("out of coverage", "no_coverage"))
"""Text each TransferFailed raise site puts in its reason (medium.py's outage expiry; network.py's
retransmission limit and coverage check) → its code in metrics.FAIL_CODES."""


def failure(exc: BaseException) -> tuple[str, str]:
    """(fail code, detail line) of what ended a request.

    A transfer failure is classified by its reason; an interrupt by its cause: a TransferFailed cause
    keeps its code, a `TimeoutError` (a deadline the policy set) is `timeout`, anything else
    `cancelled`. A reason no raise site is known to give is `transfer_failed`, never a crash: the run
    always completes, and the detail column still says what happened.
    """
    if isinstance(exc, simpy.Interrupt):
        cause = exc.cause
        if isinstance(cause, TransferFailed):
            return failure(cause)
        return ("timeout" if isinstance(cause, TimeoutError) else "cancelled"), str(cause)
    reason = str(exc)
    if isinstance(exc, TransferFailed):
        for marker, code in _TRANSFER_CODES:
            if marker in reason:
                return code, reason
    return "transfer_failed", reason


def _models(world: World) -> list[dict[str, Any]]:
    """Which model produced the tokens on which kind of node, and which cost card billed it (reports
    say so): one row per (role, profile, model, card) with its node count, not one per node."""
    counts: dict[tuple[str, str, str, str], int] = {}
    for node in world.nodes.values():
        for m in node.models:
            key = (node.role, node.profile_ref or "", m.name, m.charged_as or "")
            counts[key] = counts.get(key, 0) + 1
    return [{"role": role, "profile": profile, "model": model, "charged_as": charged_as or None,
             "n_nodes": n} for (role, profile, model, charged_as), n in sorted(counts.items())]


def _vocabularies(world: World) -> dict[tuple[str, str], tuple[int, int | None]]:
    """(model, charged_as or "") → (its tokenizer's vocabulary, the card's vocabulary or None)."""
    return {(m.name, m.charged_as or ""): (m.lm.tokenizer.vocab_size,
                                           m.charged.vocab_size if m.charged_as else None)
            for n in world.nodes.values() for m in n.models}


def _idle_energy(world: World) -> list[dict[str, Any]]:
    """Idle energy over the run per (role, profile), summed over the nodes of that kind."""
    totals: dict[tuple[str, str], list[float]] = {}
    for node in world.nodes.values():
        if node.compute is None:
            continue
        entry = totals.setdefault((node.role, node.profile_ref or ""), [0, 0.0])
        entry[0] += 1
        entry[1] += node.compute.idle_energy_j(world.env.now)
    return [{"role": role, "profile": profile, "n_nodes": int(n), "energy_idle_j": energy_j}
            for (role, profile), (n, energy_j) in sorted(totals.items())]


def _model_hashes(world: World) -> dict[str, str]:
    return {m.name: m.lm.sha256 for n in world.nodes.values() for m in n.models}
