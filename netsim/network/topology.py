"""The topology as a networkx DiGraph, pure (no SimPy, no randomness), so it can be checked at load time.

Every directed edge is one hop and carries what validation and the engine need:
  delay_s    one-way propagation (+ air/core latency for a cell), the route metric
  rate_bps   nominal peak rate: the line rate, or the median-budget PHY rate of a cell member
  medium     name of the shared medium: `a->b` for a wire direction, `cell:up`/`cell:down` for a cell,
             `cell:air` when a cell's two directions contend for one medium (`duplex_mode: shared`)
  spec       the LinkSpec or CellSpec it came from; `member`/`direction` for cell edges.
A cell contributes member->ap (uplink) and ap->member (downlink) edges; two members of one cell talk
through the AP (uplink, then downlink), as in Wi-Fi infrastructure mode and in a cellular network.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import networkx as nx

from netsim.errors import InputError
from netsim.network.channel import nominal_rate_bps
from netsim.network.spec import CellSpec, LinkSpec

HOP_TIEBREAK_S = 1e-9
"""Added per hop to the route metric so that among equal-latency routes the one with fewer hops wins."""


def build_graph(nodes: Iterable[str], links: Sequence[LinkSpec], cells: Sequence[CellSpec]) -> nx.DiGraph:
    graph = nx.DiGraph()
    graph.add_nodes_from(nodes)

    def add(src: str, dst: str, where: str, **attrs: object) -> None:
        for end in (src, dst):
            if end not in graph:
                raise InputError(f"{where}: unknown node {end!r}")
        if graph.has_edge(src, dst):
            raise InputError(f"{where}: a second hop {src}->{dst} (one link or cell per direction)")
        graph.add_edge(src, dst, **attrs)

    for i, link in enumerate(links):
        ends = [(link.src, link.dst), (link.dst, link.src)] if link.duplex else [(link.src, link.dst)]
        for src, dst in ends:
            add(src, dst, f"links[{i}]", delay_s=link.delay_ms * 1e-3, rate_bps=link.rate_mbps * 1e6,
                medium=f"{src}->{dst}", spec=link, member=None, direction=None)
    names: set[str] = set()
    for i, cell in enumerate(cells):
        if cell.name in names:
            raise InputError(f"cells[{i}].name: a second cell called {cell.name!r}")
        names.add(cell.name)
        for member in cell.members:
            add(member, cell.ap, f"cells[{i}].members.{member}", delay_s=cell.delay_ms * 1e-3,
                rate_bps=nominal_rate_bps(cell, member, "up"), medium=cell_medium_name(cell, "up"),
                spec=cell, member=member, direction="up")
            add(cell.ap, member, f"cells[{i}].members.{member}", delay_s=cell.delay_ms * 1e-3,
                rate_bps=nominal_rate_bps(cell, member, "down"), medium=cell_medium_name(cell, "down"),
                spec=cell, member=member, direction="down")
    return graph


def cell_medium_name(cell: CellSpec, direction: str) -> str:
    """`cell:up`/`cell:down`, or `cell:air` when both directions contend for one medium."""
    return f"{cell.name}:air" if cell.duplex_mode == "shared" else f"{cell.name}:{direction}"


def route_weight(_src: str, _dst: str, attrs: dict[str, object]) -> float:
    """Route metric: propagation latency, with a tiny per-hop term to prefer fewer hops on ties."""
    delay_s = attrs["delay_s"]
    assert isinstance(delay_s, float)
    return delay_s + HOP_TIEBREAK_S


def shortest_route(graph: nx.DiGraph, src: str, dst: str) -> list[str]:
    """Node names from src to dst along the least-latency path; InputError if there is none."""
    try:
        return nx.shortest_path(graph, src, dst, weight=route_weight)
    except nx.NetworkXNoPath:
        raise InputError(f"no route from {src} to {dst}") from None
    except nx.NodeNotFound as exc:
        raise InputError(str(exc)) from None
