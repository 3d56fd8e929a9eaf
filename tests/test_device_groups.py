"""Device groups (issue 6, item 9): one entry for a fleet, expanded at load into the very nodes, cell
members and links a user would have written by hand; placement drawn per group from the seed; the
resolved scenario keeps the group; every bad group is one line naming its YAML path."""

from __future__ import annotations

import copy
import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import yaml

import netsim
from netsim.errors import ScenarioError
from netsim.groups import GROUP_MEMBERS_MAX, DrawnPlacement, distances_m
from netsim.paths import PROJECT_ROOT
from netsim.scenario import Scenario, dump_scenario, load_scenario, parse_scenario

CLOUD = {"role": "cloud", "profile": "nvidia-a100-80gb", "models": ["shakespeare-llm"]}
PHONE = {"role": "device", "profile": "oneplus-12", "models": ["shakespeare-slm"], "slots": 2}
KIOSK = {"role": "device", "profile": "raspberry-pi-5"}
WIRE = {"rate_mbps": 100, "delay_ms": 1}

GROUPED: dict[str, Any] = {
    "name": "groups",
    "seed": 7,
    "topology": {
        "nodes": {"gnb": {"role": "router"}, "core": {"role": "router"}, "cloud": CLOUD,
                  "handset": {"role": "device", "profile": "oneplus-12"}},
        "groups": [
            {"name": "phones", "count": 5, "pattern": "phone{i:02d}", "profile": "oneplus-12",
             "models": ["shakespeare-slm"], "slots": 2, "cell": "macro",
             "placement": {"distances_m": [100, 200]}},
            {"name": "kiosks", "count": 2, "profile": "raspberry-pi-5", "links": [{"to": "core", **WIRE}]},
        ],
        "cells": [{"name": "macro", "ap": "gnb", "members": {"handset": 300}}],
        "links": [{"src": "gnb", "dst": "core", "rate_mbps": 1000},
                  {"src": "core", "dst": "cloud", "rate_mbps": 1000}],
    },
    "workload": {"n_requests": 2, "max_new_tokens": 4},
    "policy": {"name": "cloud_only"},
}
"""Two groups beside written nodes: phones placed at fixed distances (cycled), kiosks on a wire."""


def by_hand() -> dict[str, Any]:
    """GROUPED as a user would write it without groups: written entries first, then each group's."""
    raw = copy.deepcopy(GROUPED)
    topo = raw["topology"]
    del topo["groups"]
    phones = [f"phone{i:02d}" for i in range(5)]
    topo["nodes"].update({p: PHONE for p in phones})
    topo["nodes"].update({"kiosks0": KIOSK, "kiosks1": KIOSK})
    topo["cells"][0]["members"].update(dict(zip(phones, [100, 200, 100, 200, 100], strict=True)))
    topo["links"] += [{"src": k, "dst": "core", **WIRE} for k in ("kiosks0", "kiosks1")]
    return raw


def edited(change: Any) -> dict[str, Any]:
    raw = copy.deepcopy(GROUPED)
    change(raw)
    return raw


def group(raw: dict[str, Any], k: int = 0) -> dict[str, Any]:
    return raw["topology"]["groups"][k]


def phones_in_disc(*, name: str = "phones", count: int = 50, min_m: float = 20.0, max_m: float = 900.0
                   ) -> dict[str, Any]:
    return {"name": name, "count": count, "pattern": name + "{i}", "profile": "oneplus-12", "cell": "macro",
            "placement": {"distribution": "uniform_disc", "min_m": min_m, "max_m": max_m}}


def member_distances(sc: Scenario, prefix: str) -> dict[str, float]:
    members = sc.topology.cells[0].members
    return {n: m.distance_m for n, m in members.items() if n.startswith(prefix)}


def test_expansion_equals_the_hand_written_topology() -> None:
    grouped, written = parse_scenario(GROUPED), parse_scenario(by_hand())
    assert grouped.topology.model_dump(exclude={"groups"}) == written.topology.model_dump(exclude={"groups"})
    assert list(grouped.topology.nodes) == list(written.topology.nodes)  # the same order, hence same requests
    assert grouped.request_devices == ["handset", *(f"phone{i:02d}" for i in range(5)), "kiosks0", "kiosks1"]
    # Every member shares one frozen spec: 10,000 phones cost one NodeSpec, not 10,000.
    assert len({id(grouped.topology.nodes[f"phone{i:02d}"]) for i in range(5)}) == 1


