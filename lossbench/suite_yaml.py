"""Reading a suite's YAML strictly, with the line and column of every value.

A suite is small, hand-written text, so anything unusual is a mistake or an attack and is refused quickly with
its position: a file over `MAX_SUITE_BYTES`, bytes that are not UTF-8 (with their byte offset), nesting deeper
than `MAX_DEPTH`, more than `MAX_NODES` values once aliases are expanded (the "billion laughs" file), an alias
that contains itself, a key written twice in one mapping (YAML would silently keep the last), and numbers that
are not finite (`.nan`, `.inf`: no suite value means that). The same reader parses command-line override values.
"""

from __future__ import annotations

import codecs
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lossbench.errors import ConfigError, Location

#: A suite file larger than this is refused before it is parsed (a real suite is a few kilobytes).
MAX_SUITE_BYTES = 256_000
#: Values (scalars, lists, mappings) after expanding aliases; a real suite has a few hundred.
MAX_NODES = 100_000
#: Nesting depth of lists and mappings; a real suite nests about 5 deep.
MAX_DEPTH = 50

#: A dotted path into the suite, as keys and list indexes: ("grid", "loss", 1).
KeyPath = tuple[Any, ...]


@dataclass
class YamlDocument:
    """Parsed YAML data, where each value came from, and problems that do not stop reading (all located)."""

    data: Any
    positions: dict[KeyPath, tuple[int, int]]
    problems: list[ConfigError] = field(default_factory=list)


class _Refused(Exception):
    """A budget exceeded while composing; carries the YAML mark where it happened."""

    def __init__(self, message: str, mark: yaml.Mark | None):
        super().__init__(message)
        self.message = message
        self.mark = mark


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader with a nesting limit (its composer recurses once per level)."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(f"nesting deeper than {MAX_DEPTH} levels", self.peek_event().start_mark)
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        finally:
            self._depth -= 1


def read_suite_text(path: Path) -> str:
    """The text of a suite file: a regular file of at most MAX_SUITE_BYTES bytes of UTF-8."""
    where = Location(file=str(path))
    if not path.exists():
        raise ConfigError(message=f"suite file not found: {path}", location=where)
    if path.is_dir():
        raise ConfigError(message=f"{path} is a directory, not a suite file", location=where)
    if not path.is_file():
        raise ConfigError(message=f"{path} is not a regular file", location=where)
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_SUITE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(message=f"cannot read the suite file: {exc.strerror or exc}", location=where) from None
    if len(raw) > MAX_SUITE_BYTES:
        raise ConfigError(message=f"the suite file is larger than {MAX_SUITE_BYTES:,} bytes; a suite is a short "
                                  "hand-written file (list the grid, not the data)", location=where)
    return decode_utf8(raw, str(path))


