"""Scenario loading: every kind of bad input is reported with its YAML path, good input round-trips."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from netsim.errors import ScenarioError
from netsim.scenario import load_scenario, parse_scenario, scenario_json_schema
from netsim.validation import check_scenario

BASE: dict[str, Any] = {
    "name": "t",
    "seed": 1,
    "topology": {
        "nodes": {
            "phone": {"role": "device", "profile": "oneplus-12", "models": ["shakespeare-slm"]},
            "gw": {"role": "router"},
            "cloud": {"role": "cloud", "profile": "nvidia-a100-80gb", "models": ["shakespeare-llm"]},
        },
        "links": [
            {"src": "phone", "dst": "gw", "rate_mbps": 50, "delay_ms": 5},
            {"src": "gw", "dst": "cloud", "rate_mbps": 1000, "delay_ms": 10},
        ],
    },
    "workload": {"n_requests": 2, "max_new_tokens": 4},
    "policy": {"name": "cloud_only"},
}


def problems_of(raw: dict[str, Any], check: bool = False) -> list[str]:
    with pytest.raises(ScenarioError) as info:
        sc = parse_scenario(raw)
        if check:
            check_scenario(sc)
    return info.value.problems


def edited(path: str, value: Any) -> dict[str, Any]:
    raw = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node = raw
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    if value is KeyError:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return raw


def test_base_scenario_is_valid() -> None:
    sc = parse_scenario(BASE)
    assert sc.request_devices == ["phone"]
    assert sc.topology.links[1].rate_mbps == 1000


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("workload", KeyError, "workload: required field is missing"),
        ("topology.links.1.rate_mbps", 0, "topology.links[1].rate_mbps: Input should be greater"),
        ("topology.links.0.rate_mbps", -5, "topology.links[0].rate_mbps: Input should be greater"),
        ("workload.n_requests", "many", "workload.n_requests: Input should be a valid integer"),
        ("topology.nodes.phone.slots", 0, "topology.nodes.phone.slots: Input should be greater than 0"),
        ("topology.links.0.dst", "nowhere", "topology.links[0].dst: unknown node 'nowhere'"),
        ("topology.nodes.phone.colour", "red", "topology.nodes.phone.colour: unknown field"),
        ("policy", {"name": "telepathy"}, "policy: Input tag 'telepathy'"),
        ("policy", {"name": "cloud_only", "speed": 3}, "policy.speed: unknown field"),
        ("topology.nodes.phone.profile", None, "topology.nodes.phone: a device node needs a `profile`"),
        ("workload.devices", ["cloud"], "workload.devices: 'cloud' is a cloud, not a device"),
    ],
)
def test_schema_problems_name_the_yaml_path(path: str, value: Any, expected: str) -> None:
    problems = problems_of(edited(path, value))
    assert any(p.startswith(expected) for p in problems), problems


def test_extra_top_level_field() -> None:
    raw = {**BASE, "no_such_field_zz": 1}
    assert problems_of(raw) == ["no_such_field_zz: unknown field (not in the schema; check spelling)"]


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("topology.nodes.phone.profile", "nokia-3310", "topology.nodes.phone.profile: unknown"),
        ("topology.nodes.cloud.models", ["gpt-17"], "topology.nodes.cloud.models[0].name: unknown"),
        ("topology.nodes.phone", {"role": "device", "profile": "raspberry-pi-5",
                                  "models": [{"name": "shakespeare-slm", "charged_as": "qwen3-8b"}]},
         "topology.nodes.phone.models: models need "),
        ("topology.links", [{"src": "phone", "dst": "gw", "rate_mbps": 50}],
         "topology.nodes.phone: no route to and from any cloud_only server (cloud)"),
        ("policy", {"name": "edge_only"}, "policy.name: edge_only needs an edge node hosting a model; "
         "the device's own model is `device_only`"),
    ],
)
def test_data_problems_name_the_yaml_path(path: str, value: Any, expected: str) -> None:
    problems = problems_of(edited(path, value), check=True)
    assert any(p.startswith(expected) for p in problems), problems


def test_reachability_is_the_policys_rule() -> None:
    """A device that cannot reach the cloud is fine for device_only, which never leaves the device."""
    raw = edited("topology.links", [{"src": "phone", "dst": "gw", "rate_mbps": 50}])
    raw["policy"] = {"name": "device_only"}
    check_scenario(parse_scenario(raw))


def test_extends_and_overrides(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE))
    (tmp_path / "child.yaml").write_text(yaml.safe_dump(
        {"extends": "base.yaml", "name": "child", "workload": {"n_requests": 7}}))
    sc = load_scenario(tmp_path / "child.yaml", ["topology.links[1].rate_mbps=25", "policy.name=device_only"])
    assert (sc.name, sc.workload.n_requests, sc.workload.max_new_tokens) == ("child", 7, 4)
    assert sc.topology.links[1].rate_mbps == 25.0
    assert sc.policy.name == "device_only"


def test_extends_cycle_is_reported(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("extends: b.yaml\nname: a\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\nname: b\n")
    with pytest.raises(ScenarioError, match="cycle"):
        load_scenario(tmp_path / "a.yaml")


def test_json_schema_names_every_section() -> None:
    props = scenario_json_schema()["properties"]
    assert {"topology", "workload", "policy", "seed", "extends"} <= set(props)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("topology: [\n", "unreadable YAML"), ("", "the file is empty"), ("- 1\n- 2\n", "expected a mapping")],
)
def test_cli_bad_files_exit_2_with_one_line(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    proc = subprocess.run([sys.executable, "-m", "netsim", "validate", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_cli_reports_every_problem_and_writes_nothing(tmp_path: Path) -> None:
    raw = edited("topology.links.1.rate_mbps", 0)
    raw["topology"]["links"][0]["dst"] = "nowhere"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "netsim", "run", str(path), "-o", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "topology.links[1].rate_mbps: Input should be greater than or equal to 0.001" in proc.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == [path]
