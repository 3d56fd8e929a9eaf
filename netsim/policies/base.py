"""The small protocol every policy follows. Parameters live in params.py (the scenario schema imports
only that); this module and the policies refer to the scenario, world and context for types only.

A policy's life in one run:
1. `check(params, scenario, graph)` (classmethod) before anything is built: problems that need the
   whole scenario, each a `yaml.path: message` line. A rule belongs to the policy that needs it.
2. `Policy(params, world)` once the world is built; `setup()` returns long-lived processes (federated
   rounds, batching loops) that the run waits for; daemon services that never end (a peer answering
   requests) are started with `world.env.process` there too but are not returned.
3. `serve(ctx)` once per request: a plain SimPy generator using the verbs of `netsim.context`.
4. `finish()` after the last request: extra tables by name (written as `<name>.parquet`).
Extra per-request columns are declared in `columns` and set with `ctx.record.extra[name] = value`;
other policies' runs have them as nulls, so runs of different policies concatenate (`how="diagonal"`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, ClassVar, Generic, TypeVar

from netsim.policies.params import PolicyParams

if TYPE_CHECKING:
    import networkx as nx
    import polars as pl

    from netsim.context import ProcessGenerator, RequestContext
    from netsim.scenario import Scenario
    from netsim.world import World


P = TypeVar("P", bound=PolicyParams)


class Policy(ABC, Generic[P]):
    name: ClassVar[str]
    Params: ClassVar[type[PolicyParams]]
    columns: ClassVar[Mapping[str, pl.DataType | type[pl.DataType]]] = MappingProxyType({})
    """Extra request columns this policy fills, name → polars dtype."""

    def __init__(self, params: P, world: World) -> None:
        self.params = params
        self.world = world

    @classmethod
    def check(cls, params: P, scenario: Scenario, graph: nx.DiGraph) -> list[str]:
        return []

    def setup(self) -> list[ProcessGenerator]:
        return []

    @abstractmethod
    def serve(self, ctx: RequestContext) -> ProcessGenerator: ...

    def finish(self) -> dict[str, pl.DataFrame]:
        return {}
