"""Run directories: netsim never deletes or overwrites what it did not write (issue 11, item 1).

Every test runs in a sandbox: the working directory is `tmp_path/work`, with canary files in it, beside
the target, inside the target and one level up. A refused command must exit 2 with exactly one
`error:` line on stderr and leave every file under `tmp_path` byte for byte as it was.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

import netsim
from netsim.cli import main
from netsim.errors import InputError
from netsim.paths import staged_dir
from netsim.rundir import MARKER, check_run_dir

RUN_FILES = {"requests.parquet", "requests.csv", "events.parquet", "summary.json", "scenario.resolved.yaml",
             MARKER}

# One phone asking a cloud model over one link: a whole run takes well under a second, and the prompts
# come from a file, so no corpus is fetched.
SCENARIO = {
    "name": "tiny",
    "seed": 1,
    "topology": {
        "nodes": {
            "phone": {"role": "device", "profile": "oneplus-12", "models": ["shakespeare-slm"]},
            "cloud": {"role": "cloud", "profile": "nvidia-a100-80gb",
                      "models": [{"name": "shakespeare-slm", "charged_as": "qwen3-8b"}]},
        },
        "links": [{"src": "phone", "dst": "cloud", "rate_mbps": 10, "delay_ms": 5}],
    },
    "workload": {"n_requests": 1, "max_new_tokens": 4, "prompts": {"source": "file", "path": "prompts.txt"}},
    "policy": {"name": "cloud_only"},
}

Snapshot = dict[str, bytes | str]


@dataclass(frozen=True)
class Sandbox:
    root: Path  # tmp_path: the working directory's parent, holding a canary of its own
    work: Path  # the working directory, holding the scenario and canaries

    def snapshot(self) -> Snapshot:
        """Every entry under the sandbox root: file bytes, `dir`, or where a symlink points."""
        entries: Snapshot = {}
        for path in sorted(self.root.rglob("*")):
            rel = path.relative_to(self.root).as_posix()
            if path.is_symlink():
                entries[rel] = f"link -> {os.readlink(path)}"
            elif path.is_dir():
                entries[rel] = "dir"
            else:
                entries[rel] = path.read_bytes()
        return entries


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "parent-canary.txt").write_text("one level above the working directory\n")
    (work / "canary.txt").write_text("in the working directory\n")
    (work / "prompts.txt").write_text("To be, or not to be\nNow is the winter of our discontent\n")
    (work / "s.yaml").write_text(yaml.safe_dump(SCENARIO, sort_keys=False))
    monkeypatch.chdir(work)
    return Sandbox(tmp_path, work)


@dataclass(frozen=True)
class Outcome:
    code: int
    stdout: str
    errors: list[str]  # stderr lines, without rich's progress output (written only on success)


@pytest.fixture
def netsim_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Callable[..., Outcome]:
    """`netsim ARGS…` in this process, as the console script runs it (sys.argv, then SystemExit)."""

    def call(*args: str) -> Outcome:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["netsim", *args])
        with pytest.raises(SystemExit) as exit_:
            main()
        out, err = capsys.readouterr()
        return Outcome(int(exit_.value.code or 0), out, err.splitlines())

    return call


def refused(sandbox: Sandbox, netsim_cli: Callable[..., Outcome], *args: str) -> str:
    """Assert the command is refused with one line and touches nothing; return that line."""
    before = sandbox.snapshot()
    outcome = netsim_cli(*args)
    assert outcome.code == 2, outcome
    assert len(outcome.errors) == 1 and outcome.errors[0].startswith("error:"), outcome.errors
    assert sandbox.snapshot() == before
    return outcome.errors[0]


def ran(netsim_cli: Callable[..., Outcome], *args: str) -> Outcome:
    outcome = netsim_cli(*args)
    assert outcome.code == 0, outcome.errors
    return outcome


def test_a_run_dir_holds_its_marker_listing_what_netsim_wrote(sandbox: Sandbox,
                                                               netsim_cli: Callable[..., Outcome]) -> None:
    ran(netsim_cli, "run", "s.yaml", "-o", "out")
    out = sandbox.work / "out"
    assert {p.name for p in out.iterdir()} == RUN_FILES
    marker = json.loads((out / MARKER).read_text())
    assert marker == {"netsim_version": netsim.__version__, "scenario": "tiny",
                      "files": sorted(RUN_FILES - {MARKER})}
    assert [p.name for p in sandbox.work.iterdir() if p.name.startswith(".")] == []  # no staging left


@pytest.mark.parametrize(("out", "reason"), [
    (".", "is the working directory"),
    ("", "is the working directory"),  # Path('') is '.'
    ("..", "contains the working directory"),
    ("../..", "contains the working directory"),
    ("/", "is the root directory"),
    ("/proc", "is under the system directory /proc"),
    ("/etc/netsim-run-test", "is under the system directory /etc"),
    ("/usr/lib/netsim-run-test", "is under the system directory /usr"),
    ("/var/lib/netsim-run-test", "is under the system directory /var/lib"),
    ("canary.txt", "exists and is not a directory"),
    ("canary.txt/run", "canary.txt is not a directory"),
    ("x" * 300, "longer than the file system allows"),
])
def test_dangerous_out_dirs_are_refused(sandbox: Sandbox, netsim_cli: Callable[..., Outcome], out: str,
                                        reason: str) -> None:
    line = refused(sandbox, netsim_cli, "run", "s.yaml", "-o", out)
    assert line.startswith("error: -o ") and reason in line
    assert not Path("/etc/netsim-run-test").exists() and not Path("/var/lib/netsim-run-test").exists()


def test_the_working_directory_by_absolute_path_is_refused(sandbox: Sandbox,
                                                           netsim_cli: Callable[..., Outcome]) -> None:
    for out, reason in [(sandbox.work, "is the working directory"), (sandbox.root, "contains the working")]:
        assert reason in refused(sandbox, netsim_cli, "run", "s.yaml", "-o", str(out))


def test_an_existing_user_dir_is_refused_even_with_overwrite(sandbox: Sandbox,
                                                             netsim_cli: Callable[..., Outcome]) -> None:
    mine = sandbox.work / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("months of work\n")
    for extra in ([], ["--overwrite"]):
        line = refused(sandbox, netsim_cli, "run", "s.yaml", "-o", "mine", *extra)
        assert "is not a netsim run directory" in line
    (mine / MARKER).write_text("not json")  # a marker netsim did not write does not count
    assert "is not a netsim run directory" in refused(sandbox, netsim_cli, "run", "s.yaml", "-o", "mine",
                                                      "--overwrite")


@pytest.mark.parametrize("dangling", [False, True])
def test_a_symlink_is_refused(sandbox: Sandbox, netsim_cli: Callable[..., Outcome], dangling: bool) -> None:
    pointee = sandbox.work / "pointee"
    if not dangling:
        pointee.mkdir()
        (pointee / "keep.txt").write_text("behind a symlink\n")
    (sandbox.work / "link").symlink_to(pointee)
    assert "is a symbolic link" in refused(sandbox, netsim_cli, "run", "s.yaml", "-o", "link")


def test_a_symlink_into_a_system_dir_is_refused(sandbox: Sandbox, netsim_cli: Callable[..., Outcome]) -> None:
    (sandbox.work / "cfg").symlink_to("/etc")
    line = refused(sandbox, netsim_cli, "run", "s.yaml", "-o", "cfg/netsim-run-test")
    assert "is under the system directory /etc" in line


def test_an_earlier_run_is_replaced_only_with_overwrite(sandbox: Sandbox,
                                                        netsim_cli: Callable[..., Outcome]) -> None:
    ran(netsim_cli, "run", "s.yaml", "-o", "out")
    out = sandbox.work / "out"
    (sandbox.work / "beside-out.txt").write_text("a sibling of the run dir\n")
    line = refused(sandbox, netsim_cli, "run", "s.yaml", "-o", "out")
    assert line == "error: -o out: exists; pass --overwrite to replace an earlier netsim run"

    (out / "summary.json").write_text("stale")  # netsim's own file: replaced, not kept
    ran(netsim_cli, "run", "s.yaml", "-o", "out", "--overwrite", "--seed", "2")
    assert json.loads((out / "summary.json").read_text())["seed"] == 2
    assert {p.name for p in out.iterdir()} == RUN_FILES
    assert (sandbox.work / "beside-out.txt").is_file() and (sandbox.work / "canary.txt").is_file()
    assert [p.name for p in sandbox.work.iterdir() if p.name.startswith(".")] == []  # nothing set aside


def test_overwrite_refuses_a_run_dir_holding_a_users_file(sandbox: Sandbox,
                                                          netsim_cli: Callable[..., Outcome]) -> None:
    ran(netsim_cli, "run", "s.yaml", "-o", "out")
    (sandbox.work / "out" / "notes.txt").write_text("my notes about this run\n")
    (sandbox.work / "out" / "plots").mkdir()
    line = refused(sandbox, netsim_cli, "run", "s.yaml", "-o", "out", "--overwrite")
    assert "holds files a netsim run does not write (notes.txt, plots)" in line


def test_without_out_a_rerun_gets_a_fresh_name(sandbox: Sandbox, netsim_cli: Callable[..., Outcome]) -> None:
    first = ran(netsim_cli, "run", "s.yaml")
    second = ran(netsim_cli, "run", "s.yaml")
    third = ran(netsim_cli, "run", "s.yaml")
    assert "results in runs/tiny/" in first.stdout
    assert "results in runs/tiny-2/" in second.stdout and "results in runs/tiny-3/" in third.stdout
    runs = sandbox.work / "runs"
    assert sorted(p.name for p in runs.iterdir()) == ["tiny", "tiny-2", "tiny-3"]
    # Asked explicitly, a rerun replaces runs/<name> itself instead of adding another.
    assert "results in runs/tiny/" in ran(netsim_cli, "run", "s.yaml", "--overwrite").stdout
    assert sorted(p.name for p in runs.iterdir()) == ["tiny", "tiny-2", "tiny-3"]


def test_a_fresh_name_skips_a_users_dir_of_that_name(sandbox: Sandbox,
                                                     netsim_cli: Callable[..., Outcome]) -> None:
    (sandbox.work / "runs" / "tiny").mkdir(parents=True)
    (sandbox.work / "runs" / "tiny" / "mine.txt").write_text("not netsim's\n")
    assert "results in runs/tiny-2/" in ran(netsim_cli, "run", "s.yaml").stdout
    assert (sandbox.work / "runs" / "tiny" / "mine.txt").read_text() == "not netsim's\n"


@pytest.mark.parametrize("name", ["..", ".", "/etc", "runs/../..", "a b", "-rf", "n" * 65])
def test_a_scenario_name_must_be_a_short_slug(sandbox: Sandbox, netsim_cli: Callable[..., Outcome],
                                              name: str) -> None:
    raw = {**SCENARIO, "name": name}
    (sandbox.work / "bad.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    assert refused(sandbox, netsim_cli, "run", "bad.yaml").startswith("error: name: ")
    assert refused(sandbox, netsim_cli, "run", "s.yaml", "--set", f"name={name}").startswith("error: name: ")


@pytest.mark.parametrize("out_dir", [".", "", "..", "/proc", "canary.txt"])
def test_outputs_dir_gets_the_same_checks_in_run_and_validate(sandbox: Sandbox,
                                                              netsim_cli: Callable[..., Outcome],
                                                              out_dir: str) -> None:
    override = f"outputs.dir='{out_dir}'"
    assert refused(sandbox, netsim_cli, "run", "s.yaml", "--set", override).startswith("error: outputs.dir: ")
    line = refused(sandbox, netsim_cli, "validate", "s.yaml", "--set", override)
    assert line.startswith("error: outputs.dir: ")


def test_validate_accepts_an_earlier_run_as_outputs_dir(sandbox: Sandbox,
                                                        netsim_cli: Callable[..., Outcome]) -> None:
    ran(netsim_cli, "run", "s.yaml", "-o", "out")
    ran(netsim_cli, "validate", "s.yaml", "--set", "outputs.dir=out")
    assert "exists; pass --overwrite" in refused(sandbox, netsim_cli, "run", "s.yaml", "--set",
                                                 "outputs.dir=out")


def test_a_read_only_parent(sandbox: Sandbox, netsim_cli: Callable[..., Outcome]) -> None:
    locked = sandbox.work / "locked"
    locked.mkdir()
    (locked / "keep.txt").write_text("in a read-only directory\n")
    locked.chmod(0o555)
    try:
        if os.geteuid() != 0:
            assert "locked is not writable" in refused(sandbox, netsim_cli, "run", "s.yaml", "-o",
                                                       "locked/run")
            return
        # Root writes through permission bits, so what holds is: the run lands there, nothing else moves.
        ran(netsim_cli, "run", "s.yaml", "-o", "locked/run")
        assert {p.name for p in locked.iterdir()} == {"keep.txt", "run"}
    finally:
        locked.chmod(0o755)
    pytest.skip("running as root: permission bits do not stop root, so the refusal cannot be observed "
                "(test_an_unwritable_parent_is_named covers the check itself)")


def test_an_unwritable_parent_is_named(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "access", lambda *args, **kwargs: False)
    assert check_run_dir("sub/run") == f"sub/run: {sandbox.work} is not writable"


@pytest.fixture
def results(sandbox: Sandbox) -> netsim.Results:
    return netsim.run(netsim.load_scenario(sandbox.work / "s.yaml"))


def test_an_os_error_while_writing_is_one_line(sandbox: Sandbox, results: netsim.Results,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(*args: object, **kwargs: object) -> str:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("tempfile.mkdtemp", denied)
    before = sandbox.snapshot()
    with pytest.raises(InputError) as err:
        results.write("out")
    assert str(err.value) == "out: cannot write the run directory (Permission denied)"
    assert sandbox.snapshot() == before


def test_a_failed_swap_keeps_the_earlier_run(sandbox: Sandbox, results: netsim.Results,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    out = results.write("out")
    before = sandbox.snapshot()
    rename = Path.rename

    def rename_failing_into_out(self: Path, target: str | Path) -> Path:
        if Path(target) == out and self.name.startswith(".out."):  # the staged run moving in
            raise OSError(28, "No space left on device")
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", rename_failing_into_out)
    with pytest.raises(InputError, match="cannot write the run directory"):
        results.write("out", overwrite=True)
    assert sandbox.snapshot() == before  # the old run is back in place; nothing set aside is left


def test_staged_dir_replaces_only_when_told(tmp_path: Path) -> None:
    target = tmp_path / "model"
    target.mkdir()
    (target / "weights.bin").write_bytes(b"old")
    with pytest.raises(InputError, match="exists"), staged_dir(target) as staging:
        (staging / "weights.bin").write_bytes(b"new")
    assert (target / "weights.bin").read_bytes() == b"old"
    with staged_dir(target, replace=True) as staging:
        (staging / "weights.bin").write_bytes(b"new")
    assert (target / "weights.bin").read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
