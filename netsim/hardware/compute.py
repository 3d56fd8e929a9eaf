"""A node's compute as a SimPy resource: calls queue for a slot, hold it for their roofline time, and
charge energy to the request that made them.

`slots` identical devices of one profile sit behind a node (a server with N GPUs, or N model
replicas); each call occupies one. Power figures are per device: a busy slot draws
`power_active_w`, an idle one `power_idle_w`, so over a run of length T with B busy slot-seconds

    E_total = P_active · B + P_idle · (slots · T − B)

which `energy_j()` + `idle_energy_j(T)` add up to.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Generator
from typing import Any

import simpy

from netsim.hardware.cost import Cost, call_time_s
from netsim.hardware.profile import DeviceProfile
from netsim.recorder import Recorder


class EnergyLedger:
    """Energy bookkeeping shared by every kind of node compute: active energy per request and in total,
    idle energy of the slots' unused time. Subclasses set `profile`, `slots`, `busy_s`,
    `_active_energy_j` and `_energy_by_request` as they charge calls."""

    profile: DeviceProfile
    slots: int
    busy_s: float
    _active_energy_j: float
    _energy_by_request: defaultdict[int | None, float]

    def energy_j(self, request_id: int | None) -> float:
        """Active energy charged to `request_id` on this node (calls made with `request_id=None`
        are charged to None; a batched step is shared among its calls); `active_energy_j` is the total."""
        return self._energy_by_request.get(request_id, 0.0)

    @property
    def active_energy_j(self) -> float:
        """Active energy of every finished call on this node."""
        return self._active_energy_j

    def idle_energy_j(self, t_end_s: float) -> float:
        """Energy of the slots' idle time from t = 0 to `t_end_s`: P_idle · (slots · T − busy)."""
        idle_s = self.slots * t_end_s - self.busy_s
        if idle_s < -1e-9 * max(1.0, t_end_s):
            raise ValueError(f"{self!r}: t_end_s={t_end_s} is before the end of the work done")
        return self.profile.power_idle_w * max(idle_s, 0.0)

    def total_energy_j(self, t_end_s: float) -> float:
        return self._active_energy_j + self.idle_energy_j(t_end_s)


class Compute(EnergyLedger):
    """The compute of one node. Use from a policy process: `dt = yield from compute.run(cost, ...)`."""

    def __init__(self, env: simpy.Environment, node: str, profile: DeviceProfile, recorder: Recorder,
                 slots: int = 1) -> None:
        if slots < 1:
            raise ValueError(f"Compute({node!r}) needs at least one slot, got {slots}")
        self.env = env
        self.node = node
        self.profile = profile
        self.recorder = recorder
        self.slots = slots
        self._resource = simpy.Resource(env, capacity=slots)
        self.busy_s = 0.0
        """Slot-seconds spent computing (finished calls only)."""
        self.wait_s = 0.0
        """Seconds calls spent queued for a slot, summed over calls."""
        self.n_calls = 0
        self._active_energy_j = 0.0
        self._energy_by_request: defaultdict[int | None, float] = defaultdict(float)

    def run(self, cost: Cost, *, request_id: int | None, kind: str,
            detail: str = "") -> Generator[simpy.Event, Any, float]:
        """Queue for a slot, compute for `call_time_s`, record the call; returns its duration in s.

        The energy of the call (P_active · duration) is charged to `request_id`; a batched call that
        serves several requests is charged to the one given (split it in the policy if needed).
        """
        duration_s = call_time_s(self.profile, cost)
        t_queued = self.env.now
        with self._resource.request() as slot:
            yield slot
            self.wait_s += self.env.now - t_queued
            yield self.env.timeout(duration_s)
        energy_j = self.profile.power_active_w * duration_s
        self.busy_s += duration_s
        self.n_calls += 1
        self._active_energy_j += energy_j
        self._energy_by_request[request_id] += energy_j
        self.recorder.event(self.env.now, self.node, kind, request_id=request_id, nbytes=0,
                            duration_s=duration_s, detail=detail)
        return duration_s

    @property
    def busy_slots(self) -> int:
        return self._resource.count

    @property
    def queued(self) -> int:
        return len(self._resource.queue)

    def __repr__(self) -> str:
        return (f"Compute({self.node!r}, {self.busy_slots}/{self.slots} busy, {self.queued} queued, "
                f"{self.profile.name})")


def radio_energy_j(profile: DeviceProfile, bits_tx: int, bits_rx: int) -> float:
    """Radio energy of moving bits over the air: E = e_tx · bits_tx + e_rx · bits_rx.

    Linear in bits, as in the throughput terms α_u, α_d of Huang et al. (MobiSys 2012); the state
    (promotion/tail) power of the radio is not modelled. A wired device (no radio figures) costs 0 J:
    its NIC energy is outside this model.
    """
    if bits_tx < 0 or bits_rx < 0:
        raise ValueError(f"bit counts must be >= 0, got tx={bits_tx}, rx={bits_rx}")
    if profile.radio_tx_j_per_bit is None or profile.radio_rx_j_per_bit is None:
        return 0.0
    return profile.radio_tx_j_per_bit * bits_tx + profile.radio_rx_j_per_bit * bits_rx
