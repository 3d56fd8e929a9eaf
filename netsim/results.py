"""What a run leaves behind: polars frames in memory, and a run directory on disk.

The directory is staged and renamed in (netsim.rundir), so a failed or interrupted write never leaves a
half-written run behind (contract in DESIGN.md), and an existing directory is never replaced unless it
is an earlier netsim run and the caller asked for that.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from netsim.rundir import staged_run_dir
from netsim.scenario import Scenario, dump_scenario


@dataclass(frozen=True)
class Results:
    scenario: Scenario
    requests: pl.DataFrame
    events: pl.DataFrame
    summary: dict[str, Any]
    provenance: dict[str, Any]
    tables: dict[str, pl.DataFrame] = field(default_factory=dict)
    """The policy's extra tables by name (e.g. `rounds`), written as `<name>.parquet`."""

    def write(self, out_dir: str | Path, overwrite: bool = False) -> Path:
        """Write the run directory and return its path.

        `out_dir` must not exist, unless it holds an earlier netsim run and `overwrite` is set: a run
        writer that replaced whatever it was pointed at would delete users' files (netsim.rundir).
        Raises InputError, one line, when the directory cannot be used.
        """
        out = Path(out_dir)
        with staged_run_dir(out, overwrite, self.scenario.name) as tmp:
            keep_text = self.scenario.outputs.output_text
            requests = self.requests if keep_text else self.requests.drop("output_text")
            requests.write_parquet(tmp / "requests.parquet")
            self.requests.drop("output_text").write_csv(tmp / "requests.csv")
            self.events.write_parquet(tmp / "events.parquet")
            for name, table in self.tables.items():
                table.write_parquet(tmp / f"{name}.parquet")
            (tmp / "summary.json").write_text(json.dumps(self.summary, indent=2) + "\n")
            provenance = yaml.safe_dump({"provenance": self.provenance}, sort_keys=False)
            (tmp / "scenario.resolved.yaml").write_text(dump_scenario(self.scenario) + provenance)
        return out

