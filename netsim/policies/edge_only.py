"""edge_only — the nearest edge server answers the whole request; tokens stream back one by one.

Between device_only and cloud_only: an edge GPU a few milliseconds away instead of a cloud region tens
of milliseconds away, usually with a smaller model and fewer slots than the cloud. The server is the
reachable edge node hosting the model with the least propagation delay from the requesting device.
"""

from __future__ import annotations

from netsim.policies.params import EdgeOnlyParams
from netsim.policies.remote import ServerPolicy


class EdgeOnly(ServerPolicy):
    name = "edge_only"
    Params = EdgeOnlyParams
    role = "edge"
