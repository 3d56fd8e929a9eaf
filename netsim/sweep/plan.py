"""The plan of a sweep: axes (grid, zip, repeat) expanded into points, each built and checked before any runs.

A typo in the 40th value should cost a second, not the 39 runs before it, so `plan_sweep` builds every
point's scenario, validates it and runs the checks `netsim run` runs (`check_scenario`) up front; the
problems come back as one line each, deduplicated over points. A point's key hashes its values, repeat
and resolved scenario, so point `0007` of a plan is the same point on every machine and every resume.
Syntax and the seed rule: docs/sweeps.md.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import itertools
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netsim.errors import InputError, ScenarioError
from netsim.inputfile import parse_yaml, show_key
from netsim.lm.zoo import ModelStore
from netsim.scenario import (
    Scenario,
    _apply_override,
    _read_with_extends,
    _resolve_paths,
    _retarget_policy,
    parse_scenario,
)

POINTS_MAX = 10_000
"""Points of one sweep, repeats included: every point is built and checked before the first runs (~10 ms
each) and gets its own run dir, so 10,000 is a few minutes of checking and a directory `ls` still lists;
a slip such as `{range: [0, 1e9, 1]}` is refused at once."""

REPEAT_MAX = 1_000
GENERATORS = ("range", "linspace", "logspace")
_PATH = re.compile(r"[^.\[\]\s=]+(\[\d+\])*(\.[^.\[\]\s=]+(\[\d+\])*)*")
_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


@dataclass(frozen=True)
class Axis:
    """One swept field: its path, its values in order, and how the user wrote it (for messages)."""

    path: str
    """Normalised dotted path, `topology.links[0].rate_mbps`: the sweep.parquet column."""
    steps: tuple[str | int, ...]
    values: tuple[Any, ...]
    label: str
    """`--grid topology.links[0].rate_mbps` or `sweep.grid.topology.links[0].rate_mbps`."""
    zipped: bool


def axis_values(spec: Any, label: str) -> tuple[Any, ...]:
    """A YAML list of values as written, or a `{range|linspace|logspace: [...]}` generator expanded."""
    if isinstance(spec, dict):
        if len(spec) != 1 or next(iter(spec)) not in GENERATORS:
            raise ScenarioError([f"{label}: expected a list of values or one of "
                                 "{range: [start, stop, step]}, {linspace: [first, last, count]}, "
                                 "{logspace: [first, last, count]}"])
        kind, args = next(iter(spec.items()))
        values = _generate(kind, args, f"{label}.{kind}")
    elif isinstance(spec, list):
        values = tuple(spec)
    else:
        raise ScenarioError([f"{label}: expected a list of values, got {type(spec).__name__} "
                             "(a single value is `--set`, not an axis)"])
    if not values:
        raise ScenarioError([f"{label}: no values (an empty axis makes an empty sweep)"])
    seen: set[str] = set()
    for value in values:
        text = canonical(value)
        if text in seen:  # the two points would be one point twice, with one seed: `repeat` is for that
            raise ScenarioError([f"{label}: value {text} appears twice"])
        seen.add(text)
    return values


def cli_axis(item: str, zipped: bool) -> tuple[str, Any, str]:
    """`--grid path=v1,v2,...` → (path, values spec, label). The values are one YAML flow list, so
    `[a, b]`, quoted commas and `{logspace: [0.1, 1000, 9]}` read as they would in the YAML block."""
    flag = "--zip" if zipped else "--grid"
    path, sep, text = item.partition("=")
    if not sep or not path.strip():
        raise ScenarioError([f"{flag} {item!r}: expected dotted.path=v1,v2,..."])
    label = f"{flag} {path.strip()}"
    try:
        spec = parse_yaml(f"[{text}]", label)
    except InputError as exc:
        detail = str(exc).rpartition(": ")[2]
        raise ScenarioError([f"{label}: the values are not a comma-separated YAML list ({detail})"]) from None
    if len(spec) == 1 and isinstance(spec[0], dict) and len(spec[0]) == 1 and set(spec[0]) <= set(GENERATORS):
        spec = spec[0]
    return path.strip(), spec, label


def _generate(kind: str, args: Any, label: str) -> tuple[Any, ...]:
    """range: Python's (stop excluded; all-integer arguments give integers); linspace/logspace: `count`
    values from first to last inclusive, evenly or geometrically spaced (numpy's linspace/geomspace: the
    arguments are the values, not exponents). Floats are rounded to 12 significant digits, so
    `{logspace: [0.1, 1000, 5]}` is exactly 0.1, 1, 10, 100, 1000 and a column reads as typed."""
    if not (isinstance(args, list) and all(is_number(a) for a in args)):
        raise ScenarioError([f"{label}: expected a list of finite numbers"])
    if kind == "range":
        if len(args) not in (2, 3):
            raise ScenarioError([f"{label}: expected [start, stop] or [start, stop, step]"])
        start, stop, step = (*args, 1)[:3]
        if step == 0:
            raise ScenarioError([f"{label}: step must not be 0"])
        count = max(0, math.ceil((stop - start) / step - 1e-9))  # the tolerance keeps a float stop excluded
        if count > POINTS_MAX:
            raise ScenarioError([f"{label}: {count:,} values, over the {POINTS_MAX:,} points of a sweep"])
        if all(isinstance(a, int) for a in args):
            return tuple(range(start, stop, step))
        return tuple(_round(start + i * step) for i in range(count))
    if len(args) != 3 or not isinstance(args[2], int) or not 1 <= args[2] <= POINTS_MAX:
        raise ScenarioError([f"{label}: expected [first, last, count], count a whole number 1 to "
                             f"{POINTS_MAX:,}"])
    first, last, count = args
    if count == 1:
        return (first,)
    if kind == "linspace":
        return tuple(_round(first + (last - first) * i / (count - 1)) for i in range(count))
    if first <= 0 or last <= 0:
        raise ScenarioError([f"{label}: first and last must be greater than 0 (values, not exponents)"])
    return tuple(_round(first * (last / first) ** (i / (count - 1))) for i in range(count))


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _round(value: float) -> float:
    return float(f"{value:.12g}")


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _steps(path: str, label: str) -> tuple[str | int, ...]:
    """`a.b[2].c` (or `a.b.2.c`, as `--set` takes it) → ("a", "b", 2, "c")."""
    if not _PATH.fullmatch(path):
        raise ScenarioError([f"{label}: not a dotted.path such as topology.links[0].rate_mbps"])
    steps: list[str | int] = []
    for part in _STEP.finditer(path):
        name, index = part.groups()
        steps.append(int(index) if index is not None else int(name) if name.isdigit() else name)
    return tuple(steps)


def _shown(steps: Sequence[str | int]) -> str:
    return "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in steps).lstrip(".")


def _assign(raw: dict[str, Any], steps: Sequence[str | int], value: Any) -> str | None:
    """Set `value` at `steps` in the raw scenario, or say why there is no such path.

    A missing mapping key is created, as `--set` does: the schema then names a misspelt field, and a
    field left at its default (say `workload.sampling.temperature`) can still be swept. A list index
    past the end, or a step into a number or a string, is no path at all.
    """
    node: Any = raw
    for depth, step in enumerate(steps):
        last = depth == len(steps) - 1
        if isinstance(node, dict) and isinstance(step, str):
            if last:
                node[step] = value
                continue
            if node.get(step) is None:
                if isinstance(steps[depth + 1], int):  # an index into a list nobody wrote
                    return f"no such path ({_shown(steps[:depth]) or 'the scenario'} has no `{step}`)"
                node[step] = {}
            node = node[step]
        elif isinstance(node, list) and isinstance(step, int):
            if step >= len(node):
                entries = "1 entry" if len(node) == 1 else f"{len(node)} entries"
                return f"no such path ({_shown(steps[:depth])} has {entries})"
            if last:
                node[step] = value
            else:
                node = node[step]
        else:
            what = "list" if isinstance(node, list) else "mapping" if isinstance(node, dict) else "value"
            return f"no such path ({_shown(steps[:depth]) or 'scenario'} is a {what})"
    return None


# ---------------------------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class Point:
    """One run of the sweep: the axis values it takes, its repeat and seed, its checked scenario."""

    index: int
    id: str
    params: tuple[tuple[str, Any], ...]
    repeat: int
    seed: int
    scenario: Scenario
    key: str


def _describe(point_id: str, params: Sequence[tuple[str, Any]], repeat: int | None) -> str:
    parts = [f"{path}={canonical(value)}" for path, value in params]
    if repeat is not None:
        parts.append(f"repeat {repeat}")
    return f"sweep point {point_id}: {', '.join(parts)}"


@dataclass(frozen=True)
class SweepPlan:
    name: str
    source: Path
    axes: tuple[Axis, ...]
    repeat: int
    points: tuple[Point, ...]

    @functools.cached_property
    def fingerprint(self) -> str:
        """Identity of the whole sweep: `--resume` continues only a directory holding this one."""
        return hashlib.sha256("\n".join(p.key for p in self.points).encode()).hexdigest()


def plan_sweep(path: str | Path, grid: Sequence[str] = (), zips: Sequence[str] = (),
               repeat: int | None = None, overrides: Sequence[str] = ()) -> SweepPlan:
    """Read the scenario and its `sweep:` block, add the command line's axes, and check every point.

    Command-line axes come after the block's; one naming a path the block sweeps replaces it, and
    `repeat` replaces the block's. `overrides` (`--set`) apply to every point before the axes do.
    Raises ScenarioError with one line per distinct problem, before anything runs.
    """
    from netsim.validation import check_scenario
    from netsim.world import Catalog

    path = Path(path)
    raw = _read_with_extends(path, seen=())
    block = _sweep_block(raw.pop("sweep", None))
    for item in overrides:
        _apply_override(raw, item)
    axes = _axes(block, grid, zips)
    n_repeat = _repeat(block.get("repeat", 1) if repeat is None else repeat,
                       "sweep.repeat" if repeat is None else "--repeat")
    if not axes and n_repeat == 1:
        raise ScenarioError(["sweep: nothing to sweep; give --grid dotted.path=v1,v2,... (or --zip, "
                             "--repeat N) or a `sweep:` block in the scenario"])
    grid_axes = [a for a in axes if not a.zipped]
    zip_axes = [a for a in axes if a.zipped]
    lengths = {len(a.values) for a in zip_axes}
    if len(lengths) > 1:
        shown = ", ".join(f"{a.label} has {len(a.values)}" for a in zip_axes)
        raise ScenarioError([f"{zip_axes[0].label}: zipped axes need as many values each ({shown})"])
    zipped = list(zip(*(a.values for a in zip_axes), strict=True)) if zip_axes else [()]
    count = math.prod(len(a.values) for a in grid_axes) * len(zipped) * n_repeat
    if count > POINTS_MAX:
        raise ScenarioError([f"sweep: {count:,} points, over the {POINTS_MAX:,} a sweep may have; "
                             "split it into several sweeps"])

    catalog = Catalog(ModelStore())  # manifests and profiles read once for every point's check
    width = max(4, len(str(count - 1)))
    ordered = [*grid_axes, *zip_axes]
    points: list[Point] = []
    problems: dict[str, str] = {}  # problem → the first point showing it; one line however many points do
    combos = itertools.product(*(a.values for a in grid_axes), zipped, range(n_repeat))
    for index, combo in enumerate(combos):
        values = (*combo[: len(grid_axes)], *combo[len(grid_axes)])
        r = combo[-1]
        point_raw = copy.deepcopy(raw)
        bad = False
        for axis, value in zip(ordered, values, strict=True):
            if (problem := _assign(point_raw, axis.steps, copy.deepcopy(value))) is not None:
                problems.setdefault(f"{axis.label}: {problem}", "")
                bad = True
        if bad:
            continue
        if isinstance(point_raw.get("policy"), dict):  # a policy.name axis: the point's policy takes its part
            _retarget_policy(point_raw["policy"])
        seed = point_raw.get("seed", 0)
        if isinstance(seed, int) and not isinstance(seed, bool):
            point_raw["seed"] = seed + r  # repeats: seeds derived from the point's seed (docs/sweeps.md)
        params = tuple((a.path, v) for a, v in zip(ordered, values, strict=True))
        point_id = f"{index:0{width}d}"
        where = _describe(point_id, params, r if n_repeat > 1 else None)
        try:
            scenario = _resolve_paths(parse_scenario(point_raw), path.parent)
            check_scenario(scenario, catalog.store, catalog=catalog)
        except InputError as exc:
            for problem in exc.problems if isinstance(exc, ScenarioError) else [str(exc)]:
                problems.setdefault(problem, f" ({where})")
            continue
        key = _key(params, r, scenario)
        points.append(Point(index, point_id, params, r, scenario.seed, scenario, key))
    if problems:
        raise ScenarioError([problem + where for problem, where in problems.items()])
    return SweepPlan(points[0].scenario.name, path, tuple(ordered), n_repeat, tuple(points))


def _sweep_block(block: Any) -> dict[str, Any]:
    if block is None:
        return {}
    if not isinstance(block, dict):
        raise ScenarioError(["sweep: expected a mapping with `grid`, `zip` and/or `repeat`"])
    for key in block:
        if key not in ("grid", "zip", "repeat"):
            raise ScenarioError([f"sweep.{show_key(key)}: unknown field (a sweep has grid, zip and repeat)"])
    for kind in ("grid", "zip"):
        if block.get(kind) is not None and not isinstance(block[kind], dict):
            raise ScenarioError([f"sweep.{kind}: expected a mapping of dotted.path: [values]"])
    return block


def _axes(block: dict[str, Any], grid: Sequence[str], zips: Sequence[str]) -> list[Axis]:
    """The block's axes in written order (grid, then zip), then the command line's."""
    axes: dict[str, Axis] = {}
    for kind in ("grid", "zip"):
        for path, spec in (block.get(kind) or {}).items():
            label = f"sweep.{kind}.{show_key(path)}"
            if not isinstance(path, str):
                raise ScenarioError([f"{label}: expected a dotted.path"])
            axis = _axis(path, spec, label, kind == "zip")
            if axis.path in axes:
                raise ScenarioError([f"{label}: also swept as {axes[axis.path].label}"])
            axes[axis.path] = axis
    cli: set[str] = set()
    for items, zipped in ((grid, False), (zips, True)):
        for item in items:
            path, spec, label = cli_axis(item, zipped)
            axis = _axis(path, spec, label, zipped)
            if axis.path in cli:
                raise ScenarioError([f"{label}: given twice"])
            cli.add(axis.path)
            axes[axis.path] = axis  # replaces the block's axis of that path, in its place
    return list(axes.values())


def _axis(path: str, spec: Any, label: str, zipped: bool) -> Axis:
    steps = _steps(path, label)
    return Axis(_shown(steps), steps, axis_values(spec, label), label, zipped)


def _repeat(value: Any, label: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= REPEAT_MAX:
        raise ScenarioError([f"{label}: expected a whole number 1 to {REPEAT_MAX:,}, got {value!r}"])
    return value


def _key(params: tuple[tuple[str, Any], ...], repeat: int, scenario: Scenario) -> str:
    body = {"params": params, "repeat": repeat, "scenario": scenario.model_dump(mode="json")}
    return hashlib.sha256(canonical(body).encode()).hexdigest()[:20]
