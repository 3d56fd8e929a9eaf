"""Fuzzing the input boundary (issue 11, item 7): whatever a scenario file holds, netsim answers.

Every bundled scenario is mutated (numbers, strings, deleted and duplicated keys, wrong types, file
references) or replaced by raw bytes, then handed to `netsim validate` and, for a few, `netsim run`. The
answer must be exit 0, or exit 2 with exactly one stderr line starting `error:`; never a traceback, never
silence past the time limit, never a canary's secret in the output, and no file touched outside the run
directory. Where the issue's spec says an input is wrong (non-finite numbers, duplicate keys, invalid
UTF-8, a bad file reference, a path as `name`), exit 0 is a failure too. The inputs the issue reports
by name run every time as fixed cases, whatever the random draw.

`validate` runs in-process: a subprocess per example spends most of a second importing, and a few hundred
cases must fit in CI. `run`, and files that can block or exhaust a reader (FIFO, /dev/zero, deep nesting,
aliases), run as subprocesses with a timeout and an address-space limit, so a hang or a runaway
allocation fails one test instead of the machine. `-m slow` runs thousands of cases.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import math
import os
import re
import resource
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any
from unittest import mock

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from netsim import cli
from netsim.paths import PROJECT_ROOT

SCENARIOS = sorted((PROJECT_ROOT / "scenarios").glob("*.yaml"))
BASE_DOCS = {p.stem: yaml.safe_load(p.read_text(encoding="utf-8")) for p in SCENARIOS}
BASE_BYTES = {p.stem: p.read_bytes() for p in SCENARIOS}

VALIDATE_TIMEOUT_S = 20.0
RUN_TIMEOUT_S = 60.0
SUBPROCESS_MEMORY_BYTES = 4 << 30
"""A normal `run` needs ~0.5 GiB of address space; the issue saw /dev/zero reach 3.5 GB before failing."""

RUN_SIZE = {"n_requests": 2, "max_new_tokens": 4}
"""Written into the scenario before mutating, not passed as `--set`, so a mutated request count or
token limit still reaches `run` (it must be refused or finish, not hang); a second or two per run."""

SECRET = "netsim-fuzz-secret-5b1e0c7d"
"""Content of the canary files. Errors name files but never echo them (issue 11, item 4), so this
string appearing in any output is a leak."""

SANDBOX = "@SANDBOX@"
"""Placeholder for the per-example sandbox directory in generated YAML, so that a drawn example does
not depend on where the temporary directory landed (hypothesis replays choices, not paths)."""

SLUG = re.compile(r"[A-Za-z0-9._-]+")

COMMON = {"deadline": None, "derandomize": True, "database": None,
          "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large,
                                    HealthCheck.large_base_example]}
"""Repeatable in CI (derandomize, no example database left in the tree); in-process examples take ~0.1 s."""

NO_SHRINK = (Phase.explicit, Phase.reuse, Phase.generate)
"""Shrinking a subprocess case can cost a minute per step (timeouts); report the case as found."""


# ------------------------------------------------------------------------------------------ value pools

NUMBERS: list[Any] = [0, -1, -0.0, 1e300, -1e300, math.inf, -math.inf, math.nan, 2**70, -(2**70),
                      1e-300, 5e-324, 1e308, 2**63, 2**64, 0.5]
"""Boundaries the issue names (0, negative, huge, tiny, inf, nan, -0.0, 2**70) plus int64 edges."""

STRINGS: list[str] = [
    "", "x" * 10_000, "../..", "/etc/passwd", f"{SANDBOX}/canary.txt", ".", "..", "~", "$HOME",
    "ℕetsim ünïcødé 测试 🚀", "\u202eevil", "\x00", "a\x07b\x1b[31mred\x1b[0m", "line1\nline2",
    "tab\tcr\r", "%s%n{0}", "null", "é" * 10_000,
]
"""Empty, 10,000 characters, path-like, unicode and control characters (a newline inside a value must
not turn a one-line error into two)."""

FILE_REFS: list[str] = [
    "canary.txt", "files/secret.yaml", "files/bad_utf8.txt", "files/random.bin", "files/empty.txt",
    "files/subdir", "files/missing.yaml", "../..", "/etc/passwd", "/", ".", "", f"{SANDBOX}/canary.txt",
    "x" * 10_000,
]
"""Values for fields that name a file; relative ones resolve beside the scenario, i.e. in the sandbox.
Nothing here can block or exhaust a reader: those are the subprocess hazards below."""

TRACES = {"nan": ["0.5", "nan", "1.0"], "negative": ["-1.0", "0.5"], "inf": ["0.5", "inf"],
          "unsorted": ["2.0", "1.0", "3.0"]}
"""Arrival traces `validate` must open and refuse (issue 11, item 4); files/trace_<name>.csv."""

GOOD_PROMPT_FILES = frozenset({"canary.txt", f"{SANDBOX}/canary.txt", "files/secret.yaml", "/etc/passwd"})
"""Readable UTF-8 text files with at least one non-empty line: valid prompt files, so no verdict."""

SCALARS = st.one_of(st.sampled_from(NUMBERS), st.sampled_from(STRINGS), st.booleans(), st.none(),
                    st.floats(), st.integers(), st.text(max_size=30))


def numbers() -> st.SearchStrategy[Any]:
    return st.one_of(st.sampled_from(NUMBERS), st.floats(), st.integers())


def strings() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(STRINGS), st.text(max_size=30))


# ------------------------------------------------------------------------------------- a fuzz input


@dataclass
class Case:
    """One input: the scenario file's bytes (with SANDBOX placeholders) and what the spec demands.

    `must_fail` lists the reasons the issue's spec requires exit 2; empty means 0 and 2 are both fine.
    `mentions` is set only for the issue's own examples, where the right YAML path is known.
    """

    source: str
    data: bytes
    mutations: list[str] = field(default_factory=list)
    must_fail: list[str] = field(default_factory=list)
    mentions: str = ""  # on exit 2, the error line must contain this (the YAML path or the file)

    def __repr__(self) -> str:
        text = self.data.decode("utf-8", "backslashreplace")
        shown = text if len(text) < 3000 else text[:3000] + f"… ({len(text)} chars)"
        return (f"Case({self.source}, mutations={self.mutations}, must_fail={self.must_fail})\n"
                f"--- scenario file ---\n{shown}")


YamlPath = tuple[str | int, ...]


class _Pairs(list):  # type: ignore[type-arg]
    """A mapping written as (key, value) pairs, so a key can appear twice in the emitted YAML."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Pairs, lambda d, v: d.represent_mapping("tag:yaml.org,2002:map", list(v)))


