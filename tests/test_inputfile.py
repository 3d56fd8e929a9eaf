"""Files a user names: each bad one is exit 2 and one line naming the file, fast, never its contents.

Every case goes through `python -m netsim validate`, the way a user meets it; the loader's guards are
also checked directly, where a number (depth, expansion, time) is the point.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from netsim.errors import InputError
from netsim.hardware.profile import load_profile
from netsim.inputfile import YAML_MAX_DEPTH, YAML_MAX_VALUES, load_yaml, read_text, show_path
from netsim.scenario import load_scenario
from netsim.workload import check_workload_files, make_requests

BASE: dict[str, Any] = {
    "name": "t",
    "seed": 1,
    "topology": {
        "nodes": {
            "phone": {"role": "device", "profile": "oneplus-12", "models": ["shakespeare-slm"]},
            "gw": {"role": "router"},
            "cloud": {"role": "cloud", "profile": "nvidia-a100-80gb", "models": ["shakespeare-llm"]},
        },
        "links": [
            {"src": "phone", "dst": "gw", "rate_mbps": 50, "delay_ms": 5},
            {"src": "gw", "dst": "cloud", "rate_mbps": 1000, "delay_ms": 10},
        ],
    },
    "workload": {"n_requests": 2, "max_new_tokens": 4},
    "policy": {"name": "cloud_only"},
}

SECRET = "s3cr3t-T0KEN-4f9a"
"""Planted in files netsim is pointed at by mistake; it must never reach the terminal."""

BOMB = "\n".join(
    ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
) + "\n"
"""Billion laughs: 10 lines that expand to 9**10 ≈ 3.5 billion strings."""


def write_scenario(directory: Path, edit: Callable[[dict[str, Any]], None] = lambda raw: None,
                   name: str = "s.yaml") -> Path:
    raw = copy.deepcopy(BASE)
    edit(raw)
    path = directory / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def validate_error(*args: str | Path, cwd: Path) -> str:
    """The single stderr line of a `netsim validate` that must fail with exit 2."""
    proc = subprocess.run([sys.executable, "-m", "netsim", "validate", *map(str, args)],
                          capture_output=True, text=True, timeout=20, cwd=cwd)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    return lines[0]


def _trace(body: str) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        (d / "trace.csv").write_text(body)
        return write_scenario(d, lambda r: r["workload"].update(
            arrival={"process": "trace", "path": "trace.csv"}))
    return make


def _prompts(content: bytes | None, directory: bool = False) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        if directory:
            (d / "prompts.txt").mkdir()
        elif content is not None:
            (d / "prompts.txt").write_bytes(content)
        return write_scenario(d, lambda r: r["workload"].update(
            prompts={"source": "file", "path": "prompts.txt"}))
    return make


def _scenario_text(text: str | bytes) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        path = d / "s.yaml"
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
        return path
    return make


def _set_node(field: str, value: Any) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        def edit(raw: dict[str, Any]) -> None:
            if field == "charged_as":
                phone = raw["topology"]["nodes"]["phone"]
                phone["models"] = [{"name": "shakespeare-slm", "charged_as": value}]
            else:
                raw["topology"]["nodes"]["phone"][field] = value
        return write_scenario(d, edit)
    return make


def _valid_text() -> str:
    return yaml.safe_dump(BASE, sort_keys=False)


NEXT_LINE = _valid_text().count("\n") + 1
"""The line number of a line appended to the valid scenario text."""


CASES: dict[str, tuple[Callable[[Path], Path | str], str]] = {
    "dev-zero-scenario": (lambda d: "/dev/zero", "scenario /dev/zero: is a character device"),
    "dev-zero-extends": (lambda d: _scenario_text("extends: /dev/zero\nname: z\n")(d),
                         "extends: scenario /dev/zero: is a character device"),
    "dev-zero-trace": (lambda d: write_scenario(d, lambda r: r["workload"].update(
        arrival={"process": "trace", "path": "/dev/zero"})), "trace /dev/zero: is a character device"),
    "directory-scenario": (lambda d: d, "is a directory, not a regular file"),
    "directory-prompts": (_prompts(None, directory=True), "prompts.txt: is a directory"),
    "missing-scenario": (lambda d: d / "nope.yaml", "nope.yaml: does not exist"),
    "non-utf8-scenario": (_scenario_text(_valid_text().encode() + b"description: caf\xe9\n"),
                          "not valid UTF-8 (line"),
    "non-utf8-prompts": (_prompts(b"first prompt\nsecond \xff\xfe prompt\n"),
                         "prompts.txt: not valid UTF-8 (line 2, byte offset 20)"),
    "empty-prompts": (_prompts(b"\n  \n"), "holds no prompt"),
    "missing-prompts": (_prompts(None), "workload.prompts.path: prompt file"),
    "deep-nesting": (_scenario_text("name: " + "[" * 3000 + "]" * 3000 + "\n"),
                     f"nested more than {YAML_MAX_DEPTH} levels deep"),
    "yaml-bomb": (_scenario_text(BOMB), f"expands to more than {YAML_MAX_VALUES:,} values"),
    "recursive-alias": (_scenario_text("name: &a [1, *a]\n"), "refers to a value that contains it"),
    "duplicate-policy": (_scenario_text(_valid_text() + "policy: {name: cloud_only}\n"),
                         f"line {NEXT_LINE}, column 1: duplicate key 'policy'"),
    "oversized-scenario": (_scenario_text(_valid_text() + "description: " + "x" * (3 << 20) + "\n"),
                           "larger than the 2 MiB allowed for a scenario"),
    "bad-timestamp": (_scenario_text(_valid_text() + "description: 2001-13-01\n"), "month must be in 1..12"),
    "control-character": (_scenario_text(_valid_text() + "description: a\x01b\n"),
                          f"line {NEXT_LINE}: unreadable YAML"),
    "long-profile-name": (_set_node("profile", "p" * 10_000), "unknown device profile 'ppp"),
    "long-profile-path": (_set_node("profile", "d/" + "p" * 10_000), "does not exist"),
    "long-card-name": (_set_node("charged_as", "c" * 10_000), "unknown cost card 'ccc"),
    "non-slug-profile": (_set_node("profile", "Nokia 3310!"), "unknown device profile 'Nokia 3310!'"),
    "dev-zero-profile": (_set_node("profile", "/dev/zero"),
                         "device profile /dev/zero: is a character device"),
    "trace-nan": (_trace("t_s\n0\nnan\n"), "trace.csv:3: t_s must be a finite number of seconds, got nan"),
    "trace-inf": (_trace("t_s\n0\ninf\n"), "trace.csv:3: t_s must be a finite number of seconds, got inf"),
    "trace-negative": (_trace("t_s\n-0.5\n1\n"), "trace.csv:2: t_s must be >= 0"),
    "trace-unsorted": (_trace("t_s,device\n2,phone\n\n1,phone\n"),
                       "trace.csv:4: t_s 1 is earlier than the row before (2); sort the trace by t_s"),
    "trace-not-a-number": (_trace(f"t_s\n0\n{SECRET}\n"), "trace.csv:3: t_s is not a number"),
    "trace-too-short": (_trace("t_s\n0\n"), "1 request row but workload.n_requests is 2"),
    "trace-no-header": (_trace("0\n1\n"), "needs a header line with a t_s column"),
    "trace-unknown-device": (_trace("t_s,device\n0,cloud\n1,phone\n"), "device 'cloud' is not a requesting"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_file_is_one_line_naming_it(tmp_path: Path, case: str) -> None:
    make, expected = CASES[case]
    line = validate_error(make(tmp_path), cwd=tmp_path)
    assert expected in line, line
    assert SECRET not in line
    assert len(line) < 400


def test_a_fifo_is_refused_without_opening_it(tmp_path: Path) -> None:
    """Opening a FIFO for reading blocks until a writer comes; none ever does here."""
    fifo = tmp_path / "s.yaml"
    os.mkfifo(fifo)
    start = time.monotonic()
    line = validate_error(fifo, cwd=tmp_path)
    assert "is a FIFO (named pipe), not a regular file" in line
    assert time.monotonic() - start < 20
    os.mkfifo(tmp_path / "trace.csv")
    scenario = write_scenario(tmp_path, lambda r: r["workload"].update(
        arrival={"process": "trace", "path": "trace.csv"}), name="t.yaml")
    assert "trace" in validate_error(scenario, cwd=tmp_path)


def test_a_valid_trace_and_prompt_file_pass_and_drive_the_requests(tmp_path: Path) -> None:
    (tmp_path / "trace.csv").write_text("\ufefft_s , device\n0.25,phone\n\n0.25,\n3,phone\n")
    (tmp_path / "prompts.txt").write_text("To be\n\n  or not  \n")
    path = write_scenario(tmp_path, lambda r: r["workload"].update(
        arrival={"process": "trace", "path": "trace.csv"}, prompts={"source": "file", "path": "prompts.txt"}))
    proc = subprocess.run([sys.executable, "-m", "netsim", "validate", str(path)],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    scenario = load_scenario(path)
    assert check_workload_files(scenario) == []
    requests = make_requests(scenario, np.random.default_rng(0))
    assert [(r.t_arrival_s, r.device, r.prompt) for r in requests] == [
        (0.25, "phone", "To be"), (0.25, "phone", "or not")]


def test_validate_and_run_read_the_trace_the_same_way(tmp_path: Path) -> None:
    (tmp_path / "trace.csv").write_text("t_s\n1\nnan\n")
    scenario = load_scenario(write_scenario(tmp_path, lambda r: r["workload"].update(
        arrival={"process": "trace", "path": "trace.csv"})))
    [problem] = check_workload_files(scenario)
    with pytest.raises(InputError) as err:
        make_requests(scenario, np.random.default_rng(0))
    assert str(err.value) == problem


def _secret_file(tmp_path: Path) -> Path:
    """A file shaped like /etc/shadow, which YAML reads as a mapping of whole lines to nothing."""
    path = tmp_path / "shadow"
    path.write_text(f"root:$6${SECRET}$x:20228:0:99999:7:::\nalice:{SECRET}:20228:0:99999:7:::\n"
                    f"password: {SECRET}\n")
    return path


@pytest.mark.parametrize("where", ["profile", "charged_as", "scenario", "extends"])
def test_a_secret_file_is_never_echoed(tmp_path: Path, where: str) -> None:
    secret = _secret_file(tmp_path)
    if where == "scenario":
        target: Path = secret
    elif where == "extends":
        target = tmp_path / "s.yaml"
        target.write_text(f"extends: {secret}\nname: x\n")
    else:
        target = _set_node(where, str(secret))(tmp_path)
    line = validate_error(target, cwd=tmp_path)
    assert "shadow" in line
    assert SECRET not in line and "root:" not in line and "alice" not in line


def test_a_secret_file_as_profile_is_not_echoed_even_untruncated(tmp_path: Path) -> None:
    """The CLI cuts long lines; the profile's own message must already hide every line of the file."""
    with pytest.raises(InputError) as err:
        load_profile(str(_secret_file(tmp_path)))
    message = str(err.value)
    assert "<key>: Extra inputs are not permitted" in message
    assert SECRET not in message and "root:" not in message and "\n" not in message


