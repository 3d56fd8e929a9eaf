"""Reports: the numbers they state (CI of a mean, crossovers, bytes per payload kind) against hand
computations, the figure files a run dir and a sweep dir give, deterministic output, refusals, the layering
(report/ never reaches the simulator), and the page opened in real headless Chromium.

The results come from a one-phone, one-cloud scenario (an access link and a router between them; 2
requests, 4 tokens, prompts from a file) run in this process: a run dir, and a 3-rate × 2-policy sweep
with 2 repeats. The phone bills its model as Llama-3.2-1B, so on a starved link the phone answers sooner
and on a fast one the cloud does: the e2e lines cross, and the annotation is drawn from real results.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import shutil
import subprocess
import time
from pathlib import Path

import networkx as nx
import numpy as np
import polars as pl
import pytest

from netsim.cli import main
from netsim.report import write_report
from netsim.report.frames import sweep_frames
from netsim.report.load import load
from netsim.report.stats import crossovers, first_hop_payloads, mean_ci, t_quantile

RATE = "topology.links[0].rate_mbps"

TINY = """\
# phone ── access link (swept) ── ap ── 1 Gbit/s, 10 ms ── cloud; two hops, so a message has a first hop
name: tiny-report
description: One phone and one cloud behind an access link.
seed: 5
topology:
  nodes:
    phone: {{role: device, profile: oneplus-12,
             models: [{{name: shakespeare-slm, charged_as: llama-3.2-1b}}]}}
    ap: {{role: router}}
    cloud: {{role: cloud, profile: nvidia-a100-80gb,
             models: [{{name: shakespeare-llm, charged_as: qwen3-8b}}]}}
  links:
    - {{src: phone, dst: ap, rate_mbps: 10, delay_ms: 5}}
    - {{src: ap, dst: cloud, rate_mbps: 1000, delay_ms: 10}}
workload:
  n_requests: 2
  max_new_tokens: 4
  prompts: {{source: file, path: prompts.txt}}
policy: {{name: cloud_only}}
{extra}"""

SWEEP_BLOCK = f"""sweep:
  grid:
    {RATE}: [0.002, 0.1, 10]
    policy.name: [device_only, cloud_only]
  repeat: 2
"""


def write_scenario(folder: Path, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "prompts.txt").write_text("To be or not to be, that is the question.\n"
                                        "Friends, Romans, countrymen, lend me your ears.\n")
    path = folder / "tiny.yaml"
    path.write_text(TINY.format(extra=extra))
    return path


def netsim_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(run dir, sweep dir) of the tiny scenario, run in this process with a private cache."""
    import netsim
    from netsim.sweep import in_process, plan_sweep, run_sweep

    folder = tmp_path_factory.mktemp("results")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NETSIM_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        run_dir = folder / "run"
        netsim.run(netsim.load_scenario(write_scenario(folder / "scn"))).write(run_dir)
        sweep_dir = folder / "sweep"
        run_sweep(plan_sweep(write_scenario(folder / "scn-sweep", SWEEP_BLOCK)), sweep_dir,
                  executor=in_process(), disk_memo=False)
    return run_dir, sweep_dir


# ----------------------------------------------------------------------------------- the numbers


def test_mean_ci_matches_a_hand_computation() -> None:
    # [1, 2, 3, 4, 5]: mean 3, s = sqrt(2.5), t(0.975, 4) = 2.776445 (any t table)
    ci = mean_ci([1.0, 2.0, 3.0, 4.0, 5.0])
    half = 2.776445105 * math.sqrt(2.5) / math.sqrt(5)
    assert ci.mean == 3.0 and ci.n == 5
    assert ci.low == pytest.approx(3.0 - half, abs=1e-8) and ci.high == pytest.approx(3.0 + half, abs=1e-8)
    # the t quantile against tabulated values, and nulls/NaNs ignored, one sample has no interval
    assert t_quantile(0.975, 1) == pytest.approx(12.7062047, abs=1e-6)
    assert t_quantile(0.975, 30) == pytest.approx(2.0422725, abs=1e-6)
    z = 1.959963985  # large df: z + (z³ + z) / 4ν (Abramowitz & Stegun 26.7.5, first term)
    assert t_quantile(0.975, 100_000) == pytest.approx(z + (z**3 + z) / 4e5, abs=1e-8)
    assert mean_ci([2.0, None, float("nan"), 4.0]).mean == 3.0  # type: ignore[list-item]
    one = mean_ci([7.0])
    assert one.mean == 7.0 and math.isnan(one.low) and math.isnan(one.high)


