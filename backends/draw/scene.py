"""IR graph -> a laid-out scene of boxes, edges, rules and labels (the renderers only paint it).

What the picture shows:

* one box per call site, coloured by kind of layer (conv, dense, norm, ...); a chain of call
  sites with one way in and one way out (conv -> bn -> relu) is one box, unless
  ``collapse=False``: this keeps a 500-layer network at a few hundred boxes;
* a nested model is a dashed cluster holding its own graph (drawn once; later calls of the
  same model are plain boxes), or is inlined with ``flat=True``;
* split points (tensors every input-to-output path goes through) as green dashed rules across
  the picture, labelled with the ref and the bytes per sample that would cross there; with
  ``cuts``, the partitions' boxes get one border colour each and the tensors crossing each
  cut are red.

Coordinates are pixels for an 11 px monospace font, whose advance is known, so text fits its
box without measuring. Imports no TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx

from ...analysis.cuts import split_point_values
from ...ir import INPUT_CLASS, Graph, ValueRef
from ...ir.refs import resolve
from ...ir.types import human_bytes
from ...passes.extract import inline_if_needed
from ...passes.inline_nested import inline
from ...passes.split import resolve_split
from .layout import layered

__all__ = ["Scene", "Box", "Edge", "Rule", "Label", "build_scene", "category", "FONT", "CHAR_WIDTH"]

FONT = 11.0
CHAR_WIDTH = 0.61 * FONT  # advance of DejaVu Sans Mono / Menlo / Consolas
LINE = 14.0
PAD = 6.0
MAX_CHARS = 60
RULE_GAP = 8.0  # room for a split point's rule between two lines of a box
HEADER = 58.0
MARGIN = 16.0

INK, MUTED, EDGE = "#0f172a", "#64748b", "#94a3b8"
SPLIT, CUT = "#16a34a", "#dc2626"
PARTITIONS = ["#2563eb", "#ea580c", "#7c3aed", "#0891b2", "#ca8a04", "#db2777"]

_MERGE = {"Add", "Concatenate", "Multiply", "Average", "Maximum", "Minimum", "Subtract", "Dot"}
_SHAPE = ("Reshape", "Flatten", "Permute", "RepeatVector", "ZeroPadding", "Cropping", "UpSampling",
          "Resizing", "Rescaling", "Normalization")
_SEQUENCE = ("LSTM", "GRU", "SimpleRNN", "Bidirectional", "MultiHeadAttention", "Attention", "Embedding")
CATEGORIES = [  # (name, fill); the first whose test matches a class name wins
    ("input", "#f1f5f9"), ("conv", "#dbeafe"), ("dense", "#dcfce7"), ("norm", "#e2e8f0"),
    ("activation", "#fef9c3"), ("pooling", "#f3e8ff"), ("merge", "#ffedd5"), ("shape", "#ccfbf1"),
    ("sequence", "#fce7f3"), ("other", "#ffffff"),
]
_FILL = dict(CATEGORIES)
_PRIORITY = ["conv", "dense", "sequence", "pooling", "merge", "shape", "norm", "activation", "input", "other"]  # a chain's colour
_ABBREV = {"BatchNormalization": "BN", "LayerNormalization": "LN", "Activation": "Act",
           "DepthwiseConv2D": "DWConv2D", "GlobalAveragePooling2D": "GAP2D", "ZeroPadding2D": "Pad2D"}


def category(class_name: str) -> str:
    c = class_name.split(">")[-1]
    if c == INPUT_CLASS:
        return "input"
    if c == "Rescaling" or c == "Normalization":
        return "shape"
    if "Normalization" in c:
        return "norm"
    if "Conv" in c:
        return "conv"
    if c in ("Dense", "EinsumDense"):
        return "dense"
    if c.endswith(("ReLU", "ELU")) or c in ("Activation", "Softmax"):
        return "activation"
    if "Pooling" in c:
        return "pooling"
    if c in _MERGE:
        return "merge"
    if c.startswith(_SHAPE):
        return "shape"
    if c.startswith(_SEQUENCE):
        return "sequence"
    return "other"


# ---------------------------------------------------------------------------- primitives
@dataclass
class Box:
    x: float
    y: float
    w: float
    h: float
    lines: list[str]
    fill: str = "#ffffff"
    stroke: str = MUTED
    stroke_width: float = 1.0
    dashed: bool = False
    cluster: bool = False
    tooltip: str = ""
    refs: tuple[str, ...] = ()
    line_y: list[float] = field(default_factory=list)  # text baselines, from the box's top
    splits: list[tuple[int, ValueRef]] = field(default_factory=list)  # (line, split point it names)
    bold_first: bool = True


@dataclass
class Edge:
    points: list[tuple[float, float]]
    color: str = EDGE
    width: float = 1.2


@dataclass
class Rule:
    """A dashed horizontal line across the picture (a split point or a cut)."""

    x1: float
    x2: float
    y: float
    color: str = SPLIT
    over: bool = False  # drawn over the boxes (a separator inside one), else behind them


@dataclass
class Label:
    x: float
    y: float
    text: str
    color: str = INK
    size: float = FONT
    anchor: str = "start"  # or "middle", "end"
    bold: bool = False


@dataclass
class Scene:
    width: float
    height: float
    title: str
    boxes: list[Box] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)
    labels: list[Label] = field(default_factory=list)

    def shift(self, dx: float, dy: float) -> None:
        for b in self.boxes:
            b.x, b.y = b.x + dx, b.y + dy
        for e in self.edges:
            e.points = [(x + dx, y + dy) for x, y in e.points]
        for r in self.rules:
            r.x1, r.x2, r.y = r.x1 + dx, r.x2 + dx, r.y + dy
        for t in self.labels:
            t.x, t.y = t.x + dx, t.y + dy

    def add(self, other: "Scene") -> None:
        self.boxes += other.boxes
        self.edges += other.edges
        self.rules += other.rules
        self.labels += other.labels


# ---------------------------------------------------------------------------- building
@dataclass
class _Marks:
    """What to highlight at the top level: split points, partitions, cut tensors."""

    split: dict[str, ValueRef] = field(default_factory=dict)  # node id -> split value
    part: dict[str, int] = field(default_factory=dict)  # node id -> partition
    cut: dict[ValueRef, int] = field(default_factory=dict)  # crossing value -> cut index
    cut_refs: dict[ValueRef, int] = field(default_factory=dict)  # values named in a cut -> cut index
    single: dict[ValueRef, int] = field(default_factory=dict)  # ... in a cut of one tensor


def build_scene(graph: Graph, *, flat: bool = False, collapse: bool = True, cuts=None) -> Scene:
    """The laid-out picture of ``graph``; ``cuts`` as ``kgraft split`` takes them (list of lists)."""
    g = inline(graph) if flat else graph
    marks = _Marks()
    if cuts:
        g = inline_if_needed(g, [r for cut in cuts for r in cut])
        plan = resolve_split(g, cuts)
        for i, part in enumerate(plan.partitions):
            marks.part.update((n, i) for n in part.nx if n in g and n not in part.inputs)
        for i, boundary in enumerate(plan.boundaries[1:-1]):
            marks.cut.update((v, i) for v in boundary)
        marks.cut_refs = {resolve(g, r): i for i, cut in enumerate(cuts) for r in cut}
        marks.single = {resolve(g, cut[0]): i for i, cut in enumerate(cuts) if len(cut) == 1}
    marks.split = {v.node: v for v in split_point_values(g)}
    body = _Level(g, collapse, marks, drawn=set(), prefix="").scene()

    scene = Scene(0, 0, graph.name)
    body.shift(MARGIN, HEADER)
    scene.add(body)
    right = MARGIN + body.width
    for rule in scene.rules:
        if not rule.over:
            rule.x1, rule.x2 = MARGIN / 2, right + MARGIN / 2
    label_width = max((len(t.text) * CHAR_WIDTH for t in scene.labels if t.anchor == "start" and t.x >= right),
                      default=0)
    scene.width = right + MARGIN + label_width + MARGIN
    scene.height = HEADER + body.height + MARGIN
    header_right = _header(scene, g, graph, marks, cuts, flat)
    scene.width = max(scene.width, header_right + MARGIN)
    return scene


def _header(scene: Scene, g: Graph, graph: Graph, marks: _Marks, cuts, flat: bool) -> float:
    """Title and legend; returns where they end on the right."""
    count = sum(1 for b in scene.boxes if not b.cluster)
    calls = _count_calls(g)
    facts = [f"{calls} call sites in {count} boxes", f"{len(marks.split)} split points"]
    if cuts:
        facts.append("cut at " + " | ".join(",".join(c) for c in cuts))
    if not flat and any(l.body is not None for l in g.layers.values()):
        facts.append("nested models as clusters (--flat inlines them)")
    title = f"{graph.name}: " + " · ".join(facts)
    scene.labels.append(Label(MARGIN, 22, title, bold=True, size=13))
    x = MARGIN
    legend = [(name, fill, MUTED) for name, fill in CATEGORIES if name != "other"]
    if marks.part:
        legend += [(f"part{i}", "#ffffff", PARTITIONS[i % len(PARTITIONS)]) for i in sorted(set(marks.part.values()))]
    for name, fill, stroke in legend:
        scene.boxes.append(Box(x, 34, 12, 12, [], fill=fill, stroke=stroke, stroke_width=1.5 if marks.part else 1))
        scene.labels.append(Label(x + 16, 44, name, color=MUTED))
        x += 16 + len(name) * CHAR_WIDTH + 12
    for text, color in (("split point", SPLIT), ("cut", CUT)) if cuts else (("split point", SPLIT),):
        scene.rules.append(Rule(x, x + 24, 40, color))
        scene.labels.append(Label(x + 28, 44, text, color=color))
        x += 28 + len(text) * CHAR_WIDTH + 12
    return max(x, MARGIN + len(title) * CHAR_WIDTH * 13 / FONT)


def _count_calls(g: Graph) -> int:
    return sum(_count_calls(g.layers[n.layer].body) if g.layers[n.layer].body is not None else 1
               for n in g.nodes() if n.id not in g.inputs) + len(g.inputs)


class _Level:
    """One graph (the model, or a nested model's body) laid out as a scene at (0, 0)."""

    def __init__(self, g: Graph, collapse: bool, marks: _Marks | None, drawn: set[str], prefix: str):
        self.g, self.collapse, self.drawn, self.prefix = g, collapse, drawn, prefix
        self.marks = marks or _Marks()
        self.top = marks is not None  # the model itself, not a nested body: outputs and splits are marked

    def scene(self) -> Scene:
        g = self.g
        simple = nx.DiGraph()
        simple.add_nodes_from(g.topological_ids())
        simple.add_edges_from((u, v) for u, v in g.nx.edges())
        clusters = {}
        for node in g.nodes():
            layer = g.layers[node.layer]
            if layer.body is not None and layer.name not in self.drawn:
                self.drawn.add(layer.name)
                clusters[node.id] = _Level(layer.body, self.collapse, None, self.drawn,
                                           self.prefix + layer.name + "/").scene()
        groups = self._groups(simple)
        head = {n: grp[0] for grp in groups for n in grp}
        dag = nx.DiGraph()
        dag.add_nodes_from(grp[0] for grp in groups)
        dag.add_edges_from((head[u], head[v]) for u, v in simple.edges() if head[u] != head[v])
        boxes = {grp[0]: self._box(grp, clusters.get(grp[0])) for grp in groups}
        place = layered(dag, {k: (b.w, b.h) for k, b in boxes.items()})

        scene = Scene(place.width, place.height, g.name)
        for k, box in boxes.items():
            box.x, box.y = place.x[k] - box.w / 2, place.y[k]
            scene.boxes.append(box)
            if k in clusters:
                inner = clusters[k]
                inner.shift(box.x + (box.w - inner.width) / 2, box.y + LINE + 2 * PAD)
                scene.add(inner)
        tails = {grp[0]: grp[-1] for grp in groups}
        for (a, b), points in place.routes.items():
            crossing = [self.marks.cut[v] for v in self._values(tails[a], b) if v in self.marks.cut
                        and self.marks.part.get(v.node, 0) <= self.marks.cut[v] < self.marks.part.get(b, 0)]
            scene.edges.append(Edge(points, CUT, 2.4) if crossing else Edge(points))
            if crossing and tails[a] not in self.marks.split:  # a split point's rule says it already
                scene.labels.append(Label(points[0][0] + 5, points[0][1] + 13, f"cut {crossing[0]}",
                                          color=CUT, size=10))
        for grp in groups:
            box = boxes[grp[0]]
            for line, value in box.splits:
                if line == len(box.lines) - 1:  # under the box, in the gap to the next layer
                    self._rule(scene, value, place.bands[place.layer[grp[0]]][1] + 18)
                else:  # between two lines of the box: the rule runs behind it, a separator shows it inside
                    y = box.y + box.line_y[line] + 3 + RULE_GAP / 2
                    self._rule(scene, value, y)
                    scene.rules.append(Rule(box.x, box.x + box.w, y, scene.rules[-1].color, over=True))
        return scene

    def _groups(self, simple: nx.DiGraph) -> list[list[str]]:
        """Call sites in boxes: chains with one way in and one way out share one."""
        g, marks = self.g, self.marks
        outputs = {v.node for v in g.outputs}
        groups: dict[str, list[str]] = {}
        head: dict[str, str] = {}
        for n in g.topological_ids():
            preds = list(simple.predecessors(n))
            if self.collapse and len(preds) == 1 and simple.out_degree(preds[0]) == 1:
                p = preds[0]
                joinable = all(x not in g.inputs and g.layer_of(x).body is None for x in (p, n))
                if joinable and p not in outputs and marks.part.get(p) == marks.part.get(n) \
                        and not any(v in marks.cut_refs for v in self._values(p, n)):
                    groups[head[p]].append(n)
                    head[n] = head[p]
                    continue
            groups[n], head[n] = [n], n
        return list(groups.values())

    def _values(self, u: str, v: str) -> list[ValueRef]:
        return [ValueRef(u, d["out"]) for d in self.g.nx.get_edge_data(u, v, default={}).values()]

    def _ref(self, node_id: str) -> str:
        node = self.g.node(node_id)
        name = self.g.value_name(ValueRef(node_id, 0))
        return self.prefix + (name if len(node.outputs) == 1 else name.rsplit(":", 1)[0])

    def _type(self, node_id: str) -> str:
        return ", ".join(str(t) for t in self.g.node(node_id).outputs)

    def _class(self, node_id: str) -> str:
        return self.g.layer_of(node_id).class_name.split(">")[-1]

    def _lines(self, grp: list[str]) -> tuple[list[str], list[tuple[int, ValueRef]]]:
        """A box's text, and which lines name a split point. Runs of a chain are summed up in three
        lines, but each split point gets a line of its own: every one of them is a place to cut."""
        split = self.marks.split if self.top else {}
        if len(grp) == 1 and grp[0] not in split:
            return [self._ref(grp[0]), f"{self._class(grp[0])}  {self._type(grp[0])}"], []
        lines, splits, run = [], [], []

        def flush():
            if len(run) == 1:
                lines.append(self._one_line(run[0]))
            elif run:
                names = " ".join(dict.fromkeys(_ABBREV.get(c, c) for c in map(self._class, run)))
                lines.extend([f"{self._ref(run[0])} … {self._ref(run[-1])}", f"{len(run)} layers: {names}",
                              f"-> {self._type(run[-1])}"])
            run.clear()

        for n in grp:
            if n in split:
                flush()
                lines.append(self._one_line(n))
                splits.append((len(lines) - 1, split[n]))
            else:
                run.append(n)
        flush()
        return lines, splits

    def _one_line(self, node_id: str) -> str:
        return f"{self._ref(node_id)}  {self._class(node_id)}  {self._type(node_id)}"

    def _box(self, grp: list[str], cluster: Scene | None) -> Box:
        g = self.g
        classes = [self._class(n) for n in grp]
        kinds = [category(c) for c in classes]
        lines, splits = self._lines(grp)
        if cluster is not None:
            layer = g.layer_of(grp[0])
            lines = [f"{self._ref(grp[0])}: {classes[0]} {layer.name}, {_count_calls(layer.body)} call sites"]
        elif g.layer_of(grp[0]).body is not None:
            lines[1] = f"{classes[0]} {g.layer_of(grp[0]).name}, drawn at its first call  {self._type(grp[0])}"
        lines = [_clip(t) for t in lines]
        line_y, height = _stack(len(lines), {i for i, _ in splits if i < len(lines) - 1})
        tooltip = "\n".join(f"{self._ref(n)}: {c} -> {self._type(n)}" for n, c in zip(grp, classes))
        if splits:
            tooltip += "\nsplit point(s): " + ", ".join(g.value_name(v) for _, v in splits)
        box = Box(0, 0, max(len(t) for t in lines) * CHAR_WIDTH + 2 * PAD, height, lines,
                  fill=_FILL[min(kinds, key=_PRIORITY.index)], tooltip=tooltip,
                  refs=tuple(self._ref(n) for n in grp), line_y=line_y, splits=splits,
                  bold_first=not splits or splits[0][0] > 0 or len(lines) == 1)
        if self.top and grp[-1] in {v.node for v in g.outputs}:
            box.stroke, box.stroke_width = INK, 2.2
            box.tooltip += "\nmodel output"
        if grp[0] in self.marks.part:
            box.stroke, box.stroke_width = PARTITIONS[self.marks.part[grp[0]] % len(PARTITIONS)], 2.0
        if cluster is not None:
            box.w = max(box.w, cluster.width + 2 * PAD + 8)
            box.h = cluster.height + LINE + 3 * PAD + 4
            box.fill, box.dashed, box.cluster = "#f8fafc", True, True
        return box

    def _rule(self, scene: Scene, value: ValueRef, y: float) -> None:
        """A rule across the picture at a split point (alone in its layer: only its own box is crossed)."""
        t = self.g.value_type(value)
        cut = self.marks.single.get(value)
        text = (f"cut {cut}: " if cut is not None else "") + \
            f"{self.g.value_name(value)}  {t}  {human_bytes(t.bytes_per_sample)}/sample"
        color = SPLIT if cut is None else CUT
        scene.rules.append(Rule(0, scene.width, y, color))
        scene.labels.append(Label(scene.width + 24, y + 4, text, color=color))


def _stack(count: int, gaps: set[int]) -> tuple[list[float], float]:
    """Baselines of ``count`` text lines in a box (extra room after lines in ``gaps``), and its height."""
    y, baselines = PAD, []
    for i in range(count):
        y += LINE
        baselines.append(y - 3)
        if i in gaps:
            y += RULE_GAP
    return baselines, y + PAD - 2


def _clip(text: str) -> str:
    if len(text) <= MAX_CHARS:
        return text
    keep = MAX_CHARS - 1
    return text[: keep // 2] + "…" + text[-(keep - keep // 2):]