def test_yaml_paths_name_the_group_of_each_member() -> None:
    paths = parse_scenario(GROUPED).topology.yaml_paths()
    assert paths["handset"] == "topology.nodes.handset"
    assert paths["phone03"] == "topology.groups[0]" and paths["kiosks1"] == "topology.groups[1]"


def test_placement_is_reproducible_and_independent_of_other_groups() -> None:
    def with_groups(*groups: dict[str, Any], seed: int = 7) -> Scenario:
        raw = edited(lambda r: r["topology"].update(groups=list(groups)))
        return parse_scenario({**raw, "seed": seed})

    alone = member_distances(with_groups(phones_in_disc()), "phones")
    assert alone == member_distances(with_groups(phones_in_disc()), "phones")  # same seed, same draws
    # A group added before it, on the same cell, and a longer group: the phones do not move.
    crowded = with_groups(phones_in_disc(name="tablets", count=80), phones_in_disc())
    assert member_distances(crowded, "phones") == alone
    assert member_distances(with_groups(phones_in_disc(count=60)), "phones").items() >= alone.items()
    # Another seed, or another group with the same placement, draws other distances.
    assert member_distances(with_groups(phones_in_disc(), seed=8), "phones") != alone
    tablets = member_distances(crowded, "tablets")
    assert [tablets[f"tablets{i}"] for i in range(50)] != list(alone.values())


@pytest.mark.parametrize("distribution", ["uniform_disc", "uniform"])
def test_drawn_distances_have_the_closed_form_mean(distribution: str) -> None:
    low, high, n = 100.0, 1000.0, 20_000
    r = distances_m(DrawnPlacement(distribution=distribution, min_m=low, max_m=high), n, 3, "fleet")
    assert r.shape == (n,) and r.min() >= low and r.max() <= high
    if distribution == "uniform_disc":  # density 2r / (high² − low²) on [low, high]
        mean = 2 / 3 * (high**3 - low**3) / (high**2 - low**2)
        second = (high**2 + low**2) / 2
    else:
        mean, second = (low + high) / 2, (high**2 + high * low + low**2) / 3
    stderr = math.sqrt((second - mean**2) / n)
    assert abs(r.mean() - mean) < 4 * stderr, (r.mean(), mean, stderr)  # 672.7 m vs 550 m: 49 stderr apart


def test_resolved_scenario_keeps_groups_and_loads_back_equal(tmp_path: Path) -> None:
    raw = edited(lambda r: r["topology"]["groups"].append(phones_in_disc(name="fleet", count=10_000)))
    sc = parse_scenario(raw)
    assert len(sc.topology.nodes) == 4 + 5 + 2 + 10_000
    text = dump_scenario(sc)
    assert len(text.encode()) < 8_000, len(text)  # the groups, not 10,007 nodes
    assert "fleet9999" not in text and "phone00" not in text
    path = tmp_path / "scenario.resolved.yaml"
    path.write_text(text)
    assert load_scenario(path) == sc