def test_crossover_is_interpolated_in_log_rate_on_a_hand_made_frame() -> None:
    # a's e2e falls with rate, b's is flat: a − b = +1 at 1 Mbit/s, −1 at 100 Mbit/s → the midpoint in
    # log rate, 10 Mbit/s (linear interpolation in rate would say 50.5)
    frame = pl.DataFrame({"x": [1.0, 100.0, 1.0, 100.0, 1000.0], "series": ["a", "a", "b", "b", "b"],
                          "mean": [3.0, 1.0, 2.0, 2.0, 2.0]})
    (c,) = crossovers(frame, "x", "series", "mean", log_x=True)
    assert c.x == pytest.approx(10.0) and c.y == pytest.approx(2.0)
    assert (c.below, c.above, c.x_lo, c.x_hi) == ("b", "a", 1.0, 100.0)
    (lin,) = crossovers(frame, "x", "series", "mean", log_x=False)
    assert lin.x == pytest.approx(50.5)
    # a tie at a point where the order flips puts the crossover on that point; no flip, no crossover
    tie = pl.DataFrame({"x": [1.0, 10.0, 100.0] * 2, "series": ["a"] * 3 + ["b"] * 3,
                        "mean": [3.0, 2.0, 1.0, 2.0, 2.0, 2.0]})
    (t,) = crossovers(tie, "x", "series", "mean", log_x=True)
    assert t.x == 10.0 and (t.below, t.above) == ("b", "a")
    apart = pl.DataFrame({"x": [1.0, 10.0] * 2, "series": ["a", "a", "b", "b"], "mean": [1.0, 1.5, 2.0, 3.0]})
    assert crossovers(apart, "x", "series", "mean", log_x=True) == []


def test_each_message_counts_once_at_its_first_hop() -> None:
    # request 1: a 100 B text message over phone->gnb->cloud, then two 20 B tokens back (two hops each,
    # the second token leaving the cloud the instant the first reached gnb: a new message, not a hop);
    # one 50 B message of no request
    events = pl.DataFrame({
        "t_s": [0.10, 0.30, 0.50, 0.60, 0.60, 0.70, 1.00],
        "node": ["phone->gnb", "gnb->cloud", "cloud->gnb", "gnb->phone", "cloud->gnb", "gnb->phone",
                 "gnb->cloud"],
        "kind": ["tx"] * 7,
        "request_id": [1, 1, 1, 1, 1, 1, None],
        "bytes": [100, 100, 20, 20, 20, 20, 50],
        "duration_s": [0.10, 0.20, 0.10, 0.10, 0.10, 0.10, 0.05],
        "detail": ["text", "text", "token_ids", "token_ids", "token_ids", "token_ids", "control"],
    }, schema_overrides={"request_id": pl.Int64})
    got = {(r["request_id"], r["kind"]): (r["bytes"], r["messages"])
           for r in first_hop_payloads(events).iter_rows(named=True)}
    assert got == {(1, "text"): (100, 1), (1, "token_ids"): (40, 2), (None, "control"): (50, 1)}


def test_bytes_by_kind_add_up_to_the_requests_bytes(results: tuple[Path, Path]) -> None:
    run_dir, sweep_dir = results
    run = load(run_dir)
    requests = pl.read_parquet(run_dir / "requests.parquet")
    assert int(run.payloads["bytes"].sum()) == int(requests["bytes_total"].sum()) > 0
    frames = sweep_frames(load(sweep_dir))
    cloud = frames.payloads.filter(pl.col("series") == "cloud_only")
    assert set(cloud["kind"]) == {"token_ids"}
    table = pl.read_parquet(sweep_dir / "sweep.parquet").filter(pl.col("policy.name") == "cloud_only")
    for row in cloud.iter_rows(named=True):  # pooled over repeats: Σ bytes / Σ tokens of both repeats
        points = table.filter(pl.col(RATE) == row["x"])
        expected = points["bytes_total"].sum() / points["n_output_tokens"].sum()
        assert row["bytes_per_token"] == pytest.approx(expected)
    assert frames.payloads.filter(pl.col("series") == "device_only").is_empty()


