"""The run directory: where a run goes, and the promise that netsim never deletes what it did not write.

A run is written into a staging sibling and renamed into place (netsim.paths.staged_dir), so nothing is
ever half-written. Every run directory holds a marker file, `.netsim-run`, listing the files netsim put
there. An existing directory is replaced only when it carries that marker, holds nothing beyond what the
marker lists, and the user asked for it (`--overwrite`); the old run is moved aside before the new one is
renamed in and removed only afterwards, so an interruption never loses both. Everything else that could
turn a typo into data loss — the working directory or one of its ancestors, system directories, files,
symbolic links, unwritable or over-long paths — is refused up front with one line naming the path.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from netsim.errors import InputError
from netsim.paths import staged_dir

MARKER = ".netsim-run"
"""File in every run directory: JSON with the netsim version, the scenario name and the files written."""

_MARKER_MAX_BYTES = 1 << 20  # a real marker is a few hundred bytes; never read a huge file into memory
_FRESH_LIMIT = 10_000  # runs/<name>-N tried before giving up; each try is one stat call

_SYSTEM_DIRS = ("proc", "sys", "dev", "etc", "bin", "sbin", "usr", "boot", "run")
"""Top-level directories no run belongs in (plus /lib*, /var/lib and / itself): a mistyped -o there
could otherwise hit files the machine needs, and a recursive delete of /proc or /sys is never wanted."""


def choose_run_dir(out: Path | None, scenario_dir_setting: Path | None, name: str, overwrite: bool) -> Path:
    """The directory a run will be written to, checked before the simulation spends any time.

    `-o` wins over the scenario's `outputs.dir`. Without either, re-running a scenario must not replace
    its previous results unasked, so the default is `runs/<name>` or, when that exists, the first free
    `runs/<name>-2`, `-3`, …; with `overwrite` the user has asked, and `runs/<name>` itself is replaced
    (if it is an earlier run). Raises InputError, one line, when the directory cannot be used.
    """
    if out is not None:
        return _usable(out, overwrite, "-o ")
    if scenario_dir_setting is not None:
        return _usable(scenario_dir_setting, overwrite, "outputs.dir: ")
    base = Path("runs") / name
    if overwrite:
        return _usable(base, overwrite, "run dir ")
    candidate = base
    for n in range(2, _FRESH_LIMIT + 2):
        if not (candidate.exists() or candidate.is_symlink()):
            return _usable(candidate, overwrite, "run dir ")
        candidate = base.with_name(f"{name}-{n}")
    raise InputError(f"run dir {base}: {base}-2 … {base}-{_FRESH_LIMIT} exist too; pass -o DIR")


def check_run_dir(path: str | Path, overwrite: bool = False) -> str | None:
    """One line naming why a run cannot be written to `path` (`path: problem`), or None if it can.

    `netsim validate` calls this for `outputs.dir`, and the writer calls it again just before renaming
    the run in, because the file system may have changed while the simulation ran.
    """
    target = Path(path)
    try:
        problem = _problem(target, overwrite)
    except RuntimeError:  # pathlib's report of a symlink loop
        problem = "is a symbolic link loop; name a real directory"
    except OSError as exc:
        problem = f"cannot be inspected ({exc.strerror or exc})"
    return None if problem is None else f"{_shown(target)}: {problem}"


@contextmanager
def staged_run_dir(target: Path, overwrite: bool, scenario: str) -> Iterator[Path]:
    """Yield an empty staging directory; on success add the marker and rename it to `target`.

    File system failures (no space, permissions that os.access did not foresee, a racing process) become
    one InputError line naming the target instead of a traceback.
    """
    _raise(check_run_dir(target, overwrite))
    try:
        with staged_dir(target, replace=overwrite) as staging:
            yield staging
            files = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
            (staging / MARKER).write_text(json.dumps(_marker(scenario, files), indent=2) + "\n")
            _raise(check_run_dir(target, overwrite))  # the target may have appeared while we wrote
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise InputError(f"{_shown(target)}: cannot write the run directory ({reason})") from None


def read_marker(directory: Path) -> dict[str, Any] | None:
    """The marker of an earlier netsim run in `directory`, or None when it is not one.

    A symlinked, oversized or malformed marker does not count: replacing a directory is allowed only on
    the evidence netsim itself leaves.
    """
    marker = directory / MARKER
    if marker.is_symlink() or not marker.is_file() or marker.stat().st_size > _MARKER_MAX_BYTES:
        return None
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not (isinstance(data, dict) and isinstance(data.get("netsim_version"), str)
            and isinstance(data.get("files"), list) and all(isinstance(f, str) for f in data["files"])):
        return None
    return data


def _marker(scenario: str, files: list[str]) -> dict[str, Any]:
    from netsim.version import __version__

    return {"netsim_version": __version__, "scenario": scenario, "files": files}


def _shown(path: Path, limit: int = 100) -> str:
    """The path as typed, its middle elided when long, so a one-line error still ends with its reason."""
    text = str(path)
    return text if len(text) <= limit else f"{text[: limit // 2]}…{text[-limit // 4:]}"


def _raise(problem: str | None) -> None:
    if problem is not None:
        raise InputError(problem)


def _usable(path: Path, overwrite: bool, label: str) -> Path:
    _raise(None if (problem := check_run_dir(path, overwrite)) is None else label + problem)
    return path


def _problem(target: Path, overwrite: bool) -> str | None:
    """The first reason `target` may not become a run directory; cheap lexical checks come first."""
    lexical = Path(os.path.abspath(target))  # `..` folded, symlinks kept: what the user typed
    if (too_long := _too_long(lexical)) is not None:
        return too_long
    real = lexical.resolve()  # symlinks followed: where the files would really land
    for where in (lexical, real):
        if (system := _system_dir(where)) is not None:
            return system
    cwd = Path.cwd().resolve()
    if real == cwd:
        return "is the working directory; name a new directory, e.g. runs/NAME"
    if real in cwd.parents:
        return "contains the working directory; name a new directory, e.g. runs/NAME"
    if target.is_symlink():
        return "is a symbolic link; name a real directory"
    if target.exists():
        return _existing(target, overwrite)
    ancestor = _nearest_existing(lexical.parent)
    if not ancestor.is_dir():
        return f"{ancestor} is not a directory"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"{ancestor} is not writable"
    return None


def _existing(target: Path, overwrite: bool) -> str | None:
    if not target.is_dir():
        return "exists and is not a directory"
    marker = read_marker(target)
    if marker is None:
        return f"exists and is not a netsim run directory (no {MARKER}); netsim replaces only its own runs"
    if not overwrite:
        return "exists; pass --overwrite to replace an earlier netsim run"
    foreign = _foreign(target, marker)
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        return f"holds files a netsim run does not write ({shown}); move them out before --overwrite"
    if not os.access(target.parent, os.W_OK | os.X_OK):
        return f"{target.parent} is not writable"
    return None


def _foreign(target: Path, marker: dict[str, Any]) -> list[str]:
    """Entries under `target` that the marker does not list, i.e. that someone else put there."""
    listed = set(marker["files"]) | {MARKER}
    listed |= {d.as_posix() for f in marker["files"] for d in Path(f).parents if d != Path(".")}
    found: list[str] = []
    for root, dirs, files in os.walk(target):  # does not descend into symlinked directories
        for entry in (*dirs, *files):
            rel = (Path(root) / entry).relative_to(target).as_posix()
            if rel not in listed:
                found.append(rel)
    return sorted(found)


def _system_dir(path: Path) -> str | None:
    parts = path.parts
    if len(parts) == 1:
        return "is the root directory"
    top = parts[1]
    if top in _SYSTEM_DIRS or top.startswith("lib") or parts[1:3] == ("var", "lib"):
        return f"is under the system directory {Path(*parts[:3 if top == 'var' else 2])}"
    return None


def _too_long(lexical: Path) -> str | None:
    """Checked before any other stat call, which would itself fail with ENAMETOOLONG.

    Each name is held to the limit of the deepest existing directory above it, which is the file
    system it would be created on.
    """
    path_max = _pathconf(Path(lexical.anchor), "PC_PATH_MAX", 4096)
    if len(os.fsencode(str(lexical))) >= path_max:
        return f"the path is longer than the file system allows ({path_max} bytes)"
    deepest, descending = Path(lexical.anchor), True
    for part in lexical.parts[1:]:
        name_max = _pathconf(deepest, "PC_NAME_MAX", 255)
        if len(os.fsencode(part)) > name_max:
            return f"a name in the path is longer than the file system allows ({name_max} bytes)"
        descending = descending and (deepest / part).is_dir()
        deepest = deepest / part if descending else deepest
    return None


def _pathconf(path: Path, name: str, default: int) -> int:
    try:
        return os.pathconf(path, name)
    except (OSError, ValueError):
        return default


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(path.anchor)
