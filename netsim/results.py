"""What a run leaves behind: polars frames in memory, and a run directory on disk.

The directory is staged (netsim.paths.staged_dir), so a failed or interrupted write never leaves a
half-written run behind (contract in DESIGN.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from netsim.paths import staged_dir
from netsim.scenario import Scenario, dump_scenario


@dataclass(frozen=True)
class Results:
    scenario: Scenario
    requests: pl.DataFrame
    events: pl.DataFrame
    summary: dict[str, Any]
    provenance: dict[str, Any]

    def write(self, out_dir: str | Path) -> Path:
        out = Path(out_dir)
        with staged_dir(out) as tmp:
            keep_text = self.scenario.outputs.output_text
            requests = self.requests if keep_text else self.requests.drop("output_text")
            requests.write_parquet(tmp / "requests.parquet")
            self.requests.drop("output_text").write_csv(tmp / "requests.csv")
            self.events.write_parquet(tmp / "events.parquet")
            (tmp / "summary.json").write_text(json.dumps(self.summary, indent=2) + "\n")
            provenance = yaml.safe_dump({"provenance": self.provenance}, sort_keys=False)
            (tmp / "scenario.resolved.yaml").write_text(dump_scenario(self.scenario) + provenance)
        return out

