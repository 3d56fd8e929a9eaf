"""Bad input for the HLM policies fails at validation: exit code 2 and one line naming the YAML path."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_hlm import FED, small

from netsim.cli import main
from netsim.paths import PROJECT_ROOT


def validate(tmp_path: Path, capsys: pytest.CaptureFixture[str], raw: dict[str, Any]
             ) -> tuple[int, list[str]]:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(SystemExit) as info:
        main(["validate", str(path)])
    _, err = capsys.readouterr()
    return int(info.value.code or 0), err.strip().splitlines()


def test_the_small_scenario_is_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = validate(tmp_path, capsys, small(FED))
    assert code == 0, lines


@pytest.mark.parametrize(("policy", "expected"), [
    ({**FED, "clusters": [{"devices": ["a0", "zz"]}]},
     "error: policy.clusters[0].devices: unknown device 'zz'"),
    ({**FED, "clusters": [{"devices": ["a0", "core"]}]},
     "error: policy.clusters[0].devices: 'core' is a router, not a device"),
    ({**FED, "clusters": [{"group": "nope"}]}, "error: policy.clusters[0].group: unknown group 'nope'"),
    ({**FED, "clusters": [{"devices": ["a0"], "edge": "cloud"}]},
     "error: policy.clusters[0].edge: 'cloud' is not an edge node"),
    ({**FED, "theta": 1.5}, "error: policy.theta: Input should be less than or equal to 1"),
    ({**FED, "threshold": -0.1}, "error: policy.threshold: Input should be greater than or equal to 0"),
    ({"name": "uhlm", "threshold": 2}, "error: policy.threshold: Input should be less than or equal to 1"),
    ({"name": "rand_hlm", "p_offload": -1},
     "error: policy.p_offload: Input should be greater than or equal to 0"),
], ids=["unknown-device", "router-in-cluster", "unknown-group", "edge-not-edge", "theta", "threshold",
        "uhlm-threshold", "p-offload"])
def test_bad_policy_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      policy: dict[str, Any], expected: str) -> None:
    code, lines = validate(tmp_path, capsys, small(policy))
    assert code == 2 and lines == [expected]


def test_a_client_without_an_slm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = small(FED)
    raw["topology"]["nodes"]["b2"]["models"] = []
    code, lines = validate(tmp_path, capsys, raw)
    assert code == 2
    assert lines == ["error: topology.nodes.b2.models: fedhlm needs an SLM (any model) on every requesting "
                     "device"]


def test_slm_and_llm_with_different_tokenizers(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A copy of the SLM whose tokenizer file differs (one more byte): per-token routing needs one
    vocabulary."""
    models = tmp_path / "models"
    odd = models / "odd-slm"
    shutil.copytree(PROJECT_ROOT / "models" / "shakespeare-slm", odd)
    tokenizer = odd / "tokenizer.json"
    tokenizer.write_bytes(tokenizer.read_bytes() + b" ")
    manifest = yaml.safe_load((odd / "model.yaml").read_text(encoding="utf-8"))
    manifest["name"] = "odd-slm"
    manifest["sha256"]["tokenizer.json"] = hashlib.sha256(tokenizer.read_bytes()).hexdigest()
    (odd / "model.yaml").write_text(yaml.safe_dump(manifest), encoding="utf-8")
    monkeypatch.setenv("NETSIM_MODELS_PATH", str(models))
    raw = small({"name": "uhlm"})
    for node in raw["topology"]["nodes"].values():
        if node["role"] == "device":
            node["models"] = ["odd-slm"]
    code, lines = validate(tmp_path, capsys, raw)
    assert code == 2
    assert lines == ["error: policy.llm: shakespeare-llm's tokenizer differs from the SLM odd-slm's; "
                     "per-token routing needs one vocabulary"]
