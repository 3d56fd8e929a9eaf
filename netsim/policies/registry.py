"""The one place that lists the policies: name → class, checked for consistency once at import."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from netsim.policies.adaptive import Adaptive
from netsim.policies.base import Policy
from netsim.policies.c2c import C2C
from netsim.policies.cloud_only import CloudOnly
from netsim.policies.device_only import DeviceOnly
from netsim.policies.edge_only import EdgeOnly
from netsim.policies.fedhlm import FedHlm
from netsim.policies.floe import Floe
from netsim.policies.params import ALL_PARAMS
from netsim.policies.rand_hlm import RandHlm
from netsim.policies.speculative import Speculative
from netsim.policies.t2t import T2T
from netsim.policies.uhlm import Uhlm


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


POLICIES = _registry((FedHlm, RandHlm, Uhlm,
                      Floe, Adaptive, C2C, T2T, CloudOnly, DeviceOnly, EdgeOnly, Speculative))

if {cls.Params for cls in POLICIES.values()} != set(ALL_PARAMS):
    raise TypeError("netsim.policies.params.ALL_PARAMS and the registered policies disagree")