def test_sweep_latency_pools_requests_of_every_repeat(results: tuple[Path, Path]) -> None:
    _, sweep_dir = results
    frames = sweep_frames(load(sweep_dir))
    assert frames.x == RATE and frames.unit == "Mbit/s" and frames.log_x  # 0.002 … 10 spans > 2 decades
    assert frames.series == ["device_only", "cloud_only"]
    row = frames.latency.filter((pl.col("x") == 0.1) & (pl.col("series") == "cloud_only")
                                & (pl.col("metric") == "e2e_s")).row(0, named=True)
    table = pl.read_parquet(sweep_dir / "sweep.parquet")
    dirs = table.filter((pl.col(RATE) == 0.1) & (pl.col("policy.name") == "cloud_only"))["run_dir"]
    values = np.concatenate([pl.read_parquet(sweep_dir / d / "requests.parquet")["e2e_s"].to_numpy()
                             for d in dirs])
    assert row["n"] == 4 and row["mean"] == pytest.approx(values.mean())
    half = t_quantile(0.975, 3) * values.std(ddof=1) / 2.0
    assert row["high"] - row["mean"] == pytest.approx(half)


# ------------------------------------------------------------------------------------------ the files


SWEEP_FIGURES = {"e2e", "latency", "latency_cdf", "bytes_per_token", "energy_per_token"}


