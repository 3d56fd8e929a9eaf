"""Where bundled data comes from, and user files named by a scenario.

A user adds a device or a cost card by writing a YAML file beside their scenario instead of editing the
package; the scenario names it by a path relative to itself, and runs from any working directory.
(The installed-wheel layout is tested in test_packaging.py.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import netsim
from netsim.errors import ScenarioError
from netsim.paths import (
    PROJECT_ROOT,
    bundled_models_dir,
    cards_dir,
    data_root,
    is_file_reference,
    models_dirs,
    profiles_dir,
    runtimes_dir,
    scenarios_dir,
)
from netsim.scenario import dump_scenario, load_scenario


def test_a_checkout_serves_the_top_level_folders(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NETSIM_MODELS_PATH", raising=False)
    assert data_root() == PROJECT_ROOT
    assert (profiles_dir() / "oneplus-12.yaml").is_file()
    assert (runtimes_dir() / "llama.cpp.yaml").is_file()
    assert (cards_dir() / "qwen2.5-0.5b.yaml").is_file()
    assert (scenarios_dir() / "quickstart.yaml").is_file()
    assert (bundled_models_dir() / "shakespeare-slm" / "model.yaml").is_file()
    assert models_dirs()[0] == bundled_models_dir()


@pytest.mark.parametrize(
    ("value", "is_file"),
    [("oneplus-12", False), ("qwen2.5-0.5b", False), ("my-phone.yaml", True), ("card.yml", True),
     ("devices/phone", True), ("/abs/phone.yaml", True)],
)
def test_only_the_spelling_makes_a_file_reference(value: str, is_file: bool) -> None:
    assert is_file_reference(value) is is_file


PROMPTS = "To be, or not to be, that is the question:\nNow is the winter of our discontent\n"


@pytest.fixture
def user_dir(tmp_path: Path) -> Path:
    """tmp/user/: a scenario, its prompts, a device profile and a cost card the package does not ship.

    The profile is the OnePlus 12 with a 1 s overhead per forward call (so its use shows in TPOT) and a
    `name:` unlike its file stem; the card is Qwen2.5-0.5B charged in float32 (2x the bf16 weight bytes).
    """
    user = tmp_path / "user"
    (user / "devices").mkdir(parents=True)
    (user / "cards").mkdir()
    profile = yaml.safe_load((profiles_dir() / "oneplus-12.yaml").read_text())
    profile.update(name="slow-phone", overhead_per_call_s="1s")  # pinned: wins under its own runtime
    profile["sources"]["overhead_per_call_s"] = "a deliberately slow phone"
    (user / "devices" / "my-phone.yaml").write_text(yaml.safe_dump(profile))
    card = yaml.safe_load((cards_dir() / "qwen2.5-0.5b.yaml").read_text())
    card["name"] = "qwen2.5-0.5b-fp32"
    card["geometry"]["dtype"] = "float32"
    (user / "cards" / "fp32.yaml").write_text(yaml.safe_dump(card))
    (user / "prompts.txt").write_text(PROMPTS)
    _write_scenario(user, profile="devices/my-phone.yaml", charged_as="cards/fp32.yaml")
    (tmp_path / "elsewhere").mkdir()
    return user


def _write_scenario(user: Path, *, profile: str, charged_as: str) -> Path:
    path = user / "scenario.yaml"
    path.write_text(yaml.safe_dump({
        "name": "user-files",
        "topology": {"nodes": {"phone": {"role": "device", "profile": profile,
                                         "models": [{"name": "shakespeare-slm", "charged_as": charged_as}]}}},
        "workload": {"n_requests": 2, "max_new_tokens": 4,
                     "prompts": {"source": "file", "path": "prompts.txt"}},
        "policy": {"name": "device_only"},
    }))
    return path


def test_user_profile_and_card_resolve_against_the_scenario(user_dir: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(user_dir.parent / "elsewhere")
    scenario = load_scenario("../user/scenario.yaml")
    node = scenario.topology.nodes["phone"]
    assert node.profile == str(user_dir.resolve() / "devices" / "my-phone.yaml")
    assert node.models[0].charged_as == str(user_dir.resolve() / "cards" / "fp32.yaml")

    with_user_card = netsim.run(scenario)
    assert with_user_card.requests["status"].to_list() == ["ok", "ok"]
    assert [m["charged_as"] for m in with_user_card.summary["models"] if m["role"] == "device"] == [
        node.models[0].charged_as]
    # Every decode call pays the user profile's 1 s overhead; the bundled OnePlus 12 pays 2.44 ms.
    assert with_user_card.requests["tpot_s"].min() > 1.0

    # The same model charged as the bundled bf16 card reads half the weight bytes per decoded token.
    bundled = scenario.model_copy(update={"topology": scenario.topology.model_copy(update={"nodes": {
        "phone": node.model_copy(update={"models": [node.models[0].model_copy(
            update={"charged_as": "qwen2.5-0.5b"})]})}})})
    with_bundled_card = netsim.run(bundled)
    assert (with_user_card.requests["tpot_s"] > with_bundled_card.requests["tpot_s"]).all()


def test_the_resolved_scenario_runs_from_anywhere(user_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scenario = load_scenario(user_dir / "scenario.yaml")
    run_dir = user_dir.parent / "runs" / "r1"
    run_dir.mkdir(parents=True)
    (run_dir / "scenario.resolved.yaml").write_text(dump_scenario(scenario))
    monkeypatch.chdir(user_dir.parent / "elsewhere")
    assert load_scenario("../runs/r1/scenario.resolved.yaml") == scenario


def test_bundled_names_stay_names(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    scenario = load_scenario(scenarios_dir() / "quickstart.yaml")
    assert scenario.topology.nodes["phone1"].profile == "oneplus-12"
    assert scenario.topology.nodes["phone1"].models[0].charged_as == "qwen2.5-0.5b"


def _problem(scenario_path: Path) -> str:
    """The one problem line `netsim run` reports for the scenario."""
    with pytest.raises(ScenarioError) as err:
        netsim.run(load_scenario(scenario_path))
    [line] = err.value.problems
    assert "\n" not in line
    return line


def test_a_missing_profile_file_names_the_yaml_path_and_the_file(user_dir: Path) -> None:
    path = _write_scenario(user_dir, profile="devices/nope.yaml", charged_as="cards/fp32.yaml")
    line = _problem(path)
    assert line.startswith("topology.nodes.phone.profile: ")
    assert "user/devices/nope.yaml" in line and "does not exist" in line


def test_a_profile_file_that_does_not_validate_is_one_line(user_dir: Path) -> None:
    (user_dir / "devices" / "bad.yaml").write_text("name: bad\nkind: toaster\n")
    path = _write_scenario(user_dir, profile="devices/bad.yaml", charged_as="cards/fp32.yaml")
    line = _problem(path)
    assert line.startswith("topology.nodes.phone.profile: ")
    assert "user/devices/bad.yaml: " in line and "kind" in line


def test_a_missing_card_file_names_the_yaml_path_and_the_file(user_dir: Path) -> None:
    path = _write_scenario(user_dir, profile="devices/my-phone.yaml", charged_as="cards/gone.yml")
    line = _problem(path)
    assert line.startswith("topology.nodes.phone.models[0].charged_as: cost card ")
    assert "user/cards/gone.yml" in line and "does not exist" in line


def test_a_card_file_that_does_not_validate_is_one_line(user_dir: Path) -> None:
    (user_dir / "cards" / "bad.yaml").write_text("name: bad\nsource: me\ngeometry: {n_layers: 2}\n")
    path = _write_scenario(user_dir, profile="devices/my-phone.yaml", charged_as="cards/bad.yaml")
    line = _problem(path)
    assert line.startswith("topology.nodes.phone.models[0].charged_as: cost card ")
    assert "user/cards/bad.yaml: geometry." in line
