"""device_only — the requesting device's own model answers everything; nothing crosses the network.

Until netsim 0.2 this policy was called `edge_only` ("the device at the network edge"); that name now
means the nearest edge server (edge_only.py), so the old name could not stay an alias.

The reference point at one end of every comparison: the lowest bytes (zero) and the device's own
compute speed and energy, with the SLM's quality.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from netsim.policies.base import PolicyParams, ProcessGenerator, RequestContext

if TYPE_CHECKING:
    import networkx as nx

    from netsim.scenario import Scenario


class Params(PolicyParams):
    name: Literal["device_only"]
    model: str | None = Field(None, description="model on the device to use (default: its first)")


def serve(ctx: RequestContext, params: Params) -> ProcessGenerator:
    device, rec = ctx.device, ctx.record
    model = device.model(params.model)
    prompt_ids, output = ctx.answer(device, model)

    # 1. Prefill the prompt; its last logits give the first token.
    yield from ctx.prefill(device, model, len(prompt_ids))
    if output:
        rec.token_arrived(ctx.env.now)
    # 2. Each further token costs one decode call over the growing context.
    for i in range(1, len(output)):
        yield from ctx.decode(device, model, past_len=len(prompt_ids) + i - 1)
        rec.token_arrived(ctx.env.now)
    rec.tokens_local = len(output)


def check(params: Params, scenario: Scenario, graph: nx.DiGraph) -> list[str]:
    """Every requesting device must host the model."""
    problems = []
    for d in scenario.request_devices:
        hosted = [m.name for m in scenario.topology.nodes[d].models]
        if not (params.model in hosted if params.model else hosted):
            problems.append(f"topology.nodes.{d}.models: device_only needs {params.model or 'a model'} here")
    return problems