_OTHER_ENCODINGS = [(codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
                    (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16")]


def decode_utf8(raw: bytes, file: str) -> str:
    """Decode a suite's bytes as UTF-8 (a UTF-8 byte-order mark is allowed); errors give the byte offset."""
    for bom, name in _OTHER_ENCODINGS:
        if raw.startswith(bom):
            raise ConfigError(message=f"the file is {name} text (byte-order mark at byte 0); save it as UTF-8",
                              location=Location(file=file, line=1, column=1))
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError(
            message=f"not UTF-8 text: byte 0x{raw[exc.start]:02x} at byte offset {exc.start}",
            location=Location(file=file, line=line, column=column),
            details=["save the suite as UTF-8 (Latin-1 or UTF-16 editors' defaults are not read)"],
        ) from None


def parse_yaml(text: str, where: Location) -> YamlDocument:
    """Parse one YAML document strictly; `where` names the file (or the command-line override) in errors."""
    try:
        loader = _StrictLoader(text)  # the reader checks every character here
    except yaml.reader.ReaderError as exc:
        raise _reader_error(text, exc, where) from None
    try:
        try:
            node = loader.get_single_node()
            if node is None:
                return YamlDocument(None, {})
            _check_expanded_size(node)
            positions: dict[KeyPath, tuple[int, int]] = {}
            problems: list[ConfigError] = []
            _walk(loader, node, (), positions, problems, where, set())
            data = loader.construct_document(node)
        except _Refused as exc:
            raise ConfigError(message=exc.message, location=_at(where, exc.mark)) from None
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            raise ConfigError(message=f"invalid YAML: {exc.problem or exc.context or 'syntax error'}",
                              location=_at(where, mark)) from None
        except yaml.reader.ReaderError as exc:
            raise _reader_error(text, exc, where) from None
        except yaml.YAMLError as exc:
            raise ConfigError(message=f"invalid YAML: {exc}", location=where) from None
        except RecursionError:  # a guard: the depth and size budgets should make this unreachable
            raise ConfigError(message="the YAML nests or refers to itself too deeply", location=where) from None
    finally:
        loader.dispose()
    return YamlDocument(data, positions, problems)


def _reader_error(text: str, exc: yaml.reader.ReaderError, where: Location) -> ConfigError:
    line = text.count("\n", 0, exc.position) + 1
    column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
    code = exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1] or "?")
    return ConfigError(message=f"invalid YAML: control character U+{code:04X} is not allowed in YAML text",
                       location=Location(file=where.file, option=where.option, line=line, column=column))


def _at(where: Location, mark: yaml.Mark | None) -> Location:
    if mark is None:
        return where
    return Location(file=where.file, option=where.option, line=mark.line + 1, column=mark.column + 1)


def _children(node: yaml.Node) -> Iterator[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        yield from node.value
    elif isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            yield key_node
            yield value_node


def _check_expanded_size(root: yaml.Node) -> None:
    """Refuse a document whose aliases expand past MAX_NODES values or refer to themselves.

    Aliases share nodes, so the expanded size is counted once per node (memoised) in a depth-first walk that is
    an explicit stack: a recursive alias is a node met again while it is still open.
    """
    size: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, leaving = stack.pop()
        key = id(node)
        if leaving:
            open_nodes.discard(key)
            size[key] = 1 + sum(size[id(c)] for c in _children(node))
            if size[key] > MAX_NODES:
                raise _Refused(f"more than {MAX_NODES:,} values (each use of a YAML alias counts again); a suite "
                               "is a few hundred",
                               node.start_mark)
            continue
        if key in size:
            continue
        open_nodes.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in open_nodes:
                raise _Refused("a YAML alias refers to the list or mapping that contains it (recursive alias)",
                               child.start_mark)
            if id(child) not in size:
                stack.append((child, False))


def _walk(loader: yaml.SafeLoader, node: yaml.Node, path: KeyPath, positions: dict[KeyPath, tuple[int, int]],
          problems: list[ConfigError], where: Location, reported: set[tuple[int, int]]) -> None:
    """Record the 1-based (line, column) of every key and value by path; find duplicate keys and non-finite numbers.

    The document is already known to be bounded (depth and expanded size), so plain recursion is safe.
    """
    positions.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
    if node.tag in _REFUSED_TAGS:
        mark = (node.start_mark.line + 1, node.start_mark.column + 1)
        if mark not in reported:
            reported.add(mark)
            problems.append(ConfigError(
                message=f"!!{node.tag.rsplit(':', 1)[-1]} {_REFUSED_TAGS[node.tag]}",
                location=Location(file=where.file, option=where.option, line=mark[0], column=mark[1],
                                  path=dotted(path) or None),
            ))
        return
    if isinstance(node, yaml.MappingNode):
        first_line: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else f"<{key_node.tag}>"
            line = key_node.start_mark.line + 1
            mark = (line, key_node.start_mark.column + 1)
            if key in first_line and key != "<<" and mark not in reported:
                reported.add(mark)
                problems.append(ConfigError(
                    message=f"key '{key}' appears twice in one mapping (lines {first_line[key]} and {line}); "
                            "YAML would keep only the last",
                    location=Location(file=where.file, option=where.option, line=mark[0], column=mark[1],
                                      path=dotted(path + (key,)) or None),
                ))
            first_line.setdefault(key, line)
            positions[path + (key,)] = mark
            _walk(loader, value_node, path + (key,), positions, problems, where, reported)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(loader, item, path + (i,), positions, problems, where, reported)
    elif node.tag == "tag:yaml.org,2002:float":
        value = loader.construct_yaml_float(node)  # type: ignore[attr-defined]
        mark = (node.start_mark.line + 1, node.start_mark.column + 1)
        if not math.isfinite(value) and mark not in reported:
            reported.add(mark)
            problems.append(ConfigError(
                message=f"{node.value} is not a finite number; suite numbers must be finite",
                location=Location(file=where.file, option=where.option, line=mark[0], column=mark[1],
                                  path=dotted(path) or None),
                value=node.value,
            ))


#: YAML types that no suite value is: bytes would pass as text (a name, a root), a set as a list of seeds, in an
#: order YAML does not keep.
_REFUSED_TAGS = {
    "tag:yaml.org,2002:binary": "(bytes) is not a suite value; write the text itself",
    "tag:yaml.org,2002:set": "(a set) is not a suite value; write a list, e.g. [0, 1, 2]",
    "tag:yaml.org,2002:omap": "(an ordered mapping) is not a suite value; write a plain mapping",
    "tag:yaml.org,2002:pairs": "(a list of pairs) is not a suite value; write a plain mapping",
}


def dotted(path: KeyPath) -> str:
    """('grid', 'loss', 1, 'gamma') -> 'grid.loss[1].gamma'."""
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out
