"""Fingerprints of the bundled scenarios, as OMNeT++ keeps for its examples: run each one with its own
seed and hash its event log and requests frame, so that any change of behaviour shows up in CI.

    python scripts/fingerprints.py --check    # exit 1 naming each scenario and frame that changed
    python scripts/fingerprints.py --update   # rewrite tests/fingerprints.json after an intended change

A commit that changes a fingerprint says why in its message (docs/design.md, "Fingerprints").

A frame is hashed as CSV with a fixed float format: the bytes depend on the values and the column order,
not on polars' in-memory layout or Parquet encoder, and 9 decimals keep the hash stable across library
versions that print the last bits of a float differently while still seeing a nanosecond-scale change.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import polars as pl

import netsim
from netsim.lm.zoo import ModelStore
from netsim.paths import PROJECT_ROOT
from netsim.scenario import load_scenario
from netsim.simulation import run

FINGERPRINTS = PROJECT_ROOT / "tests" / "fingerprints.json"
FRAMES = ("events", "requests")
FLOAT_PRECISION = 9


def bundled_scenarios() -> list[Path]:
    return sorted((PROJECT_ROOT / "scenarios").glob("*.yaml"))


def frame_fingerprint(frame: pl.DataFrame) -> dict[str, Any]:
    """Rows, columns (the CSV header) and the sha256 of the CSV; rows and columns say *what* changed."""
    text = frame.write_csv(float_precision=FLOAT_PRECISION, line_terminator="\n")
    return {"rows": frame.height, "columns": ",".join(frame.columns),
            "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}


def scenario_fingerprint(path: Path, store: ModelStore) -> dict[str, Any]:
    """Run one scenario exactly as `netsim run` would (its own seed, no overrides)."""
    results = run(load_scenario(path), store)
    return {"events": frame_fingerprint(results.events), "requests": frame_fingerprint(results.requests)}


def compute(paths: list[Path], store: ModelStore | None = None) -> dict[str, dict[str, Any]]:
    store = store or ModelStore()
    return {path.stem: scenario_fingerprint(path, store) for path in paths}


def document(scenarios: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The file's content; `written_with` helps explain a mismatch but is never compared."""
    return {"written_with": {"netsim": netsim.__version__, "polars": pl.__version__,
                             "python": sys.version.split()[0]},
            "float_precision": FLOAT_PRECISION, "scenarios": scenarios}


def read(path: Path = FINGERPRINTS) -> dict[str, dict[str, Any]]:
    return json.loads(path.read_text(encoding="utf-8"))["scenarios"]


def write(scenarios: dict[str, dict[str, Any]], path: Path = FINGERPRINTS) -> None:
    path.write_text(json.dumps(document(scenarios), indent=2, sort_keys=True) + "\n", encoding="utf-8")


def differences(expected: dict[str, dict[str, Any]], actual: dict[str, dict[str, Any]]) -> list[str]:
    """One line per scenario and frame that differs, naming both; empty when everything matches."""
    lines: list[str] = []
    for name in sorted(expected.keys() | actual.keys()):
        if name not in actual:
            lines.append(f"{name}: fingerprinted but no longer a bundled scenario")
            continue
        if name not in expected:
            lines.append(f"{name}: bundled scenario without a fingerprint")
            continue
        for frame in FRAMES:
            lines += _frame_difference(name, frame, expected[name][frame], actual[name][frame])
    return lines


def _frame_difference(name: str, frame: str, old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    if old["sha256"] == new["sha256"]:
        return []
    what = []
    if old["rows"] != new["rows"]:
        what.append(f"rows {old['rows']} -> {new['rows']}")
    if old["columns"] != new["columns"]:
        old_cols, new_cols = old["columns"].split(","), new["columns"].split(",")
        added = [c for c in new_cols if c not in old_cols]
        dropped = [c for c in old_cols if c not in new_cols]
        what.append(f"columns +{added} -{dropped}" if added or dropped else "column order")
    what.append(f"sha256 {old['sha256'][:12]} -> {new['sha256'][:12]}")
    return [f"{name}: {frame} frame changed ({', '.join(what)})"]


def check(actual: dict[str, dict[str, Any]], path: Path = FINGERPRINTS) -> int:
    """Print the verdict; 0 if every fingerprint matches, 1 otherwise."""
    if not path.is_file():
        print(f"error: {path} is missing; run `python scripts/fingerprints.py --update`", file=sys.stderr)
        return 1
    lines = differences(read(path), actual)
    for line in lines:
        print(f"error: {line}", file=sys.stderr)
    if lines:
        print("behaviour changed: if intended, run `python scripts/fingerprints.py --update` and say why in "
              "the commit message (docs/design.md, Fingerprints)", file=sys.stderr)
        return 1
    print(f"ok: {len(actual)} scenarios match {path.name}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="compare with the stored fingerprints")
    mode.add_argument("--update", action="store_true", help="rewrite the stored fingerprints")
    parser.add_argument("--file", type=Path, default=FINGERPRINTS,
                        help="fingerprint file (default: %(default)s)")
    args = parser.parse_args(argv)
    actual = compute(bundled_scenarios())
    if args.update:
        write(actual, args.file)
        print(f"wrote {args.file} ({len(actual)} scenarios)")
        return 0
    return check(actual, args.file)


if __name__ == "__main__":
    sys.exit(main())
