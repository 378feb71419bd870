"""Pass infrastructure: named passes with options, a registry, pipeline text, a manager.

A pass is a frozen dataclass (its fields are its options) with a kebab-case ``name`` and an
``apply(graph)`` that returns a new graph and never changes its input. The same object is built
from Python (``InlineNested()``), from pipeline text (``"inline-nested,split{at=conv4_block6_out}"``)
and from the CLI. Options are typed by their fields' annotations and checked when the pipeline is
parsed, as in xDSL: an option without a default is required, and text values are converted to the
field's type. A ``tuple[...]`` option takes one value or a list (:data:`Refs`: "a ref or a list of
refs"), and lists and dicts given from Python are frozen, so that a pass is hashable and a pass
built from text equals the one built from Python. The manager verifies its input before the
first pass and the IR after every pass, proves the input was left alone (``Graph.version``,
nested bodies included), and says which passes had run when one fails.
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
from ..ir.tree import freeze

__all__ = ["Pass", "Refs", "required", "register", "registry", "parse_pipeline", "run", "as_function"]

_REGISTRY: dict[str, type["Pass"]] = {}

Refs = tuple[str, ...]
"""The type of an option that takes a ref or a list of refs: ``outputs=a`` and ``outputs=[a,b]``
from text, ``outputs="a"`` and ``outputs=["a", "b"]`` from Python; always a tuple on the pass."""


@dataclass(frozen=True)
class Pass:
    """Base class; subclasses are ``@register`` ed frozen dataclasses."""

    name: ClassVar[str] = ""

    def __post_init__(self) -> None:
        # One value for a tuple option is a tuple of one; lists and dicts are frozen (hashable).
        for key, hint in _option_types(type(self)).items():
            value = getattr(self, key)
            if isinstance(value, str) and _takes_many(hint):
                object.__setattr__(self, key, (value,))
            elif isinstance(value, (list, tuple, dict)):
                object.__setattr__(self, key, freeze(value))

    def apply(self, graph: Graph) -> Graph:
        raise NotImplementedError

    def __str__(self) -> str:
        opts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value == _default(f):
                continue
            if isinstance(value, tuple) and len(value) == 1 and not isinstance(value[0], (list, tuple)):
                value = value[0]  # "at=a" for at=("a",): the same option when read back
            opts.append(f"{f.name}={_format_option(value)}")
        return self.name + ("{" + ",".join(opts) + "}" if opts else "")


@functools.cache
def _option_types(cls: type[Pass]) -> dict[str, Any]:
    try:
        hints = typing.get_type_hints(cls)
    except NameError:  # a pass declared in a function, whose annotations name its local imports
        hints = {}
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls)}


def _takes_many(hint: Any) -> bool:
    """Whether an option of type ``hint`` is a sequence (``tuple[...]``, possibly ``| None``)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_takes_many(a) for a in typing.get_args(hint))
    return hint in (tuple, list) or typing.get_origin(hint) in (tuple, list)


def required(example: str) -> Any:
    """A field for a required option (no default); ``example`` is a value that the error for a
    missing option shows: ``split{at=conv4_block6_out}``."""
    return dataclasses.field(metadata={"example": example})


def _build(cls: type[Pass], options: dict[str, Any]) -> Pass:
    """``cls(**options)``, with an unknown or a missing option a PipelineError naming the pass and
    the option (a required option is a field without a default)."""
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = [key for key in options if key not in fields]
    if unknown:
        raise PipelineError(f"pass {cls.name!r} has no option {', '.join(map(repr, unknown))}; "
                            f"its options: {_describe(cls)}")
    missing = [f for f in dataclasses.fields(cls) if _default(f) is dataclasses.MISSING and f.name not in options]
    if missing:
        example = ",".join(f"{f.name}={f.metadata.get('example', '...')}" for f in missing)
        raise PipelineError(f"pass {cls.name!r} needs option {', '.join(repr(f.name) for f in missing)}, "
                            f"e.g. {cls.name}{{{example}}}; its options: {_describe(cls)}")
    try:
        return cls(**options)
    except TypeError as e:
        raise PipelineError(f"pass {cls.name!r}: {e}") from None


def _describe(cls: type[Pass]) -> str:
    return ", ".join(f.name + (" (required)" if _default(f) is dataclasses.MISSING else "")
                     for f in dataclasses.fields(cls)) or "none"


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
    hints = _option_types(cls)
    return _build(cls, {key: _coerce(raw, hints[key], f"{name}{{{key}}}") if key in hints else raw
                        for key, raw in options.items()})


def _coerce(raw: Any, hint: Any, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        if raw in ("none", "None", "null") and type(None) in args:
            return None
        # ``int | tuple[int, ...]``: a list takes the sequence type, one value the other one
        fits = [a for a in non_none if _takes_many(a) == isinstance(raw, list)] or non_none
        return _coerce(raw, fits[0], where)
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
    changed = [where for where, v in _versions(graph).items() if version.get(where) != v]
    if changed:
        what = "its input graph" if changed[0] == "" else f"the body of nested model {changed[0]!r} in its input"
        raise PassError(f"pass '{p}' changed {what}; passes must build a new one {context}")
    return out


def _versions(graph: Graph) -> dict[str, int]:
    """The version of ``graph`` (at ``""``) and of every nested body (at its layer path, e.g.
    ``"enc/block"``): a pass that edits a body in place changes it there, not in the graph that
    holds it. A body shared by several layers is listed once."""
    found, stack, seen = {}, [("", graph)], set()
    while stack:
        where, g = stack.pop()
        if id(g) in seen:
            continue
        seen.add(id(g))
        found[where] = g.version
        stack.extend((f"{where}/{name}" if where else name, layer.body)
                     for name, layer in g.layers.items() if layer.body is not None)
    return found


def as_function(cls: type[Pass]) -> Callable[..., Graph]:
    """``fn(graph, **options)`` running one pass through the manager (verified, input untouched)."""

    @functools.wraps(cls, assigned=("__doc__",), updated=())
    def fn(graph: Graph, **options: Any) -> Graph:
        return run(graph, _build(cls, options))

    fn.__name__ = fn.__qualname__ = cls.name.replace("-", "_")
    return fn
