"""Report figures that appear only when their data exists — the token-resolution breakdown, convergence
over rounds, accuracy against bytes, the annotated crossover — drawn from synthetic sweep and run dirs
built here as small Parquet files (no simulation runs), each checked against a hand computation; and
`netsim report` as a process: it never imports the simulator, the policies or onnxruntime.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from netsim.paths import PROJECT_ROOT
from netsim.report import write_report
from netsim.report.figures import (
    _round_line,
    crossover_sentence,
    e2e_figure,
    fmt_number,
    quality_figure,
    rounds_columns,
    rounds_figure,
    tokens_figure,
)
from netsim.report.frames import run_frames, sweep_frames
from netsim.report.load import load

RATE = "topology.cells[0].uplink_mbps"
RATES = (0.1, 1.0, 10.0, 100.0)
BASE_FIGURES = {"e2e", "latency", "latency_cdf", "bytes_per_token", "energy_per_token"}

Requests = Callable[[str, float], dict[str, list[Any]]]
"""(policy, rate) → the columns of that point's requests.parquet beyond the common ones."""


def _requests(policy: str, rate: float, e2e_s: float, extra: dict[str, list[Any]]) -> pl.DataFrame:
    n = len(next(iter(extra.values()))) if extra else 2
    tokens = extra.pop("n_output_tokens", [4] * n)
    frame = pl.DataFrame({
        "request_id": list(range(n)), "device": ["phone"] * n, "policy": [policy] * n, "status": ["ok"] * n,
        "fail_reason": [""] * n, "t_arrival_s": [0.0] * n, "ttft_s": [e2e_s / 2] * n,
        "tpot_s": [e2e_s / 6] * n, "e2e_s": [e2e_s * (1 + 0.01 * k) for k in range(n)],
        "n_prompt_tokens": [10] * n, "n_output_tokens": tokens,
        "bytes_up": [56] * n, "bytes_down": [80] * n, "bytes_total": [136] * n,
        "energy_device_j": [0.01] * n, "energy_compute_j": [0.0] * n, "energy_radio_j": [0.01] * n,
        "tokens_local": [0] * n, "tokens_llm": tokens,
    })
    return frame.with_columns(*(pl.Series(k, v) for k, v in extra.items()))


def write_point(folder: Path, policy: str, requests: pl.DataFrame, rounds: pl.DataFrame | None = None
                ) -> None:
    """A run dir as `netsim run` writes one, with the files the report reads."""
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"policy": policy, "seed": 1, "netsim_version": "test",
                                                     "n_requests": requests.height}))
    requests.write_parquet(folder / "requests.parquet")
    ids = requests["request_id"].to_list()
    pl.DataFrame({  # one uplink message per request, of its bytes_total, over one hop
        "t_s": [0.1] * len(ids), "node": ["phone->cloud"] * len(ids), "kind": ["tx"] * len(ids),
        "request_id": ids, "bytes": requests["bytes_total"].to_list(), "duration_s": [0.05] * len(ids),
        "detail": ["token_ids"] * len(ids)}, schema_overrides={"request_id": pl.Int64}
    ).write_parquet(folder / "events.parquet")
    if rounds is not None:
        rounds.write_parquet(folder / "rounds.parquet")


def build_sweep(root: Path, e2e: dict[str, Callable[[float], float]], extra: Requests | None = None,
                rounds: Callable[[str], pl.DataFrame | None] | None = None) -> Path:
    """A sweep dir over RATES × the policies of `e2e` (policy → e2e seconds at a rate)."""
    rows = []
    for k, (rate, policy) in enumerate((r, p) for r in RATES for p in e2e):
        point = f"{k:04d}"
        requests = _requests(policy, rate, e2e[policy](rate), extra(policy, rate) if extra else {})
        write_point(root / "points" / point, policy, requests, rounds(policy) if rounds else None)
        rows.append({"point": point, RATE: rate, "policy.name": policy, "repeat": 0, "seed": 1,
                     "status": "ok", "error": None, "run_dir": f"points/{point}"})
    pl.DataFrame(rows, schema_overrides={"error": pl.Utf8}).write_parquet(root / "sweep.parquet")
    return root


CLOUD_FLAT = {"cloud_only": lambda rate: 0.5}