def _walk(node: Any, path: YamlPath = ()) -> Iterator[tuple[YamlPath, Any]]:
    yield path, node
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        yield from _walk(child, (*path, key))


def _get(root: Any, path: YamlPath) -> Any:
    for step in path:
        root = root[step]
    return root


def _shown(path: YamlPath) -> str:
    return ".".join(str(p) for p in path[1:]) or "<root>"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# Every mutation works on `box`, a one-element list holding the document, so the root itself can be
# replaced (a list or a scalar at the top) like any other node; paths start with 0.
Draw = Callable[[st.SearchStrategy[Any]], Any]
Verdicts = list[tuple[YamlPath, Any, str]]
"""(path, the object placed there, reason): the reason holds if that very object is still there at the
end (a later mutation may have deleted or replaced it)."""


SCALE_FACTORS = [1e-12, 1e-9, 1e-3, 1e3, 1e6, 1e9, 1e12]
"""Scaling a value keeps its type and often its validity: the issue's hangs (a 1e-9 Mbit/s link, a
1e-9 ms coherence time, a 1e-300 arrival rate) were in-range numbers that validation let through."""


def _replace_leaf(draw: Draw, box: list[Any], log: list[str], values: st.SearchStrategy[Any],
                  prefer_numbers: bool) -> None:
    leaves = [p for p, v in _walk(box) if p and not isinstance(v, dict | list)]
    if prefer_numbers:  # numeric leaves listed twice: most draws hit a number, some hit anything
        leaves += [p for p in leaves if _is_number(_get(box, p))]
    if not leaves:
        return
    path = draw(st.sampled_from(leaves))
    original = _get(box, path)
    if prefer_numbers and _is_number(original) and abs(original) < 1e290:  # int * float must fit a float
        values = st.one_of(values, st.sampled_from(SCALE_FACTORS).map(lambda factor: original * factor))
    value = draw(values)
    _get(box, path[:-1])[path[-1]] = value
    log.append(f"{_shown(path)} = {value!r:.60}")


def _mutate_number(draw: Draw, box: list[Any], log: list[str], verdicts: Verdicts,
                   dups: Verdicts) -> None:
    _replace_leaf(draw, box, log, numbers(), prefer_numbers=True)


def _mutate_string(draw: Draw, box: list[Any], log: list[str], verdicts: Verdicts,
                   dups: Verdicts) -> None:
    _replace_leaf(draw, box, log, strings(), prefer_numbers=False)


def _delete(draw: Draw, box: list[Any], log: list[str], verdicts: Verdicts, dups: Verdicts) -> None:
    paths = [p for p, _ in _walk(box) if len(p) > 1]
    if not paths:
        return
    path = draw(st.sampled_from(paths))
    del _get(box, path[:-1])[path[-1]]
    log.append(f"del {_shown(path)}")


