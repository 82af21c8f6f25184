"""Load one YAML spec into plain Python data plus a source span for every value and key.

Only PyYAML's safe composer is used: we build the node tree and convert it ourselves, so that we
can record positions, reject duplicate keys (PyYAML silently keeps the last one), and bound the
work done when aliases are expanded (billion laughs) or documents are absurdly nested.
Every problem becomes a `SpecError` with a precise span; unreadable files raise `FileProblem`.
"""
from __future__ import annotations

import functools
import gc
import math
import operator
import os
import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from ..base.diagnostics import Diagnostic, Label, Span, SpecError
from ..base.reading import FileProblem, FileTooBig, read_regular_file

MAX_FILE_BYTES = 2_000_000
MAX_NODES = 200_000  # counted per visit, so aliases that multiply are caught early
MAX_DEPTH = 64

_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = {_TAG + t for t in ("str", "int", "float", "bool", "null", "timestamp")}
# YAML 1.2 floats that YAML 1.1 (PyYAML) misses: an exponent without a dot, `1e-5`, `5E+5`
_EXP_FLOAT = re.compile(r"[-+]?[0-9]+(\.[0-9]*)?[eE][-+]?[0-9]+")
_KINDS = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
          int: "a number", float: "a number", type(None): "null"}


@dataclass
class Loaded:
    data: Any
    # path -> the YAML node of the value (of its key). Most spans are never read (they serve diagnostics):
    # a Span is made from its node on the first lookup.
    nodes: dict[tuple, Any] = field(default_factory=dict)
    key_nodes: dict[tuple, Any] = field(default_factory=dict)
    text: str = ""
    file: str = "<string>"
    nonfinite: list[tuple[tuple, float]] = field(default_factory=list)   # (path, value) of inf and nan values

    @property
    def spans(self) -> dict[tuple, Span]:
        """path -> span of the value, every one (span() looks one up)."""
        return {p: _span_at(self.nodes, p, self.file) for p in self.nodes}

    @property
    def key_spans(self) -> dict[tuple, Span]:
        """path -> span of its key."""
        return {p: _span_at(self.key_nodes, p, self.file) for p in self.key_nodes}

    def span(self, path: tuple, key: bool = False) -> Span | None:
        """Best span for a path: exact match, else the span of the longest existing prefix."""
        path = tuple(path)
        for i in range(len(path), -1, -1):
            p = path[:i]
            if key and p in self.key_nodes:
                return _span_at(self.key_nodes, p, self.file)
            if p in self.nodes:
                return _span_at(self.nodes, p, self.file)
        return None


def _span_at(table: dict, path: tuple, file: str) -> Span:
    span = table[path]
    if span.__class__ is not Span:
        span = table[path] = _span_of(file, span)
    return span


def _fail(code: str, message: str, span: Span | None, **kw: Any) -> SpecError:
    return SpecError([Diagnostic(code, message, span, **kw)])


def _node_span(file: str, node: yaml.Node) -> Span:
    s, e = node.start_mark, node.end_mark
    # Only single-line tokens get an end column; a caret can't underline across lines.
    end = e.column + 1 if e is not None and e.line == s.line and e.column > s.column else None
    return Span(file, s.line + 1, s.column + 1, end)


def _pos_span(file: str, text: str, index: int) -> Span:
    line = text.count("\n", 0, index) + 1
    return Span(file, line, index - (text.rfind("\n", 0, index) + 1) + 1)


def load_yaml_file(path: str) -> Loaded:
    shown = os.fspath(path)
    try:
        data = read_regular_file(path, MAX_FILE_BYTES)
    except FileTooBig as e:
        raise _too_big(shown, e.size) from None
    return load_yaml_text(data, shown)


def _too_big(file: str, size: int) -> SpecError:
    return _fail("GF003", f"spec file is {size / 1e6:.1f} MB; the limit is {MAX_FILE_BYTES / 1e6:g} MB",
                 Span(file, 1, 1), help="split the spec, or generate it with fewer repeated blocks")


