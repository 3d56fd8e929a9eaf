"""Dask workers run netsim from the installed package, not the source tree (issue 10, acceptance).

A cluster's workers have the wheel and nothing else. So this builds the wheel (`python -m build`, as a
packager would), installs it without `-e` into a fresh virtual environment (tests/test_packaging.py
`_venv`: this environment's dependencies, Dask included, without the checkout), and from a directory
outside the repository starts a LocalCluster of two worker processes, runs a 2-point sweep on it with
`netsim sweep --scheduler`, and asks the workers where their `netsim` came from and whether they ran a
simulation. Slow (a wheel build and three interpreters): `pytest -m slow tests/test_sweep_dask_wheel.py`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import polars as pl
import pytest
from test_packaging import _env, _run, _venv

from netsim.paths import PROJECT_ROOT

pytestmark = pytest.mark.slow

SCENARIO = """\
# phone ── wired link (swept) ── cloud
name: wheel-sweep
seed: 2
topology:
  nodes:
    phone: {role: device, profile: oneplus-12, models: [shakespeare-slm]}
    cloud: {role: cloud, profile: nvidia-a100-80gb, models: [shakespeare-llm]}
  links:
    - {src: phone, dst: cloud, rate_mbps: 10, delay_ms: 5}
workload:
  n_requests: 2
  max_new_tokens: 4
  prompts: {source: file, path: prompts.txt}
policy: {name: cloud_only}
sweep:
  grid:
    topology.links[0].rate_mbps: [1, 100]
"""

DRIVER = r"""
import json, logging, subprocess, sys
from pathlib import Path
from distributed import Client, LocalCluster

def where():
    import os, sys
    module = sys.modules.get("netsim")
    return {"netsim": getattr(module, "__file__", None), "ran": "netsim.simulation" in sys.modules,
            "pid": os.getpid(), "executable": sys.executable}

if __name__ == "__main__":
    netsim_cli, scenario, out = sys.argv[1:4]
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        sweep = subprocess.run([netsim_cli, "sweep", scenario, "--scheduler", cluster.scheduler_address,
                                "-o", out], capture_output=True, text=True)
        print(json.dumps({"code": sweep.returncode, "stdout": sweep.stdout, "stderr": sweep.stderr,
                          "workers": list(client.run(where).values())}))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "build", "--wheel", "--outdir", out, PROJECT_ROOT], cwd=out)
    [built] = out.glob("netsim-*.whl")
    return built


def test_dask_workers_run_the_installed_wheel(wheel: Path, tmp_path: Path) -> None:
    purelib = _venv(tmp_path / "venv")
    python, netsim_cli = tmp_path / "venv" / "bin" / "python", tmp_path / "venv" / "bin" / "netsim"
    env = _env()
    _run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", wheel], cwd=tmp_path, env=env)
    work = tmp_path / "elsewhere"  # outside the checkout: nothing of the source tree is importable here
    work.mkdir()
    assert not work.resolve().is_relative_to(PROJECT_ROOT)
    (work / "prompts.txt").write_text("To be or not to be, that is the question.\n")
    (work / "wheel-sweep.yaml").write_text(SCENARIO)
    (work / "driver.py").write_text(DRIVER)

    report = json.loads(_run([python, "driver.py", netsim_cli, "wheel-sweep.yaml", "out"], cwd=work,
                             env=env).strip().splitlines()[-1])
    assert report["code"] == 0, report["stderr"]
    assert "2 points (2 ok, 0 failed; 2 run now)" in report["stdout"]
    table = pl.read_parquet(work / "out" / "sweep.parquet")
    assert table["status"].to_list() == ["ok", "ok"]
    assert table["e2e_s_mean"][0] > table["e2e_s_mean"][1]  # 1 Mbit/s is slower than 100

    workers = report["workers"]
    assert len(workers) == 2
    assert any(w["ran"] for w in workers), workers  # the workers asked are the ones that ran the points
    for w in workers:
        assert w["executable"].startswith(str(tmp_path / "venv")), w
        if w["ran"]:
            assert Path(w["netsim"]).is_relative_to(purelib), f"a worker imported netsim from {w['netsim']}"
            assert not Path(w["netsim"]).is_relative_to(PROJECT_ROOT)
