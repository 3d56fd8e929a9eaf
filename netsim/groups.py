"""Device groups: a fleet written as one entry, expanded at load into plain nodes, cell members and links.

Ten thousand phones are one `topology.groups` entry: a count, a name pattern, one node description
that every member shares, and where the members sit — fixed distances from the cell's base station,
or distances drawn from the scenario seed. `netsim.scenario` expands the groups before it checks any
cross-reference, so every later stage (validation, world, network, policies) sees ordinary nodes and
never learns that groups exist. `contract` undoes the expansion for `scenario.resolved.yaml`, which
therefore stays as short as the file the user wrote.

Placement draws come from `default_rng([seed, STREAM_PLACEMENT, crc32(group name)])`: one stream per
group, so adding, removing or resizing one group never moves another group's devices.

This module holds only what a group adds to a node; the node fields themselves (role, profile, models,
slots) come from `netsim.scenario.NodeSpec`, which combines the two into `DeviceGroupSpec`.
"""

from __future__ import annotations

import string
import zlib
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from netsim.network.spec import DISTANCE_MAX_M, CellSpec, LinkSpec, MemberSpec

STREAM_PLACEMENT = 4
"""Random stream of placement draws. world.py draws the network from stream 1 and the workload from 2,
context.py each request's purposes from 3."""

GROUP_MEMBERS_MAX = 100_000
"""Members of one group, and of all groups of a scenario together: ten times the 10,000-device
benchmark. Expansion itself is cheap (~0.1 s per 10,000), but every member becomes a node, a medium
member and a compute object at world build, so `count: 1e9` (a slip for 1e3) is refused at once."""

MEMBER_NAME_MAX = 128
"""Longest member name a pattern may produce: node names appear in every event row."""

SLUG = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class FixedPlacement(_Strict):
    """Given distances; member k sits at `distances_m[k mod len]`, so a short list is cycled."""

    distribution: Literal["fixed"] = Field(
        "fixed", description="`fixed` (the default when `distances_m` is given)")
    distances_m: list[Annotated[float, Field(gt=0, le=DISTANCE_MAX_M)]] = Field(
        min_length=1, max_length=GROUP_MEMBERS_MAX,
        description="ground distances from the base station, m, each above 0 to 1e5; cycled over members")


class DrawnPlacement(_Strict):
    """Distances drawn from the scenario seed and the group name (stream STREAM_PLACEMENT)."""

    distribution: Literal["uniform_disc", "uniform"] = Field(
        description="`uniform_disc`: devices uniform over the annulus min_m..max_m around the base "
                    "station (more of them far out); `uniform`: the distance itself uniform in min_m..max_m")
    min_m: float = Field(gt=0, le=DISTANCE_MAX_M, description="nearest distance, m: above 0 to 1e5")
    max_m: float = Field(gt=0, le=DISTANCE_MAX_M, description="farthest distance, m: min_m to 1e5")

    @field_validator("max_m")
    @classmethod
    def _at_least_min(cls, value: float, info: ValidationInfo) -> float:
        """Checked on the field, so the error names `placement.max_m`."""
        low = info.data.get("min_m")
        if low is not None and value < low:
            raise ValueError(f"must be at least min_m ({low:g}), got {value:g}")
        return value


Placement = Annotated[FixedPlacement | DrawnPlacement, Field(discriminator="distribution")]
PLACEMENT_TAGS = frozenset({"fixed", "uniform_disc", "uniform"})

# The link template is `topology.links` without its two ends plus `to`: built from LinkSpec's own fields,
# so its units, ranges and help text cannot drift from a written link's.
LinkTemplate = create_model(
    "LinkTemplate",
    __base__=_Strict,
    __doc__="A wired link from every member to the node `to`; other fields as in `topology.links`.",
    to=(str, Field(description="the node every member is wired to (a router, a gateway)")),
    **{name: (info.annotation, info) for name, info in LinkSpec.model_fields.items()
       if name not in ("src", "dst")},
)


