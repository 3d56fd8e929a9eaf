"""A node's compute served with iteration-level (continuous) batching, as LLM servers run it.

`Compute` gives each call a slot of its own, so B concurrent decodes on one GPU take B call times.
A serving engine does not: Orca (Yu et al., OSDI 2022) schedules at the granularity of one iteration
(one forward step of every running sequence), and vLLM (Kwon et al., SOSP 2023) does the same with its
KV cache paged. A step of B sequences streams the weights once and costs little more than a step of
one while decode is memory-bound, and a sequence that finishes a step (or a request that just arrived)
joins the next step instead of waiting for a whole batch to drain.

`BatchingCompute` has the public surface of `Compute`; a policy cannot tell which one a node has,
except by the time its calls take. Timing and energy only: the tokens still come from the models.

Scheduling rule (one engine per node, steps back to back while there is work):
  1. A call waits in a FIFO queue. A step starts when the engine is free, at the *end* of the current
     instant, so every call issued at that instant joins it: B calls issued together form one step,
     and the sequences of the step that just ended, which issue their next token at once, stay batched.
  2. The step takes the head of the queue and, in arrival order, every further queued call of the same
     phase and model while the step holds at most `max_batch` sequences; the rest wait for a later step.
     A call that arrives while a step runs joins the next step, never the running one.
  3. Phases are not mixed: decode and verify calls (n_tokens ≥ 1 on a cache) batch together; prefill
     calls batch only with prefills. That is vLLM's default scheduler before chunked prefill; Orca's
     mixed prefill/decode steps and chunked prefill (Sarathi-Serve) are not modelled, nor is a token
     budget per step (vLLM's max_num_batched_tokens): only sequences are counted.
  4. Calls share a step only if they run the same weights: same dtype and `weight_bytes` of their
     cost, and the same `detail` (the policies pass the model's label there).
  5. A step costs `call_time_s(batched_cost(...))` on the device under its runtime: the runtime's
     per-call overhead once (and its per-token one per logits row), weights read once, each sequence's
     own FLOPs and KV bytes at its own past_len — or, under a measured latency table, the sum of the
     calls' table charges at the step's batch (runtime.py, `ComputeTable`).

Each call returns its wait + the time of the step it ran in (the time the caller spent in `run`),
and records one event ending at the step's end with `duration_s` = the step time and
`detail` = "<detail> batch=B".

Energy split: the engine draws P_active while a step runs, P_idle otherwise, so per node
E = P_active · busy_s + P_idle · (T − busy_s). A step's active energy P_active · t_step is split among
its calls in proportion to the step time each one accounts for:

    t_step = o + r,   r = max(compute_s, memory_s)
    t_i    = o · B_i / B  +  r · u_i / U

where B_i is the call's number of sequences, B the step's, and u_i / U the call's share of the binding
roofline resource: with memory binding, u_i = own bytes of the call (KV, embeddings) + W · B_i / B
(the weights are everyone's), U = the step's bytes; with compute binding, u_i = the call's FLOPs.
Σ t_i = t_step, so the split sums to P_active · busy_s, a long-context sequence pays for its longer KV
read, and B identical sequences pay 1/B each. A per-token overhead goes to the call whose logits rows
it is; under a latency table t_i is the call's own table charge plus its share B_i / B of the overhead.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import simpy
from simpy.core import EventPriority
from simpy.events import NORMAL

from netsim.hardware.compute import EnergyLedger
from netsim.hardware.cost import Cost, batched_cost, call_time_s, roofline_s, table_work_s
from netsim.hardware.profile import DeviceProfile
from netsim.recorder import Recorder

# After every NORMAL event of an instant, including those scheduled during it: simultaneous callers are
# all in the queue before a step is formed, however many zero-time hops they take to get there.
_END_OF_INSTANT = EventPriority(NORMAL + 1)


class _EndOfInstant(simpy.Event):
    """An event that fires at the current time once everything else due now has run.

    Built like SimPy's own `Timeout`, with a later priority than any ordinary event."""

    def __init__(self, env: simpy.Environment) -> None:
        super().__init__(env)
        self._ok = True
        self._value = None
        env.schedule(self, _END_OF_INSTANT)


@dataclass(eq=False)
class _Call:
    """A call queued for, or running in, a step; `done` fires at the end of its step."""

    cost: Cost
    request_id: int | None
    kind: str
    detail: str
    t_queued_s: float
    done: simpy.Event = field(repr=False)

    @property
    def group(self) -> tuple[bool, str, float, str]:
        """Calls of one group may share a step: same phase and same weights (rules 3 and 4)."""
        return self.kind == "prefill", self.cost.dtype, self.cost.weight_bytes, self.detail


