"""What every policy shares: the request it serves and the three verbs it may use.

A policy is a plain SimPy generator `serve(ctx, params)` per request. It may only
- `ctx.send(...)`: move bytes over the simulated network (time from the network model),
- `ctx.prefill(...)` / `ctx.decode(...)`: run a model call on a node (time and energy from the hardware
  model, charged with the hosted model's geometry or its cost card),
- ask a hosted model's `lm` for tokens/logits (content from the real ONNX model).
It never waits a made-up constant. Byte and energy bookkeeping happens here, once, for all policies.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import simpy
from pydantic import BaseModel, ConfigDict

from netsim.hardware.compute import radio_energy_j
from netsim.hardware.cost import decode_cost, prefill_cost
from netsim.metrics import RequestRecord
from netsim.network.delivery import Delivery, TransferFailed

if TYPE_CHECKING:
    from netsim.workload import Request
    from netsim.world import HostedModel, Node, World

ProcessGenerator = Generator[simpy.Event, Any, Any]


class PolicyParams(BaseModel):
    """Base of every policy's parameters; `name` selects the policy (a discriminated union)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class RequestContext:
    world: World
    request: Request
    record: RequestRecord

    @property
    def env(self) -> simpy.Environment:
        return self.world.env

    @property
    def device(self) -> Node:
        return self.world.nodes[self.request.device]

    @property
    def seed(self) -> tuple[int, int]:
        """Sampling seed of this request: same scenario seed and request → same tokens, in any order."""
        return (self.world.scenario.seed, self.request.request_id)

    def send(self, src: str, dst: str, nbytes: int, kind: str) -> Generator[simpy.Event, Any, Delivery]:
        """Carry `nbytes` of payload; raises TransferFailed (the request then fails with its reason)."""
        delivery = yield from self.world.net.send(src, dst, nbytes, request_id=self.request.request_id,
                                                  kind=kind)
        rec, device = self.record, self.device
        rec.bytes_total += nbytes
        if src == device.name:
            rec.bytes_up += nbytes
            rec.energy_radio_j += radio_energy_j(device.profile, bits_tx=8 * nbytes, bits_rx=0)
        if dst == device.name:
            rec.bytes_down += nbytes
            rec.energy_radio_j += radio_energy_j(device.profile, bits_tx=0, bits_rx=8 * nbytes)
        return delivery

    def answer(self, node: Node, model: HostedModel) -> tuple[list[int], list[int]]:
        """Prompt ids and the whole answer of `model` on `node` when content does not depend on timing
        (one model writes every token): generated once, memoised, then played out in simulated time."""
        wl = self.world.scenario.workload
        prompt_ids = model.lm.tokenizer.encode(self.request.prompt)
        output = model.lm.generate(prompt_ids, wl.max_new_tokens, wl.sampling, seed=self.seed)
        rec = self.record
        rec.n_prompt_tokens, rec.output_ids = len(prompt_ids), output
        rec.server, rec.model, rec.charged_as = node.name, model.name, model.charged_as or ""
        rec.output_text = model.lm.tokenizer.decode(output)
        return prompt_ids, output

    def background(self, steps: ProcessGenerator) -> simpy.Process:
        """Run `steps` concurrently (e.g. a token on its way down while the next is decoded). A transfer
        failure inside is held, not raised into the event loop, and re-raised by `join`."""

        def guarded() -> ProcessGenerator:
            try:
                return (yield from steps)
            except TransferFailed as exc:
                return exc

        return self.env.process(guarded())

    def join(self, processes: list[simpy.Process]) -> ProcessGenerator:
        """Wait for background steps; the first transfer failure among them fails the request."""
        yield self.env.all_of(processes)
        for proc in processes:
            if isinstance(proc.value, TransferFailed):
                raise proc.value

    def prefill(self, node: Node, model: HostedModel, n_tokens: int, past_len: int = 0
                ) -> Generator[simpy.Event, Any, float]:
        cost = prefill_cost(model.charged, n_tokens, past_len=past_len)
        return (yield from node.compute.run(cost, request_id=self.request.request_id, kind="prefill",
                                            detail=model.label))

    def decode(self, node: Node, model: HostedModel, past_len: int, n_tokens: int = 1
               ) -> Generator[simpy.Event, Any, float]:
        """One forward call over `n_tokens` new tokens on top of `past_len` cached ones (k > 1: verify)."""
        cost = decode_cost(model.charged, past_len, n_tokens=n_tokens)
        return (yield from node.compute.run(cost, request_id=self.request.request_id,
                                            kind="decode" if n_tokens == 1 else "verify",
                                            detail=model.label))
