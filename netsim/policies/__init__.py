"""Collaboration policies, one module each, registered by name.

A policy module defines `Params` (its parameters, with `name: Literal[...]`), `serve(ctx, params)`
(a SimPy generator per request) and `check(params, scenario, graph)` (problems that need the whole
scenario). The scenario's `policy:` section is a union discriminated by `name`.
"""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType, ModuleType
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

from netsim.policies import cloud_only, device_only, edge_only

if TYPE_CHECKING:
    import networkx as nx

    from netsim.scenario import Scenario

_MODULES: tuple[ModuleType, ...] = (cloud_only, device_only, edge_only)

POLICIES: MappingProxyType[str, ModuleType] = MappingProxyType(
    {m.Params.model_fields["name"].annotation.__args__[0]: m for m in _MODULES}
)
POLICY_NAMES = tuple(POLICIES)

PolicySpec = Annotated[
    cloud_only.Params | device_only.Params | edge_only.Params,
    Field(discriminator="name", description="which policy serves the requests, and its parameters"),
]


def serve_fn(name: str) -> Callable[..., Any]:
    return POLICIES[name].serve


def policy_checks(scenario: Scenario, graph: nx.DiGraph) -> list[str]:
    params = scenario.policy
    return POLICIES[params.name].check(params, scenario, graph)
