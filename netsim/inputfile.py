"""Reading the files a user names: scenarios, `extends:` targets, profiles, cost cards, manifests,
prompt files and traces.

A path in a scenario can point anywhere: at a FIFO (opening it blocks forever), at /dev/zero (reading
it never ends), at a directory, at a 2 GB log, at a file in another encoding, or at someone's secrets.
Every reader goes through `read_text`, which refuses all of those before it reads a byte, and YAML goes
through `load_yaml`, which also refuses what PyYAML happily accepts: duplicate keys (the last one would
silently win), nesting deep enough to exhaust Python's recursion limit, and aliases that expand a small
file into billions of values ("billion laughs"). Each failure is one InputError line naming the file,
the line when known, and the problem — never the file's contents, which may be someone's secret.

The limits are far above anything netsim ships (bundled files are a few KiB) and low enough that reading,
parsing and validating a file at the limit takes seconds, not minutes or gigabytes.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Sequence
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from yaml.composer import Composer
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.events import AliasEvent, CollectionStartEvent
from yaml.nodes import MappingNode, Node
from yaml.reader import ReaderError
from yaml.resolver import Resolver

from netsim.errors import InputError

MIB = 1 << 20

YAML_MAX_BYTES = 2 * MIB
"""Scenarios, `extends:` targets, device profiles, cost cards and manifests: the bundled ones are under
4 KiB, and a 2 MiB scenario already describes ~10,000 nodes while loading in about two seconds."""

PROMPTS_MAX_BYTES = 16 * MIB
"""A prompt file: about 100,000 prompts of a paragraph each, more than any run asks for."""

TRACE_MAX_BYTES = 64 * MIB
"""An arrival trace: about 3 million `t_s,device` rows, more than a request count a run can finish."""

YAML_MAX_DEPTH = 64
"""Nesting levels of mappings and lists; a scenario needs 7. Python composes YAML recursively, so a
3,000-level file would otherwise end in a RecursionError rather than a message."""

YAML_MAX_VALUES = 1_000_000
"""Values a YAML document may expand to, counting each alias as a copy of what it names: about what a
2 MiB file can spell out literally, so aliases cannot make a small file cost more than a large one."""

_READ_CHUNK = 1 << 16
_SAFE_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}")
_MERGE_TAG = "tag:yaml.org,2002:merge"

_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISSOCK, "a socket"))


def show_path(path: str | os.PathLike[str], limit: int = 200) -> str:
    """A path fit for a one-line message: control characters escaped, the middle of a very long path
    elided (a 10,000-character name would otherwise be the whole error)."""
    text = os.fspath(path)
    if not text.isprintable():
        text = repr(text)[1:-1]
    if len(text) > limit:
        half = (limit - 1) // 2
        text = f"{text[:half]}…{text[-half:]} ({len(os.fspath(path)):,} characters)"
    return text


def show_key(key: Any) -> str:
    """A mapping key for a message, or `<key>` if it does not look like a field name.

    Field names, node names and units are short identifiers; anything else (a line of /etc/shadow read
    as a key, say) is file content and must not reach the terminal.
    """
    if isinstance(key, bool | int | float):
        return repr(key)
    if isinstance(key, str) and _SAFE_KEY.fullmatch(key):
        return key
    return "<key>"


def show_loc(loc: Sequence[Any]) -> str:
    """A pydantic error location as `a.b[2].c`, with keys that are not identifiers hidden (`show_key`)."""
    out = ""
    for part in loc:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        else:
            out += f".{show_key(part)}" if out else show_key(part)
    return out


M = TypeVar("M", bound=BaseModel)


def validation_line(err: ValidationError) -> str:
    """pydantic's errors on one line; keys not spelled like field names are hidden (`show_loc`), because a
    file that is no such thing at all (`profile: /etc/shadow`) would have its lines printed as unknown
    fields."""
    parts = []
    for e in err.errors(include_url=False, include_input=False):
        loc = show_loc(e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(dict.fromkeys(parts))


def read_model(path: str | os.PathLike[str], what: str, model: type[M]) -> M:
    """A YAML mapping file validated as `model` (a device or runtime profile); every failure is one
    InputError line naming the file."""
    try:
        data = load_yaml(path, what)
    except InputError as exc:
        raise InputError(f"cannot read {exc}") from None
    if not isinstance(data, dict):
        raise InputError(f"{show_path(path)}: a {what} must be a YAML mapping")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InputError(f"{show_path(path)}: {validation_line(exc)}") from None


def read_text(path: str | os.PathLike[str], what: str, max_bytes: int) -> str:
    """The UTF-8 text of a regular file of at most `max_bytes`; anything else is a one-line InputError.

    The file kind is checked with stat() before opening, since opening a FIFO blocks until a writer
    appears; the open is non-blocking as well, and fstat() re-checks the opened file, in case the path
    was swapped between the two calls. At most `max_bytes + 1` bytes are read, so a /proc file that
    reports size 0 or a file that grows while read still cannot fill memory. A UTF-8 byte-order mark
    is dropped (editors on Windows add one; it would otherwise become part of a CSV header).
    """
    shown = f"{what} {show_path(path)}"
    try:
        kind = _file_kind(os.stat(path).st_mode)
        if kind:
            raise InputError(f"{shown}: is {kind}, not a regular file")
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
        try:
            kind = _file_kind(os.fstat(fd).st_mode)
            if kind:
                raise InputError(f"{shown}: is {kind}, not a regular file")
            data = _read_at_most(fd, max_bytes + 1)
        finally:
            os.close(fd)
    except InputError:
        raise
    except OSError as exc:
        raise InputError(f"{shown}: {_os_problem(exc)}") from None
    except ValueError:  # an embedded NUL byte: no file system has such a name
        raise InputError(f"{shown}: not a valid file name (contains a NUL byte)") from None
    if len(data) > max_bytes:
        raise InputError(f"{shown}: larger than the {_size(max_bytes)} allowed for a {what}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(f"{shown}: not valid UTF-8 (line {line}, byte offset {exc.start}); "
                         "save it as UTF-8") from None
    return text.removeprefix("\ufeff")


def load_yaml(path: str | os.PathLike[str], what: str, max_bytes: int = YAML_MAX_BYTES) -> Any:
    """The data of a one-document YAML file (None if it is empty), read by `read_text` and parsed by
    `parse_yaml`; every problem is a one-line InputError naming the file, and the line when known."""
    return parse_yaml(read_text(path, what, max_bytes), f"{what} {show_path(path)}")


def parse_yaml(text: str, source: str) -> Any:
    """YAML text → data with the guards of `_GuardedLoader`; `source` names the text in errors."""
    loader = None
    try:
        loader = _GuardedLoader(text)  # the pure-Python reader already checks characters here
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        kind = "" if isinstance(exc, _Refused) else "unreadable YAML: "
        raise InputError(f"{source}: {where}{kind}{_yaml_problem(exc)}") from None
    except ReaderError as exc:  # a character YAML forbids (a control character, say)
        # libyaml counts the position in UTF-8 bytes, the Python reader in characters
        before = text.encode("utf-8")[: exc.position] if _C_PARSER else text[: exc.position]
        line = before.count(b"\n" if isinstance(before, bytes) else "\n") + 1
        raise InputError(f"{source}: line {line}: unreadable YAML: character #x{exc.character:04x} "
                         "is not allowed") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{source}: unreadable YAML ({type(exc).__name__})") from None
    finally:
        if loader is not None:
            loader.dispose()


# ------------------------------------------------------------------------------------------ the loader


_ParserBase: type
try:  # libyaml scans and parses in C (what yaml.CSafeLoader uses); pure Python is the fallback
    from yaml._yaml import CParser as _ParserBase  # type: ignore[no-redef]

    _C_PARSER = True
except ImportError:  # pragma: no cover - PyYAML wheels bundle libyaml
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class _ParserBase(Reader, Scanner, Parser):  # type: ignore[no-redef]
        def __init__(self, stream: str) -> None:
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            Parser.__init__(self)

    _C_PARSER = False


class _Refused(ConstructorError):
    """A document the guards refuse (too deep, too large, a duplicate key), as opposed to bad syntax."""


class _GuardedLoader(Composer, _ParserBase, SafeConstructor, Resolver):  # type: ignore[misc,valid-type]
    """yaml.CSafeLoader's parser with PyYAML's Python composer, so that composing can be watched.

    CSafeLoader composes in C, out of reach of a depth or size check. Scanning and parsing stay in C;
    building the Python objects dominates either way, and a 2 MiB scenario loads about as fast as with
    CSafeLoader (~1.5 s). Composing counts nesting depth and the values the document expands to,
    aliases included; constructing refuses duplicate keys and turns a value the constructor cannot
    build (a 13th month, a 5,000-digit integer) into a marked error.
    """

    def __init__(self, stream: str) -> None:
        _ParserBase.__init__(self, stream)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self._depth = 0
        self._values = 0
        self._anchor_values: dict[str, int] = {}

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        event = self.peek_event()
        if isinstance(event, AliasEvent):
            node = super().compose_node(parent, index)  # raises for an undefined alias
            size = self._anchor_values.get(event.anchor)
            if size is None:
                raise _Refused(
                    None, None, f"alias *{show_key(event.anchor)} refers to a value that contains it",
                    event.start_mark)
            self._count(size, event)
            return node
        if isinstance(event, CollectionStartEvent):
            self._depth += 1
            if self._depth > YAML_MAX_DEPTH:
                raise _Refused(
                    None, None, f"nested more than {YAML_MAX_DEPTH} levels deep", event.start_mark)
        before = self._values
        self._count(1, event)
        node = super().compose_node(parent, index)
        if isinstance(event, CollectionStartEvent):
            self._depth -= 1
        if event.anchor is not None:
            self._anchor_values[event.anchor] = self._values - before
        return node

    def _count(self, n: int, event: Any) -> None:
        self._values += n
        if self._values > YAML_MAX_VALUES:
            raise _Refused(
                None, None, f"expands to more than {YAML_MAX_VALUES:,} values (aliases count as copies)",
                event.start_mark)

    def flatten_mapping(self, node: MappingNode) -> None:
        """Refuse a key given twice before `<<` merges run (merged keys may be overridden on purpose)."""
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # unhashable: the base constructor reports it with its mark
                continue
            if duplicate:
                raise _Refused(None, None, f"duplicate key '{show_key(key)}'", key_node.start_mark)
            seen.add(key)
        super().flatten_mapping(node)

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError) as exc:
            raise ConstructorError(None, None, f"cannot read this value ({exc})", node.start_mark) from None


# ------------------------------------------------------------------------------------------ helpers


def _file_kind(mode: int) -> str | None:
    return next((name for test, name in _FILE_KINDS if test(mode)),
                None if stat.S_ISREG(mode) else "an unusual kind of file")


def _read_at_most(fd: int, n: int) -> bytes:
    chunks: list[bytes] = []
    left = n
    while left > 0:
        chunk = os.read(fd, min(left, _READ_CHUNK))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _os_problem(exc: OSError) -> str:
    if exc.errno == errno.ENOENT:
        return "does not exist"
    if exc.errno == errno.ENAMETOOLONG:
        return "file name too long"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if exc.errno == errno.ENOTDIR:
        return "a part of the path is not a directory"
    if exc.errno == errno.ELOOP:
        return "too many levels of symbolic links"
    return f"cannot read ({exc.strerror or type(exc).__name__})"


def _size(nbytes: int) -> str:
    return f"{nbytes / MIB:g} MiB" if nbytes >= MIB else f"{nbytes:,} bytes"


def _yaml_problem(exc: yaml.MarkedYAMLError) -> str:
    """PyYAML's problem text on one line, without the source snippet str(exc) would add."""
    text = " ".join(str(exc.problem or "invalid YAML").split())
    context = " ".join(str(exc.context or "").split())
    if context and exc.problem_mark is not None:
        text = f"{text} ({context})"
    return text if len(text) <= 160 else f"{text[:159]}…"
