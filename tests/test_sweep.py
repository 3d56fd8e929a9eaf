"""Sweeps: axes expand to the points written, bad sweeps stop before any point runs, points run in local
processes, in this process and on a Dask LocalCluster with identical tables, and a sweep interrupted or
killed resumes to the table an uninterrupted one writes.

Every run uses a one-phone, one-cloud scenario (2 requests, 4 tokens, prompts from a file), so a point
costs a few tens of milliseconds once a worker has its model.
"""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from netsim.cli import main
from netsim.errors import ScenarioError
from netsim.sweep import (
    INDEX_FILE,
    PLAN_FILE,
    TABLE_FILE,
    SweepProgress,
    dask_cluster,
    in_process,
    local_processes,
    plan_sweep,
    run_sweep,
)
from netsim.sweep.plan import axis_values, cli_axis

RATES = (0.01, 0.1, 1, 10)
RATE = "topology.links[0].rate_mbps"
RATE_AXIS = f"{RATE}=" + ",".join(str(r) for r in RATES)

TINY = """\
# phone ── wired link ── cloud; the link rate is what the sweeps change
name: tiny
seed: 3
topology:
  nodes:
    phone: {{role: device, profile: oneplus-12, models: [shakespeare-slm]}}
    cloud: {{role: cloud, profile: nvidia-a100-80gb, models: [shakespeare-llm]}}
  links:
    - {{src: phone, dst: cloud, rate_mbps: 10, delay_ms: 5}}
workload:
  n_requests: 2
  max_new_tokens: 4
  prompts: {{source: file, path: {prompts}}}
policy: {{name: cloud_only}}
{extra}"""


def write_scenario(folder: Path, extra: str = "", prompts: str = "prompts.txt") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "prompts.txt").write_text("To be or not to be, that is the question.\n"
                                        "Friends, Romans, countrymen, lend me your ears.\n")
    path = folder / "tiny.yaml"
    path.write_text(TINY.format(prompts=prompts, extra=extra))
    return path


def netsim_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private cache (the on-disk inference memo lands there); worker processes inherit it."""
    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NETSIM_CACHE_DIR", str(root))
        yield root


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, cache: Path) -> tuple[Path, Path, pl.DataFrame]:
    """(scenario, sweep dir, table) of the 4-point rate sweep, run uninterrupted in local processes."""
    folder = tmp_path_factory.mktemp("reference")
    scenario = write_scenario(folder)
    out = folder / "sweep"
    table = run_sweep(plan_sweep(scenario, [RATE_AXIS]), out, executor=local_processes(2))
    return scenario, out, table


# ------------------------------------------------------------------------------------------ expansion


def test_grid_zip_repeat_expand_in_documented_order(tmp_path: Path, cache: Path) -> None:
    block = """sweep:
  grid:
    topology.links[0].rate_mbps: [1, 10, 100]
    policy.name: [cloud_only, device_only]
  zip:
    topology.links[0].delay_ms: [1, 5]
    workload.max_new_tokens: [2, 4]
  repeat: 2
