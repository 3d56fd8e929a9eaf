"""Collaboration policies, one module each, and the one place that lists them.

To add a policy: write `netsim/policies/<name>.py` with a `Params` model (`name: Literal["<name>"]`)
and a `Policy` subclass (see base.py), then add the class to `_REGISTERED` below. The scenario's
`policy:` section is the union of every registered policy's `Params`, discriminated by `name`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Annotated, Any, Union

from pydantic import Field

from netsim.policies.base import Policy
from netsim.policies.cloud_only import CloudOnly
from netsim.policies.device_only import DeviceOnly
from netsim.policies.edge_only import EdgeOnly


def _registry(classes: Iterable[type[Policy[Any]]]) -> Mapping[str, type[Policy[Any]]]:
    """Name → class, refusing two policies with one name or a class whose Params disagree on its name."""
    out: dict[str, type[Policy[Any]]] = {}
    for cls in classes:
        declared = cls.Params.model_json_schema()["properties"]["name"].get("const")
        if declared != cls.name:
            raise TypeError(f"{cls.__name__}: Params.name is {declared!r}, the class says {cls.name!r}")
        if cls.name in out:
            raise TypeError(f"two policies are called {cls.name!r}: {out[cls.name].__name__}, {cls.__name__}")
        out[cls.name] = cls
    return MappingProxyType(out)


_REGISTERED = (CloudOnly, DeviceOnly, EdgeOnly)

POLICIES = _registry(_REGISTERED)
POLICY_NAMES = tuple(POLICIES)

PolicySpec = Annotated[
    Union[tuple(cls.Params for cls in _REGISTERED)],  # noqa: UP007 - a runtime tuple needs Union[...]
    Field(discriminator="name", description="which policy serves the requests, and its parameters"),
]
