"""Safe, bounded YAML loading that remembers where every key and value came from.

The document is built from the parser's event stream, never by PyYAML's constructors,
so no tag can create a Python object, nesting depth and alias expansion are capped
before they cost anything, and each value keeps its line and column for diagnostics.

Scalars follow the YAML 1.2 core schema: only ``true``/``false`` are booleans (``yes``,
``no``, ``on`` and ``off`` stay text, so they work as branch labels), and mapping keys
are always text.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import yaml

from flowengine.agentfile.diagnostics import Position
from flowengine.errors import FlowengineError

MAX_FILE_BYTES = 25 * 1024 * 1024
MAX_DEPTH = 64
MAX_NODES = 3_000_000

Path = tuple[str | int, ...]

_PARSER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_YAML_TAG = "tag:yaml.org,2002:"
_NULLS = {"", "~", "null", "Null", "NULL"}
_BOOLS = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_INT = re.compile(r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_SPECIAL_FLOATS = {
    **{s: math.inf for s in (".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF")},
    **{s: -math.inf for s in ("-.inf", "-.Inf", "-.INF")},
    **{s: math.nan for s in (".nan", ".NaN", ".NAN")},
}


class YamlLoadError(FlowengineError):
    """The file cannot become a document; ``code`` and ``position`` say why and where."""

    def __init__(self, code: str, message: str, position: Position | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.position = position or Position()


class Mark(NamedTuple):
    """Where a node starts, and its scalar style (``|`` and ``>`` shift template lines)."""

    position: Position
    style: str | None = None


@dataclass
class Duplicate:
    """A key written twice in one mapping; the later value wins."""

    path: Path
    key: str
    first: Position
    again: Position


@dataclass
class Document:
    """Plain data from a YAML file and the positions of its keys and values."""

    data: Any
    keys: dict[Path, Mark] = field(default_factory=dict)
    values: dict[Path, Mark] = field(default_factory=dict)
    duplicates: list[Duplicate] = field(default_factory=list)

    def key_at(self, path: Path) -> Position:
        """Position of the key of ``path``; its value's, or the nearest parent's, if none."""
        mark = self.keys.get(path) or self.values.get(path)
        if mark is not None:
            return mark.position
        return self.key_at(path[:-1]) if path else Position()

    def value_at(self, path: Path) -> Position:
        """Position of the value at ``path``, or of the nearest parent that has one."""
        mark = self.values.get(path) or self.keys.get(path)
        if mark is not None:
            return mark.position
        return self.value_at(path[:-1]) if path else Position()


def read_text(path: str) -> str:
    """Read an agent file as UTF-8 text, refusing binary, oversized and undecodable files."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except IsADirectoryError:
        raise YamlLoadError("file-unreadable", "this is a folder, not an agent file") from None
    except OSError as exc:
        raise YamlLoadError("file-unreadable", f"cannot read the file: {exc.strerror}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise YamlLoadError(
            "file-too-large",
            f"the file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB; "
            "split the agent or check that this is the right file",
        )
    return decode(raw)


def decode(raw: bytes) -> str:
    """UTF-8 (an optional BOM allowed) to text, with the position of the first bad byte."""
    nul = raw.find(b"\x00")
    if nul != -1:
        raise YamlLoadError(
            "binary-file",
            "the file holds binary data (a NUL byte), not YAML text",
            _byte_position(raw, nul),
        )
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise YamlLoadError(
            "not-utf8",
            f"the file is not valid UTF-8 (byte 0x{raw[exc.start]:02x}); save it as UTF-8",
            _byte_position(raw, exc.start),
        ) from None


def _byte_position(raw: bytes, offset: int) -> Position:
    line_start = raw.rfind(b"\n", 0, offset) + 1
    column = len(raw[line_start:offset].decode("utf-8", errors="replace")) + 1
    return Position(raw.count(b"\n", 0, offset) + 1, column)


def load(text: str) -> Document:
    """Parse one YAML document into plain data plus a map of positions."""
    builder = _Builder()
    try:
        for event in yaml.parse(text, Loader=_PARSER):
            builder.feed(event)
    except yaml.YAMLError as exc:
        # libyaml looks ahead through a run of flow brackets before it yields one event,
        # and newer releases stop deep nesting there with an error of their own: so the
        # depth is measured here, and the same input gets the same code with any PyYAML.
        too_deep = _flow_too_deep(text, _error_offset(exc, text))
        raise (too_deep or _syntax_error(exc, text)) from None
    except RecursionError:
        raise YamlLoadError("yaml-too-complex", "the YAML is nested too deeply") from None
    if builder.documents == 0:
        raise YamlLoadError("empty-file", "the file is empty; an agent needs 'name' and 'steps'")
    return Document(builder.root, builder.keys, builder.values, builder.duplicates)


