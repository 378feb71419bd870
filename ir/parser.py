"""Parse textual IR (as printed by :mod:`kgraft.ir.printer`) back into a :class:`Graph`.

Golden tests can start from text. Lines starting with ``#`` or ``//`` (lit ``RUN:``/``CHECK:``
lines) are skipped. A parsed graph has no weights (``Layer.handle`` is ``None``); layer configs
hold the printed attributes, so Keras fills in its defaults for what the printer leaves out.
"""

from __future__ import annotations

import re

from .errors import IRParseError, KgraftError
from .graph import INPUT_CLASS, RECORDED_TRAINING_WINS, Graph, Layer, Node, ValueRef
from .syntax import ValueScanner
from .types import TensorType

__all__ = ["parse"]

_HEADER = re.compile(r"^kgraft\.(model|sequential) @([^\s(]+)\((.*)\)"
                     rf"( attributes \{{{RECORDED_TRAINING_WINS}=true\}})? \{{$")
_PARAM = re.compile(r"^%([^\s:]+): (\S+)$")
_ID = re.compile(r"^([^\s#]+)#(\d+)$")


def parse(text: str) -> Graph:
    """Parse one ``kgraft.model``/``kgraft.sequential`` block (nested regions included)."""
    source = text.splitlines()
    lines = [(no, line.strip()) for no, line in enumerate(source, 1)
             if line.strip() and not line.strip().startswith(("#", "//"))]
    if not lines:
        raise IRParseError("empty IR: expected 'kgraft.model @name(%input: type, ...) {'")
    parser = _Parser(lines, source)
    graph = parser.model(())
    if parser.i != len(lines):
        no, line = lines[parser.i]
        raise IRParseError(f"line {no}: unexpected text after the model: {line!r}")
    return graph


