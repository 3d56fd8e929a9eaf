"""cloud_only — the prompt goes up, a cloud LLM prefills and decodes, tokens stream back one by one.

The reference point at the other end: the LLM's quality, paid for with an uplink of the prompt text, a
round trip before the first token, and a downlink message per token. Decoding does not wait for the
downlink: token i+1 is computed while token i is on its way, as a streaming API does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import networkx as nx
from pydantic import Field

from netsim.payload import text_nbytes, tokens_nbytes
from netsim.policies.base import PolicyParams, ProcessGenerator, RequestContext

if TYPE_CHECKING:
    from netsim.scenario import Scenario


class Params(PolicyParams):
    name: Literal["cloud_only"]
    server: str | None = Field(None, description="serving node (default: nearest cloud node with a model)")
    model: str | None = Field(None, description="model on the server (default: its first)")


def serve(ctx: RequestContext, params: Params) -> ProcessGenerator:
    rec, device = ctx.record, ctx.device
    server = (ctx.world.nodes[params.server] if params.server
              else ctx.world.nearest(device.name, ("cloud",), params.model))
    model = server.model(params.model)
    prompt_ids, output = ctx.answer(server, model)

    # 1. The prompt travels as UTF-8 text, as in a chat-completion API call.
    yield from ctx.send(device.name, server.name, text_nbytes(ctx.request.prompt), kind="prompt")
    rec.llm_transmissions += 1
    # 2. Prefill yields the first token; 3. every further token is one decode call. Each token is sent
    #    down as soon as it exists, concurrently with the next decode.
    yield from ctx.prefill(server, model, len(prompt_ids))
    downlinks = []
    for i in range(len(output)):
        if i > 0:
            yield from ctx.decode(server, model, past_len=len(prompt_ids) + i - 1)
        downlinks.append(ctx.background(_stream_token(ctx, server.name)))
    yield from ctx.join(downlinks)
    rec.tokens_llm = len(output)


def _stream_token(ctx: RequestContext, server: str) -> ProcessGenerator:
    yield from ctx.send(server, ctx.device.name, tokens_nbytes(1), kind="token")
    ctx.record.token_arrived(ctx.env.now)


def check(params: Params, scenario: Scenario, graph: nx.DiGraph) -> list[str]:
    nodes = scenario.topology.nodes
    if params.server is not None:
        if params.server not in nodes:
            return [f"policy.server: unknown node {params.server!r}"]
        hosted = [m.name for m in nodes[params.server].models]
        if not (params.model in hosted if params.model else hosted):
            return [f"policy.model: {params.server} hosts no model {params.model or ''}".rstrip()]
        servers = [params.server]
    else:
        servers = [n for n, s in nodes.items() if s.role == "cloud"
                   and any(params.model in (None, m.name) for m in s.models)]
        if not servers:
            return [f"policy: cloud_only needs a cloud node hosting {params.model or 'a model'}"]
    return [
        f"topology.nodes.{d}: no route to and from a cloud_only server ({', '.join(servers)})"
        for d in scenario.request_devices
        if not any(nx.has_path(graph, d, s) and nx.has_path(graph, s, d) for s in servers)
    ]