class GroupSpec(_Strict):
    """What a group adds to a node description: how many, their names, their cell and wires."""

    name: str = Field(
        pattern=SLUG, description="group name: seeds the placement draws and names members by default; "
                                  "letters, digits, '.', '_' and '-', at most 64 characters")
    count: int = Field(
        gt=0, le=GROUP_MEMBERS_MAX,
        description=f"members: 1 to {GROUP_MEMBERS_MAX:,} (the cap holds for all groups together too)")
    pattern: str | None = Field(
        None, description="member names, a Python format string of i = 0..count-1 such as `phone{i:03d}`; "
                          "default `<name>{i}`")
    cell: str | None = Field(None, description="name of the cell every member joins (needs `placement`)")
    placement: Placement | None = Field(
        None, description="distances from the cell's base station: `{distances_m: [...]}` or "
                          "`{distribution: uniform_disc | uniform, min_m, max_m}`")
    links: list[LinkTemplate] = Field(
        default_factory=list, description="wired links from every member, e.g. `[{to: gw, rate_mbps: 100}]`")

    @field_validator("pattern")
    @classmethod
    def _names_by_i(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            problem = _pattern_problem(pattern)
            if problem:
                raise ValueError(problem)
        return pattern

    @field_validator("placement", mode="before")
    @classmethod
    def _fixed_by_default(cls, value: Any) -> Any:
        """`{distances_m: [...]}` needs no tag, as `prompts: {min_chars: 50}` needs none."""
        if isinstance(value, dict) and "distribution" not in value and "distances_m" in value:
            return {"distribution": "fixed", **value}
        return value

    @model_validator(mode="after")
    def _placed_in_a_cell(self) -> GroupSpec:
        if self.cell is not None and self.placement is None:
            raise ValueError("a group in a cell needs `placement` (distances_m, or a distribution)")
        if self.cell is None and self.placement is not None:
            raise ValueError("`placement` is a distance from a base station: name the group's `cell`")
        return self

    def member_names(self) -> list[str]:
        pattern = self.pattern if self.pattern is not None else f"{self.name}{{i}}"
        return [pattern.format(i=i) for i in range(self.count)]


def _pattern_problem(pattern: str) -> str | None:
    """Why `pattern` cannot name members, or None. Only `{i}` fields (with any format spec) are allowed."""
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(pattern) if field is not None]
    except ValueError as exc:
        return f"not a format string ({exc})"
    if not fields:
        return "needs `{i}` (the member's index, 0 to count-1), e.g. `phone{i:03d}`"
    if any(field != "i" for field in fields):
        return "may use only the field `{i}`, e.g. `phone{i:03d}`"
    try:
        first = pattern.format(i=0)
    except ValueError as exc:  # a format spec an integer does not take, e.g. `{i:s}`
        return f"cannot format the index: {exc}"
    if not 0 < len(first) <= MEMBER_NAME_MAX:
        return f"gives names of 1 to {MEMBER_NAME_MAX} characters, got {len(first)}"
    return None


def distances_m(placement: FixedPlacement | DrawnPlacement, count: int, seed: int, group: str) -> np.ndarray:
    """The ground distance of each member from its base station, m; shape (count,)."""
    if isinstance(placement, FixedPlacement):
        return np.resize(np.asarray(placement.distances_m, dtype=np.float64), count)  # cycles the list
    rng = np.random.default_rng([seed, STREAM_PLACEMENT, zlib.crc32(group.encode("utf-8"))])
    u = rng.random(count)
    low, high = placement.min_m, placement.max_m
    if placement.distribution == "uniform":
        r = low + u * (high - low)
    else:  # inverse CDF of the density 2r / (high² − low²) on [low, high]: uniform over the annulus' area
        r = np.sqrt(u * (high * high - low * low) + low * low)
    return np.clip(r, low, high)  # rounding must not step past a path-loss model's validity edge


