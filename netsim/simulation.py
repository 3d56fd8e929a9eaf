"""One run: scenario → world → request processes → records → results. The whole flow of DESIGN.md in
one screen, so it can be read top to bottom."""

from __future__ import annotations

from collections.abc import Callable

import simpy

import netsim
from netsim.lm.zoo import ModelStore
from netsim.metrics import RequestRecord, requests_frame, summarize
from netsim.network.delivery import TransferFailed
from netsim.policies import serve_fn
from netsim.policies.base import ProcessGenerator, RequestContext
from netsim.results import Results
from netsim.scenario import Scenario
from netsim.workload import Request, make_requests
from netsim.world import STREAM_WORKLOAD, World, build_world, check_scenario, rng_for

ProgressHook = Callable[[RequestRecord], None]


def run(scenario: Scenario, store: ModelStore | None = None, on_request_done: ProgressHook | None = None
        ) -> Results:
    """Simulate until every request has ended (ok or failed)."""
    store = store or ModelStore()
    check_scenario(scenario, store)
    world = build_world(scenario, store)
    requests = make_requests(scenario, rng_for(scenario.seed, STREAM_WORKLOAD))
    records: list[RequestRecord] = []
    world.env.process(_workload(world, requests, records, on_request_done))
    world.env.run()

    frame = requests_frame(records)
    summary = {
        "scenario": scenario.name,
        "policy": scenario.policy.name,
        "seed": scenario.seed,
        "netsim_version": netsim.__version__,
        **summarize(frame),
        "sim_end_s": world.env.now,
        "models": _models(world),
        "energy_idle_j": {n.name: n.compute.idle_energy_j(world.env.now)
                          for n in world.nodes.values() if n.compute is not None},
    }
    provenance = {"netsim_version": netsim.__version__, "models": _model_hashes(world)}
    return Results(scenario, frame, world.recorder.frame(), summary, provenance)


def _workload(world: World, requests: list[Request], records: list[RequestRecord],
              on_done: ProgressHook | None) -> ProcessGenerator:
    env = world.env
    for req in requests:
        if req.t_arrival_s > env.now:
            yield env.timeout(req.t_arrival_s - env.now)
        record = RequestRecord(req.request_id, req.device, world.scenario.policy.name, env.now)
        records.append(record)
        env.process(_request(world, req, record, on_done))


def _request(world: World, req: Request, record: RequestRecord, on_done: ProgressHook | None
             ) -> ProcessGenerator:
    env, params = world.env, world.scenario.policy
    world.recorder.event(env.now, req.device, "request_start", req.request_id)
    try:
        yield from serve_fn(params.name)(RequestContext(world, req, record), params)
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

