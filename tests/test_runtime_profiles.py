"""Runtime profiles in scenarios: a node's compute is its device × its runtime (docs/hardware.md, "Runtimes").

Closed forms: a one-token decode on a memory-bound device is t = o + bytes/(bw·η_m) with the runtime's
o and η_m for that device (by name, else kind, else default); bad runtime input is one line, exit 2.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from project_scripts import load_script

import netsim
from netsim.cli import main
from netsim.errors import InputError
from netsim.hardware.cost import call_time_s, decode_cost, prefill_cost
from netsim.hardware.profile import list_profiles, load_device, load_profile
from netsim.hardware.runtime import list_runtime_names, list_runtimes, load_runtime
from netsim.lm.cards import load_card
from netsim.paths import profiles_dir, runtimes_dir
from netsim.scenario import load_scenario


def test_every_bundled_device_names_a_bundled_runtime_that_covers_it() -> None:
    runtimes = set(list_runtime_names())
    assert {"llama.cpp", "executorch", "mlc-llm"} <= runtimes
    for device in list_profiles():  # bound to its default runtime
        assert device.runtime in runtimes and device.bound, device.name


def test_every_runtime_number_has_a_source() -> None:
    for runtime in list_runtimes():
        assert set(runtime.sources) == {"formats", "kv_dtypes"}
        for key, eff in runtime.efficiency.items():
            for field in ("eta_compute", "eta_memory", "overhead_per_call_s"):
                assert eff.sources[field].strip(), f"{runtime.name}.{key}.{field}"


def test_llamacpp_entries_are_the_fits_of_their_calibration_points() -> None:
    """Every fitted number of runtime_profiles/llama.cpp.yaml is what scripts/fit_llamacpp.py computes from
    the `fit` points of tests/data/calibration.yaml (the YAML rounds to 3 significant digits); the entries
    that borrow a calibrated part's factors carry that part's numbers."""
    fits = load_script("fit_llamacpp").fits()
    llama = load_runtime("llama.cpp")
    for name, fitted in fits.items():
        entry = llama.efficiency[name]
        for field, value in fitted.items():
            got = entry.formats["Q4_0"].eta_memory if field == "q4_0_eta_memory" else getattr(entry, field)
            assert got == pytest.approx(value, rel=5e-3), (name, field, got, value)
    borrowed = {"jetson-orin-nano": "jetson-agx-orin", "embedded_gpu": "jetson-agx-orin",
                "sbc": "raspberry-pi-5", "laptop": "macbook-air-m2", "datacenter_gpu": "nvidia-a100-80gb",
                "desktop_gpu": "rtx-4090", "nvidia-a10": "nvidia-a100-80gb",
                "nvidia-l4": "nvidia-a100-80gb"}
    for name, source in borrowed.items():
        a, b = llama.efficiency[name], llama.efficiency[source]
        assert (a.eta_memory, a.overhead_per_call_s) == (b.eta_memory, b.overhead_per_call_s), name
    h100, l4 = llama.efficiency["nvidia-h100-sxm"], llama.efficiency["nvidia-l4"]
    assert h100.formats["Q4_0"] == l4.formats["Q4_0"]


def test_decode_time_is_the_device_times_the_runtime() -> None:
    """Llama-3.1-8B q4f16_1 on the Orin Nano: llama.cpp's entry for that device vs MLC's embedded_gpu one."""
    geom = load_card("llama-3.1-8b").charged_with("q4f16_1")
    cost = decode_cost(geom, 100)
    llama = load_profile("jetson-orin-nano")
    mlc = load_profile("jetson-orin-nano", runtime="mlc-llm")
    assert call_time_s(llama, cost) == pytest.approx(12.88e-3 + cost.bytes_moved / (68e9 * 0.591), rel=1e-12)
    assert call_time_s(mlc, cost) == pytest.approx(9.2e-3 + cost.bytes_moved / (68e9 * 1.0), rel=1e-12)
    # the device changes, the runtime's factors stay: the Super mode only has a faster memory bus
    super_ = load_profile("jetson-orin-nano-super", runtime="mlc-llm")
    assert call_time_s(super_, cost) == pytest.approx(9.2e-3 + cost.bytes_moved / 102e9, rel=1e-12)


def test_lookup_order_is_device_name_then_kind_then_default() -> None:
    llama = load_runtime("llama.cpp")
    h100 = load_device("nvidia-h100-sxm")
    assert llama.efficiency_for(h100.name, h100.kind) is llama.efficiency["nvidia-h100-sxm"]
    assert llama.efficiency_for("my-gpu", "datacenter_gpu") is llama.efficiency["datacenter_gpu"]
    assert llama.efficiency_for("my-server", "cpu_server") is None
    mlc = load_runtime("mlc-llm")
    assert mlc.efficiency_for("jetson-agx-orin", "embedded_gpu") is mlc.efficiency["embedded_gpu"]


def test_pinned_device_numbers_win_only_under_the_devices_own_runtime(tmp_path: Path) -> None:
    raw = yaml.safe_load((profiles_dir() / "jetson-orin-nano.yaml").read_text())
    raw.update(name="my-nano", overhead_per_call_s="50ms")
    raw["sources"]["overhead_per_call_s"] = "my own llama.cpp measurement"
    path = tmp_path / "nano.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert load_profile(str(path)).overhead_per_call_s == pytest.approx(50e-3)
    assert load_profile(str(path), runtime="llama.cpp").overhead_per_call_s == pytest.approx(50e-3)
    assert load_profile(str(path), runtime="mlc-llm").overhead_per_call_s == pytest.approx(9.2e-3)


def test_a_device_kind_without_an_entry_is_one_line() -> None:
    with pytest.raises(InputError, match=r"runtime 'mlc-llm' gives no efficiencies for device "
                                         r"'raspberry-pi-5' \(kind sbc\)"):
        load_profile("raspberry-pi-5", runtime="mlc-llm")


def test_formats_are_canonical_and_known() -> None:
    assert "Q4_K_M" in load_runtime("llama.cpp").formats
    bad = yaml.safe_load((runtimes_dir() / "mlc-llm.yaml").read_text())
    bad["formats"] = ["q4f16_1", "q9_z"]
    with pytest.raises(Exception, match="unknown weight format 'q9_z'"):
        type(load_runtime("mlc-llm")).model_validate(bad)


# ------------------------------------------------------------------------------- scenario errors, exit 2


def scenario(tmp_path: Path, node: dict[str, Any]) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({
        "name": "t", "topology": {"nodes": {"edge": {"role": "device", **node}}},
        "workload": {"n_requests": 1, "max_new_tokens": 2}, "policy": {"name": "device_only"}}))
    return path


def validate_lines(capsys: pytest.CaptureFixture[str], path: Path) -> list[str]:
    with pytest.raises(SystemExit) as info:
        main(["validate", str(path)])
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    return [ln for ln in err.strip().splitlines() if ln.strip()]


@pytest.mark.parametrize(
    ("node", "where", "message"),
    [
        ({"profile": "jetson-orin-nano", "runtime": "tensorrt-9"}, "topology.nodes.edge.runtime: ",
         "unknown runtime 'tensorrt-9' (known: executorch, llama.cpp, lmdeploy, mlc-llm, vllm"),
        ({"profile": "jetson-orin-nano", "runtime": "rt/missing.yaml"}, "topology.nodes.edge.runtime: ",
         "does not exist"),
        ({"profile": "raspberry-pi-5", "runtime": "mlc-llm"}, "topology.nodes.edge.runtime: ",
         "gives no efficiencies for device 'raspberry-pi-5'"),
        ({"profile": "jetson-orin-nano", "runtime": "mlc-llm",
          "models": [{"name": "shakespeare-slm", "charged_as": "qwen3-0.6b", "format": "Q4_K_M"}]},
         "topology.nodes.edge.models[0].format: ",
         "runtime 'mlc-llm' does not run Q4_K_M weights (it runs: "),
        ({"profile": "jetson-orin-nano", "runtime": "mlc-llm",
          "models": [{"name": "shakespeare-slm", "charged_as": "qwen3-0.6b"}]},
         "topology.nodes.edge.models[0]: ", "does not run the model's bf16 weights"),
        ({"profile": "oneplus-12", "models": [{"name": "shakespeare-slm", "format": "awq-g64"}]},
         "topology.nodes.edge.models[0].format: ", "runtime 'executorch' does not run awq-g64"),
        ({"profile": "jetson-orin-nano", "runtime": "mlc-llm",
          "models": [{"name": "shakespeare-slm", "charged_as": "qwen3-0.6b", "format": "q4f16_1",
                      "kv_dtype": "q8_0"}]},
         "topology.nodes.edge.models[0].kv_dtype: ", "runtime 'mlc-llm' keeps no q8_0 KV cache"),
        ({"profile": "oneplus-12", "models": [{"name": "shakespeare-slm", "kv_dtype": "fp4"}]},
         "topology.nodes.edge.models[0].kv_dtype", "'float32'"),
    ],
)
def test_bad_runtime_input_is_one_line_naming_the_yaml_path(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], node: dict[str, Any], where: str,
        message: str) -> None:
    node.setdefault("models", ["shakespeare-slm"])
    lines = validate_lines(capsys, scenario(tmp_path, node))
    hits = [ln for ln in lines if where in ln]
    assert len(hits) == 1 and message in hits[0], lines


def test_a_card_file_that_does_not_validate_is_one_line(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "card.yaml").write_text("name: mine\nsource: me\ngeometry: {n_layers: -2}\n")
    lines = validate_lines(capsys, scenario(tmp_path, {
        "profile": "oneplus-12", "models": [{"name": "shakespeare-slm", "charged_as": "card.yaml"}]}))
    hits = [ln for ln in lines if "topology.nodes.edge.models[0].charged_as: " in ln]
    assert len(hits) == 1 and "card.yaml" in hits[0] and "geometry" in hits[0], lines


def test_a_runtime_file_that_does_not_validate_is_one_line(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    bad = yaml.safe_load((runtimes_dir() / "mlc-llm.yaml").read_text())
    bad["efficiency"]["embedded_gpu"]["eta_memory"] = 1.5
    (tmp_path / "rt.yaml").write_text(yaml.safe_dump(bad))
    lines = validate_lines(capsys, scenario(tmp_path, {"profile": "jetson-orin-nano", "runtime": "rt.yaml",
                                                       "models": ["shakespeare-slm"]}))
    hits = [ln for ln in lines if "topology.nodes.edge.runtime: " in ln]
    assert len(hits) == 1 and "efficiency.embedded_gpu.eta_memory" in hits[0], lines


@pytest.mark.parametrize(("kernels", "message"), [
    ({"Q4_K_M": {"eta_memory": 0.5, "sources": {"eta_memory": "m"}}},
     "Q4_K_M is not a format this runtime runs"),
    ({"q4f16_1": {"compute_dtype": "int3", "sources": {"compute_dtype": "m"}}},
     "efficiency.embedded_gpu.formats.q4f16_1.compute_dtype"),
    ({"q4f16_1": {"eta_memory": 0.5, "sources": {}}}, "no source for eta_memory"),
])
def test_a_runtime_files_format_kernels_are_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    kernels: dict[str, Any], message: str) -> None:
    bad = yaml.safe_load((runtimes_dir() / "mlc-llm.yaml").read_text())
    bad["efficiency"]["embedded_gpu"]["formats"] = kernels
    (tmp_path / "rt.yaml").write_text(yaml.safe_dump(bad))
    lines = validate_lines(capsys, scenario(tmp_path, {"profile": "jetson-orin-nano", "runtime": "rt.yaml",
                                                       "models": ["shakespeare-slm"]}))
    hits = [ln for ln in lines if "topology.nodes.edge.runtime: " in ln]
    assert len(hits) == 1 and message in hits[0], lines


# ------------------------------------------------------------- user-written device and runtime profiles


def test_user_device_and_runtime_beside_a_scenario_run_from_any_directory(tmp_path: Path) -> None:
    """tmp/sub holds a scenario, a device profile naming its own runtime file (relative to the profile)
    and a second runtime the scenario names (relative to the scenario); `netsim run` from another cwd."""
    sub = tmp_path / "sub"
    (sub / "hw" / "rt").mkdir(parents=True)
    device = yaml.safe_load((profiles_dir() / "raspberry-pi-5.yaml").read_text())
    device.update(name="my-board", runtime="rt/slow.yaml")
    (sub / "hw" / "board.yaml").write_text(yaml.safe_dump(device))
    slow = {"name": "slow", "description": "my llama.cpp build", "formats": ["fp32", "bf16"],
            "kv_dtypes": ["float32", "bfloat16"], "sources": {"formats": "mine", "kv_dtypes": "mine"},
            "efficiency": {"default": {"eta_compute": 0.1, "eta_memory": 0.5, "overhead_per_call_s": "250ms",
                                       "sources": {"eta_compute": "m", "eta_memory": "m",
                                                   "overhead_per_call_s": "m"}}}}
    (sub / "hw" / "rt" / "slow.yaml").write_text(yaml.safe_dump(slow))
    table = {"name": "table", "description": "measured", "formats": ["fp32"], "kv_dtypes": ["float32"],
             "sources": {"formats": "mine", "kv_dtypes": "mine"},
             "table": {"source": "my stopwatch", "prefill_s_per_token": "2ms", "decode_s_per_token": "400ms"}}
    (sub / "table.yaml").write_text(yaml.safe_dump(table))
    nodes = {"a": {"role": "device", "profile": "hw/board.yaml", "models": ["shakespeare-slm"]},
             "b": {"role": "device", "profile": "hw/board.yaml", "runtime": "table.yaml",
                   "models": ["shakespeare-slm"]}}
    (sub / "scenario.yaml").write_text(yaml.safe_dump({
        "name": "user-hw", "topology": {"nodes": nodes},
        "workload": {"n_requests": 2, "max_new_tokens": 3}, "policy": {"name": "device_only"}}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = subprocess.run([sys.executable, "-m", "netsim", "run", "../sub/scenario.yaml", "-o", "out"],
                          cwd=elsewhere, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert (elsewhere / "out" / "summary.json").is_file()
    json.loads((elsewhere / "out" / "summary.json").read_text())
    # the same scenario in-process: decode steps pay 250 ms (a) and exactly 400 ms (b)
    results = netsim.run(load_scenario(sub / "scenario.yaml"))
    tpot = dict(zip(results.requests["device"].to_list(), results.requests["tpot_s"].to_list(), strict=True))
    assert tpot["b"] == pytest.approx(0.4, rel=1e-9)
    assert 0.25 < tpot["a"] < 0.3


def test_per_token_overhead_is_charged_per_logits_row_and_split_by_them() -> None:
    import simpy
    from test_hardware_cost import TOY, toy_device

    from netsim.hardware.batching import BatchingCompute
    from netsim.hardware.cost import batched_cost, roofline_s
    from netsim.hardware.runtime import RuntimeProfile
    from netsim.recorder import Recorder

    rt = RuntimeProfile.model_validate({
        "name": "tok", "description": "d", "formats": ["fp16"], "kv_dtypes": ["float16"],
        "sources": {"formats": "s", "kv_dtypes": "s"},
        "efficiency": {"default": {"eta_compute": 0.5, "eta_memory": 0.5, "overhead_per_call_s": "1ms",
                                   "overhead_per_token_s": "0.25ms",
                                   "sources": {k: "s" for k in ("eta_compute", "eta_memory",
                                                                "overhead_per_call_s",
                                                                "overhead_per_token_s")}}}})
    device = toy_device().with_runtime(rt, "tok")
    verify, prefill = decode_cost(TOY, 10, n_tokens=4, batch=2), prefill_cost(TOY, 16)
    # logits rows: 4 per sequence × 2 at the verify step, 1 at a prefill
    assert call_time_s(device, verify) == pytest.approx(1e-3 + 8 * 0.25e-3 + max(roofline_s(device, verify)))
    assert call_time_s(device, prefill) == pytest.approx(1e-3 + 0.25e-3 + max(roofline_s(device, prefill)))
    env = simpy.Environment()
    engine = BatchingCompute(env, "e", device, Recorder(), max_batch=8)
    for rid, cost in ((1, decode_cost(TOY, 10, n_tokens=4)), (2, decode_cost(TOY, 10))):
        env.process(engine.run(cost, request_id=rid, kind="verify"))
    env.run()
    step = batched_cost([decode_cost(TOY, 10, n_tokens=4), decode_cost(TOY, 10)])
    total = device.power_active_w * call_time_s(device, step)
    assert engine.energy_j(1) + engine.energy_j(2) == pytest.approx(total, rel=1e-12)
    assert engine.energy_j(1) > engine.energy_j(2)  # 4 logits rows against 1
