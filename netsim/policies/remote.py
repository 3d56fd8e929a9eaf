"""One server answers the whole request: what `cloud_only` and `edge_only` share.

The prompt goes up, the server's LLM prefills and decodes, and each token streams down as soon as it
exists while the next one is decoded. The two policies differ only in which tier the server is picked
from. What crosses the wire is one named encoding, not a mix:
- `token_ids`: the prompt as int32 token ids up, each new token as one id down (a split-inference
  deployment where device and server share the tokenizer);
- `api_text`: a chat-completion request body (JSON with the prompt text) up, and per token one
  server-sent-events chunk as an OpenAI-compatible streaming API sends it (`data: {...}` with the
  token's text), at its real UTF-8 size — what a phone talking to a hosted LLM API pays.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, ClassVar

import networkx as nx

from netsim.payload import Payload, Text, TokenIds
from netsim.policies.base import Policy
from netsim.policies.params import ServerParams, WireFormat

if TYPE_CHECKING:
    from netsim.context import ProcessGenerator, RequestContext
    from netsim.scenario import Scenario
    from netsim.world import HostedModel, Node

class ServerPolicy(Policy[ServerParams]):
    """A policy in which one server of tier `role` answers the whole request."""

    role: ClassVar[str]

    @classmethod
    def check(cls, params: ServerParams, scenario: Scenario, graph: nx.DiGraph) -> list[str]:
        return check_servers(cls.name, cls.role, params.server, params.model, scenario, graph)

    def serve(self, ctx: RequestContext) -> ProcessGenerator:
        p = self.params
        server = (self.world.nodes[p.server] if p.server
                  else self.world.nearest(ctx.device.name, (self.role,), p.model))
        yield from serve_from(ctx, server, server.model(p.model), p.wire)


def request_payload(wire: WireFormat, prompt: str, prompt_ids: list[int], model: str) -> Payload:
    if wire == "token_ids":
        return TokenIds(tuple(prompt_ids))
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": prompt}]}
    return Text(json.dumps(body, ensure_ascii=False))


def token_payload(wire: WireFormat, token: int, text: str, model: str, request_id: int) -> Payload:
    """One streamed token; `api_text` builds the SSE chunk a chat-completion stream carries for it."""
    if wire == "token_ids":
        return TokenIds((token,))
    chunk = {"id": f"chatcmpl-{request_id}", "object": "chat.completion.chunk", "created": 0, "model": model,
             "choices": [{"index": 0, "delta": {"content": text}, "logprobs": None,
                          "finish_reason": None}]}
    return Text(f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n")


def serve_from(ctx: RequestContext, server: Node, model: HostedModel, wire: WireFormat) -> ProcessGenerator:
    rec, device = ctx.record, ctx.device
    prompt_ids, output = ctx.answer(server, model)
    served_as = model.charged_as or model.name
    tokenizer = model.lm.tokenizer

    # 1. The prompt travels up in the wire format.
    yield from ctx.send(device.name, server.name,
                        request_payload(wire, ctx.request.prompt, prompt_ids, served_as))
    rec.llm_transmissions += 1
    # 2. Prefill yields the first token; 3. every further token is one decode call. Each token is sent
    #    down as soon as it exists, concurrently with the next decode.
    yield from ctx.charge_prefill(server, model, len(prompt_ids))
    downlinks = []
    for i in range(len(output)):
        if i > 0:
            yield from ctx.charge_decode(server, model, past_len=len(prompt_ids) + i - 1)
        text = tokenizer.decode([output[i]])
        chunk = token_payload(wire, output[i], text, served_as, ctx.request.request_id)
        downlinks.append(ctx.background(_stream_token(ctx, server.name, chunk)))
    yield from ctx.join(downlinks)
    rec.tokens_llm = len(output)


def _stream_token(ctx: RequestContext, server: str, chunk: Payload) -> ProcessGenerator:
    yield from ctx.send(server, ctx.device.name, chunk)
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
    # Two searches per server (whom it reaches, who reaches it), not two per device and server: ten
    # thousand devices and one cloud would be 20,000 searches of the whole graph.
    served: set[str] = set()
    for s in servers:
        served |= (nx.descendants(graph, s) & nx.ancestors(graph, s)) | {s}
    where = scenario.topology.yaml_paths()  # a group's members are one entry of the YAML
    lines = [f"{where[d]}: no route to and from any {policy} server ({', '.join(servers)})"
             for d in scenario.request_devices if d not in served]
    return list(dict.fromkeys(lines))
