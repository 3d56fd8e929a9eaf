"""Bundled profiles load, every number has a source, bad files fail in one line, models must fit."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from netsim.cli.profiles import app
from netsim.errors import InputError
from netsim.hardware.profile import (
    DeviceProfile,
    list_profiles,
    load_profile,
    memory_needed_bytes,
)
from netsim.lm.geometry import ModelGeometry
from netsim.paths import profiles_dir

REQUIRED = ["raspberry-pi-5", "jetson-orin-nano", "jetson-agx-orin", "oneplus-12", "macbook-air-m2",
            "nvidia-l4", "nvidia-a10", "nvidia-a100-80gb", "nvidia-h100-sxm"]

LLAMA2_7B = dict(architecture="llama", n_layers=32, hidden_size=4096, n_heads=32, n_kv_heads=32,
                 head_dim=128, vocab_size=32000, intermediate_size=11008, n_params=6_738_415_616)


def test_every_required_profile_is_bundled_and_loads() -> None:
    names = [p.name for p in list_profiles()]
    assert set(REQUIRED) <= set(names)
    assert len(names) >= 9


@pytest.mark.parametrize("name", REQUIRED)
def test_every_numeric_field_in_the_yaml_has_a_source(name: str) -> None:
    """Checked on the raw YAML, independently of the model's own validator."""
    raw = yaml.safe_load((profiles_dir() / f"{name}.yaml").read_text())
    sources = raw["sources"]
    numeric = [k for k, v in raw.items() if k not in ("name", "description", "kind", "runtime", "sources",
                                                        "peak_flops") and v is not None]
    numeric += [f"peak_flops.{d}" for d in raw["peak_flops"]]
    for key in numeric:
        assert sources.get(key, "").strip(), f"{name}: {key} has no source"
    assert set(sources) == set(numeric), f"{name}: sources for fields that are not set"
    profile = load_profile(name)
    assert profile.name == name
    assert 0 < profile.power_idle_w < profile.power_active_w
    assert profile.memory_available_bytes > 0


def test_a_missing_source_is_a_one_line_input_error(tmp_path: Path) -> None:
    raw = yaml.safe_load((profiles_dir() / "nvidia-l4.yaml").read_text())
    del raw["sources"]["mem_bw_bytes_per_s"]
    (tmp_path / "nvidia-l4.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(InputError, match="no source for mem_bw_bytes_per_s") as err:
        load_profile("nvidia-l4", tmp_path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: r.update(memory_bytes="lots"), "memory_bytes"),
        (lambda r: r.update(colour="green"), "colour"),
        (lambda r: r["peak_flops"].pop("float32"), "float32"),
        (lambda r: r.update(power_idle_w="200W"), "power_idle_w"),
        (lambda r: r.update(eta_memory=1.5), "eta_memory"),
        (lambda r: r.update(radio_tx_j_per_bit="1nJ/bit"), "radio"),
    ],
)
def test_bad_profiles_are_rejected(tmp_path: Path, edit, message: str) -> None:
    raw = yaml.safe_load((profiles_dir() / "nvidia-a10.yaml").read_text())
    edit(raw)
    path = tmp_path / "custom.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(InputError, match=message):
        load_profile(str(path))


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(InputError, match=r"unknown device profile 'pi-6' \(known: .*raspberry-pi-5"):
        load_profile("pi-6")