def expand(topology: Mapping[str, Any], groups: Sequence[GroupSpec], nodes: Sequence[BaseModel], seed: int
           ) -> tuple[dict[str, Any], list[str]]:
    """The topology (raw, as read from YAML) with every group's members added as nodes, cell members and
    links — `nodes[k]` is the one node spec all members of `groups[k]` share — and the problems that
    stop that, one `yaml.path: message` line each. The input is not modified.

    A topology whose `nodes`, `cells` or `links` is not even the right kind of container comes back as
    it was: the schema reports that field, and expansion has nothing sound to add to.
    """
    written = topology.get("nodes", {})
    raw_cells = topology.get("cells", [])
    raw_links = topology.get("links", [])
    if not (isinstance(written, Mapping) and isinstance(raw_cells, list) and isinstance(raw_links, list)):
        return dict(topology), []
    cells = [dict(c) if isinstance(c, Mapping | BaseModel) else c for c in raw_cells]
    cell_at = {c["name"]: k for k, c in enumerate(cells)
               if isinstance(c, dict) and isinstance(c.get("name"), str)}

    # 1. Names: every member's name is new — not a written node, not another group's member.
    problems: list[str] = []
    total = sum(g.count for g in groups)
    if total > GROUP_MEMBERS_MAX:
        problems.append(f"topology.groups: {total:,} members in all, over the {GROUP_MEMBERS_MAX:,} one "
                        "scenario may expand to")
        return dict(topology), problems
    owner: dict[str, str] = dict.fromkeys(written, "topology.nodes")
    first_of: dict[str, int] = {}
    names_of: list[list[str]] = []
    for k, group in enumerate(groups):
        at = f"topology.groups[{k}]"
        if group.name in first_of:
            problems.append(f"{at}.name: a second group called {group.name!r} (also topology.groups"
                            f"[{first_of[group.name]}]); the name seeds the placement draws")
        first_of.setdefault(group.name, k)
        names = group.member_names()
        names_of.append(names)
        if len(set(names)) < len(names):
            problems.append(f"{at}.pattern: gives two members the same name; use `{{i}}` without rounding")
        clashes = [n for n in names if n in owner]
        if clashes:
            problems.append(f"{at}.pattern: {len(clashes):,} member name{'s' if len(clashes) > 1 else ''} "
                            f"already taken, first {clashes[0]!r} by {owner[clashes[0]]}")
        for n in names:
            owner.setdefault(n, at)

    # 2. Where each group goes: its cell (with the distances drawn once here) and its wires.
    placed: list[dict[str, MemberSpec]] = []
    wired: list[list[LinkSpec]] = []
    for k, (group, names) in enumerate(zip(groups, names_of, strict=True)):
        at = f"topology.groups[{k}]"
        members: dict[str, MemberSpec] = {}
        if group.cell is not None and group.placement is not None:
            cell = cells[cell_at[group.cell]] if group.cell in cell_at else None
            if cell is None:
                known = ", ".join(sorted(str(n) for n in cell_at)) or "none"
                problems.append(f"{at}.cell: unknown cell {group.cell!r} (cells: {known})")
            elif isinstance(cell.get("members") or {}, Mapping):  # otherwise the schema reports `members`
                far = distances_m(group.placement, group.count, seed, group.name)
                members = {n: MemberSpec(distance_m=d) for n, d in zip(names, far.tolist(), strict=True)}
                problems += _placement_problems(at, cell, names, far)
                again = [n for n in names if n in (cell.get("members") or {})]
                if again:
                    problems.append(f"{at}.cell: {again[0]!r} is also written in the members of cell "
                                    f"{group.cell!r}; a group places its own members")
        placed.append(members)
        links: list[LinkSpec] = []
        for j, template in enumerate(group.links):
            if template.to not in owner:
                problems.append(f"{at}.links[{j}].to: unknown node {template.to!r}")
            elif owner[template.to] == at:
                problems.append(f"{at}.links[{j}].to: {template.to!r} is a member of this group")
            else:
                links += _wires(f"{at}.links[{j}]", template, names, problems)
        wired.append(links)
    if problems:
        return dict(topology), problems

    # 3. Append: written entries first, then each group's in group order (a stable, documented order).
    out = dict(topology)
    out["nodes"] = dict(written)
    for names, node in zip(names_of, nodes, strict=True):
        out["nodes"].update(dict.fromkeys(names, node))  # one frozen spec shared by every member
    for group, members in zip(groups, placed, strict=True):
        if members:
            cell = cells[cell_at[group.cell]]
            cell["members"] = {**(cell.get("members") or {}), **members}
    out["cells"] = cells
    out["links"] = [*raw_links, *(link for links in wired for link in links)]
    out["groups"] = list(groups)
    return out, []