def test_a_group_profile_file_resolves_for_every_member(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    user = tmp_path / "user"
    (user / "devices").mkdir(parents=True)
    shutil.copy(PROJECT_ROOT / "device_profiles" / "oneplus-12.yaml", user / "devices" / "my-phone.yaml")
    raw = edited(lambda r: group(r).update(profile="devices/my-phone.yaml"))
    (user / "s.yaml").write_text(yaml.safe_dump(raw))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    sc = load_scenario("../user/s.yaml")
    absolute = str((user / "devices" / "my-phone.yaml").resolve())
    assert sc.topology.groups[0].profile == absolute
    assert {sc.topology.nodes[f"phone{i:02d}"].profile for i in range(5)} == {absolute}
    assert len({id(sc.topology.nodes[f"phone{i:02d}"]) for i in range(5)}) == 1  # still one shared spec
    (elsewhere / "r.yaml").write_text(dump_scenario(sc))
    assert load_scenario("r.yaml") == sc


def test_a_scenario_edited_after_loading_is_dumped_node_by_node() -> None:
    """The groups no longer describe the topology (drawn with seed 7, now seed 8): every node is written,
    so the file still loads back to the topology that ran."""
    drawn = parse_scenario(edited(lambda r: r["topology"]["groups"].append(phones_in_disc(name="fleet"))))
    reseeded = drawn.model_copy(update={"seed": 8})
    again = parse_scenario(yaml.safe_load(dump_scenario(reseeded)))
    assert again.topology.groups == []
    assert again.topology.model_dump(exclude={"groups"}) == reseeded.topology.model_dump(exclude={"groups"})


def test_ten_thousand_members_expand_in_well_under_a_second() -> None:
    raw = edited(lambda r: r["topology"]["groups"].append(phones_in_disc(name="fleet", count=10_000)))
    start = time.perf_counter()
    parse_scenario(raw)
    # ~0.05 s here; the bound only catches a quadratic slip (10,000² steps take minutes).
    assert time.perf_counter() - start < 5.0


def _set(path: str, value: Any) -> Any:
    def change(raw: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = raw
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if value is KeyError:
            del node[last]
        else:
            node[last] = value
    return change


BAD: dict[str, tuple[Any, str]] = {
    "count_zero": (_set("topology.groups.0.count", 0),
                   "topology.groups[0].count: Input should be greater than 0"),
    "count_absurd": (_set("topology.groups.0.count", 10**9),
                     f"topology.groups[0].count: Input should be less than or equal to {GROUP_MEMBERS_MAX}"),
    "count_in_all": (lambda r: [group(r, k).update(count=60_000) for k in (0, 1)],
                     "topology.groups: 120,000 members in all, over the 100,000"),
    "pattern_without_i": (_set("topology.groups.0.pattern", "phone"),
                          "topology.groups[0].pattern: needs `{i}`"),
    "pattern_other_field": (_set("topology.groups.0.pattern", "phone{n}"),
                            "topology.groups[0].pattern: may use only the field `{i}`"),
    "pattern_unclosed": (_set("topology.groups.0.pattern", "phone{i"),
                         "topology.groups[0].pattern: not a format string"),
    "pattern_rounds": (_set("topology.groups.0.pattern", "p{i:.0e}"),  # 20 phones: 1e+01 twice
                       "topology.groups[0].pattern: gives two members the same name"),
    "pattern_hits_a_node": (lambda r: r["topology"]["nodes"].update(phone02=KIOSK),
                            "topology.groups[0].pattern: 1 member name already taken, first 'phone02' by "
                            "topology.nodes"),
    "pattern_hits_a_group": (_set("topology.groups.1.pattern", "phone{i:02d}"),
                             "topology.groups[1].pattern: 2 member names already taken, first 'phone00' by "
                             "topology.groups[0]"),
    "name_twice": (_set("topology.groups.1.name", "phones"),
                   "topology.groups[1].name: a second group called 'phones'"),
    "unknown_cell": (_set("topology.groups.0.cell", "micro"),
                     "topology.groups[0].cell: unknown cell 'micro' (cells: macro)"),
    "unknown_link_target": (lambda r: group(r, 1)["links"][0].update(to="gw"),
                            "topology.groups[1].links[0].to: unknown node 'gw'"),
    "link_to_itself": (lambda r: group(r, 1)["links"][0].update(to="kiosks1"),
                       "topology.groups[1].links[0].to: 'kiosks1' is a member of this group"),
    "link_template_rate": (lambda r: group(r, 1)["links"][0].update(rate_mbps=0),
                           "topology.groups[1].links[0].rate_mbps: Input should be greater than or equal to"),
    "link_template_mtu": (lambda r: group(r, 1)["links"][0].update(mtu_bytes=100, header_bytes=200),
                          "topology.groups[1].links[0]: mtu_bytes (100) must exceed header_bytes (200)"),
    "beyond_pathloss_range": (_set("topology.groups.0.placement", {"distances_m": [100, 6000]}),
                              "topology.groups[0].placement: phone01 in cell 'macro': TR 38.901 uma_nlos "
                              "holds for 10–5000 m, got 6000"),
    "drawn_beyond_range": (_set("topology.groups.0.placement",
                                {"distribution": "uniform", "min_m": 1, "max_m": 9}),
                           "topology.groups[0].placement: phone0"),
    "min_above_max": (_set("topology.groups.0.placement",
                           {"distribution": "uniform_disc", "min_m": 500, "max_m": 100}),
                      "topology.groups[0].placement.max_m: must be at least min_m (500), got 100"),
    "distance_negative": (_set("topology.groups.0.placement", {"distances_m": [100, -5]}),
                          "topology.groups[0].placement.distances_m[1]: Input should be greater than 0"),
    "unknown_distribution": (_set("topology.groups.0.placement", {"distribution": "gauss", "min_m": 1,
                                                                  "max_m": 2}),
                             "topology.groups[0].placement: Input tag 'gauss'"),
    "placement_without_cell": (_set("topology.groups.0.cell", KeyError),
                               "topology.groups[0]: `placement` is a distance from a base station"),
    "cell_without_placement": (_set("topology.groups.0.placement", KeyError),
                               "topology.groups[0]: a group in a cell needs `placement`"),
    "member_also_written": (lambda r: r["topology"]["cells"][0]["members"].update(phone02=50),
                            "topology.groups[0].cell: 'phone02' is also written in the members of cell "
                            "'macro'"),
    "no_profile": (_set("topology.groups.1.profile", KeyError),
                   "topology.groups[1]: a device node needs a `profile`"),
    "unknown_field": (_set("topology.groups.0.colour", "red"),
                      "topology.groups[0].colour: unknown field"),
    "bad_name": (_set("topology.groups.0.name", "my phones"),
                 "topology.groups[0].name: String should match"),
    "not_a_list": (_set("topology.groups", {"name": "phones"}),
                   "topology.groups: Input should be a valid list"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_group_is_one_line_naming_its_yaml_path(case: str) -> None:
    change, expected = BAD[case]
    raw = edited(change)
    if case == "pattern_rounds":
        group(raw)["count"] = 20
    with pytest.raises(ScenarioError) as info:
        parse_scenario(raw)
    assert len(info.value.problems) == 1 and info.value.problems[0].startswith(expected), info.value.problems


def test_a_node_called_like_a_union_tag_keeps_its_name_in_errors() -> None:
    raw = edited(lambda r: r["topology"]["nodes"].update(file={**KIOSK, "slots": 0}))
    with pytest.raises(ScenarioError) as info:
        parse_scenario(raw)
    assert info.value.problems == ["topology.nodes.file.slots: Input should be greater than 0"]


def test_members_may_be_named_elsewhere_in_the_scenario() -> None:
    """Cross-references see the expanded nodes: a written link to a member, a member asking requests."""
    raw = edited(lambda r: (r["topology"]["links"].append({"src": "phone03", "dst": "core", "rate_mbps": 10}),
                            r["workload"].update(devices=["phone03", "kiosks1"])))
    sc = parse_scenario(raw)
    assert sc.request_devices == ["phone03", "kiosks1"]
    assert parse_scenario(yaml.safe_load(dump_scenario(sc))) == sc  # the written link stays written


def test_the_fleet_scenario_runs() -> None:
    sc = netsim.load_scenario(PROJECT_ROOT / "scenarios" / "fleet.yaml")
    assert [g.count for g in sc.topology.groups] == [8, 4, 3]
    assert sum(spec.role == "device" for spec in sc.topology.nodes.values()) == 15
    assert [m.distance_m for n, m in sc.topology.cells[1].members.items()] == [40, 80, 120, 40]
    assert np.all(np.array([m.distance_m for m in sc.topology.cells[0].members.values()]) >= 50)
    req = netsim.run(sc).requests
    assert req.height == sc.workload.n_requests
    assert req["status"].to_list() == ["ok"] * req.height, req.filter(pl.col("status") != "ok")["fail_reason"]