@pytest.mark.skipif(not os.access("/etc/shadow", os.R_OK), reason="/etc/shadow not readable here")
@pytest.mark.parametrize("field", ["profile", "charged_as"])
def test_etc_shadow_is_never_echoed(tmp_path: Path, field: str) -> None:
    line = validate_error(_set_node(field, "/etc/shadow")(tmp_path), cwd=tmp_path)
    for entry in Path("/etc/shadow").read_text().splitlines():
        assert entry not in line
        fields = entry.split(":")
        if len(fields) > 1 and len(fields[1]) > 2:  # a password hash (not "*" or "!")
            assert fields[1] not in line
    assert "/etc/shadow" in line


# ------------------------------------------------------------------------------------ the loader itself


def test_the_yaml_bomb_is_refused_quickly(tmp_path: Path) -> None:
    (tmp_path / "bomb.yaml").write_text(BOMB)
    start = time.monotonic()
    with pytest.raises(InputError, match=r"line 7, column \d+: expands to more than"):
        load_yaml(tmp_path / "bomb.yaml", "scenario")
    assert time.monotonic() - start < 1.0


def test_nesting_at_the_limit_loads_and_one_more_level_does_not(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("[" * YAML_MAX_DEPTH + "]" * YAML_MAX_DEPTH)
    assert load_yaml(path, "scenario") is not None
    path.write_text("[" * (YAML_MAX_DEPTH + 1) + "]" * (YAML_MAX_DEPTH + 1))
    with pytest.raises(InputError, match=f"line 1, column {YAML_MAX_DEPTH + 1}: nested more than"):
        load_yaml(path, "scenario")


def test_aliases_and_merge_keys_still_work(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text("base: &b {x: 1, y: 2}\nover:\n  <<: *b\n  x: 3\ncopy: *b\n")
    assert load_yaml(path, "scenario") == {"base": {"x": 1, "y": 2}, "over": {"x": 3, "y": 2},
                                           "copy": {"x": 1, "y": 2}}


def test_duplicate_keys_are_refused_in_nested_and_merged_mappings(tmp_path: Path) -> None:
    path = tmp_path / "d.yaml"
    path.write_text("a:\n  b: 1\n  c: 2\n  b: 3\n")
    with pytest.raises(InputError, match=r"d\.yaml: line 4, column 3: duplicate key 'b'"):
        load_yaml(path, "scenario")
    path.write_text("a:\n  <<: {x: 1, x: 2}\n")
    with pytest.raises(InputError, match="duplicate key 'x'"):
        load_yaml(path, "scenario")


def test_syntax_errors_give_the_place_not_the_text(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(f"name: x\nkey: [{SECRET}\nnext: 1\n")
    with pytest.raises(InputError) as err:
        load_yaml(path, "scenario")
    message = str(err.value)
    assert message.startswith(f"scenario {path}: line 3, column ") and "unreadable YAML" in message
    assert SECRET not in message and "\n" not in message


def test_read_text_limits_bytes_and_drops_a_bom(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_bytes(b"\xef\xbb\xbfhello")
    assert read_text(path, "prompt file", 8) == "hello"
    with pytest.raises(InputError, match="larger than the 7 bytes allowed for a prompt file"):
        read_text(path, "prompt file", 7)
    with pytest.raises(InputError, match="contains a NUL byte"):
        read_text(f"{path}\0x", "prompt file", 8)


def test_show_path_keeps_messages_on_one_short_line() -> None:
    assert show_path("a\nb") == "a\\nb"
    long = show_path("x" * 10_000)
    assert len(long) < 250 and "10,000 characters" in long