def _duplicate_key(draw: Draw, box: list[Any], log: list[str], verdicts: Verdicts,
                   dups: Verdicts) -> None:
    """Recorded, not applied: the repeated key is written at the end (a dict cannot hold it twice)."""
    keys = [(p, k) for p, v in _walk(box) if isinstance(v, dict) for k in v]
    if not keys:
        return
    path, key = draw(st.sampled_from(keys))
    original = _get(box, path)[key]
    value = draw(st.one_of(st.just(copy.deepcopy(original)), SCALARS))
    dups.append(((*path, key), value, f"duplicate key {_shown((*path, key))}"))
    log.append(f"dup {_shown((*path, key))}: {value!r:.60}")


def _wrong_type(draw: Draw, box: list[Any], log: list[str], verdicts: Verdicts, dups: Verdicts) -> None:
    paths = [p for p, _ in _walk(box) if p]
    path = draw(st.sampled_from(paths))
    value = _get(box, path)
    if isinstance(value, dict):
        options = [list(value.values()), draw(SCALARS)]
    elif isinstance(value, list):
        options = [{f"k{i}": v for i, v in enumerate(value)}, value[0] if value else None, draw(SCALARS)]
    else:
        options = [[value], {str(value): value}, {}]
    replacement = draw(st.sampled_from(options))
    _get(box, path[:-1])[path[-1]] = replacement
    log.append(f"{_shown(path)}: {type(value).__name__} -> {type(replacement).__name__}")


def _file_reference(draw: Draw, box: list[Any], log: list[str], verdicts: Verdicts,
                    dups: Verdicts) -> None:
    """Point a field that names a file (or, for `name`, becomes one) at something it must not use."""
    doc = box[0]
    if not isinstance(doc, dict):
        return
    ref = draw(st.sampled_from(FILE_REFS))
    nodes = doc.get("topology", {}).get("nodes") if isinstance(doc.get("topology"), dict) else None
    hosts = sorted(n for n, s in nodes.items() if isinstance(s, dict) and s.get("role") != "router") \
        if isinstance(nodes, dict) else []
    targets = ["extends", "name", "outputs.dir"]
    if isinstance(doc.get("workload"), dict):
        targets += ["prompts", "trace"]
    if hosts:
        targets += ["profile", "model", "charged_as"]
    target = draw(st.sampled_from(targets))
    node = draw(st.sampled_from(hosts)) if target in ("profile", "model", "charged_as") else ""
    reason = f"{target} -> {ref!r:.40}"
    if target == "extends":
        doc["extends"] = ref
        verdicts.append(((0, "extends"), ref, f"extends names no usable scenario ({ref!r:.40})"))
    elif target == "name":
        doc["name"] = ref  # judged at the end with every other `name`: it must be a slug
    elif target == "outputs.dir":
        doc["outputs"] = {"dir": ref}  # validate may or may not judge the run dir: no verdict
    elif target == "prompts":
        doc["workload"]["prompts"] = {"source": "file", "path": ref}
        if ref not in GOOD_PROMPT_FILES:
            verdicts.append(((0, "workload", "prompts", "path"), ref, f"prompt file {ref!r:.40} is unusable"))
    elif target == "trace":
        doc["workload"]["arrival"] = {"process": "trace", "path": ref}
        verdicts.append(((0, "workload", "arrival", "path"), ref, f"trace {ref!r:.40} has no t_s column"))
    elif target == "profile":
        nodes[node]["profile"] = ref
        verdicts.append(((0, "topology", "nodes", node, "profile"), ref, f"profile {ref!r:.40}"))
    elif target == "model":
        nodes[node]["models"] = [{"name": ref}]
        verdicts.append(((0, "topology", "nodes", node, "models", 0, "name"), ref, f"model {ref!r:.40}"))
    else:
        nodes[node]["models"] = [{"name": "shakespeare-slm", "charged_as": ref}]
        verdicts.append(((0, "topology", "nodes", node, "models", 0, "charged_as"), ref,
                         f"cost card {ref!r:.40}"))
    log.append(f"{node + '.' if node else ''}{reason}")


MUTATORS = {"number": _mutate_number, "string": _mutate_string, "delete": _delete,
            "duplicate": _duplicate_key, "wrong_type": _wrong_type, "file_ref": _file_reference}


def _still_there(box: list[Any], path: YamlPath, value: Any) -> bool:
    try:
        return _get(box, path) is value
    except (KeyError, IndexError, TypeError):
        return False