def _decode(raw: str | bytes, file: str) -> str:
    size = len(raw) if isinstance(raw, bytes) else len(raw.encode("utf-8", "surrogatepass"))
    if size > MAX_FILE_BYTES:
        raise _too_big(file, size)
    if isinstance(raw, bytes):
        nul = raw.find(b"\0")
        if nul >= 0:  # check before decoding: binary files deserve a clearer message than UTF-8
            text = raw[:nul].decode("utf-8", "replace")
            raise _fail("GF005", "file looks binary (contains NUL bytes)", _pos_span(file, text, len(text)),
                        help="spec files must be UTF-8 text")
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw.count(b"\n", 0, exc.start) + 1
            col = len(raw[raw.rfind(b"\n", 0, exc.start) + 1:exc.start].decode("utf-8", "replace")) + 1
            raise _fail("GF005", f"file is not valid UTF-8 text (byte 0x{raw[exc.start]:02x} at line {line}, "
                        f"column {col})", Span(file, line, col, col + 1),
                        help="re-save the file as UTF-8") from None
    elif "\0" in raw:
        raise _fail("GF005", "file looks binary (contains NUL bytes)", _pos_span(file, raw, raw.index("\0")))
    return raw[1:] if raw.startswith("\ufeff") else raw  # a BOM is harmless; strip it


def load_yaml_text(text: str | bytes, file: str = "<string>") -> Loaded:
    text = _decode(text, file)
    if _fast_ok(text):
        try:
            return _load(text, file, _CLoader)
        except (SpecError, yaml.YAMLError, RecursionError):
            pass   # whatever is wrong, the pure-Python loader reports it, as it always has
    return _load(text, file, yaml.SafeLoader)


# libyaml's parser is ~10× faster than PyYAML's and gives the same nodes, tags and marks; it serves text the
# pure reader accepts (no control characters) and whose nesting can't be deep (its composer recurses in C,
# without Python's recursion limit: brackets, `- ` and lines bound the depth). Anything it refuses goes to the pure loader for the diagnostic.
_FAST_NESTING = 2_000
_RESOLVER = yaml.resolver.Resolver()


@functools.lru_cache(maxsize=4096)
def _resolved(kind, value, implicit):
    """A node's tag: PyYAML's resolver is a pure function of these (no path resolvers), and spec files repeat
    their words; the cache's C wrapper spares libyaml's composer a Python call per node."""
    return _RESOLVER.resolve(kind, value, implicit)


class _CLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """libyaml's safe loader, resolving tags through `_resolved`."""

    def __init__(self, stream):
        super().__init__(stream)
        self.resolve = _resolved
        # The composer calls these per node to follow path resolvers, and there are none (PyYAML's methods
        # return at once): C callables that do nothing spare it two Python calls per node.
        self.descend_resolver, self.ascend_resolver = operator.is_, tuple


def _fast_ok(text: str) -> bool:
    return (getattr(yaml, "__with_libyaml__", False) and yaml.reader.Reader.NON_PRINTABLE.search(text) is None
            and text.count("[") + text.count("{") + text.count("- ") + text.count("\n") < _FAST_NESTING)


def _load(text: str, file: str, loader_class) -> Loaded:
    # Composing and converting allocate a few objects per value and free none: the cyclic collector would
    # run every few hundred values and find nothing (a self-referring alias's cycle is collected later).
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _compose_convert(text, file, loader_class)
    finally:
        if collecting:
            gc.enable()