def _placement_problems(at: str, cell: dict[str, Any], names: list[str], far: np.ndarray) -> list[str]:
    """The cell's own path-loss validity check on the group's nearest and farthest member: it depends on
    the distance only through a range, so these two decide for all. Any other problem of the cell (an
    antenna height outside the model's range) is the cell's, and reported at the cell's path."""
    ends = sorted({int(far.argmin()), int(far.argmax())})
    probe = {names[i]: MemberSpec(distance_m=float(far[i])) for i in ends}
    try:
        CellSpec.model_validate({**cell, "members": probe})
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            msg = err["msg"].removeprefix("Value error, ")
            for n in probe:
                head = f"members.{n}.distance_m: "
                if msg.startswith(head):
                    return [f"{at}.placement: {n} in cell {cell.get('name')!r}: {msg.removeprefix(head)}"]
    return []


def _wires(at: str, template: BaseModel, names: list[str], problems: list[str]) -> list[LinkSpec]:
    """One LinkSpec per member; the first is validated in full (mtu against headers, outages), the rest
    are copies of it that differ only in `src`."""
    fields = template.model_dump(exclude={"to"})
    try:
        first = LinkSpec.model_validate({"src": names[0], "dst": template.to, **fields})
    except ValidationError as exc:
        problems += [f"{at}: {err['msg'].removeprefix('Value error, ')}"
                     for err in exc.errors(include_url=False)]
        return []
    return [first, *(first.model_copy(update={"src": n}) for n in names[1:])]


def contract(topology: dict[str, Any], groups: Sequence[GroupSpec]) -> dict[str, Any]:
    """The topology as written: a dumped (JSON-like) effective topology without what `groups` generate.

    Generated entries are recognisable by name alone: member names are new (`expand` refuses clashes),
    a group member joins only its own cell through the group, and a second member->`to` link would be a
    second hop in one direction, which the topology refuses. Entries a user wrote about members (a
    membership of another cell, a link to another node) stay.
    """
    generated: set[str] = set()
    in_cell: dict[str, set[str]] = {}
    wires: set[tuple[str, str]] = set()
    for group in groups:
        names = group.member_names()
        generated.update(names)
        if group.cell is not None:
            in_cell.setdefault(group.cell, set()).update(names)
        wires.update((n, t.to) for t in group.links for n in names)
    out = dict(topology)
    out["nodes"] = {n: spec for n, spec in topology["nodes"].items() if n not in generated}
    cells = []
    for cell in topology["cells"]:
        drop = in_cell.get(cell["name"], set())
        members = {n: m for n, m in cell["members"].items() if n not in drop}
        # A cell of group members only is written without `members`, as the user wrote it.
        cells.append({**cell, "members": members} if members else
                     {key: value for key, value in cell.items() if key != "members"})
    out["cells"] = cells
    out["links"] = [link for link in topology["links"] if (link["src"], link["dst"]) not in wires]
    return out