class _Parser:
    def __init__(self, lines: list[tuple[int, str]], source: list[str]):
        self.lines, self.source, self.i = lines, source, 0
        self.meta: dict = {}  # the top graph's, shared by its bodies (a split's partitions are built alone)

    def scanner(self, no: int, names: dict, skip: str = "") -> ValueScanner:
        """A scanner over source line ``no`` as written (so error columns match the file),
        placed after its indentation and ``skip``."""
        text = self.source[no - 1].rstrip()
        scan = ValueScanner(text, no, names.__getitem__)
        scan.pos = len(text) - len(text.lstrip()) + len(skip)
        return scan

    def next_line(self) -> tuple[int, str]:
        if self.i >= len(self.lines):
            no = self.lines[-1][0] if self.lines else 0
            raise IRParseError(f"line {no}: unexpected end of input (missing 'return' or '}}')")
        self.i += 1
        return self.lines[self.i - 1]

    def model(self, path: tuple[str, ...]) -> Graph:
        no, line = self.next_line()
        m = _HEADER.match(line)
        if not m:
            raise IRParseError(f"line {no}: expected 'kgraft.model @name(%input: type, ...) {{', got {line!r}")
        graph = Graph(m.group(2), "Sequential" if m.group(1) == "sequential" else "Functional")
        graph.meta = self.meta
        if m.group(4):
            self.meta[RECORDED_TRAINING_WINS] = True
        names: dict[str, ValueRef] = {}
        for param in filter(None, (p.strip() for p in m.group(3).split(", "))):
            pm = _PARAM.match(param)
            if not pm:
                raise IRParseError(f"line {no}: bad input {param!r}; expected '%name: f32[?,...]'")
            name, ttype = pm.group(1), _type(pm.group(2), no)
            spec = {"module": "keras.layers", "class_name": INPUT_CLASS, "registered_name": None,
                    "config": {"batch_shape": list(ttype.shape or []), "dtype": ttype.dtype, "name": name}}
            graph.add_layer(Layer(name, INPUT_CLASS, spec, path + (name,)))
            graph.add_node(Node(Node.make_id(name, 0), name, 0, [], {}, (ttype,)))
            names[name] = ValueRef(Node.make_id(name, 0))
        graph.set_inputs([r.node for r in names.values()])
        while True:
            no, line = self.next_line()
            if line == "}":
                raise IRParseError(f"line {no}: missing 'return' in {m.group(1)} @{graph.name} before its closing '}}'")
            if line.startswith("return"):
                scan = self.scanner(no, names, "return")
                outputs = []
                while not scan.at_end():
                    if outputs:
                        scan.expect(",")
                    outputs.append(scan.value())
                graph.set_outputs(outputs)
                no, line = self.next_line()
                if line != "}":
                    raise IRParseError(f"line {no}: expected '}}' after return, got {line!r}")
                return graph
            self.node(graph, names, path, no, line)

    def node(self, graph: Graph, names: dict, path: tuple[str, ...], no: int, line: str) -> None:
        scan = self.scanner(no, names)
        line = scan.text
        results = []
        while True:
            scan.expect("%")
            start = scan.pos
            while scan.pos < len(line) and line[scan.pos] not in " ,":
                scan.pos += 1
            results.append(line[start:scan.pos])
            if not scan.accept(","):
                break
        scan.expect("=")
        cls = scan.bare()
        scan.expect("@")
        start = scan.pos
        while scan.pos < len(line) and line[scan.pos] != "(":
            scan.pos += 1
        node_id = line[start:scan.pos]
        idm = _ID.match(node_id)
        if not idm:
            raise scan.error(f"bad call-site id {node_id!r}; expected 'layer#k'")
        scan.expect("(")
        args, kwargs = [], {}
        while not scan.accept(")"):
            if args or kwargs:
                scan.expect(",")
            save = scan.pos
            if not scan.peek("%") and not scan.peek("[") and not scan.peek("{") and not scan.peek('"'):
                try:
                    key = scan.bare()
                    if scan.accept("="):
                        kwargs[key] = scan.value()
                        continue
                except IRParseError:
                    pass
                scan.pos = save
            args.append(scan.value())
        attrs = {}
        if scan.accept("{"):
            while not scan.accept("}"):
                if attrs:
                    scan.expect(",")
                key = scan.bare()
                scan.expect("=")
                attrs[key] = scan.value()
        scan.expect(":")
        types = []
        while True:
            scan.skip_ws()
            start = scan.pos
            while scan.pos < len(line) and not line.startswith(", ", scan.pos) and line[scan.pos] != " ":
                scan.pos += 1
            types.append(_type(line[start:scan.pos], no))
            if not scan.accept(","):
                break
        has_body = scan.accept("{")
        if not scan.at_end():
            raise scan.error("unexpected text at the end of the line")
        if len(results) != len(types):
            raise IRParseError(f"line {no}: {node_id} defines {len(results)} value(s) but has {len(types)} type(s)")
        layer_name, call_index = idm.group(1), int(idm.group(2))
        body = self.model(path + (layer_name,)) if has_body else None
        if has_body:
            no_close, close = self.next_line()
            if close != "}":
                raise IRParseError(f"line {no_close}: expected '}}' closing the region of {node_id}")
        if layer_name not in graph.layers:
            class_name = cls.split(">")[-1]
            spec = {"module": "keras.layers", "class_name": class_name,
                    "registered_name": cls if ">" in cls else None, "config": {**attrs, "name": layer_name}}
            graph.add_layer(Layer(layer_name, class_name, spec, path + (layer_name,), body=body))
        elif has_body:
            raise IRParseError(f"line {no}: model {layer_name!r} has a second body")
        else:
            layer = graph.layers[layer_name]
            known = {k: v for k, v in layer.config.items() if k != "name"}
            if (layer.spec.get("registered_name") or layer.class_name) != cls or known != attrs:
                raise IRParseError(f"line {no}: call site {node_id} disagrees with an earlier call of layer "
                                   f"{layer_name!r} on its class or attributes (a shared layer has one of each)")
        try:
            graph.add_node(Node(node_id, layer_name, call_index, args, kwargs, tuple(types)))
        except KgraftError as e:
            raise IRParseError(f"line {no}: {e}") from None
        for i, name in enumerate(results):
            if name in names:
                raise IRParseError(f"line {no}: value %{name} is defined twice")
            names[name] = ValueRef(node_id, i)


def _type(text: str, no: int) -> TensorType:
    try:
        return TensorType.parse(text)
    except ValueError:
        raise IRParseError(f"line {no}: not a tensor type: {text!r} (expected e.g. f32[?,4]: a dtype, "
                           "then dimensions that are integers or '?', or [*] for an unknown rank)") from None
