"""Every bundled scenario validates and runs to completion (style item 12: examples run in CI)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from netsim.lm.zoo import ModelStore
from netsim.paths import PROJECT_ROOT
from netsim.scenario import load_scenario
from netsim.simulation import run

SCENARIOS = sorted((PROJECT_ROOT / "scenarios").glob("*.yaml"))


@pytest.fixture(scope="module")
def store() -> ModelStore:
    return ModelStore()


def test_the_three_bundled_settings_exist() -> None:
    assert {"quickstart", "wifi_home", "rural_lte"} <= {p.stem for p in SCENARIOS}


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_bundled_scenario_runs(path: Path, store: ModelStore) -> None:
    sc = load_scenario(path)
    res = run(sc, store)
    req = res.requests
    assert req.height == sc.workload.n_requests
    assert set(req["status"].unique()) <= {"ok", "failed"}
    ok = req.filter(pl.col("status") == "ok")
    assert ok.height >= 1
    assert (ok["ttft_s"] > 0).all() and (ok["e2e_s"] >= ok["ttft_s"]).all()
    assert (ok["n_output_tokens"] >= 1).all() and (ok["n_output_tokens"] <= sc.workload.max_new_tokens).all()
    if path.stem == "quickstart":
        assert ok.height == req.height, req.filter(pl.col("status") == "failed")["fail_reason"].to_list()
