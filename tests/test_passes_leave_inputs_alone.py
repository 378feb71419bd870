"""Every pass leaves its input graph alone; the manager catches one that does not."""

from __future__ import annotations

import pytest

from kgraft import passes
from kgraft.ir import Graph
from support.passes_graphs import CHAIN, HEAD, NESTED, ir, split_parts, untouched


EVERY_PASS = [
    ("inline_nested", lambda g: passes.inline_nested(g)),
    ("prune_unreachable", lambda g: passes.prune_unreachable(g)),
    ("extract", lambda g: passes.extract(g, outputs=["mid/add@1"], inputs=["mid/dense@0"])),
    ("extract_default", lambda g: passes.extract(g, outputs=["pre"])),
    ("split", lambda g: split_parts(g, at=["pre", "mid/add@0"])),
    ("add_head", lambda g: passes.add_head(g, at="pre", head=ir(HEAD))),
    ("split_points", lambda g: passes.split_points(g)),
    ("downstream", lambda g: passes.downstream(g, "mid/dense@1")),
    ("pipeline", lambda g: passes.run(g, "inline-nested,prune-unreachable,split{at=[pre]}")),
]


@pytest.mark.parametrize("fn", [f for _, f in EVERY_PASS], ids=[n for n, _ in EVERY_PASS])
def test_every_pass_leaves_its_input_alone(fn):
    g = ir(NESTED + "\n")
    dead = ir(NESTED.replace("  %dense = Dense @dense#0(%mid@1)", "  %gone = Dense @gone#0(%pre) {units=4} : f32[?,4]\n"
                             "  %dense = Dense @dense#0(%mid@1)"))
    bodies = {n: str(l.body) for n, l in g.layers.items() if l.body is not None}
    with untouched(g, dead):
        first = fn(g)
        fn(dead)
    assert {n: str(l.body) for n, l in g.layers.items() if l.body is not None} == bodies
    # results are independent of the input: changing one leaves the input alone
    results = first if isinstance(first, list) else [first]
    for r in results:
        if isinstance(r, Graph):
            with untouched(g):
                r.set_outputs(list(r.outputs)[:1])
                r.remove_unused_layers()


def test_manager_rejects_a_pass_that_mutates_its_input():
    from dataclasses import dataclass
    from typing import ClassVar

    from kgraft import PassError

    @dataclass(frozen=True)
    class Vandal(passes.Pass):
        name: ClassVar[str] = "vandal-test-only"

        def apply(self, graph):
            graph.set_outputs(graph.outputs)
            return graph.copy()

    with pytest.raises(PassError, match="changed its input"):
        passes.run(ir(CHAIN), [Vandal()])
