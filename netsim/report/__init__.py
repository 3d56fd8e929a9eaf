"""Reports of results: `netsim report DIR` draws figures and writes one self-contained HTML page.

    load.py (run dir or sweep dir → frames) → frames.py + stats.py (means, CIs, crossovers, bytes by
    kind) → figures.py (matplotlib PNG + SVG) → html.py (the page) ; provenance.py (versions, hashes,
    cost cards, tokenizers, profiles) ; writer.py (where the files go, and what may be replaced)

This package only reads result files: it never loads a scenario to run it and imports nothing of the
simulator (tests/test_report.py checks the import graph), so a report can be drawn anywhere the results
are copied to. Terminal progress belongs to the command line (netsim/cli/progress.py).

The public names load on first use (PEP 562), so the modules import one another downwards without
running this `__init__` into a cycle, and `import netsim.report` costs nothing until a report is drawn.
"""

from __future__ import annotations

from typing import Any

_PUBLIC = {"write_report": "writer", "default_output": "writer", "Report": "writer", "load": "load",
           "RunData": "load", "SweepData": "load"}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(f"netsim.report.{_PUBLIC[name]}"), name)
    raise AttributeError(f"module 'netsim.report' has no attribute {name!r}")
