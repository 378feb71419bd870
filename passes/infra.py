"""Pass infrastructure: named passes with options, a registry, pipeline text, a manager.

A pass is a frozen dataclass (its fields are its options) with a kebab-case ``name`` and an
``apply(graph)`` that returns a new graph (or a list of partitions) and never changes its
input. The same object is built from Python (``InlineNested()``), from pipeline text
(``"inline-nested,split{at=conv4_block6_out}"``) and from the CLI. The manager verifies the
IR after every pass, proves the input was left alone (``Graph.version``), and says which
passes had run when one fails.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

from ..ir import Graph, KgraftError, PassError, PipelineError, verify
from ..ir.nogc import gc_paused

__all__ = ["Pass", "register", "registry", "parse_pipeline", "run", "as_function"]

_REGISTRY: dict[str, type["Pass"]] = {}


@dataclass(frozen=True)
class Pass:
    """Base class; subclasses are ``@register`` ed frozen dataclasses."""

    name: ClassVar[str] = ""

    def apply(self, graph: Graph) -> Graph:
        raise NotImplementedError

    def __str__(self) -> str:
        opts = [f"{f.name}={_format_option(getattr(self, f.name))}" for f in dataclasses.fields(self)
                if getattr(self, f.name) != _default(f)]
        return self.name + ("{" + ",".join(opts) + "}" if opts else "")


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _format_option(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_format_option(v) for v in value) + "]"
    if isinstance(value, str) and (not value or value != value.strip() or any(c in value for c in ',{}[]="')):
        return f'"{value}"'  # so that parse_pipeline(str(p)) reads it back as one value
    return str(value).lower() if isinstance(value, bool) else str(value)


def register(cls: type[Pass]) -> type[Pass]:
    """Class decorator: make a pass available to pipelines under ``cls.name``."""
    if not cls.name or cls.name in _REGISTRY:
        raise ValueError(f"pass name {cls.name!r} is empty or already registered")
    _REGISTRY[cls.name] = cls
    return cls


def registry() -> dict[str, type[Pass]]:
    """Registered passes by name (a copy)."""
    return dict(_REGISTRY)


# ---------------------------------------------------------------------------- pipeline text
class _Scanner:
    def __init__(self, text: str):
        self.text, self.pos = text, 0

    def error(self, what: str) -> PipelineError:
        return PipelineError(f"bad pass pipeline at column {self.pos + 1}: {what}\n  {self.text}\n  {' ' * self.pos}^")

    def peek(self) -> str:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def take(self, char: str) -> bool:
        if self.peek() == char:
            self.pos += 1
            return True
        return False

    def atom(self, stops: str) -> str:
        self.peek()
        if self.take('"'):
            end = self.text.find('"', self.pos)
            if end < 0:
                self.pos -= 1  # point at the opening quote
                raise self.error("unterminated string")
            value, self.pos = self.text[self.pos:end], end + 1
            return value
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in stops:
            self.pos += 1
        value = self.text[start:self.pos].strip()
        if not value:
            raise self.error("expected a name or value")
        return value

    def value(self) -> Any:
        if self.take("["):
            items = []
            while not self.take("]"):
                if items and not self.take(","):
                    raise self.error("expected ',' or ']'")
                items.append(self.value())
            return items
        return self.atom(",]}")


def parse_pipeline(text: str) -> list[Pass]:
    """``"inline-nested,split{at=[a,[b,c]]}"`` -> pass objects (options type-checked)."""
    scan, passes = _Scanner(text), []
    while scan.peek():
        if passes and not scan.take(","):
            raise scan.error("expected ',' between passes")
        name_pos = scan.pos
        name = scan.atom(",{")
        options: dict[str, Any] = {}
        if scan.take("{"):
            while not scan.take("}"):
                if options and not scan.take(","):
                    raise scan.error("expected ',' or '}' between options")
                key = scan.atom("=,}")
                if not scan.take("="):
                    raise scan.error(f"expected '=' after option {key!r}")
                options[key] = scan.value()
        scan.pos, end = name_pos, scan.pos
        passes.append(make_pass(name, options, scan))
        scan.pos = end
    if not passes:
        raise PipelineError("empty pass pipeline: name at least one pass, e.g. 'inline-nested'")
    return passes


def make_pass(name: str, options: dict[str, Any], scan: _Scanner | None = None) -> Pass:
    """Build a registered pass from text options, converting each to its field's type."""
    cls = _REGISTRY.get(name)
    if cls is None:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        msg = f"unknown pass {name!r}.{hint} Known passes: {', '.join(sorted(_REGISTRY))}"
        raise scan.error(msg) if scan else PipelineError(msg)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, raw in options.items():
        if key not in fields:
            raise PipelineError(f"pass {name!r} has no option {key!r}; its options: {', '.join(fields) or 'none'}")
        kwargs[key] = _coerce(raw, hints[key], f"{name}{{{key}}}")
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise PipelineError(f"pass {name!r}: {e}") from None


