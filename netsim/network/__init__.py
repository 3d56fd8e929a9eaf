"""Network engine: topology graph, routes, shared media (wired links, wireless cells), transports."""

from netsim.network.delivery import Delivery, TransferFailed
from netsim.network.network import Network, build_network
from netsim.network.spec import CellSpec, LinkSpec, MemberSpec, OutageSpec, TransportSpec
from netsim.network.topology import build_graph

__all__ = ["CellSpec", "Delivery", "LinkSpec", "MemberSpec", "Network", "OutageSpec", "TransferFailed",
           "TransportSpec", "build_graph", "build_network"]
