"""cloud_only — the prompt goes up, a cloud LLM prefills and decodes, tokens stream back one by one.

The reference point at the other end: the LLM's quality, paid for with an uplink of the prompt text, a
round trip before the first token, and a downlink message per token (the streaming is in remote.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from netsim.policies.base import PolicyParams, ProcessGenerator, RequestContext
from netsim.policies.remote import check_servers, serve_from

if TYPE_CHECKING:
    import networkx as nx

    from netsim.scenario import Scenario


class Params(PolicyParams):
    name: Literal["cloud_only"]
    server: str | None = Field(None, description="serving node (default: nearest cloud node with a model)")
    model: str | None = Field(None, description="model on the server (default: its first)")


def serve(ctx: RequestContext, params: Params) -> ProcessGenerator:
    server = (ctx.world.nodes[params.server] if params.server
              else ctx.world.nearest(ctx.device.name, ("cloud",), params.model))
    yield from serve_from(ctx, server, server.model(params.model))


def check(params: Params, scenario: Scenario, graph: nx.DiGraph) -> list[str]:
    return check_servers("cloud_only", "cloud", params.server, params.model, scenario, graph)
