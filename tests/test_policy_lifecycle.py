"""The policy lifecycle: setup processes hold the run open, finish adds tables, columns are declared,
the registry refuses inconsistent policies, and per-purpose random streams are common across policies."""

from __future__ import annotations

import copy
import subprocess
import sys
import zlib
from types import MappingProxyType
from typing import Any, ClassVar, Literal

import numpy as np
import polars as pl
import pytest

import netsim.simulation
from netsim.context import RequestContext
from netsim.lm.zoo import ModelStore
from netsim.policies.device_only import DeviceOnly
from netsim.policies.params import PolicyParams
from netsim.policies.registry import POLICIES, _registry
from netsim.scenario import parse_scenario

RAW: dict[str, Any] = {
    "name": "life",
    "seed": 3,
    "topology": {"nodes": {
        "phone": {"role": "device", "profile": "oneplus-12", "models": ["shakespeare-slm"]}}},
    "workload": {"n_requests": 3, "max_new_tokens": 4},
    "policy": {"name": "device_only"},
}


class Counting(DeviceOnly):
    """device_only plus a 'federated round' process that ends at t = 50 s, a column and a table."""

    columns: ClassVar = MappingProxyType({"draw": pl.Float64})

    def setup(self) -> list:
        self.rounds: list[dict[str, float]] = []

        def rounds():
            for k in range(5):
                yield self.world.env.timeout(10.0)
                self.rounds.append({"round": k, "t_s": self.world.env.now})

        def daemon():  # a service that never ends must not hold the run open
            while True:
                yield self.world.env.timeout(1.0)

        self.world.env.process(daemon())
        return [rounds()]

    def serve(self, ctx: RequestContext):
        ctx.record.extra["draw"] = float(ctx.rng("routing").random())
        yield from super().serve(ctx)

    def finish(self) -> dict[str, pl.DataFrame]:
        return {"rounds": pl.DataFrame(self.rounds)}


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netsim.simulation, "POLICIES", {**POLICIES, "device_only": Counting})


def test_setup_processes_hold_the_run_and_finish_adds_tables(counting: None, tmp_path) -> None:
    res = netsim.simulation.run(parse_scenario(copy.deepcopy(RAW)), ModelStore())
    assert res.summary["sim_end_s"] == pytest.approx(50.0)  # the rounds end last; the daemon is ignored
    assert res.tables["rounds"]["t_s"].to_list() == [10.0, 20.0, 30.0, 40.0, 50.0]
    assert res.requests["draw"].null_count() == 0
    out = res.write(tmp_path / "run")
    assert pl.read_parquet(out / "rounds.parquet").height == 5


def test_per_purpose_streams_are_common_across_policies(counting: None) -> None:
    """The 'routing' draw of a request depends on (seed, request, purpose) only — not on the policy's
    other draws nor on call order."""
    draws = netsim.simulation.run(parse_scenario(copy.deepcopy(RAW)), ModelStore()).requests["draw"].to_list()
    expected = [np.random.default_rng([3, 3, i, zlib.crc32(b"routing")]).random() for i in range(3)]
    assert draws == expected
    assert len(set(draws)) == 3


def test_policy_columns_are_null_for_other_policies() -> None:
    res = netsim.simulation.run(parse_scenario(copy.deepcopy(RAW)), ModelStore())
    assert "draw" not in res.requests.columns
    both = pl.concat([res.requests, res.requests.with_columns(draw=pl.lit(0.5))], how="diagonal")
    assert both["draw"].null_count() == res.requests.height


def test_registry_refuses_a_name_mismatch_and_duplicates() -> None:
    class WrongParams(PolicyParams):
        name: Literal["other"]

    class Wrong(DeviceOnly):
        Params = WrongParams

    with pytest.raises(TypeError, match=r"Params\.name is 'other'"):
        _registry([Wrong])
    with pytest.raises(TypeError, match="two policies are called 'device_only'"):
        _registry([DeviceOnly, DeviceOnly])


def test_scenario_schema_imports_no_runtime_code() -> None:
    runtime = ("netsim.hardware.compute", "netsim.network.network", "netsim.network.topology",
               "netsim.network.channel", "netsim.metrics", "netsim.context", "netsim.simulation",
               "netsim.validation", "netsim.world", "simpy")
    code = (f"import sys, netsim.scenario; bad = [m for m in sys.modules if m.startswith({runtime!r})]; "
            "print(bad); sys.exit(bool(bad))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
