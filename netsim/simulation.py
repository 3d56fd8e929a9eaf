"""One run: scenario → world → policy → request processes → records → results. The whole flow of
DESIGN.md in one screen, so it can be read top to bottom."""

from __future__ import annotations

from collections.abc import Callable

import simpy

import netsim
from netsim.context import ProcessGenerator, RequestContext
from netsim.lm.zoo import ModelStore
from netsim.metrics import RequestRecord, requests_frame, summarize
from netsim.network.delivery import TransferFailed
from netsim.policies import POLICIES
from netsim.policies.base import Policy
from netsim.results import Results
from netsim.scenario import Scenario
from netsim.workload import Request, make_requests
from netsim.world import STREAM_WORKLOAD, World, build_world, check_scenario, rng_for

ProgressHook = Callable[[RequestRecord], None]


def run(scenario: Scenario, store: ModelStore | None = None, on_request_done: ProgressHook | None = None
        ) -> Results:
    """Simulate until every request has ended (ok or failed) and the policy's own processes are done."""
    store = store or ModelStore()
    check_scenario(scenario, store)
    world = build_world(scenario, store)
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
        "netsim_version": netsim.__version__,
        **summarize(frame),
        "sim_end_s": env.now,
        "models": _models(world),
        "energy_idle_j": {n.name: n.compute.idle_energy_j(env.now)
                          for n in world.nodes.values() if n.compute is not None},
    }
    provenance = {"netsim_version": netsim.__version__, "models": _model_hashes(world)}
    return Results(scenario, frame, world.recorder.frame(), summary, provenance, tables)


def _workload(world: World, policy: Policy, requests: list[Request], records: list[RequestRecord],
              on_done: ProgressHook | None) -> ProcessGenerator:
    env = world.env
    running = []
    for req in requests:
        if req.t_arrival_s > env.now:
            yield env.timeout(req.t_arrival_s - env.now)
        record = RequestRecord(req.request_id, req.device, policy.name, env.now)
        records.append(record)
        running.append(env.process(_request(world, policy, req, record, on_done)))
    yield env.all_of(running)


def _request(world: World, policy: Policy, req: Request, record: RequestRecord,
             on_done: ProgressHook | None) -> ProcessGenerator:
    env = world.env
    world.recorder.event(env.now, req.device, "request_start", req.request_id)
    try:
        yield from policy.serve(RequestContext(world, req, record))
        record.status = "ok"
    except TransferFailed as exc:
        record.fail(str(exc))
    except simpy.Interrupt as exc:  # a policy may interrupt its own sub-processes; surface the cause
        record.fail(str(exc.cause))
    device = world.nodes[req.device]
    record.energy_compute_j = device.compute.energy_j(req.request_id)
    world.recorder.event(env.now, req.device, "request_end", req.request_id, detail=record.status)
    if on_done is not None:
        on_done(record)


def _models(world: World) -> dict[str, list[dict[str, str | None]]]:
    """Which model produced the tokens on each node, and which cost card billed it (reports say so)."""
    return {n.name: [{"model": m.name, "charged_as": m.charged_as} for m in n.models]
            for n in world.nodes.values() if n.models}


def _model_hashes(world: World) -> dict[str, str]:
    return {m.name: m.lm.sha256 for n in world.nodes.values() for m in n.models}