def _figures(report: Any) -> set[str]:
    return {p.stem for p in report.figures}


# ------------------------------------------------------------------------------ token breakdown


def test_token_breakdown_shares_and_when_it_appears(tmp_path: Path) -> None:
    # hlm resolves 4 tokens per request as 1 local, 1 p2p, 1 edge, 1 llm at the lowest rate, shifting a
    # token from llm to local at each higher rate; cloud_only has no p2p/edge columns at all
    def extra(policy: str, rate: float) -> dict[str, list[Any]]:
        if policy != "hlm":
            return {}
        shift = RATES.index(rate)
        return {"tokens_local": [1 + shift] * 2, "tokens_p2p": [1, 1], "tokens_edge": [1, 1],
                "tokens_llm": [max(0, 1 - shift)] * 2,
                "n_output_tokens": [3 + shift + max(0, 1 - shift)] * 2}

    sweep = build_sweep(tmp_path / "hlm", {**CLOUD_FLAT, "hlm": lambda rate: 0.3}, extra)
    frames = sweep_frames(load(sweep))
    assert frames.tokens is not None
    share = {(r["x"], r["series"], r["source"]): r["share"] for r in frames.tokens.iter_rows(named=True)}
    assert share[(0.1, "hlm", "local")] == pytest.approx(1 / 4)  # Σ tokens_local / Σ output tokens
    assert share[(100.0, "hlm", "local")] == pytest.approx(4 / 6)
    assert share[(1.0, "hlm", "llm")] == 0.0 and share[(10.0, "cloud_only", "llm")] == 1.0
    assert share[(10.0, "cloud_only", "p2p")] == 0.0  # null in cloud_only's rows: no token came from peers
    for (x, series) in {(k[0], k[1]) for k in share}:  # the tiers account for every output token
        assert sum(v for k, v in share.items() if k[:2] == (x, series)) == pytest.approx(1.0)
    drawn = tokens_figure(frames.tokens, frames)
    assert drawn is not None and drawn.name == "token_breakdown" and drawn.png

    # one tier per request (cloud_only and device_only): nothing to break down, no figure
    plain = build_sweep(tmp_path / "plain", {**CLOUD_FLAT, "device_only": lambda rate: 1.0})
    assert sweep_frames(load(plain)).tokens is None
    assert tokens_figure(None, None) is None

    # device and LLM tokens within one request (U-HLM has no peers or edge): the breakdown appears
    def uhlm(policy: str, rate: float) -> dict[str, list[Any]]:
        return {"tokens_local": [3, 3], "tokens_llm": [1, 1]} if policy == "uhlm" else {}

    mixed = build_sweep(tmp_path / "uhlm", {**CLOUD_FLAT, "uhlm": lambda rate: 0.4}, uhlm)
    tokens = sweep_frames(load(mixed)).tokens
    assert tokens is not None
    assert set(tokens["source"]) == {"local", "llm"}
    assert tokens.filter((pl.col("series") == "uhlm") & (pl.col("source") == "local"))["share"].to_list() == \
        [0.75] * len(RATES)


# -------------------------------------------------------------------------------------- rounds


def _rounds(policy: str) -> pl.DataFrame | None:
    """FedHLM-like: three clients whose thresholds converge geometrically to 0.2 from 0.5, 0.6, 0.7."""
    if policy != "fedhlm":
        return None
    rows = [{"round": r, "client": c, "threshold": 0.2 + (0.3 + 0.1 * c) * 0.5 ** r,
             "loss": 1.0 / (r + 1), "transmission_rate": 0.5 - 0.01 * r, "bytes": 100 * (c + 1)}
            for r in range(8) for c in range(3)]
    return pl.DataFrame(rows)


