"""The Python API and the scenario's `outputs` section, as a user would touch them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import yaml

import netsim
from netsim.metrics import REQUEST_SCHEMA
from netsim.paths import PROJECT_ROOT

QUICKSTART = PROJECT_ROOT / "scenarios" / "quickstart.yaml"


def test_run_load_scenario_returns_polars_results() -> None:
    results = netsim.run(netsim.load_scenario(QUICKSTART, ["workload.n_requests=2"]))
    assert isinstance(results, netsim.Results)
    assert isinstance(results.requests, pl.DataFrame) and results.requests.height == 2
    assert results.requests.schema == pl.Schema(REQUEST_SCHEMA)
    assert results.summary["n_requests"] == 2 and results.summary["netsim_version"] == netsim.__version__
    # Reports must say when a cost card bills the compute: the summary names model and card per kind of node.
    assert {"role": "cloud", "profile": "nvidia-a100-80gb", "model": "shakespeare-llm",
            "charged_as": "qwen3-8b", "n_nodes": 1} in results.summary["models"]


def test_outputs_section_sets_the_run_dir_and_drops_text(tmp_path: Path) -> None:
    raw = yaml.safe_load(QUICKSTART.read_text())
    raw["workload"]["n_requests"] = 2
    raw["outputs"] = {"dir": str(tmp_path / "from-yaml"), "output_text": False}
    scenario = tmp_path / "s.yaml"
    scenario.write_text(yaml.safe_dump(raw))
    proc = subprocess.run([sys.executable, "-m", "netsim", "run", str(scenario)], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "from-yaml"
    requests = pl.read_parquet(out / "requests.parquet")
    assert "output_text" not in requests.columns and requests.height == 2
    assert json.loads((out / "summary.json").read_text())["n_ok"] == 2