"""
    plan = plan_sweep(write_scenario(tmp_path, block))
    assert len(plan.points) == 3 * 2 * 2 * 2
    assert [a.path for a in plan.axes] == [RATE, "policy.name", "topology.links[0].delay_ms",
                                           "workload.max_new_tokens"]
    # grid axes in written order (first slowest), then the zip block, then repeats fastest
    first, second, third = plan.points[:3]
    assert dict(first.params) == {RATE: 1, "policy.name": "cloud_only", "topology.links[0].delay_ms": 1,
                                  "workload.max_new_tokens": 2}
    assert (first.repeat, second.repeat) == (0, 1) and second.params == first.params
    assert dict(third.params)["topology.links[0].delay_ms"] == 5
    assert dict(third.params)["workload.max_new_tokens"] == 4  # zipped: stepped together
    last = plan.points[-1]
    assert dict(last.params) == {RATE: 100, "policy.name": "device_only", "topology.links[0].delay_ms": 5,
                                 "workload.max_new_tokens": 4} and last.repeat == 1
    # the values reach the scenarios, and the seed is the scenario's plus the repeat index, so the two
    # policies at one point and repeat draw the same numbers (common random numbers)
    assert last.scenario.topology.links[0].rate_mbps == 100 and last.scenario.policy.name == "device_only"
    assert last.scenario.workload.max_new_tokens == 4
    assert {(p.repeat, p.seed) for p in plan.points} == {(0, 3), (1, 4)}
    assert [p.id for p in plan.points[:2]] == ["0000", "0001"]
    assert len({p.key for p in plan.points}) == len(plan.points)


def test_command_line_axes_replace_the_blocks_and_repeat(tmp_path: Path, cache: Path) -> None:
    block = "sweep:\n  grid:\n    topology.links[0].rate_mbps: [1, 10, 100]\n  repeat: 3\n"
    scenario = write_scenario(tmp_path, block)
    plan = plan_sweep(scenario, grid=["topology.links.0.rate_mbps=2,20", "workload.n_requests=1,2"],
                      repeat=1, overrides=["topology.links[0].delay_ms=7"])
    assert [a.path for a in plan.axes] == [RATE, "workload.n_requests"]
    assert [dict(p.params)[RATE] for p in plan.points] == [2, 2, 20, 20]
    assert all(p.scenario.topology.links[0].delay_ms == 7 for p in plan.points)
    assert plan_sweep(scenario).repeat == 3
    assert plan.fingerprint != plan_sweep(scenario).fingerprint


@pytest.mark.parametrize(
    ("spec", "values"),
    [
        ({"range": [1, 7, 2]}, (1, 3, 5)),
        ({"range": [0, 0.3, 0.1]}, (0.0, 0.1, 0.2)),
        ({"range": [3, 0, -1]}, (3, 2, 1)),
        ({"linspace": [0, 1, 5]}, (0.0, 0.25, 0.5, 0.75, 1.0)),
        ({"logspace": [0.1, 1000, 5]}, (0.1, 1.0, 10.0, 100.0, 1000.0)),
        ({"logspace": [1, 1000, 4]}, (1.0, 10.0, 100.0, 1000.0)),
        ({"logspace": [0.1, 1000, 9]}, (0.1, 0.316227766017, 1.0, 3.16227766017, 10.0, 31.6227766017,
                                        100.0, 316.227766017, 1000.0)),
        ([10, "edge_only", [1, 2]], (10, "edge_only", [1, 2])),
    ],
)
def test_axis_values(spec: object, values: tuple[object, ...]) -> None:
    assert axis_values(spec, "sweep.grid.x") == values


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ([], "no values"),
        ({"range": [5, 1]}, "no values"),
        ({"range": [0, 1, 0]}, "step must not be 0"),
        ({"logspace": [0, 10, 3]}, "greater than 0"),
        ({"logspace": [1, 10, 0]}, "count a whole number"),
        ({"range": [0, 1e9, 1]}, "over the 10,000 points"),
        ({"steps": [1, 2]}, "expected a list of values or one of"),
        ([1, 2, 1], "value 1 appears twice"),
        ("fast", "expected a list of values"),
    ],
)
def test_axis_values_refused(spec: object, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        axis_values(spec, "sweep.grid.x")


def test_command_line_values_read_as_yaml() -> None:
    path, spec, label = cli_axis('workload.devices=[a, b],[c],"x,y",1,2.5,true', zipped=False)
    assert (path, label) == ("workload.devices", "--grid workload.devices")
    assert spec == [["a", "b"], ["c"], "x,y", 1, 2.5, True]
    assert cli_axis("x={logspace: [0.1, 10, 3]}", zipped=True)[1] == {"logspace": [0.1, 10, 3]}


# --------------------------------------------------------------------------------- checked before running


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--grid", "topology.links[3].rate_mbps=1,2"), "--grid topology.links[3].rate_mbps: no such path"),
        (("--grid", "topology.linkz[0].rate_mbps=1,2"), "--grid topology.linkz[0].rate_mbps: no such path"),
        (("--grid", "topology.links[0].rate_mbpz=1,2"), "topology.links[0].rate_mbpz: unknown field"),
        (("--grid", f"{RATE}=10,fast"), f"{RATE}: Input should be a valid number"),
        (("--grid", f"{RATE}=10,-1"), f"{RATE}: Input should be greater than or equal to 0.001"),
        (("--grid", "policy.name=cloud_only,edge_only"), "policy.name: edge_only needs an edge node"),
        (("--grid", f"{RATE}="), f"--grid {RATE}: no values"),
        (("--grid", f"{RATE}={{range: [5, 1]}}"), f"--grid {RATE}: no values"),
        ((), "sweep: nothing to sweep"),
        (("--zip", f"{RATE}=1,2", "--zip", "workload.n_requests=1,2,3"), "need as many values each"),
        (("--grid", "seed=1,2", "--workers", "2", "-j", "2"), "-j and --workers exclude each other"),
    ],
)
def test_bad_sweeps_stop_before_any_point_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               args: tuple[str, ...], expected: str) -> None:
    scenario = write_scenario(tmp_path)
    out = tmp_path / "out"
    code, _, err = netsim_cli(capsys, "sweep", str(scenario), "-o", str(out), *args)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], err
    assert not out.exists()


def test_a_bad_sweep_block_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for block, expected in (("sweep:\n  grids: {seed: [1, 2]}\n", "sweep.grids: unknown field"),
                            ("sweep:\n  grid: {seed: 5}\n", "sweep.grid.seed: expected a list of values"),
                            ("sweep:\n  grid: {seed: [1]}\n  repeat: 0\n", "sweep.repeat: expected a whole"),
                            ("sweep: [1, 2]\n", "sweep: expected a mapping")):
        scenario = write_scenario(tmp_path, block)
        code, _, err = netsim_cli(capsys, "sweep", str(scenario), "-o", str(tmp_path / "out"))
        assert code == 2 and len(err.strip().splitlines()) == 1 and expected in err, err


# ------------------------------------------------------------------------------------------- running


def test_latency_falls_as_the_link_rate_rises(reference: tuple[Path, Path, pl.DataFrame]) -> None:
    _, out, table = reference
    assert table.height == len(RATES)
    assert table[RATE].to_list() == [float(r) for r in RATES] and table.schema[RATE] == pl.Float64
    assert table["status"].to_list() == ["ok"] * 4 and table["error"].null_count() == 4
    assert table["seed"].to_list() == [3] * 4 and table["repeat"].to_list() == [0] * 4
    e2e = table["e2e_s_mean"].to_list()
    assert all(a > b for a, b in itertools.pairwise(e2e)), e2e
    assert table["bytes_total"].n_unique() == 1  # the same answers cross the link at every rate
    assert_frame_equal(pl.read_parquet(out / TABLE_FILE), table)
    for row in table.iter_rows(named=True):  # every point's run dir is a full `netsim run` dir
        run_dir = out / row["run_dir"]
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["e2e_s"]["mean"] == row["e2e_s_mean"] and summary["seed"] == row["seed"]
        assert {"requests.parquet", "events.parquet", "scenario.resolved.yaml", ".netsim-run"} <= {
            p.name for p in run_dir.iterdir()}


def test_a_point_is_the_run_netsim_run_makes(reference: tuple[Path, Path, pl.DataFrame]) -> None:
    import netsim

    scenario, out, table = reference
    results = netsim.run(netsim.load_scenario(scenario, [f"{RATE}=10"]))
    point = table.filter(pl.col(RATE) == 10.0).row(0, named=True)
    assert_frame_equal(pl.read_parquet(out / point["run_dir"] / "requests.parquet"), results.requests)
    assert point["e2e_s_mean"] == results.summary["e2e_s"]["mean"]


def test_cli_sweep_in_this_process_gives_the_same_table(reference: tuple[Path, Path, pl.DataFrame],
                                                        tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    scenario, _, table = reference
    out = tmp_path / "out"
    argv = ("sweep", str(scenario), "--grid", RATE_AXIS, "-o", str(out), "-j", "1")
    code, stdout, err = netsim_cli(capsys, *argv)
    assert code == 0, err
    assert "4 points (4 ok, 0 failed; 4 run now)" in stdout
    assert_frame_equal(pl.read_parquet(out / TABLE_FILE), table)
    code, _, err = netsim_cli(capsys, *argv)
    assert code == 2 and "holds a sweep already; pass --resume" in err
    code, _, err = netsim_cli(capsys, "sweep", str(scenario), "--grid", f"{RATE}=1,2", "-o", str(out),
                              "--resume")
    assert code == 2 and "holds another sweep" in err


def test_dask_local_cluster_matches_local_processes(reference: tuple[Path, Path, pl.DataFrame],
                                                    tmp_path: Path) -> None:
    scenario, local_out, table = reference
    out = tmp_path / "dask"
    dask_table = run_sweep(plan_sweep(scenario, [RATE_AXIS]), out, executor=dask_cluster(workers=2))
    assert_frame_equal(dask_table, table)
    assert (out / TABLE_FILE).read_bytes() == (local_out / TABLE_FILE).read_bytes()
    for row in table.iter_rows(named=True):
        assert_frame_equal(pl.read_parquet(out / row["run_dir"] / "requests.parquet"),
                           pl.read_parquet(local_out / row["run_dir"] / "requests.parquet"))


# ------------------------------------------------------------------------------------ failing, resuming


def test_resume_after_a_kill_equals_the_uninterrupted_sweep(reference: tuple[Path, Path, pl.DataFrame],
                                                           tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """The state a kill leaves: two points in the ledger, a third point's run dir renamed in but its line
    never written, a torn half line, no table. `--resume` runs the two missing points, and only those."""
    scenario, done, table = reference
    out = tmp_path / "killed"
    shutil.copytree(done, out)
    lines = (out / INDEX_FILE).read_bytes().splitlines(keepends=True)
    kept = [line for line in lines if json.loads(line)["point"] in ("0000", "0002")]
    (out / INDEX_FILE).write_bytes(b"".join(kept) + lines[1][:25])
    shutil.rmtree(out / "points" / "0003")
    (out / TABLE_FILE).unlink()
    code, stdout, err = netsim_cli(capsys, "sweep", str(scenario), "--grid", RATE_AXIS, "-o", str(out),
                                   "--resume", "-j", "1")
    assert code == 0, err
    assert "4 points (4 ok, 0 failed; 2 run now)" in stdout
    assert_frame_equal(pl.read_parquet(out / TABLE_FILE), table)
    records = [json.loads(line) for line in (out / INDEX_FILE).read_bytes().splitlines()]
    assert sorted(r["point"] for r in records) == ["0000", "0001", "0002", "0003"]  # none twice, none lost


def test_interrupted_sweep_resumes(reference: tuple[Path, Path, pl.DataFrame], tmp_path: Path) -> None:
    """Ctrl-C after two points: the ledger keeps them, no table is written; resuming finishes the rest."""
    scenario, _, table = reference
    plan = plan_sweep(scenario, [RATE_AXIS])
    out = tmp_path / "interrupted"

    def stop_after_two(step: SweepProgress) -> None:
        if step.done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(plan, out, executor=in_process(), on_progress=stop_after_two)
    assert len((out / INDEX_FILE).read_bytes().splitlines()) == 2 and not (out / TABLE_FILE).exists()
    ran: list[str] = []
    resumed = run_sweep(plan, out, executor=in_process(), resume=True,
                        on_progress=lambda step: ran.append(step.last["point"]) if step.last else None)
    assert ran == ["0002", "0003"]
    assert_frame_equal(resumed, table)
    assert json.loads((out / PLAN_FILE).read_text())["fingerprint"] == plan.fingerprint


def test_a_failed_point_is_recorded_and_the_sweep_goes_on(tmp_path: Path, cache: Path) -> None:
    """A prompt file that vanishes after the checks: its points fail with the reason, the others run;
    `--resume` reruns the failed ones once the file is back."""
    scenario = write_scenario(tmp_path)
    doomed = tmp_path / "doomed.txt"
    shutil.copy(tmp_path / "prompts.txt", doomed)
    plan = plan_sweep(scenario, ["workload.prompts.path=prompts.txt,doomed.txt", f"{RATE}=1,10"])
    doomed.unlink()
    table = run_sweep(plan, tmp_path / "out", executor=local_processes(2))
    assert table["status"].to_list() == ["ok", "ok", "failed", "failed"]
    failed = table.filter(pl.col("status") == "failed")
    assert failed["run_dir"].null_count() == 2 and failed["e2e_s_mean"].null_count() == 2
    assert all("doomed.txt" in error for error in failed["error"].to_list())
    assert sorted(p.name for p in (tmp_path / "out" / "points").iterdir()) == ["0000", "0001"]
    shutil.copy(tmp_path / "prompts.txt", doomed)
    again = run_sweep(plan, tmp_path / "out", executor=in_process(), resume=True)
    assert again["status"].to_list() == ["ok"] * 4 and again["error"].null_count() == 4


def test_cli_exits_1_naming_the_first_failed_point(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    import netsim.simulation

    real_run = netsim.simulation.run

    def run_failing_seed_2(scenario, store=None, on_request_done=None):  # type: ignore[no-untyped-def]
        if scenario.seed == 2:
            raise RuntimeError("simulated bug")
        return real_run(scenario, store, on_request_done)

    monkeypatch.setattr(netsim.simulation, "run", run_failing_seed_2)
    out = tmp_path / "out"
    code, stdout, err = netsim_cli(capsys, "sweep", str(write_scenario(tmp_path)), "--grid", "seed=1,2,3",
                                   "-o", str(out), "-j", "1")
    assert code == 1 and "3 points (2 ok, 1 failed; 3 run now)" in stdout
    assert err.strip().splitlines() == ["error: 1 of 3 points failed (first: point 0001: RuntimeError: "
                                        "simulated bug); see the error column; --resume reruns them"]
    table = pl.read_parquet(out / TABLE_FILE)
    assert table["status"].to_list() == ["ok", "failed", "ok"] and table["sweep.seed"].to_list() == [1, 2, 3]