def _emit(box: list[Any], dups: Verdicts) -> tuple[str, list[str]]:
    """YAML text of the document with each recorded duplicate key written a second time."""
    extra: dict[YamlPath, list[tuple[Any, Any]]] = {}
    applied: list[str] = []
    for path, value, reason in dups:
        try:
            parent = _get(box, path[:-1])
        except (KeyError, IndexError, TypeError):
            continue
        if isinstance(parent, dict) and path[-1] in parent:
            extra.setdefault(path[:-1], []).append((path[-1], value))
            applied.append(reason)

    def rebuild(node: Any, path: YamlPath) -> Any:
        if isinstance(node, dict):
            pairs = [(k, rebuild(v, (*path, k))) for k, v in node.items()]
            return _Pairs(pairs + extra[path]) if path in extra else dict(pairs)
        if isinstance(node, list):
            return [rebuild(v, (*path, i)) for i, v in enumerate(node)]
        return node

    text = yaml.dump(rebuild(box[0], (0,)), Dumper=_Dumper, allow_unicode=True, sort_keys=False, width=120)
    return text, applied


def _non_finite(node: Any) -> bool:
    return any(isinstance(v, float) and not math.isfinite(v) for _, v in _walk(node))


@st.composite
def mutated_scenarios(draw: Draw, kinds: tuple[str, ...] = tuple(MUTATORS), max_mutations: int = 3,
                      workload: dict[str, Any] | None = None) -> Case:
    """A bundled scenario (with `workload` fields replaced first, if given) after 1..max_mutations."""
    source = draw(st.sampled_from(sorted(BASE_DOCS)))
    box = [copy.deepcopy(BASE_DOCS[source])]
    box[0]["workload"].update(workload or {})
    log: list[str] = []
    verdicts: Verdicts = []
    dups: Verdicts = []
    for _ in range(draw(st.integers(1, max_mutations))):
        MUTATORS[draw(st.sampled_from(kinds))](draw, box, log, verdicts, dups)
    text, dup_reasons = _emit(box, dups)
    must_fail = [reason for path, value, reason in verdicts if _still_there(box, path, value)] + dup_reasons
    if _non_finite(box) or any(_non_finite(v) for _, v, _ in dups):
        must_fail.append("a number is inf or nan")
    doc = box[0]
    name = doc.get("name") if isinstance(doc, dict) else None
    if isinstance(name, str) and (not SLUG.fullmatch(name) or name in (".", "..")):
        must_fail.append(f"name {name!r:.40} is not a slug")
    return Case(source, text.encode("utf-8"), log, must_fail)


