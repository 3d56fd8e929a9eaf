"""edge_only — the nearest edge server answers the whole request; tokens stream back one by one.

Between device_only and cloud_only: an edge GPU a few milliseconds away instead of a cloud region tens
of milliseconds away, usually with a smaller model and fewer slots than the cloud. The server is the
reachable edge node hosting the model with the least propagation delay from the requesting device.
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
    name: Literal["edge_only"]
    server: str | None = Field(None, description="serving node (default: nearest edge node with a model)")
    model: str | None = Field(None, description="model on the server (default: its first)")


def serve(ctx: RequestContext, params: Params) -> ProcessGenerator:
    server = (ctx.world.nodes[params.server] if params.server
              else ctx.world.nearest(ctx.device.name, ("edge",), params.model))
    yield from serve_from(ctx, server, server.model(params.model))


def check(params: Params, scenario: Scenario, graph: nx.DiGraph) -> list[str]:
    return check_servers("edge_only", "edge", params.server, params.model, scenario, graph)
