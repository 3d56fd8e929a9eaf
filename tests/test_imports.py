"""The package's import graph has no cycle — counting imports under TYPE_CHECKING and those a package's
`__init__` makes — so every layer can be read, tested and replaced from the bottom up."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

import netsim.version

ROOT = Path(netsim.version.__file__).parent


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> nx.DiGraph:
    modules = {_module(p): p for p in ROOT.rglob("*.py")}
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for target in targets:
                # importing a.b.c runs a/__init__ and a/b/__init__ too
                pieces = target.split(".")
                for k in range(1, len(pieces) + 1):
                    module = ".".join(pieces[:k])
                    if module in modules and module != name:
                        graph.add_edge(name, module)
    return graph


def test_no_import_cycles_even_under_type_checking() -> None:
    graph = import_graph()
    graph.remove_edges_from([(m, "netsim") for m in graph])  # the root package's names load lazily
    cycles = [c for c in nx.simple_cycles(graph) if len(c) > 1]
    assert not cycles, cycles[:5]


def test_the_checker_sees_a_cycle() -> None:
    graph = import_graph()
    graph.add_edge("netsim.policies.params", "netsim.scenario")  # what a careless import would do
    assert any("netsim.scenario" in c for c in nx.simple_cycles(graph))