def test_rounds_figure_draws_the_mean_of_clients_and_their_range(tmp_path: Path) -> None:
    table = _rounds("fedhlm")
    assert table is not None
    x, mean, low, high = _round_line(table, "threshold")
    assert x.tolist() == list(range(8))
    expected = [0.2 + 0.4 * 0.5 ** r for r in range(8)]  # the mean of 0.3, 0.4, 0.5 is 0.4
    np.testing.assert_allclose(mean, expected)
    assert low is not None and high is not None
    np.testing.assert_allclose(high - low, [0.2 * 0.5 ** r for r in range(8)])
    # one row per round: no band; no rounds.parquet anywhere: no figure
    single = table.filter(pl.col("client") == 0).drop("client")
    _, mean1, low1, _ = _round_line(single, "threshold")
    assert low1 is None and mean1[0] == pytest.approx(0.5)
    # the threshold panel comes first, the columns that only say where a row belongs are not drawn
    assert rounds_columns([table.select("bytes", "round", "loss", "client", "threshold")]) == [
        "threshold", "loss", "bytes"]
    drawn = rounds_figure({"0001": table}, {"0001": "fedhlm"}, ["fedhlm"])
    assert drawn is not None and drawn.name == "rounds" and "min–max range" in drawn.caption
    assert rounds_figure({}, {}, []) is None
    assert rounds_figure({"r": pl.DataFrame({"round": [0, 1], "client": [0, 1]})}, {}, []) is None


def test_a_run_with_rounds_and_tiers_gets_both_figures(tmp_path: Path) -> None:
    requests = _requests("fedhlm", 10.0, 0.4, {"tokens_local": [2, 3], "tokens_llm": [2, 1]})
    rounds = _rounds("fedhlm")
    write_point(tmp_path / "run", "fedhlm", requests, rounds)
    report = write_report(tmp_path / "run", tmp_path / "out" / "r.html")
    assert _figures(report) == {"latency_cdf", "bytes_per_token", "token_breakdown", "rounds"}


# --------------------------------------------------------------------------- accuracy vs bytes


def test_accuracy_against_bytes_is_drawn_from_the_accuracy_column(tmp_path: Path) -> None:
    # hlm: accuracy rises with rate (more tokens verified by the LLM) and so do its bytes per token
    def extra(policy: str, rate: float) -> dict[str, list[Any]]:
        k = RATES.index(rate)
        if policy == "hlm":
            return {"accuracy": [0.5 + 0.1 * k, 0.6 + 0.1 * k], "bytes_total": [100 * (k + 1), 300 * (k + 1)]}
        return {"accuracy": [0.9, 0.9]}

    sweep = build_sweep(tmp_path / "acc", {**CLOUD_FLAT, "hlm": lambda rate: 0.3}, extra)
    frames = sweep_frames(load(sweep))
    assert frames.quality is not None
    row = frames.quality.filter((pl.col("series") == "hlm") & (pl.col("x") == 10.0)).row(0, named=True)
    assert row["metric"] == "accuracy" and row["n"] == 2
    assert row["mean"] == pytest.approx(0.75)  # (0.7 + 0.8) / 2
    assert row["bytes_per_token"] == pytest.approx((300 + 900) / 8)  # Σ bytes_total / Σ output tokens
    half = 12.706204736 * np.std([0.7, 0.8], ddof=1) / math.sqrt(2)  # t(0.975, 1)
    assert row["high"] - row["mean"] == pytest.approx(half, rel=1e-6)
    drawn = quality_figure(frames.quality, frames)
    assert drawn is not None and drawn.name == "accuracy_bytes"
    # a run: one point per metric; no accuracy column: no quality frame, no figure
    requests = _requests("uhlm", 1.0, 0.3, {"accuracy": [1.0, 0.5], "tokens_local": [4, 4],
                                            "tokens_llm": [0, 0]})
    write_point(tmp_path / "run", "uhlm", requests)
    quality = run_frames(load(tmp_path / "run")).quality
    assert quality is not None and quality["mean"].to_list() == [0.75]
    assert sweep_frames(load(build_sweep(tmp_path / "none", CLOUD_FLAT))).quality is None
    assert quality_figure(None, None) is None


# ---------------------------------------------------------------------------------- crossover


