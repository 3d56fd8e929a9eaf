"""Every bundled scenario still produces the event log and requests frame it produced when its
fingerprint was taken (issue 11, item 8). A failure here means behaviour changed: if that was the intent,
regenerate with `python scripts/fingerprints.py --update` and say why in the commit message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest
from project_scripts import load_script

from netsim.lm.zoo import ModelStore

fp = load_script("fingerprints")  # the very code `--check` runs, not a copy
SCENARIOS = fp.bundled_scenarios()


@pytest.fixture(scope="module")
def store() -> ModelStore:
    return ModelStore()


@pytest.fixture(scope="module")
def expected() -> dict[str, dict[str, Any]]:
    return fp.read()


def test_every_bundled_scenario_has_a_fingerprint(expected: dict[str, dict[str, Any]]) -> None:
    assert sorted(expected) == sorted(p.stem for p in SCENARIOS), \
        "run `python scripts/fingerprints.py --update` after adding or removing a bundled scenario"


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_fingerprint_matches(path: Path, store: ModelStore, expected: dict[str, dict[str, Any]]) -> None:
    actual = {path.stem: fp.scenario_fingerprint(path, store)}
    lines = fp.differences({path.stem: expected[path.stem]}, actual)
    assert not lines, ("\n".join(lines) + "\nif intended: `python scripts/fingerprints.py --update`, "
                       "and say why in the commit message")


def test_check_names_the_scenario_and_the_frame(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frame = pl.DataFrame({"t_s": [0.1, 0.2], "kind": ["tx", "rx"]})
    good = {"s": {"events": fp.frame_fingerprint(frame), "requests": fp.frame_fingerprint(frame.head(1))}}
    stored = tmp_path / "fingerprints.json"
    fp.write(good, stored)
    assert fp.check(good, stored) == 0
    changed = {"s": {**good["s"], "events": fp.frame_fingerprint(frame.with_columns(pl.col("t_s") * 2))}}
    assert fp.check(changed, stored) == 1
    err = capsys.readouterr().err
    assert "s: events frame changed" in err and "requests" not in err.splitlines()[0]


def test_a_nanosecond_changes_the_fingerprint_and_float_noise_does_not() -> None:
    base = fp.frame_fingerprint(pl.DataFrame({"t_s": [1.0]}))["sha256"]
    assert fp.frame_fingerprint(pl.DataFrame({"t_s": [1.0 + 1e-9]}))["sha256"] != base
    assert fp.frame_fingerprint(pl.DataFrame({"t_s": [1.0 + 1e-13]}))["sha256"] == base