def _coerce(raw: Any, hint: Any, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        if raw in ("none", "None", "null") and type(None) in args:
            return None
        return _coerce(raw, non_none[0], where) if len(non_none) == 1 else raw
    if hint is bool:
        if str(raw).lower() in ("true", "1", "yes"):
            return True
        if str(raw).lower() in ("false", "0", "no"):
            return False
        raise PipelineError(f"option {where} expects true or false, got {raw!r}")
    if hint in (int, float):
        try:
            return hint(raw)
        except (TypeError, ValueError):
            raise PipelineError(f"option {where} expects a number, got {raw!r}") from None
    if origin in (list, tuple):
        items = raw if isinstance(raw, list) else [raw]
        inner = args[0] if args else Any
        return origin(_coerce(i, inner, where) for i in items)
    return raw


# ---------------------------------------------------------------------------- the manager
@gc_paused()
def run(graph: Graph, pipeline: str | Pass | list[Pass], *,
        after_each: Callable[[Pass, Graph], None] | None = None) -> Graph:
    """Run passes in order, verifying the input first and every result.

    ``after_each(pass, result)`` sees every intermediate result (``--print-ir-after-all``).
    """
    passes = parse_pipeline(pipeline) if isinstance(pipeline, str) else (
        [pipeline] if isinstance(pipeline, Pass) else list(pipeline))
    if not isinstance(graph, Graph):
        raise PipelineError(f"passes run on a kgraft IR Graph, got {type(graph).__name__}")
    verify(graph)
    ran: list[str] = []
    for p in passes:
        graph = _apply_one(p, graph, ran)
        ran.append(str(p))
        if after_each is not None:
            after_each(p, graph)
    return graph


def _apply_one(p: Pass, graph: Graph, ran: list[str]) -> Graph:
    context = f"(in pass '{p}'; passes already run: {', '.join(ran) or 'none'})"
    version = _versions(graph)
    try:
        out = p.apply(graph)
        verify(out)
    except KgraftError as e:
        e.args = (f"{e.args[0] if e.args else e}\n{context}",) + e.args[1:]
        e.passes_run = list(ran)
        raise
    except Exception as e:
        raise PassError(f"pass '{p}' failed unexpectedly: {type(e).__name__}: {e}\n{context}") from e
    if _versions(graph) != version:
        raise PassError(f"pass '{p}' changed its input graph; passes must build a new one {context}")
    return out


def _versions(graph: Graph) -> list[int]:
    """The version of ``graph`` and of every nested body: a pass that edits a body in place
    changes it there, not in the graph that holds it."""
    found, stack, seen = [], [graph], set()
    while stack:
        g = stack.pop()
        if id(g) in seen:
            continue
        seen.add(id(g))
        found.append(g.version)
        stack.extend(layer.body for layer in g.layers.values() if layer.body is not None)
    return found


def as_function(cls: type[Pass]) -> Callable[..., Graph]:
    """``fn(graph, **options)`` running one pass through the manager (verified, input untouched)."""

    @functools.wraps(cls, assigned=("__doc__",), updated=())
    def fn(graph: Graph, **options: Any) -> Graph:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - fields)
        if unknown:
            raise PipelineError(f"pass {cls.name!r} has no option(s) {', '.join(unknown)}; "
                                f"its options: {', '.join(sorted(fields)) or 'none'}")
        return run(graph, cls(**options))

    fn.__name__ = fn.__qualname__ = cls.name.replace("-", "_")
    return fn