class BatchingCompute(EnergyLedger):
    """The compute of one node as a continuous-batching engine. Use like `Compute`:
    `dt = yield from compute.run(decode_cost(geom, past_len), request_id=7, kind="decode")`."""

    slots = 1
    """One engine: idle power is drawn by one device whenever no step runs."""

    def __init__(self, env: simpy.Environment, node: str, profile: DeviceProfile, recorder: Recorder,
                 max_batch: int) -> None:
        if max_batch < 1:
            raise ValueError(f"BatchingCompute({node!r}) needs max_batch >= 1, got {max_batch}")
        self.env = env
        self.node = node
        self.profile = profile
        self.recorder = recorder
        self.max_batch = max_batch
        self.busy_s = 0.0
        """Seconds the engine spent in steps (finished steps only)."""
        self.wait_s = 0.0
        """Seconds calls spent queued before their step started, summed over calls."""
        self.n_calls = 0
        self.n_steps = 0
        self._pending: list[_Call] = []
        self._running: list[_Call] = []
        self._wake: simpy.Event | None = None
        self._active_energy_j = 0.0
        self._energy_by_request: defaultdict[int | None, float] = defaultdict(float)
        env.process(self._serve())

    def run(self, cost: Cost, *, request_id: int | None, kind: str,
            detail: str = "") -> Generator[simpy.Event, Any, float]:
        """Queue the call for a step, wait for that step to end; returns the step's time in s (the
        compute time, as `Compute.run` returns; the wait is `now` minus the issue time).

        A caller interrupted while queued leaves the queue; one interrupted during its step has
        already been computed with the others, so the step still charges it.
        """
        if cost.batch > self.max_batch:
            raise ValueError(f"{self!r}: a call of {cost.batch} sequences cannot fit a step of "
                             f"at most {self.max_batch}")
        call = _Call(cost, request_id, kind, detail, self.env.now, self.env.event())
        self._pending.append(call)
        if self._wake is not None and not self._wake.triggered:
            self._wake.succeed()
        try:
            step_s = yield call.done
        except simpy.Interrupt:
            if call in self._pending:
                self._pending.remove(call)
            raise
        return step_s

    def _serve(self) -> Generator[simpy.Event, Any, None]:
        """The engine: form a step from the queue, run it, hand back its calls, repeat."""
        while True:
            if not self._pending:
                self._wake = self.env.event()
                yield self._wake
                self._wake = None
            yield _EndOfInstant(self.env)  # rule 1: everyone issued at this instant joins
            if not self._pending:  # all interrupted while queued
                continue
            step = self._take_step()
            cost = batched_cost([call.cost for call in step])
            step_s = call_time_s(self.profile, cost)
            self.wait_s += sum(self.env.now - call.t_queued_s for call in step)
            self._running = step
            yield self.env.timeout(step_s)
            self._running = []
            self._finish(step, cost, step_s)

    def _take_step(self) -> list[_Call]:
        """Rule 2: the head of the queue and the calls of its group behind it, up to max_batch."""
        group = self._pending[0].group
        step: list[_Call] = []
        n_seqs = 0
        for call in self._pending:
            if call.group != group:
                continue
            if n_seqs + call.cost.batch > self.max_batch:
                break
            step.append(call)
            n_seqs += call.cost.batch
        self._pending = [call for call in self._pending if call not in step]
        return step

    def _finish(self, step: list[_Call], cost: Cost, step_s: float) -> None:
        """Charge the step's energy to its calls (module docstring), record them, wake their callers."""
        energy_j = self.profile.power_active_w * step_s
        self.busy_s += step_s
        self.n_steps += 1
        self._active_energy_j += energy_j
        for call, share in zip(step, self._energy_shares(step, cost, step_s), strict=True):
            self.n_calls += 1
            self._energy_by_request[call.request_id] += energy_j * share
            self.recorder.event(self.env.now, self.node, call.kind, request_id=call.request_id, nbytes=0,
                                duration_s=step_s, detail=f"{call.detail} batch={cost.batch}".lstrip())
            call.done.succeed(step_s)

    def _energy_shares(self, step: list[_Call], cost: Cost, step_s: float) -> list[float]:
        """t_i / t_step for each call: fixed costs per sequence (per-token ones per logits row), the rest
        by share of the binding resource — or, under a latency table, of the table's seconds."""
        n_seqs = cost.batch
        if step_s <= 0.0:
            return [call.cost.batch / n_seqs for call in step]
        table = self.profile.table
        if table is not None and cost.shapes:
            work = table_work_s(table, cost)  # one entry per shape, in the order of the step's calls
            per_call, k = [], 0
            for call in step:
                per_call.append(sum(work[k:k + len(call.cost.shapes)]))
                k += len(call.cost.shapes)
            over_s = table.overhead_per_call_s
            return [(over_s * call.cost.batch / n_seqs + w) / step_s
                    for call, w in zip(step, per_call, strict=True)]
        call_overhead_s = self.profile.overhead_per_call_s or 0.0
        token_overhead_s = self.profile.overhead_per_token_s or 0.0
        compute_s, memory_s = roofline_s(self.profile, cost)
        if memory_s >= compute_s and cost.bytes_moved > 0.0:
            weights_per_seq = cost.weight_bytes / n_seqs
            used = [call.cost.bytes_moved - call.cost.weight_bytes + weights_per_seq * call.cost.batch
                    for call in step]
            total, roof_s = cost.bytes_moved, memory_s
        elif cost.flops > 0.0:
            used, total, roof_s = [call.cost.flops for call in step], cost.flops, compute_s
        else:
            used, total, roof_s = [float(call.cost.batch) for call in step], float(n_seqs), 0.0
        return [(call_overhead_s * call.cost.batch / n_seqs + token_overhead_s * call.cost.sampled_tokens
                 + roof_s * u / total) / step_s
                for call, u in zip(step, used, strict=True)]

    @property
    def busy_slots(self) -> int:
        return 1 if self._running else 0

    @property
    def queued(self) -> int:
        return len(self._pending)

    @property
    def step_seqs(self) -> int:
        """Sequences in the step running now (0 when idle)."""
        return sum(call.cost.batch for call in self._running)

    def __repr__(self) -> str:
        return (f"BatchingCompute({self.node!r}, {self.step_seqs}/{self.max_batch} seqs in step, "
                f"{self.queued} queued, {self.profile.name})")
