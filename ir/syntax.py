"""The value syntax shared by the IR printer and parser: JSON plus ``%ref`` tensor operands.

``[%a, %b]``, ``{"k": 1}``, ``"same"``, ``[3,3]``, ``null`` — JSON literals print compactly
with sorted keys so the text is deterministic; ``%name`` is a tensor.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable

from .errors import IRParseError
from .tree import ValueRef

__all__ = ["format_value", "ValueScanner"]


def format_value(value: Any, name_of: Callable[[Any], str] | None = None) -> str:
    """Print a constant or argument tree; ``name_of`` names ValueRef leaves (``%x``)."""
    kind = type(value)
    if kind is str:  # the common leaves first, each as json.dumps prints it
        return _encode_str(value)
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return int.__repr__(value)
    if value is None:
        return "null"
    if kind is ValueRef:
        return "%" + name_of(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v, name_of) for v in value) + "]"
    if isinstance(value, dict):
        items = sorted(value.items()) if all(isinstance(k, str) for k in value) else value.items()
        return "{" + ", ".join(f"{json.dumps(k)}: {format_value(v, name_of)}" for k, v in items) + "}"
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


_encode_str = json.encoder.encode_basestring_ascii  # what json.dumps uses for a str (ensure_ascii)

_NAME = re.compile(r"%([^\s,\]\)\}=]+)")
_BARE = re.compile(r"[A-Za-z_][\w.\-/>]*")
_decoder = json.JSONDecoder()


class ValueScanner:
    """A cursor over one line of IR text that reads values, names and punctuation."""

    def __init__(self, text: str, line_no: int, resolve: Callable[[str], Any] = lambda n: n):
        self.text, self.pos, self.line_no, self.resolve = text, 0, line_no, resolve

    def error(self, what: str) -> IRParseError:
        return IRParseError(
            f"line {self.line_no}, column {self.pos + 1}: {what}\n  {self.text}\n  {' ' * self.pos}^"
        )

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] == " ":
            self.pos += 1

    def peek(self, token: str) -> bool:
        self.skip_ws()
        return self.text.startswith(token, self.pos)

    def accept(self, token: str) -> bool:
        if self.peek(token):
            self.pos += len(token)
            return True
        return False

    def expect(self, token: str) -> None:
        if not self.accept(token):
            raise self.error(f"expected {token!r}")

    def bare(self) -> str:
        """An identifier such as an attribute key or a layer class (``MyPkg>Scale``)."""
        self.skip_ws()
        m = _BARE.match(self.text, self.pos)
        if not m:
            raise self.error("expected a name")
        self.pos = m.end()
        return m.group()

    def value(self) -> Any:
        self.skip_ws()
        if self.peek("%"):
            m = _NAME.match(self.text, self.pos)
            if not m:
                raise self.error("expected a value name after '%'")
            self.pos = m.end()
            try:
                return self.resolve(m.group(1))
            except KeyError:
                self.pos = m.start()
                raise self.error(f"value %{m.group(1)} is used before it is defined") from None
        if self.accept("["):
            items = []
            while not self.accept("]"):
                if items:
                    self.expect(",")
                items.append(self.value())
            return items
        if self.accept("{"):
            items = {}
            while not self.accept("}"):
                if items:
                    self.expect(",")
                key = self.value()
                if not isinstance(key, str):
                    raise self.error("dictionary keys must be strings")
                self.expect(":")
                items[key] = self.value()
            return items
        try:
            value, end = _decoder.raw_decode(self.text, self.pos)
        except json.JSONDecodeError:
            raise self.error("expected a value (JSON literal, list, dict or %name)") from None
        self.pos = end
        return value

    def at_end(self) -> bool:
        self.skip_ws()
        return self.pos >= len(self.text)
