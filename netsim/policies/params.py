"""Every policy's parameters: what a scenario's `policy:` section may say, and nothing else.

Pure configuration (pydantic only), so the scenario schema can take the union of all policies'
parameters without importing a policy's runtime code — and a policy module can refer to the scenario,
the world and the request context without an import cycle. Each policy's module names its `Params`
from here; adding a policy means a class here, its module, and a line in registry.py.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class PolicyParams(BaseModel):
    """Base of every policy's parameters; `name` selects the policy (a discriminated union)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


WireFormat = Literal["token_ids", "api_text"]
"""How one server's answer crosses the network (netsim/policies/remote.py)."""


class DeviceOnlyParams(PolicyParams):
    name: Literal["device_only"]
    model: str | None = Field(None, description="model on the device to use (default: its first)")


class ServerParams(PolicyParams):
    server: str | None = Field(None, description="serving node (default: the nearest one of the policy's "
                               "tier hosting the model)")
    model: str | None = Field(None, description="model on the server (default: its first)")
    wire: WireFormat = Field("token_ids", description="`token_ids`: prompt ids up, one id per token down; "
                             "`api_text`: chat-completion JSON up, one SSE chunk per token down")


class EdgeOnlyParams(ServerParams):
    name: Literal["edge_only"]


class CloudOnlyParams(ServerParams):
    name: Literal["cloud_only"]


ALL_PARAMS: tuple[type[PolicyParams], ...] = (CloudOnlyParams, DeviceOnlyParams, EdgeOnlyParams)

POLICY_NAMES: tuple[str, ...] = tuple(
    p.model_json_schema()["properties"]["name"]["const"] for p in ALL_PARAMS)

PolicySpec = Annotated[
    CloudOnlyParams | DeviceOnlyParams | EdgeOnlyParams,
    Field(discriminator="name", description="which policy serves the requests, and its parameters"),
]