def test_the_crossover_rate_is_found_stated_and_annotated(tmp_path: Path) -> None:
    # t2t's e2e falls as 1/rate, c2c's is flat at 0.4 s: t2t − c2c is +0.6 at 1 and −0.3 at 10 Mbit/s, so
    # the lines cross where log-linear interpolation of the difference hits zero
    e2e = {"c2c": lambda rate: 0.4, "t2t": lambda rate: 0.1 + 1.0 / (rate + 0.0)}
    sweep = build_sweep(tmp_path / "cross", e2e)
    frames = sweep_frames(load(sweep))
    assert frames.log_x  # 0.1 … 100 spans three decades
    (c,) = frames.crossovers
    mean = {(x, s): float(np.mean([v * (1 + 0.01 * k) for k, v in enumerate([e2e[s](x)] * 2)]))
            for x in RATES for s in e2e}
    d1, d10 = mean[(1.0, "t2t")] - mean[(1.0, "c2c")], mean[(10.0, "t2t")] - mean[(10.0, "c2c")]
    expected = 10 ** (d1 / (d1 - d10))  # zero of the difference, linear in log10(rate) between 1 and 10
    assert (c.below, c.above, c.x_lo, c.x_hi) == ("c2c", "t2t", 1.0, 10.0)
    assert c.x == pytest.approx(expected)
    stated = f"t2t overtakes c2c at {fmt_number(c.x)} Mbit/s"
    assert stated in crossover_sentence(frames)
    drawn = e2e_figure(frames)
    assert drawn is not None and stated in drawn.caption
    # lines that never cross: the page says so instead
    apart = build_sweep(tmp_path / "apart", {"c2c": lambda rate: 0.4, "t2t": lambda rate: 0.1})
    assert "No crossover" in crossover_sentence(sweep_frames(load(apart)))


# ------------------------------------------------------------------------------- whole reports


@pytest.fixture(scope="module")
def everything(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sweep in which every optional figure has its data: tiers, accuracy, rounds, a crossover."""
    def extra(policy: str, rate: float) -> dict[str, list[Any]]:
        if policy == "cloud_only":
            return {"accuracy": [0.9, 0.8]}
        return {"accuracy": [0.6, 0.7], "tokens_local": [2, 2], "tokens_p2p": [1, 1], "tokens_llm": [1, 1]}

    return build_sweep(tmp_path_factory.mktemp("everything"),
                       {"cloud_only": lambda rate: 0.1 + 1.0 / rate, "fedhlm": lambda rate: 0.4}, extra,
                       _rounds)


def test_a_sweep_report_gets_each_figure_whose_data_exists(everything: Path, tmp_path: Path) -> None:
    report = write_report(everything, tmp_path / "all" / "r.html")
    assert _figures(report) == BASE_FIGURES | {"token_breakdown", "rounds", "accuracy_bytes"}
    page = report.html.read_text()
    (c,) = report.crossovers
    assert f"cloud_only overtakes fedhlm at {fmt_number(c.x)} Mbit/s" in page
    assert page.count("<img ") == len(report.figures) // 2
    assert "<th>accuracy</th>" in page and "85.0% ± 63.5%" in page  # cloud_only: mean of 0.9, 0.8; t(1)·s/√2
    # the same sweep without the optional columns and tables: the five base figures only
    plain = build_sweep(tmp_path / "plain", CLOUD_FLAT)
    assert _figures(write_report(plain)) == BASE_FIGURES


# -------------------------------------------------------------------------------- layering


def test_netsim_report_imports_no_simulator(everything: Path, tmp_path: Path) -> None:
    """Item 4 of issue 10, as a process: after `netsim report` ran, none of the simulator's modules had
    been imported. tests/test_report.py checks the static import graph of netsim.report; this checks what
    a real invocation of the command loads, lazy imports included. (onnxruntime does get imported, by
    the `netsim models` sub-command's module when the CLI mounts its sub-commands, not by the report.)"""
    sweep = everything
    probe = (
        "import sys\n"
        "from netsim.cli import main\n"
        "try:\n"
        f"    main(['report', {str(sweep)!r}, '-o', {str(tmp_path / 'o' / 'r.html')!r}])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code in (0, None), exc.code\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith(('netsim', 'simpy')))))\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = set(proc.stdout.split("\n")[-2].split())
    assert "netsim.report.writer" in loaded  # the probe did run the report
    forbidden = ("netsim.simulation", "netsim.world", "netsim.policies", "netsim.network", "netsim.sweep",
                 "netsim.context", "netsim.workload", "netsim.hardware.compute", "simpy")
    assert not sorted(m for m in loaded if m.startswith(forbidden))
    assert (tmp_path / "o" / "r.html").is_file()
