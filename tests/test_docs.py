"""Generated docs stay true to the code: every registered policy has a page and a line in the index, and
docs/scenario-reference.md and the policy parameter tables equal what scripts/scenario_reference.py
writes from the scenario's JSON Schema. When one of these fails after a schema or registry change, the
fix is the command in the message: `python scripts/scenario_reference.py --update`."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from project_scripts import load_script

from netsim.paths import PROJECT_ROOT
from netsim.policies.registry import POLICIES
from netsim.scenario import scenario_json_schema

REGENERATE = "python scripts/scenario_reference.py --update"


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    return load_script("scenario_reference")


def test_every_registered_policy_has_a_page() -> None:
    missing = [name for name in POLICIES if not (PROJECT_ROOT / "docs" / "policies" / f"{name}.md").is_file()]
    assert not missing, (f"no page for the registered policies {missing}: write docs/policies/<name>.md "
                         "(what it models, which equations, its columns; see docs/policies/cloud_only.md), "
                         f"then run `{REGENERATE}` to list it in docs/policies/README.md")


def test_the_generated_docs_are_up_to_date(generator: ModuleType) -> None:
    stale = generator.stale()
    assert not stale, (f"stale generated docs: {', '.join(map(str, stale))} (the scenario schema or the "
                       f"policy registry changed since they were written); regenerate them with "
                       f"`{REGENERATE}` and commit the result")


def test_the_index_links_every_policy_page() -> None:
    index = (PROJECT_ROOT / "docs" / "policies" / "README.md").read_text(encoding="utf-8")
    linked = set(re.findall(r"\]\(([a-z0-9_]+)\.md\)", index))
    assert linked == set(POLICIES), f"docs/policies/README.md is stale; run `{REGENERATE}`"


def _properties(schema: dict[str, Any]) -> dict[str, set[str]]:
    """$def name → its field names, straight from the JSON Schema (an independent walk of it)."""
    defs = schema["$defs"]
    return {"Scenario": set(schema["properties"]),
            **{n: set(d.get("properties", {})) for n, d in defs.items()}}


def test_every_field_of_every_section_is_in_the_reference(generator: ModuleType) -> None:
    text = generator.reference_text()
    schema = scenario_json_schema()
    headings = re.findall(r"^## (.+)$", text, re.MULTILINE)
    blocks = dict(zip(headings, re.split(r"^## .+$", text, flags=re.MULTILINE)[1:], strict=True))
    by_def = {re.sub(r".*\((\w+)\)$", r"\1", h): body for h, body in blocks.items()}
    for name, fields in _properties(schema).items():
        if not fields:
            continue
        assert name in by_def, f"{name} has no section"
        listed = set(re.findall(r"^\| `([^`]+)` \|", by_def[name], re.MULTILINE))
        assert listed == fields, (name, fields ^ listed)
    # a path the reference names is a path a sweep can set: spot-check the one the bandwidth sweep uses
    assert "| `uplink_mbps` |" in blocks["topology.cells[] (CellSpec)"]


def test_a_policy_page_carries_its_generated_parameter_table(generator: ModuleType) -> None:
    for name in ("cloud_only", "edge_only", "device_only"):
        page = (PROJECT_ROOT / "docs" / "policies" / f"{name}.md").read_text(encoding="utf-8")
        rows = set(re.findall(r"^\| `([^`]+)` \|", page, re.MULTILINE))
        assert rows == set(POLICIES[name].Params.model_fields), name


def test_check_names_a_stale_file_and_the_command(generator: ModuleType, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Break on purpose: an edited reference and an edited parameter table are both caught."""
    root = tmp_path / "repo"
    shutil.copytree(PROJECT_ROOT / "docs", root / "docs")
    assert generator.stale(root) == []
    reference = root / "docs" / "scenario-reference.md"
    reference.write_text(reference.read_text().replace("| `seed` |", "| `seed_renamed` |"))
    page = root / "docs" / "policies" / "cloud_only.md"
    page.write_text(page.read_text().replace("| `wire` |", "| `wired` |"))
    assert set(generator.stale(root)) == {Path("docs/scenario-reference.md"),
                                          Path("docs/policies/cloud_only.md")}
    generator.ROOT = root  # main() reads and writes under ROOT
    try:
        assert generator.main(["--check"]) == 1
        out = capsys.readouterr().out
        assert (f"docs/scenario-reference.md: stale (the schema or the policy registry changed); "
                f"run: {REGENERATE}") in out
        assert generator.main(["--update"]) == 0 and generator.stale(root) == []
    finally:
        generator.ROOT = PROJECT_ROOT
