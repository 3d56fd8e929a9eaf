"""The device × runtime model against published batch-1 measurements (tests/data/calibration.yaml).

Every point is a measurement with its source, marked `fit` (a runtime's efficiency entry was fitted to
it) or `holdout` (never used in a fit).
Fitted points come back within 2% (the profiles round their factors); every hold-out is predicted within
±25%. `python tests/test_calibration.py` prints the table docs/hardware.md carries.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from netsim.hardware.cost import decode_tokens_per_s, prefill_tokens_per_s
from netsim.hardware.profile import DeviceProfile, load_device
from netsim.hardware.runtime import load_runtime
from netsim.lm.cards import load_card
from netsim.lm.geometry import ModelGeometry
from netsim.paths import profiles_dir

DATA = Path(__file__).parent / "data" / "calibration.yaml"
HOLDOUT_TOLERANCE = 0.25
FIT_TOLERANCE = 0.02
DEFAULT_CONTEXT = 128


@cache
def calibration() -> dict[str, Any]:
    return yaml.safe_load(DATA.read_text())


def points() -> list[dict[str, Any]]:
    return calibration()["points"]


def geometry(point: dict[str, Any]) -> ModelGeometry:
    name = point["model"]
    inline = calibration()["models"].get(name)
    geom = ModelGeometry.model_validate(inline) if inline else load_card(name)
    return geom.charged_with(point.get("format"))


def device(point: dict[str, Any]) -> DeviceProfile:
    """The bundled device (or the measured sibling part: its YAML with the sibling's numbers swapped in)
    under the point's runtime."""
    sibling = point.get("sibling")
    if sibling:
        raw = yaml.safe_load((profiles_dir() / f"{point['device']}.yaml").read_text())
        swap = calibration()["siblings"][sibling]
        raw.update(swap)
        if "peak_flops" in swap:
            raw["sources"] = {k: v for k, v in raw["sources"].items() if not k.startswith("peak_flops.")}
            raw["sources"] |= {f"peak_flops.{d}": f"sibling {sibling}" for d in raw["peak_flops"]}
        raw["sources"] |= {field: f"sibling {sibling}" for field in swap if field != "peak_flops"}
        base = DeviceProfile.model_validate(raw)
    else:
        base = load_device(point["device"])
    return base.with_runtime(load_runtime(point["runtime"]), point["runtime"])


def predict(point: dict[str, Any]) -> float:
    if point["measure"] == "decode":
        return decode_tokens_per_s(device(point), geometry(point), point.get("context", DEFAULT_CONTEXT))
    return prefill_tokens_per_s(device(point), geometry(point), point["tokens"])


def label(point: dict[str, Any]) -> str:
    fmt = point.get("format") or geometry(point).dtype
    where = point.get("sibling") or point["device"]
    return f"{point['runtime']} {where} {point['model']} {fmt} {point['measure']}"


def test_every_point_has_a_role_a_source_and_a_known_runtime() -> None:
    roles = {p["role"] for p in points()}
    assert roles <= {"fit", "holdout"}
    for p in points():
        assert p["source"].strip() and p["measured"] > 0
    # each runtime has hold-outs, not only fitted points, unless the file says why it cannot
    fit_only = calibration().get("fit_only", {})
    for runtime in {p["runtime"] for p in points()} - fit_only.keys():
        assert any(p["role"] == "holdout" and p["runtime"] == runtime for p in points()), runtime
    assert all(reason.strip() for reason in fit_only.values())


def test_no_holdout_was_fitted() -> None:
    """A hold-out may not be a fit point under another name: same runtime, device, model, format, measure."""
    def key(p: dict[str, Any]) -> tuple[Any, ...]:
        return (p["runtime"], p["device"], p.get("sibling"), p["model"], p.get("format"), p["measure"],
                p.get("tokens"))
    fitted = {key(p) for p in points() if p["role"] == "fit"}
    assert not [label(p) for p in points() if p["role"] != "fit" and key(p) in fitted]


@pytest.mark.parametrize("point", [p for p in points() if p["role"] == "fit"], ids=label)
def test_fitted_points_come_back(point: dict[str, Any]) -> None:
    assert predict(point) == pytest.approx(point["measured"], rel=FIT_TOLERANCE), point["source"]


@pytest.mark.parametrize("point", [p for p in points() if p["role"] == "holdout"], ids=label)
def test_holdout_points_are_predicted_within_25_percent(point: dict[str, Any]) -> None:
    predicted = predict(point)
    assert predicted == pytest.approx(point["measured"], rel=HOLDOUT_TOLERANCE), \
        f"{label(point)}: predicted {predicted:.2f}, measured {point['measured']} ({point['source']})"


def table() -> str:
    """The predicted-vs-measured table of every point, as docs/hardware.md shows it."""
    rows = ["| role | runtime | device | model | format | measured | predicted | error |",
            "|---|---|---|---|---|---|---|---|"]
    for p in points():
        pred = predict(p)
        what = "decode" if p["measure"] == "decode" else f"prefill {p['tokens']}"
        where = p["device"] + (f" ({p['sibling']})" if p.get("sibling") else "")
        fmt = p.get("format") or geometry(p).dtype
        rows.append(f"| {p['role']} | {p['runtime']} | {where} | {p['model']} | {fmt} | "
                    f"{p['measured']:g} tok/s {what} | {pred:.3g} | {pred / p['measured'] - 1:+.1%} |")
    return "\n".join(rows)


def test_print_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    text = table()
    with capsys.disabled():
        print("\n" + text)
    holdouts = [p for p in points() if p["role"] == "holdout"]
    within = [p for p in holdouts if abs(predict(p) / p["measured"] - 1) <= HOLDOUT_TOLERANCE]
    assert len(within) == len(holdouts)


if __name__ == "__main__":
    print(table())
