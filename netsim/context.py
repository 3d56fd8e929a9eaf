"""What a policy process holds while it serves one request: the only door to network, hardware and models.

Two families of verbs, named so they cannot be mistaken for each other:
- time-charging verbs (generators, `yield from`): `send` moves a payload over the simulated network,
  `charge_prefill` / `charge_decode` / `charge_verify` occupy a node's emulated accelerator;
- content verbs (plain calls, no simulated time): `next_logits`, `verify_logits`, `kv_cache`, `embed`
  ask a hosted model's real ONNX weights, through the exact memo, at whatever point of the process the
  policy needs them — so what a policy routes where can change what is generated.
Randomness comes from `rng(purpose)`: one stream per (scenario seed, request, purpose), so two policies
on the same request draw the same numbers for the same purpose (common random numbers). Byte and
energy bookkeeping happens here, once, for every policy.
"""

from __future__ import annotations

import zlib
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import simpy

from netsim.hardware.compute import radio_energy_j
from netsim.hardware.cost import decode_cost, prefill_cost
from netsim.network.delivery import Delivery, TransferFailed
from netsim.payload import Payload

if TYPE_CHECKING:
    from netsim.lm.onnx_lm import KVCache
    from netsim.metrics import RequestRecord
    from netsim.workload import Request
    from netsim.world import HostedModel, Node, World

ProcessGenerator = Generator[simpy.Event, Any, Any]

STREAM_REQUEST = 3
"""Stream id of per-request randomness (world.py holds 1 = network, 2 = workload)."""


def purpose_key(purpose: str) -> int:
    """A stable integer for a purpose name (crc32; Python's hash() changes between processes)."""
    return zlib.crc32(purpose.encode("utf-8"))


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

    def rng(self, purpose: str) -> np.random.Generator:
        """A fresh generator for one purpose of this request ("routing", "acceptance", ...).

        Keyed by (scenario seed, request id, purpose) alone, so the draws for one purpose do not shift
        when a policy makes more or fewer draws for another. Call it once per purpose and keep it.
        """
        return np.random.default_rng(
            [self.world.scenario.seed, STREAM_REQUEST, self.request.request_id, purpose_key(purpose)])

    # -- time: network ------------------------------------------------------------------------------

    def send(self, src: str, dst: str, payload: Payload) -> Generator[simpy.Event, Any, Delivery]:
        """Carry a typed payload (its size from its content and encoding, netsim.payload); recorded by
        its kind, so bytes per payload kind can be reported. Raises TransferFailed."""
        nbytes = payload.nbytes
        delivery = yield from self.world.net.send(src, dst, nbytes, request_id=self.request.request_id,
                                                  kind=payload.kind)
        rec, device = self.record, self.device
        rec.bytes_total += nbytes
        if src == device.name:
            rec.bytes_up += nbytes
            rec.energy_radio_j += radio_energy_j(device.profile, bits_tx=8 * nbytes, bits_rx=0)
        if dst == device.name:
            rec.bytes_down += nbytes
            rec.energy_radio_j += radio_energy_j(device.profile, bits_tx=0, bits_rx=8 * nbytes)
        return delivery

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

    # -- time: compute ------------------------------------------------------------------------------

    def charge_prefill(self, node: Node, model: HostedModel, n_tokens: int, past_len: int = 0
                       ) -> Generator[simpy.Event, Any, float]:
        """Occupy `node` for a prefill of `n_tokens` on `past_len` cached ones; returns its duration."""
        cost = prefill_cost(model.charged, n_tokens, past_len=past_len)
        return (yield from node.compute.run(cost, request_id=self.request.request_id, kind="prefill",
                                            detail=model.label))

    def charge_decode(self, node: Node, model: HostedModel, past_len: int
                      ) -> Generator[simpy.Event, Any, float]:
        """Occupy `node` for one decode step on `past_len` cached tokens."""
        cost = decode_cost(model.charged, past_len, n_tokens=1)
        return (yield from node.compute.run(cost, request_id=self.request.request_id, kind="decode",
                                            detail=model.label))

    def charge_verify(self, node: Node, model: HostedModel, past_len: int, n_tokens: int
                      ) -> Generator[simpy.Event, Any, float]:
        """Occupy `node` for one forward over `n_tokens` drafted tokens (speculative verification)."""
        cost = decode_cost(model.charged, past_len, n_tokens=n_tokens)
        return (yield from node.compute.run(cost, request_id=self.request.request_id, kind="verify",
                                            detail=model.label))

    # -- content: real model outputs, no simulated time -------------------------------------------

    def prompt_ids(self, model: HostedModel) -> list[int]:
        """The prompt as `model`'s tokens; cut to the request's drawn length when the workload draws one."""
        ids = model.lm.tokenizer.encode(self.request.prompt)
        n = self.request.prompt_tokens
        return ids[:n] if n is not None else ids

    @property
    def max_new_tokens(self) -> int:
        """This request's answer length: drawn per request (`workload.answer_tokens`), or the workload's."""
        return self.request.max_new_tokens or self.world.scenario.workload.max_new_tokens

    def next_logits(self, model: HostedModel, prefix: Sequence[int]) -> np.ndarray:
        """Logits (V,) of the token after `prefix` from `model`'s real weights (memoised, exact)."""
        return model.lm.next_logits(prefix)

    def prefetch(self, model: HostedModel, prefix: Sequence[int]) -> None:
        """Start `next_logits(model, prefix)` now on the model's worker threads, to be asked for later;
        changes when the host CPU works, not what the run computes (netsim/lm/memo.py)."""
        model.lm.prefetch(prefix)

    def verify_logits(self, model: HostedModel, prefix: Sequence[int], drafts: Sequence[int]) -> np.ndarray:
        """Logits (k, V) for k drafted tokens in one forward: row i follows prefix + drafts[:i+1]."""
        return model.lm.block_logits(prefix, drafts)

    def kv_cache(self, model: HostedModel, prefix: Sequence[int]) -> KVCache:
        return model.lm.kv_cache(prefix)

    def embed(self, model: HostedModel, ids: Sequence[int]) -> np.ndarray:
        """Input-embedding rows (n, hidden) of `ids`."""
        return model.lm.embed(ids)

    def answer(self, node: Node, model: HostedModel) -> tuple[list[int], list[int]]:
        """Prompt ids and the whole answer of `model` on `node` when content does not depend on timing
        (one model writes every token): generated once, memoised, then played out in simulated time."""
        wl = self.world.scenario.workload
        prompt_ids = self.prompt_ids(model)
        output = model.lm.generate(prompt_ids, self.max_new_tokens, wl.sampling, seed=self.seed)
        rec = self.record
        rec.n_prompt_tokens, rec.output_ids = len(prompt_ids), output
        rec.server, rec.model, rec.charged_as = node.name, model.name, model.charged_as or ""
        rec.output_text = model.lm.tokenizer.decode(output)
        return prompt_ids, output