def _compose_convert(text: str, file: str, loader_class) -> Loaded:
    loader = None
    try:
        loader = loader_class(text)  # the reader rejects control characters right here
        node = loader.get_single_node()
        if node is None:
            raise _fail("GF006", "expected exactly one YAML document", Span(file, 1, 1),
                        notes=["the file is empty (or only comments)"])
        # Only anchors (`&`) make nodes shared: without one the tree has as many values as it has nodes, and the
        # converter's own count bounds it; the size check then only decides which error a bad tree gets first.
        anchored = _ANCHOR.search(text) is not None
        if anchored:
            _check_expanded_size(node, file)
        out = Loaded(None, {}, {}, text, file)
        try:
            out.data = _Converter(loader, out).convert(node, (), 0)
        except SpecError:
            if not anchored:
                _check_expanded_size(node, file)   # its error comes first, as when it ran before converting
            raise
    except RecursionError:  # PyYAML's composer recurses once per nesting level
        raise _fail("GF003", "nesting too deep", Span(file, 1, 1),
                    help=f"specs may nest at most {MAX_DEPTH} levels") from None
    except yaml.reader.ReaderError as exc:
        raise _fail("GF005", f"file contains a control character (U+{exc.character:04X})",
                    _pos_span(file, text, exc.position), help="spec files must be plain UTF-8 text") from None
    except yaml.MarkedYAMLError as exc:
        raise _syntax_error(exc, file) from None
    except yaml.YAMLError as exc:
        raise _fail("GF001", f"invalid YAML: {exc}", Span(file, 1, 1)) from None
    finally:
        if loader is not None:
            loader.dispose()
    if not isinstance(out.data, dict):
        raise _fail("GF006", f"a spec must be a mapping at the top level, found {_KINDS.get(type(out.data), 'a value')}",
                    out.span(()), help="start the file with `key: value` lines")
    return out


def _check_expanded_size(root: yaml.Node, file: str) -> None:
    """Refuse a document whose aliases expand past MAX_NODES values, or refer to themselves, before
    converting it. Aliased nodes are shared objects in PyYAML's tree, so sizes memoised by identity
    cost one visit per distinct node (O(anchors)), however large the expansion."""
    size: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    open_: set[int] = set()
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            open_.discard(key)
            total = 1 + sum(size[id(c)] for c in _children(node))
            if total > MAX_NODES:
                raise _fail("GF003", f"document expands to more than {MAX_NODES:,} values",
                            _node_span(file, node),
                            notes=["aliases (`*name`) that refer to other aliases multiply the document size"],
                            help="use fewer nested aliases")
            size[key] = total
            continue
        if key in size:
            continue
        if key in open_:
            raise _fail("GF003", "an alias refers to the value that contains it", _node_span(file, node),
                        help="an alias may only repeat a complete value defined before it")
        open_.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in size)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _syntax_error(exc: yaml.MarkedYAMLError, file: str) -> SpecError:
    mark = exc.problem_mark or exc.context_mark
    span = Span(file, mark.line + 1, mark.column + 1) if mark else Span(file, 1, 1)
    if exc.context == "expected a single document in the stream":
        return _fail("GF006", "expected exactly one YAML document, found several", span,
                     help="remove the extra `---` document; put each spec in its own file")
    problem = exc.problem or exc.context or "syntax error"
    notes = []
    if exc.context and exc.problem:
        cm = exc.context_mark
        notes.append(exc.context + (f" (line {cm.line + 1}, column {cm.column + 1})" if cm else ""))
    hint = "indent with spaces; YAML does not allow tabs" if "'\\t'" in problem else None
    return _fail("GF001", f"invalid YAML: {problem}", span, notes=notes, help=hint)


# an anchor is `&` and at least one of these (both parsers); a `&` in prose ("add & norm") is none
_ANCHOR = re.compile(r"&[0-9A-Za-z_-]")
_STR, _INT, _NULL, _SEQ, _MAP, _MERGE = (_TAG + t for t in ("str", "int", "null", "seq", "map", "merge"))
_NUMERIC_START = frozenset("+-0123456789")
_PLAIN_INT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)")   # the ints PyYAML reads as Python does (no 0o, 0x, _, 1:30)


_new = object.__new__


def _span_of(file: str, node: yaml.Node) -> Span:
    """`_node_span` for the spans looked up: the frozen dataclass's __init__ (a setattr per field) costs
    twice what filling the instance's dict does, for an equal Span."""
    s, e = node.start_mark, node.end_mark
    span = _new(Span)
    span.__dict__.update(file=file, line=s.line + 1, col=s.column + 1,
                         end_col=e.column + 1 if e is not None and e.line == s.line and e.column > s.column else None)
    return span


