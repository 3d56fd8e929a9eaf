"""One server answers the whole request: what `cloud_only` and `edge_only` share.

The prompt goes up as UTF-8 text, the server's LLM prefills and decodes, and each token streams down
as soon as it exists while the next one is decoded, as a streaming chat-completion API does. The two
policies differ only in which tier the server is picked from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import networkx as nx

from netsim.payload import text_nbytes, tokens_nbytes
from netsim.policies.base import ProcessGenerator, RequestContext

if TYPE_CHECKING:
    from netsim.scenario import Scenario
    from netsim.world import HostedModel, Node


def serve_from(ctx: RequestContext, server: Node, model: HostedModel) -> ProcessGenerator:
    rec, device = ctx.record, ctx.device
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


def check_servers(policy: str, role: str, server: str | None, model: str | None, scenario: Scenario,
                  graph: nx.DiGraph) -> list[str]:
    """The named server (or some `role` node) hosts the model, and every requesting device reaches one."""
    nodes = scenario.topology.nodes
    if server is not None:
        if server not in nodes:
            return [f"policy.server: unknown node {server!r}"]
        hosted = [m.name for m in nodes[server].models]
        if not (model in hosted if model else hosted):
            return [f"policy.model: {server} hosts no model {model or ''}".rstrip()]
        servers = [server]
    else:
        servers = [n for n, s in nodes.items()
                   if s.role == role and any(model in (None, m.name) for m in s.models)]
        if not servers:
            hint = ("; the device's own model is `device_only` (called edge_only before netsim 0.2)"
                    if role == "edge" else "")
            article = "an" if role == "edge" else "a"
            return [f"policy.name: {policy} needs {article} {role} node hosting {model or 'a model'}{hint}"]
    return [
        f"topology.nodes.{d}: no route to and from a {policy} server ({', '.join(servers)})"
        for d in scenario.request_devices
        if not any(nx.has_path(graph, d, s) and nx.has_path(graph, s, d) for s in servers)
    ]
