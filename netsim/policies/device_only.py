"""device_only — the requesting device's own model answers everything; nothing crosses the network.

Until netsim 0.2 this policy was called `edge_only` ("the device at the network edge"); that name now
means the nearest edge server (edge_only.py), so the old name could not stay an alias: a scenario that
still says `edge_only` without an edge server is refused with a line pointing here.

The reference point at one end of every comparison: the lowest bytes (zero) and the device's own
compute speed and energy, with the SLM's quality.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from netsim.policies.base import Policy
from netsim.policies.params import DeviceOnlyParams

if TYPE_CHECKING:
    import networkx as nx

    from netsim.context import ProcessGenerator, RequestContext
    from netsim.scenario import Scenario


class DeviceOnly(Policy[DeviceOnlyParams]):
    name = "device_only"
    Params = DeviceOnlyParams

    @classmethod
    def check(cls, params: DeviceOnlyParams, scenario: Scenario, graph: nx.DiGraph) -> list[str]:
        """Every requesting device must host the model."""
        problems = []
        for d in scenario.request_devices:
            hosted = [m.name for m in scenario.topology.nodes[d].models]
            if not (params.model in hosted if params.model else hosted):
                need = params.model or "a model"
                problems.append(f"topology.nodes.{d}.models: device_only needs {need} here")
        return problems

    def serve(self, ctx: RequestContext) -> ProcessGenerator:
        device, rec = ctx.device, ctx.record
        model = device.model(self.params.model)
        prompt_ids, output = ctx.answer(device, model)

        # 1. Prefill the prompt; its last logits give the first token.
        yield from ctx.charge_prefill(device, model, len(prompt_ids))
        if output:
            rec.token_arrived(ctx.env.now)
        # 2. Each further token costs one decode call over the growing context.
        for i in range(1, len(output)):
            yield from ctx.charge_decode(device, model, past_len=len(prompt_ids) + i - 1)
            rec.token_arrived(ctx.env.now)
        rec.tokens_local = len(output)