class _Converter:
    """Node tree -> plain data, recording nodes (for spans) and enforcing the node and depth limits."""

    def __init__(self, loader: yaml.SafeLoader, out: Loaded):
        self.loader, self.out, self.file, self.count = loader, out, out.file, 0
        self.nodes = out.nodes

    def convert(self, node: yaml.Node, path: tuple, depth: int) -> Any:
        self.count += 1
        if self.count > MAX_NODES:  # stop before building the expanded structure
            raise _fail("GF003", f"document expands to more than {MAX_NODES:,} values", _span_of(self.file, node),
                        notes=["aliases (`*name`) that refer to other aliases multiply the document size"],
                        help="use fewer nested aliases")
        if depth > MAX_DEPTH:  # also stops recursive aliases such as `&a [*a]`
            raise _fail("GF003", f"nesting deeper than {MAX_DEPTH} levels", _span_of(self.file, node))
        self.nodes[path] = node
        cls = node.__class__
        if cls is ScalarNode:
            value = self.scalar(node)
            if value.__class__ is float and not math.isfinite(value):
                self.out.nonfinite.append((path, value))
            return value
        if cls is SequenceNode:
            self.check_tag(node, _SEQ)
            depth += 1
            return [self.convert(item, path + (i,), depth) for i, item in enumerate(node.value)]
        self.check_tag(node, _MAP)
        result: dict = {}
        key_nodes, file, depth = self.out.key_nodes, self.file, depth + 1
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                raise _fail("GF004", "merge keys (`<<`) are not supported", _span_of(file, key_node),
                            help="write the keys out, or use an alias (`*name`) for the whole value")
            if key_node.__class__ is not ScalarNode:
                kind = "a list" if isinstance(key_node, SequenceNode) else "a mapping"
                raise _fail("GF004", f"mapping keys must be plain scalars, found {kind}", _span_of(file, key_node))
            if key_node.tag == _STR:   # the usual key: its text (what `scalar` and the line below give)
                key = key_node.value
            else:
                key = self.scalar(key_node)
                if key.__class__ is not str and (not isinstance(key, int) or isinstance(key, bool)):
                    key = key_node.value  # `on:`, `null:`, `1.5:` keys keep their source text
            where = path + (key,)
            if key in result:
                raise SpecError([Diagnostic("GF002", f"duplicate key `{key}`", _span_of(file, key_node),
                                            labels=[Label(_span_at(key_nodes, where, file), "first defined here")],
                                            help="remove one of them; YAML would silently keep the last")])
            key_nodes[where] = key_node
            result[key] = self.convert(value_node, where, depth)
        return result

    def check_tag(self, node: yaml.Node, expected: str) -> None:
        if node.tag != expected:
            raise _fail("GF004", f"unsupported YAML tag `{node.tag}`", _span_of(self.file, node), help="remove the tag")

    def scalar(self, node: ScalarNode) -> Any:
        tag, value = node.tag, node.value
        if tag == _STR:   # what SafeConstructor gives for these tags, without its dispatch per value
            if not node.style and value[:1] in _NUMERIC_START and _EXP_FLOAT.fullmatch(value):
                return float(value)  # YAML 1.1 reads a plain `1e-5` (style None; libyaml: "") as a string; 1.2 (and users) say float
            return value
        if tag == _INT and _PLAIN_INT.fullmatch(value):
            return int(value)
        if tag == _NULL:
            return None
        if tag not in _SCALAR_TAGS:
            raise _fail("GF004", f"unsupported YAML tag `{node.tag}`", _span_of(self.file, node), help="remove the tag")
        if tag == _TAG + "timestamp":
            return value  # keep dates as written: data must stay plain str/int/float/bool/None
        return self.loader.construct_object(node, deep=True)
