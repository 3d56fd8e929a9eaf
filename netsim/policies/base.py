"""The small protocol every policy follows, and nothing else (no runtime imports: the scenario schema
reads each policy's `Params` from here without pulling in the engine).

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

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    import networkx as nx
    import polars as pl

    from netsim.context import ProcessGenerator, RequestContext
    from netsim.scenario import Scenario
    from netsim.world import World


class PolicyParams(BaseModel):
    """Base of every policy's parameters; `name` selects the policy (a discriminated union)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


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