@st.composite
def raw_scenario_files(draw: Draw) -> Case:
    """Bytes no YAML library should be trusted with: random, not UTF-8, cut short, NUL, UTF-16."""
    source = draw(st.sampled_from(sorted(BASE_BYTES)))
    base = BASE_BYTES[source]
    kind = draw(st.sampled_from(["random", "invalid_utf8", "truncated", "nul", "bom", "utf16"]))
    if kind == "random":
        data = draw(st.binary(max_size=4096))
    elif kind in ("invalid_utf8", "nul"):
        at = draw(st.integers(0, len(base)))
        bad = b"\x00" if kind == "nul" else draw(st.sampled_from(
            [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xe9", b"\xf8\x88\x80\x80\x80", b"\xc0\xaf"]))
        data = base[:at] + bad + base[at:]
    elif kind == "truncated":
        data = base[: draw(st.integers(0, len(base) - 1))]
    elif kind == "bom":
        data = b"\xef\xbb\xbf" + base
    else:
        data = base.decode("utf-8").encode("utf-16")
    try:
        data.decode("utf-8")
        must_fail = []
    except UnicodeDecodeError:
        must_fail = ["the file is not valid UTF-8"]
    return Case(source, data, [kind], must_fail)


# --------------------------------------------------------------------------------------------- sandbox


@dataclass(frozen=True)
class Sandbox:
    """A working directory with canaries in it, beside the run directory and (optionally) inside it.

    `out` (runs/out) is what `run -o` is given; `out_exists` pre-creates it holding a user's file, which
    netsim must refuse to replace (it is not an earlier netsim run).
    """

    root: Path
    out_exists: bool

    @property
    def out(self) -> Path:
        return self.root / "runs" / "out"

    @classmethod
    def create(cls, root: Path, out_exists: bool = False) -> Sandbox:
        (root / "files" / "subdir").mkdir(parents=True)
        (root / "runs").mkdir()
        (root / "canary.txt").write_text(SECRET + "\n")
        (root / "runs" / "canary.txt").write_text(SECRET + "\n")
        (root / "files" / "secret.yaml").write_text(f"token: {SECRET}\n")
        (root / "files" / "bad_utf8.txt").write_bytes(b"caf\xe9 \xff\xfe prompt\n")
        (root / "files" / "random.bin").write_bytes(bytes(range(256)) * 4)
        (root / "files" / "empty.txt").write_bytes(b"")
        for name, times in TRACES.items():
            (root / "files" / f"trace_{name}.csv").write_text("t_s\n" + "\n".join(times) + "\n")
        if out_exists:
            cls(root, out_exists).out.mkdir()
            (root / "runs" / "out" / "canary.txt").write_text(SECRET + "\n")
        return cls(root, out_exists)

    def write_scenario(self, case: Case) -> Path:
        path = self.root / "scenario.yaml"
        path.write_bytes(case.data.replace(SANDBOX.encode(), str(self.root).encode()))
        return path

    def snapshot(self) -> dict[str, tuple[Any, ...]]:
        """Every entry under the sandbox with type, size, mtime and content hash; a run dir netsim was
        asked to create is left out (it is the one place netsim may write). FIFOs are stat'ed, never read."""
        skip = None if self.out_exists else self.out
        entries: dict[str, tuple[Any, ...]] = {}
        for dirpath, dirnames, filenames in os.walk(self.root):
            here = Path(dirpath)
            if skip is not None and here == skip.parent:
                dirnames[:] = [d for d in dirnames if here / d != skip]
                filenames = [f for f in filenames if here / f != skip]
            for name in [*dirnames, *filenames]:
                path = here / name
                info = path.lstat()
                if stat.S_ISDIR(info.st_mode):  # entries are listed; mtime moves when runs/out appears
                    entries[str(path.relative_to(self.root))] = (stat.S_IFDIR,)
                    continue
                digest = hashlib.sha256(path.read_bytes()).hexdigest() if stat.S_ISREG(info.st_mode) else ""
                entries[str(path.relative_to(self.root))] = (stat.S_IFMT(info.st_mode), info.st_size,
                                                             info.st_mtime_ns, digest)
        return entries


@contextlib.contextmanager
def sandbox(out_exists: bool = False) -> Iterator[Sandbox]:
    # A temporary directory per example: hypothesis runs many examples in one test, and tmp_path is one.
    with tempfile.TemporaryDirectory(prefix="netsim-fuzz-") as tmp:
        yield Sandbox.create(Path(tmp), out_exists)


# ----------------------------------------------------------------------------------------- answering


@dataclass(frozen=True)
class Answer:
    code: int | None  # None: no answer within the time limit
    stdout: str
    stderr: str
    seconds: float


class _NoAnswer(BaseException):
    """Raised by the alarm; a BaseException so that no `except Exception` in netsim swallows it."""


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise _NoAnswer


def validate_in_process(scenario: Path, cwd: Path, timeout_s: float = VALIDATE_TIMEOUT_S) -> Answer:
    """`netsim validate SCENARIO` through `netsim.cli.main`, as the console script calls it."""
    out, err = io.StringIO(), io.StringIO()
    code: int | None
    # main() mounts the sub-apps on every call; in one process that piles up typer groups and makes each
    # later call slower (quadratic over a test). Restore the list so example 300 costs what example 1 did.
    groups = list(cli.app.registered_groups)
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    start = time.monotonic()
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        with (contextlib.chdir(cwd), mock.patch.object(sys, "argv", ["netsim", "validate", str(scenario)]),
              contextlib.redirect_stdout(out), contextlib.redirect_stderr(err)):
            cli.main()
        code = 0
    except SystemExit as exc:
        code = _exit_status(exc, err)
    except _NoAnswer:
        code = None
    except BaseException:  # what the interpreter would print for an exception escaping main()
        import traceback

        err.write(traceback.format_exc())
        code = 1
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        cli.app.registered_groups[:] = groups
    return Answer(code, out.getvalue(), err.getvalue(), time.monotonic() - start)


def _exit_status(exc: SystemExit, err: io.StringIO) -> int:
    """The status the interpreter would exit with: None is 0, a message is printed and means 1."""
    if exc.code is None or isinstance(exc.code, int):
        return exc.code or 0
    err.write(f"{exc.code}\n")
    return 1


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (SUBPROCESS_MEMORY_BYTES, SUBPROCESS_MEMORY_BYTES))


def netsim_subprocess(args: list[str], cwd: Path, timeout_s: float) -> Answer:
    """`python -m netsim ARGS` in its own session, killed with its children if it does not answer."""
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "netsim", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=_limit_memory, env={**os.environ, "COLUMNS": "200"})
    try:
        out, err = proc.communicate(timeout=timeout_s)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        code = None
    return Answer(code, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"),
                  time.monotonic() - start)


def problems_with(answer: Answer, case_must_fail: list[str], timeout_s: float,
                  mentions: str = "", listing: bool = False) -> list[str]:
    """Everything wrong with an answer under the issue's contract; empty when it is fine.

    `listing`: the answer is `netsim validate`'s, which lists every problem on its own `error:` line
    and ends a list of several with `error: N problems` (DESIGN.md's contract); everything else
    answers bad input with exactly one line."""
    problems: list[str] = []
    if answer.code is None:
        return [f"no answer within {timeout_s:.0f} s"]
    lines = [line for line in answer.stderr.split("\n") if line.strip()]
    if answer.code not in (0, 2):
        problems.append(f"exit code {answer.code} (want 0 or 2)")
    if "Traceback" in answer.stdout + answer.stderr:
        problems.append("a traceback in the output")
    if answer.code == 2 and not listing and (len(lines) != 1 or not lines[0].startswith("error:")):
        problems.append(f"exit 2 with {len(lines)} stderr lines (want exactly one starting 'error:')")
    if answer.code == 2 and listing:
        if not lines or not all(line.startswith("error: ") for line in lines):
            problems.append("exit 2, but not every stderr line starts with 'error: '")
        elif len(lines) > 1 and lines[-1] != f"error: {len(lines) - 1} problems":
            problems.append(f"{len(lines)} stderr lines without the closing 'error: N problems' count")
    if answer.code == 2 and mentions and mentions not in answer.stderr:
        problems.append(f"the error does not name {mentions!r}")
    if answer.code == 0 and case_must_fail:
        problems.append(f"exit 0, but the spec requires exit 2: {'; '.join(case_must_fail)}")
    if SECRET in answer.stdout + answer.stderr:
        problems.append("a canary file's content was echoed")
    return problems


def _describe(answer: Answer) -> str:
    def clip(text: str) -> str:
        return text if len(text) < 2000 else text[:2000] + f"… ({len(text)} chars)"

    return (f"exit {answer.code} after {answer.seconds:.1f} s\n--- stdout ---\n{clip(answer.stdout)}"
            f"\n--- stderr ---\n{clip(answer.stderr)}")


def _changed(before: dict[str, tuple[Any, ...]], after: dict[str, tuple[Any, ...]]) -> list[str]:
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def check_validate(case: Case) -> None:
    with sandbox() as box:
        scenario = box.write_scenario(case)
        before = box.snapshot()
        answer = validate_in_process(scenario, box.root)
        touched = _changed(before, box.snapshot())
    problems = problems_with(answer, case.must_fail, VALIDATE_TIMEOUT_S, case.mentions, listing=True)
    problems += [f"touched {path}" for path in touched]
    assert not problems, f"{'; '.join(problems)}\n{_describe(answer)}\n{case!r}"


def check_run(case: Case, out_exists: bool) -> None:
    with sandbox(out_exists) as box:
        box.write_scenario(case)
        before = box.snapshot()
        answer = netsim_subprocess(["run", "scenario.yaml", "-o", "runs/out"], box.root,
                                   RUN_TIMEOUT_S)
        touched = _changed(before, box.snapshot())
        wrote_run = (box.out / "summary.json").is_file()
    must_fail = [*case.must_fail, *(["-o names an existing directory that is not a netsim run"]
                                    if out_exists else [])]
    problems = problems_with(answer, must_fail, RUN_TIMEOUT_S)
    problems += [f"touched {path}" for path in touched]
    if answer.code == 0 and not wrote_run:
        problems.append("exit 0 but no summary.json in the run directory")
    assert not problems, f"{'; '.join(problems)}\n{_describe(answer)}\n{case!r}"


# --------------------------------------------------------------------------------------------- tests


@settings(**COMMON, max_examples=300)
@given(case=mutated_scenarios())
def test_validate_answers_every_mutated_scenario(case: Case) -> None:
    check_validate(case)


@settings(**COMMON, max_examples=100)
@given(case=raw_scenario_files())
def test_validate_answers_every_raw_file(case: Case) -> None:
    check_validate(case)


def _edited(source: str, changes: dict[str, Any], append: str = "") -> bytes:
    """A bundled scenario with `a.b[0].c` fields set (as `--set` spells them) and raw text appended."""
    doc = copy.deepcopy(BASE_DOCS[source])
    for dotted, value in changes.items():
        steps = [int(i) if i else k for k, i in re.findall(r"([^.\[\]]+)|\[(\d+)\]", dotted)]
        _get(doc, tuple(steps[:-1]))[steps[-1]] = value
    return (yaml.dump(doc, Dumper=_Dumper, allow_unicode=True, sort_keys=False, width=120) + append).encode()


ISSUE_CASES: dict[str, tuple[str, dict[str, Any], str, str]] = {
    # id: (scenario, fields to set, text to append, what the one error line must name)
    "charged_as_empty": ("quickstart", {"topology.nodes.phone1.models[0].charged_as": ""}, "", "charged_as"),
    "duplicate_policy_key": ("quickstart", {}, "policy: {name: device_only}\n", "policy"),
    "name_dotdot": ("quickstart", {"name": ".."}, "", "name"),
    "name_dot": ("quickstart", {"name": "."}, "", "name"),
    "name_absolute": ("quickstart", {"name": "/etc"}, "", "name"),
    "seed_1e30": ("quickstart", {"seed": 1e30}, "", "seed"),
    "seed_2_70": ("quickstart", {"seed": 2**70}, "", "seed"),
    "n_requests_1e30": ("quickstart", {"workload.n_requests": 1e30}, "", "n_requests"),
    "n_requests_1e9": ("quickstart", {"workload.n_requests": 10**9}, "", "n_requests"),
    "antenna_gain_1e30": ("quickstart", {"topology.cells[0].ap_antenna_gain_dbi": 1e30}, "", "gain"),
    "tcp_delay_inf": ("rural_lte", {"topology.links[0].delay_ms": math.inf}, "", "delay_ms"),
    "delay_1e308": ("quickstart", {"topology.links[0].delay_ms": 1e308}, "", "delay_ms"),
    "rate_1e-9": ("quickstart", {"topology.links[0].rate_mbps": 1e-9}, "", "rate_mbps"),
    "rate_1e30": ("quickstart", {"topology.links[0].rate_mbps": 1e30}, "", "rate_mbps"),
    "coherence_1e-9": ("rural_lte", {"topology.cells[0].coherence_ms": 1e-9}, "", "coherence_ms"),
    "poisson_1e-300": ("quickstart", {"workload.arrival.rate_per_s": 1e-300}, "", "rate_per_s"),
    "carrier_inf": ("quickstart", {"topology.cells[0].carrier_ghz": math.inf}, "", "carrier_ghz"),
    "carrier_1e30": ("quickstart", {"topology.cells[0].carrier_ghz": 1e30}, "", "carrier_ghz"),
    "bandwidth_1e30": ("quickstart", {"topology.cells[0].bandwidth_mhz": 1e30}, "", "bandwidth_mhz"),
    "antenna_height_1e30": ("rural_lte", {"topology.cells[0].h_bs_m": 1e30}, "", "h_bs_m"),
    "tx_power_1e30": ("wifi_home", {"topology.cells[0].ue_tx_power_dbm": 1e30}, "", "tx_power_dbm"),
    "profile_10k_chars": ("quickstart", {"topology.nodes.edge.profile": "p" * 10_000}, "", "profile"),
    "card_10k_chars": ("quickstart", {"topology.nodes.edge.models[0].charged_as": "c" * 10_000}, "",
                       "charged_as"),
    "profile_etc_shadow": ("quickstart", {"topology.nodes.edge.profile": "/etc/shadow"}, "", "profile"),
    "profile_secret_yaml": ("quickstart", {"topology.nodes.edge.profile": "files/secret.yaml"}, "",
                            "profile"),
    "prompts_not_utf8": ("quickstart", {"workload.prompts": {"source": "file", "path": "files/bad_utf8.txt"}},
                         "", "bad_utf8.txt"),
    "min_chars_above_max": ("quickstart", {"workload.prompts.min_chars": 500}, "", "workload.prompts"),
    **{f"trace_{name}": ("quickstart", {"workload.arrival": {"process": "trace",
                                                           "path": f"files/trace_{name}.csv"}},
                         "", f"trace_{name}.csv") for name in TRACES},
}
"""Inputs the issue reports by name; each must be exit 2 with one line naming the field or file."""


@pytest.mark.parametrize("name", sorted(ISSUE_CASES))
def test_validate_refuses_the_issues_examples(name: str) -> None:
    source, changes, append, mentions = ISSUE_CASES[name]
    check_validate(Case(source, _edited(source, changes, append), [name], [name], mentions))


# Numbers are what most often pass validation and then reach the engine, so most runs mutate numbers.
RUN_CASES = st.one_of(mutated_scenarios(("number",), max_mutations=2, workload=RUN_SIZE),
                      mutated_scenarios(max_mutations=1, workload=RUN_SIZE))


@settings(**COMMON, max_examples=10, phases=NO_SHRINK)
@given(case=RUN_CASES, out_exists=st.booleans())
def test_run_answers_and_touches_only_its_run_dir(case: Case, out_exists: bool) -> None:
    check_run(case, out_exists)


@pytest.mark.slow
@settings(**COMMON, max_examples=4000)
@given(case=st.one_of(mutated_scenarios(max_mutations=6), raw_scenario_files()))
def test_validate_answers_every_mutated_scenario_slow(case: Case) -> None:
    check_validate(case)


@pytest.mark.slow
@settings(**COMMON, max_examples=150, phases=NO_SHRINK)
@given(case=RUN_CASES, out_exists=st.booleans())
def test_run_answers_and_touches_only_its_run_dir_slow(case: Case, out_exists: bool) -> None:
    check_run(case, out_exists)


# ---------------------------------------------------------------------- files that block or exhaust


def _scenario_with(extra: dict[str, Any]) -> str:
    doc = copy.deepcopy(BASE_DOCS["quickstart"])
    for dotted, value in extra.items():
        *parents, last = dotted.split(".")
        node = doc
        for part in parents:
            node = node[part]
        node[last] = value
    return yaml.safe_dump(doc, sort_keys=False)


def _fifo(root: Path, name: str) -> Path:
    path = root / name
    os.mkfifo(path)
    return path


def _hazard_fifo(root: Path) -> str:
    return str(_fifo(root, "scenario.yaml"))


def _hazard_extends(target: str) -> Callable[[Path], str]:
    def build(root: Path) -> str:
        if target == "fifo.yaml":
            _fifo(root, target)
        (root / "scenario.yaml").write_text(_scenario_with({"extends": target}))
        return "scenario.yaml"

    return build


def _hazard_workload_file(key: str, value: dict[str, str]) -> Callable[[Path], str]:
    def build(root: Path) -> str:
        if value["path"] == "fifo.txt":
            _fifo(root, "fifo.txt")
        (root / "scenario.yaml").write_text(_scenario_with({f"workload.{key}": value}))
        return "scenario.yaml"

    return build


def _hazard_text(text: Callable[[], str]) -> Callable[[Path], str]:
    def build(root: Path) -> str:
        (root / "scenario.yaml").write_text(text())
        return "scenario.yaml"

    return build


def _deep_nesting() -> str:
    return _scenario_with({}) + "deep: " + "[" * 100_000 + "]" * 100_000 + "\n"


def _alias_bomb() -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    return _scenario_with({}) + "\n".join(lines) + "\n"


def _many_nodes() -> str:
    """The issue's 55 MB scenario: quickstart plus 1.9 million routers."""
    head = _scenario_with({})
    routers = "".join(f"    r{i}: {{role: router}}\n" for i in range(1_900_000))
    return head.replace("  nodes:\n", "  nodes:\n" + routers, 1)


def _symlink_loop(root: Path) -> str:
    (root / "scenario.yaml").symlink_to(root / "scenario.yaml")
    return "scenario.yaml"


HAZARDS: dict[str, Callable[[Path], str]] = {
    "fifo_as_scenario": _hazard_fifo,
    "dev_zero_as_scenario": lambda root: "/dev/zero",
    "dev_urandom_as_scenario": lambda root: "/dev/urandom",
    "directory_as_scenario": lambda root: "files",
    "missing_scenario": lambda root: "missing.yaml",
    "symlink_loop_as_scenario": _symlink_loop,
    "extends_dev_zero": _hazard_extends("/dev/zero"),
    "extends_fifo": _hazard_extends("fifo.yaml"),
    "prompts_fifo": _hazard_workload_file("prompts", {"source": "file", "path": "fifo.txt"}),
    "prompts_dev_zero": _hazard_workload_file("prompts", {"source": "file", "path": "/dev/zero"}),
    "trace_dev_zero": _hazard_workload_file("arrival", {"process": "trace", "path": "/dev/zero"}),
    "trace_fifo": _hazard_workload_file("arrival", {"process": "trace", "path": "fifo.txt"}),
    "deep_nesting": _hazard_text(_deep_nesting),
    "alias_bomb": _hazard_text(_alias_bomb),
    "many_nodes_55mb": _hazard_text(_many_nodes),
}
"""Each must be refused (exit 2, one line) in seconds: the issue saw these hang or exhaust memory."""


@pytest.mark.parametrize("name", sorted(HAZARDS))
def test_validate_refuses_files_that_block_or_exhaust(name: str) -> None:
    with sandbox() as box:
        target = HAZARDS[name](box.root)
        before = box.snapshot()
        answer = netsim_subprocess(["validate", target], box.root, VALIDATE_TIMEOUT_S)
        touched = _changed(before, box.snapshot())
    problems = problems_with(answer, [f"{name} is not a usable scenario"], VALIDATE_TIMEOUT_S, listing=True)
    problems += [f"touched {path}" for path in touched]
    assert not problems, f"{'; '.join(problems)}\n{_describe(answer)}"