_FLOW_SIGNIFICANT = re.compile(r"[\[\]{}\"'#\n]")


def _error_offset(exc: yaml.YAMLError, text: str) -> int:
    """Where in ``text`` the parser gave up (its end when the error has no mark)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is None:
        return len(text)
    index = getattr(mark, "index", None)
    return index if isinstance(index, int) and 0 <= index <= len(text) else len(text)


def _flow_too_deep(text: str, end: int) -> YamlLoadError | None:
    """The first flow bracket (``[`` or ``{``) nested deeper than MAX_DEPTH before ``end``,
    skipping quoted text and comments, as a ``yaml-too-complex`` error at its position.

    Only consulted once the parser has failed, so a stray bracket in plain text can at
    worst turn one syntax error into another.
    """
    depth = 0
    quote = ""
    position = 0
    while (match := _FLOW_SIGNIFICANT.search(text, position, end)) is not None:
        char, offset = match.group(), match.start()
        position = offset + 1
        before = text[offset - 1] if offset else "\n"
        if quote == '"':
            if char == '"' and not _escaped(text, offset):
                quote = ""
        elif quote == "'":
            if char == "'" and text[offset + 1 : offset + 2] == "'":
                position += 1  # '' is a quote inside single-quoted text
            elif char == "'":
                quote = ""
        elif char == "#" and before in " \t\n":
            newline = text.find("\n", offset, end)
            position = end if newline == -1 else newline
        elif char in "\"'" and before in " \t\n[{,:-?":
            quote = char
        elif char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                line = text.count("\n", 0, offset) + 1
                column = offset - text.rfind("\n", 0, offset)
                return YamlLoadError(
                    "yaml-too-complex",
                    f"the YAML is nested more than {MAX_DEPTH} levels deep; flatten it",
                    Position(line, column),
                )
        elif char in "]}":
            depth = max(depth - 1, 0)
    return None


def _escaped(text: str, offset: int) -> bool:
    """Whether the character at ``offset`` follows an odd number of backslashes."""
    count = 0
    while offset - count - 1 >= 0 and text[offset - count - 1] == "\\":
        count += 1
    return count % 2 == 1


def _syntax_error(exc: yaml.YAMLError, text: str) -> YamlLoadError:
    unclosed = _unclosed_quote(exc, text)
    if unclosed is not None:
        return unclosed
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is not None:
        position = Position(mark.line + 1, mark.column + 1)
    elif isinstance(getattr(exc, "position", None), int):
        offset = exc.position  # type: ignore[attr-defined]
        position = Position(text.count("\n", 0, offset) + 1, offset - text.rfind("\n", 0, offset))
    else:
        position = Position()
    problem = getattr(exc, "problem", None) or getattr(exc, "reason", None) or str(exc)
    context = getattr(exc, "context", None)
    context_mark = getattr(exc, "context_mark", None)
    if (
        context
        and context_mark is not None
        and (mark is None or (context_mark.line, context_mark.column) != (mark.line, mark.column))
    ):
        context += f" that starts at line {context_mark.line + 1}, column {context_mark.column + 1}"
    message = f"YAML syntax error: {problem}" + (f" ({context})" if context else "")
    return YamlLoadError("yaml-syntax", message, position)


def _unclosed_quote(exc: yaml.YAMLError, text: str) -> YamlLoadError | None:
    """A quoted string that is never closed, located at its opening quote.

    The parser notices only where the text runs out (the end of the file, or a ``---``),
    which can be far below the mistake; the quote that opened the string is the place
    to fix.
    """
    problem = str(getattr(exc, "problem", ""))
    if getattr(exc, "context", None) != "while scanning a quoted scalar" or not (
        problem.endswith("end of stream") or "unexpected document" in problem
    ):
        return None
    opened = getattr(exc, "context_mark", None)
    if opened is None:
        return None
    lines = text.splitlines()
    line = lines[opened.line] if opened.line < len(lines) else ""
    quote = line[opened.column] if opened.column < len(line) else '"'
    if quote not in "'\"":
        quote = '"'
    return YamlLoadError(
        "yaml-syntax",
        f"YAML syntax error: the quoted text that starts here with {quote} is never closed; "
        f"add the closing {quote} where the text ends",
        Position(opened.line + 1, opened.column + 1),
    )


def _position(event: yaml.Event) -> Position:
    mark = event.start_mark
    return Position(mark.line + 1, mark.column + 1) if mark is not None else Position()


@dataclass
class _Frame:
    container: dict[str, Any] | list[Any]
    path: Path
    size: int = 1
    anchor: str | None = None
    pending_key: str | None = None
    key_mark: Mark | None = None
    merge: bool = False
    explicit: set[str] = field(default_factory=set)
    """Keys written in this mapping (not merged in), to find the ones written twice."""


class _Builder:
    """Turns parser events into data with an explicit stack: no recursion, bounded work."""

    def __init__(self) -> None:
        self.root: Any = None
        self.documents = 0
        self.nodes = 0
        self.stack: list[_Frame] = []
        self.anchors: dict[str, tuple[Any, int]] = {}
        self.anchor_texts: dict[str, str] = {}
        """The written text of each anchored scalar, for an alias used as a mapping key."""
        self.keys: dict[Path, Mark] = {}
        self.values: dict[Path, Mark] = {}
        self.duplicates: list[Duplicate] = []

    def feed(self, event: yaml.Event) -> None:
        if isinstance(event, yaml.DocumentStartEvent):
            self.documents += 1
            if self.documents > 1:
                raise YamlLoadError(
                    "yaml-syntax",
                    "the file holds more than one YAML document ('---'); "
                    "put each agent in a file of its own",
                    _position(event),
                )
        elif isinstance(event, yaml.ScalarEvent):
            self._count(1, event)
            if event.anchor:
                self.anchor_texts[event.anchor] = event.value
            if self.stack and self._expects_key():
                self._key_scalar(event)
            else:
                style = event.style or None
                self._place(_scalar(event), 1, Mark(_position(event), style), event.anchor)
        elif isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
            self._open(event)
        elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
            self._close()
        elif isinstance(event, yaml.AliasEvent):
            self._alias(event)

    def _count(self, n: int, event: yaml.Event) -> None:
        self.nodes += n
        if self.nodes > MAX_NODES:
            raise YamlLoadError(
                "yaml-too-complex",
                f"the document expands to more than {MAX_NODES:,} values "
                "(an alias bomb?); write it out without nested aliases",
                _position(event),
            )

    def _expects_key(self) -> bool:
        top = self.stack[-1]
        return isinstance(top.container, dict) and top.pending_key is None

    def _key_scalar(self, event: yaml.ScalarEvent) -> None:
        """A key is always text, but its tag is checked as a value's would be, and its
        anchor is registered (an alias to it stands for the key's text)."""
        if event.tag is not None:
            _scalar(event)  # refuses !!python/..., !custom and '!!int abc' as for a value
        merge = event.value == "<<" and not event.style
        self._take_key(event.value, _position(event), merge)
        if event.anchor:
            self.anchors[event.anchor] = (event.value, 1)

    def _take_key(self, key: str, position: Position, merge: bool) -> None:
        """Start a mapping entry; ``merge`` for a plain ``<<`` (a quoted "<<" is text)."""
        top = self.stack[-1]
        mark = Mark(position)
        if key in top.explicit and not merge:
            first = self.keys.get((*top.path, key), mark).position
            self.duplicates.append(Duplicate(top.path, key, first, mark.position))
        top.pending_key = key
        top.key_mark = mark
        top.merge = merge

    def _child_path(self) -> Path:
        top = self.stack[-1]
        if isinstance(top.container, dict):
            return (*top.path, top.pending_key or "")
        return (*top.path, len(top.container))

    def _open(self, event: yaml.MappingStartEvent | yaml.SequenceStartEvent) -> None:
        self._count(1, event)
        if self.stack and self._expects_key():
            raise YamlLoadError(
                "yaml-syntax",
                "a mapping key must be plain text, not a list or mapping",
                _position(event),
            )
        _check_tag(event, "map" if isinstance(event, yaml.MappingStartEvent) else "seq")
        if len(self.stack) >= MAX_DEPTH:
            raise YamlLoadError(
                "yaml-too-complex",
                f"the YAML is nested more than {MAX_DEPTH} levels deep; flatten it",
                _position(event),
            )
        path = self._child_path() if self.stack else ()
        self.values[path] = Mark(_position(event), "flow" if event.flow_style else None)
        container: dict[str, Any] | list[Any] = (
            {} if isinstance(event, yaml.MappingStartEvent) else []
        )
        self.stack.append(_Frame(container, path, anchor=event.anchor))

    def _close(self) -> None:
        frame = self.stack.pop()
        if self.stack:
            self._attach(frame.container, frame.size)
        else:
            self.root = frame.container
        if frame.anchor:
            self.anchors[frame.anchor] = (frame.container, frame.size)

    def _alias(self, event: yaml.AliasEvent) -> None:
        if event.anchor not in self.anchors:
            raise YamlLoadError(
                "yaml-syntax",
                f"alias '*{event.anchor}' refers to no finished anchor '&{event.anchor}' "
                "(undefined, or a node that contains itself)",
                _position(event),
            )
        value, size = self.anchors[event.anchor]
        self._count(size, event)
        if self.stack and self._expects_key():
            text = self.anchor_texts.get(event.anchor)
            if text is None:
                raise YamlLoadError(
                    "yaml-syntax",
                    f"alias '*{event.anchor}' stands for a list or mapping, which cannot be "
                    "a mapping key; a key must be plain text",
                    _position(event),
                )
            self._take_key(text, _position(event), merge=False)
            return
        self._place(value, size, Mark(_position(event)), None)

    def _place(self, value: Any, size: int, mark: Mark, anchor: str | None) -> None:
        if anchor:
            self.anchors[anchor] = (value, size)
        if not self.stack:
            self.root = value
            self.values[()] = mark
            return
        self.values[self._child_path()] = mark
        self._attach(value, size)

    def _attach(self, value: Any, size: int) -> None:
        top = self.stack[-1]
        top.size += size
        if isinstance(top.container, list):
            top.container.append(value)
            return
        key = top.pending_key or ""
        path = (*top.path, key)
        if top.merge:
            self._merge(top, value)
        else:
            top.container[key] = value
            top.explicit.add(key)
            if top.key_mark is not None:
                self.keys[path] = top.key_mark
        top.pending_key = None
        top.key_mark = None
        top.merge = False

    def _merge(self, top: _Frame, value: Any) -> None:
        """YAML merge key: ``<<: *defaults`` copies keys the mapping does not set itself."""
        sources = value if isinstance(value, list) else [value]
        if not all(isinstance(source, dict) for source in sources):
            position = top.key_mark.position if top.key_mark else Position()
            raise YamlLoadError(
                "yaml-syntax", "'<<' (merge) takes a mapping or a list of mappings", position
            )
        assert isinstance(top.container, dict)
        for source in sources:
            for key, item in source.items():
                top.container.setdefault(key, item)


def _check_tag(event: yaml.ScalarEvent | yaml.CollectionStartEvent, kind: str) -> None:
    tag = event.tag
    if tag in (None, "!") or tag == _YAML_TAG + kind:
        return
    shown = "!!" + tag[len(_YAML_TAG) :] if tag.startswith(_YAML_TAG) else tag
    raise YamlLoadError(
        "yaml-unsupported-tag",
        f"tag '{shown}' is not supported: agent files hold plain text, numbers, "
        "true/false, lists and mappings",
        _position(event),
    )


def _scalar(event: yaml.ScalarEvent) -> Any:
    value: str = event.value
    tag = event.tag
    if tag in (None, "!"):
        plain = not event.style  # the C parser says "" for plain, the Python one None
        return _resolve_plain(value, event) if plain and tag is None else value
    name = tag[len(_YAML_TAG) :] if tag.startswith(_YAML_TAG) else None
    if name == "str":
        return value
    if name in ("int", "float", "bool", "null"):
        resolved = _resolve_plain(value, event)
        if name == "float" and type(resolved) in (int, float):
            return float(resolved)
        if type(resolved) is {"int": int, "bool": bool, "null": type(None)}.get(name):
            return resolved
        raise YamlLoadError("yaml-syntax", f"'{value}' is not a valid !!{name}", _position(event))
    _check_tag(event, "str")
    return value


def _resolve_plain(value: str, event: yaml.ScalarEvent) -> Any:
    if value in _NULLS:
        return None
    if value in _BOOLS:
        return _BOOLS[value]
    if value in _SPECIAL_FLOATS:
        return _SPECIAL_FLOATS[value]
    if _INT.fullmatch(value):
        try:
            return int(value, 0) if value[:2] in ("0o", "0x") else int(value)
        except ValueError:
            raise YamlLoadError(
                "yaml-too-complex",
                "this number has too many digits; quote it if it is meant as text",
                _position(event),
            ) from None
    if _FLOAT.fullmatch(value):
        return float(value)
    return value