@pytest.fixture(scope="module")
def sweep_report(results: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(page, what the command printed) of `netsim report SWEEP -o DIR/index.html`, written once."""
    _, sweep_dir = results
    out = tmp_path_factory.mktemp("sweep-report") / "index.html"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), pytest.raises(SystemExit) as info:
        main(["report", str(sweep_dir), "-o", str(out)])
    assert info.value.code in (0, None)
    return out, printed.getvalue()


def test_sweep_report_writes_figures_and_states_the_crossover(
        results: tuple[Path, Path], sweep_report: tuple[Path, str]) -> None:
    _, sweep_dir = results
    out, stdout = sweep_report
    names = {p.name for p in (out.parent / "figures").iterdir()}
    assert names == {f"{n}.{ext}" for n in SWEEP_FIGURES for ext in ("png", "svg")}
    frames = sweep_frames(load(sweep_dir))
    assert frames.crossovers, "the tiny sweep is built so that cloud_only overtakes device_only"
    c = frames.crossovers[0]
    assert (c.below, c.above) == ("device_only", "cloud_only")
    assert c.x_lo < c.x < c.x_hi
    page = out.read_text()
    stated = f"cloud_only overtakes device_only at {_fmt(c.x)} Mbit/s"
    assert stated in page and stated in stdout
    assert "derived" in page and "llama-3.2-1b" in page and "tokenizer vocab" in page
    # the resolved scenario of a point is on the page, with its model hashes
    resolved = (sweep_dir / "points" / "0000" / "scenario.resolved.yaml").read_text()
    for digest in re.findall(r"[0-9a-f]{64}", resolved):
        assert digest in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing fetched


def _fmt(value: float) -> str:
    from netsim.report.figures import fmt_number

    return fmt_number(value)


def test_run_report_default_location_and_figures(results: tuple[Path, Path], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    run_dir, _ = results
    copy = tmp_path / "myrun"
    shutil.copytree(run_dir, copy)
    code, _, err = netsim_cli(capsys, "report", str(copy))
    assert code == 0, err
    report = tmp_path / "myrun-report" / "report.html"  # beside the run dir, which stays as netsim wrote it
    assert report.is_file()
    assert {p.name for p in (report.parent / "figures").iterdir()} == {
        f"{n}.{ext}" for n in ("latency_cdf", "bytes_per_token") for ext in ("png", "svg")}
    assert sorted(p.name for p in copy.iterdir()) == sorted(p.name for p in run_dir.iterdir())


def test_hlm_columns_and_rounds_light_up_their_figures(results: tuple[Path, Path], tmp_path: Path) -> None:
    """A run with `tokens_p2p` and a rounds.parquet (as the HLM policies will write) gets two more figures
    without any change to the report; one without them does not."""
    run_dir, _ = results
    copy = tmp_path / "hlm"
    shutil.copytree(run_dir, copy)
    requests = pl.read_parquet(copy / "requests.parquet")
    requests.with_columns(pl.lit(1, pl.Int64).alias("tokens_p2p"), pl.lit(1, pl.Int64).alias("tokens_edge")
                          ).write_parquet(copy / "requests.parquet")
    pl.DataFrame({"round": [0, 1, 2], "threshold": [0.5, 0.4, 0.35]}).write_parquet(copy / "rounds.parquet")
    report = write_report(copy, tmp_path / "hlm-report" / "r.html")
    assert {p.stem for p in report.figures} == {"latency_cdf", "bytes_per_token", "token_breakdown", "rounds"}


def test_report_is_deterministic_and_rewrites_only_its_own_files(results: tuple[Path, Path], tmp_path: Path
                                                                 ) -> None:
    run_dir, _ = results
    out = tmp_path / "r" / "report.html"
    first = write_report(run_dir, out)
    before = {p: p.read_bytes() for p in (out, *first.figures)}
    write_report(run_dir, out)
    assert {p: p.read_bytes() for p in before} == before  # same results, same bytes (no dates, fixed salt)
    # an earlier report's figure that is no longer drawn is removed; a stranger's file is never touched
    stale = out.parent / "figures" / "rounds.png"
    stale.write_bytes(b"old")
    out.write_text(out.read_text().replace('content="figures/latency_cdf.png', 'content="figures/rounds.png '
                                           'figures/latency_cdf.png'))
    (out.parent / "figures" / "mine.txt").write_text("keep")
    write_report(run_dir, out)
    assert not stale.exists() and (out.parent / "figures" / "mine.txt").read_text() == "keep"


def test_sweeps_without_a_numeric_axis_or_without_ok_points(results: tuple[Path, Path], tmp_path: Path
                                                            ) -> None:
    """A sweep over `policy.name` alone draws one point per policy; one whose points all failed still gets
    a page that says so. Both are cut from the sweep above by editing its table."""
    _, sweep_dir = results
    table = pl.read_parquet(sweep_dir / "sweep.parquet")
    policies = tmp_path / "policies"
    shutil.copytree(sweep_dir, policies)
    table.filter(pl.col(RATE) == 10.0).drop(RATE).write_parquet(policies / "sweep.parquet")
    report = write_report(policies)
    assert report.html == policies / "report.html"
    assert {p.stem for p in report.figures} == SWEEP_FIGURES and "No numeric axis" in report.finding
    failed = tmp_path / "failed"
    shutil.copytree(sweep_dir, failed)
    table.with_columns(pl.lit("failed").alias("status"), pl.lit("worker lost").alias("error"),
                       pl.lit(None, pl.Utf8).alias("run_dir")).write_parquet(failed / "sweep.parquet")
    report = write_report(failed)
    assert report.figures == () and "nothing to compare" in report.finding
    assert "worker lost" in report.html.read_text()


def test_bad_directories_and_targets_exit_2_with_one_line(results: tuple[Path, Path], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    run_dir, _ = results
    (tmp_path / "empty").mkdir()
    foreign = tmp_path / "foreign.html"
    foreign.write_text("<html>someone else's page</html>")
    cases = {
        (str(tmp_path / "empty"),): "neither a run dir",
        (str(tmp_path / "missing"),): "no such directory",
        (str(run_dir), "-o", str(tmp_path / "x.png")): "name it *.html",
        (str(run_dir), "-o", str(foreign)): "not written by netsim report",
        (str(run_dir), "-o", str(run_dir / "report.html")): "is a netsim run dir",
    }
    for args, words in cases.items():
        code, out, err = netsim_cli(capsys, "report", *args)
        assert code == 2 and out == "", args
        assert err.count("\n") == 1 and err.startswith("error: ") and words in err, err
    assert foreign.read_text() == "<html>someone else's page</html>"
    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken)
    (broken / "requests.parquet").write_bytes(b"not parquet")
    code, _, err = netsim_cli(capsys, "report", str(broken), "-o", str(tmp_path / "b.html"))
    assert code == 2 and err.count("\n") == 1 and "requests.parquet: unreadable Parquet" in err


def test_report_package_never_reaches_the_simulator() -> None:
    """Layering (issue 10, item 4): everything netsim.report imports, transitively, reads results only."""
    from test_imports import import_graph

    graph = import_graph()
    reached = set().union(*(nx.descendants(graph, m) | {m} for m in graph if m.startswith("netsim.report")))
    forbidden = ("netsim.simulation", "netsim.world", "netsim.workload", "netsim.policies", "netsim.network",
                 "netsim.sweep", "netsim.context", "netsim.hardware.compute", "netsim.lm.onnx_lm",
                 "netsim.lm.zoo", "netsim.cli")
    assert not sorted(m for m in reached if m.startswith(forbidden))


# ----------------------------------------------------------------------------------- real Chromium


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PROBE = """<script>
// For every image: loaded, its natural size, and how many of its pixels it painted when drawn on a canvas.
// A truncated PNG still reports its header's size (and decode() resolves), but paints nothing; the
// figures have an opaque background, so a whole one paints every pixel.
window.addEventListener("load", () => {
  const images = [...document.images].map(img => {
    const canvas = document.createElement("canvas");
    canvas.width = img.naturalWidth;
    canvas.height = img.naturalHeight;
    let painted = 0;
    if (canvas.width && canvas.height) {
      const g = canvas.getContext("2d");
      g.drawImage(img, 0, 0);
      const rgba = g.getImageData(0, 0, canvas.width, canvas.height).data;
      for (let k = 3; k < rgba.length; k += 4) if (rgba[k] !== 0) painted++;
    }
    return [img.complete, img.naturalWidth, img.naturalHeight, painted];
  });
  document.body.setAttribute("data-probe", JSON.stringify(images));
});
</script>"""


def _chromium(*args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    # --no-sandbox: CI containers run as root, where Chromium's sandbox refuses to start; the page is ours
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--no-first-run", "--host-resolver-rules=MAP * ~NOTFOUND", *args],
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH: .ci/run installs Debian's `chromium`; "
                    "where apt-get is unavailable, install it by hand to run this test (docs/reports.md)")
def test_sweep_report_renders_in_headless_chromium(sweep_report: tuple[Path, str], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The page, opened by a real browser with name resolution disabled, loads every figure with a
    non-zero size; a screenshot is kept in the test's tmp dir as its artefact."""
    out, _ = sweep_report
    page = out.read_text()
    n_img = page.count("<img ")
    assert n_img == len(SWEEP_FIGURES)
    # the probe goes into a copy, so the page under test stays free of script
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", PROBE + "\n</body>"))
    started = time.perf_counter()
    dom = _chromium("--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    found = re.search(r'data-probe="([^"]*)"', dom.stdout)
    assert found, "the probe did not run: " + dom.stdout[:300]
    images = json.loads(found.group(1).replace("&quot;", '"'))
    assert len(images) == n_img
    assert all(complete and width > 0 and height > 0 and painted == width * height
               for complete, width, height, painted in images), images
    shot = tmp_path / "report-screenshot.png"
    capture = _chromium(f"--screenshot={shot}", "--window-size=1280,2400", out.as_uri())
    assert capture.returncode == 0 and shot.stat().st_size > 10_000, capture.stderr[-2000:]
    with capsys.disabled():
        print(f"\nreport screenshot: {shot} (Chromium {time.perf_counter() - started:.1f} s)")