def test_unreadable_yaml_and_name_mismatch(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    with pytest.raises(InputError, match="cannot read device profile"):
        load_profile("broken", tmp_path)
    raw = yaml.safe_load((profiles_dir() / "nvidia-a10.yaml").read_text())
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(InputError, match="does not match the file name"):
        load_profile("other", tmp_path)


def test_a_profile_file_path_loads_as_is(tmp_path: Path) -> None:
    raw = yaml.safe_load((profiles_dir() / "nvidia-a10.yaml").read_text())
    raw["name"] = "my-a10"
    raw["overhead_per_call_s"] = "1ms"  # pinned: wins over the runtime's while the profile's own runs
    raw["sources"]["overhead_per_call_s"] = "measured on my A10"
    path = tmp_path / "whatever.yml"
    path.write_text(yaml.safe_dump(raw))
    assert load_profile(str(path)).overhead_per_call_s == pytest.approx(1e-3)


def test_memory_needed_is_weights_plus_kv() -> None:
    fp16 = ModelGeometry(**LLAMA2_7B, dtype="float16")
    int4 = ModelGeometry(**LLAMA2_7B, dtype="int4")
    # 6,738,415,616 params x 2 B; KV 2·32·32·128·2 B = 524,288 B per token
    assert memory_needed_bytes([fp16]) == 13_476_831_232
    assert memory_needed_bytes([fp16], kv_tokens=1000) == 13_476_831_232 + 524_288_000
    # int4 weights keep a 16-bit cache (the runtime default, netsim/hardware/quant.py), not a 4-bit one
    assert memory_needed_bytes([fp16, int4], kv_tokens=10) == (13_476_831_232 + 5_242_880
                                                               + 3_369_207_808 + 5_242_880)
    with pytest.raises(ValueError):
        memory_needed_bytes([fp16], kv_tokens=-1)


def test_a_model_that_does_not_fit_is_reported() -> None:
    nano, agx = load_profile("jetson-orin-nano"), load_profile("jetson-agx-orin")
    fp16 = ModelGeometry(**LLAMA2_7B, dtype="float16")
    int4 = ModelGeometry(**LLAMA2_7B, dtype="int4")
    assert not nano.fits([fp16]) and agx.fits([fp16])
    problem = nano.fit_problem([fp16])
    assert problem is not None and "jetson-orin-nano" in problem and "13.48 GB" in problem
    # int4 weights 3.37 GB + an fp16 KV cache 2·32·32·128·2 = 524,288 B/token: 2,048 tokens → 4.44 GB fits
    # the 5.20 GB usable (8 GiB − 3.39 GB reserved), 4,096 tokens → 5.52 GB does not
    assert nano.fits([int4], kv_tokens=2048) and nano.fit_problem([int4], kv_tokens=2048) is None
    assert not nano.fits([int4], kv_tokens=4096)


def test_every_profile_reports_a_peak_for_every_dtype() -> None:
    for p in list_profiles():
        for dtype in ("float32", "float16", "bfloat16", "int8", "int4"):
            assert p.peak_flops_for(dtype) > 0
        assert p.peak_flops_for("float32") <= p.peak_flops_for("float16")
    with pytest.raises(ValueError, match="unknown dtype"):
        load_profile("nvidia-l4").peak_flops_for("float8")


def test_profiles_are_immutable() -> None:
    p = load_profile("nvidia-l4")
    with pytest.raises(Exception):  # noqa: B017 - pydantic raises its own frozen-instance error
        p.eta_memory = 0.9  # type: ignore[misc]
    assert isinstance(p, DeviceProfile)


def test_cli_list_and_show() -> None:
    runner = CliRunner()
    listed = runner.invoke(app, ["list"], terminal_width=160)
    assert listed.exit_code == 0
    for name in REQUIRED:
        assert name in listed.output
    shown = runner.invoke(app, ["show", "raspberry-pi-5"], terminal_width=200)
    assert shown.exit_code == 0
    assert "geerlingguy/sbc-reviews#21" in shown.output and "17.07 GB/s" in shown.output


def test_cli_unknown_profile_exits_2_with_one_line() -> None:
    result = CliRunner().invoke(app, ["show", "pi-6"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: unknown device profile 'pi-6'")
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_cli_lists_and_shows_runtimes() -> None:
    runner = CliRunner()
    listed = runner.invoke(app, ["list"], terminal_width=200)
    assert listed.exit_code == 0
    assert "runtimes: executorch, llama.cpp, lmdeploy, mlc-llm, vllm" in listed.output
    runtimes = runner.invoke(app, ["runtimes"], terminal_width=300)
    assert runtimes.exit_code == 0
    for name in ("llama.cpp", "executorch", "mlc-llm", "lmdeploy", "vllm", "q4f16_1", "8da4w-g32",
                 "embedded_gpu"):
        assert name in runtimes.output, name
    shown = runner.invoke(app, ["runtime", "mlc-llm"], terminal_width=400)
    assert shown.exit_code == 0
    assert "eta_memory" in shown.output and "9.2 ms" in shown.output and "two-point fit" in shown.output
    unknown = runner.invoke(app, ["runtime", "tensorrt-9"])
    lines = [line for line in unknown.output.splitlines() if line.strip()]
    assert unknown.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: unknown runtime")
