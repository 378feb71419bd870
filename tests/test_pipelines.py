"""Pass pipelines as text: parsing, running, errors naming the passes already run."""

from __future__ import annotations

import pytest

from kgraft.ir import partitions_of
from kgraft import CutError, PipelineError, passes
from kgraft.ir import Graph
from support.passes_graphs import LONG_SKIP, NESTED, ir, output_names, split_parts, symbolic, untouched


def test_pipeline_text_builds_the_same_passes():
    g = ir(LONG_SKIP)
    with untouched(g):
        from_text = partitions_of(passes.run(g, "split{at=[s0,[c,p]]}"))
        from_python = split_parts(g, at=["s0", ["c", "p"]])
    assert [str(p) for p in from_text] == [str(p) for p in from_python]
    parsed = passes.parse_pipeline("inline-nested, prune-unreachable ,split{at=[s0,[c,p]]}")
    assert [str(p) for p in parsed] == ["inline-nested", "prune-unreachable", "split{at=[s0,[c,p]]}"]
    assert [str(p) for p in passes.parse_pipeline(",".join(str(p) for p in parsed))] == [str(p) for p in parsed]


def test_pipeline_extract_and_split_as_one_graph():
    g = ir(NESTED)
    with untouched(g):
        a = passes.run(g, "inline-nested,prune-unreachable,extract{outputs=[add@1],inputs=[mid_dense@0]}")
        b = passes.extract(passes.inline_nested(g), outputs=["add@1"], inputs=["mid_dense@0"])
        assert str(a) == str(b)
        split = passes.run(g, "inline-nested,split{at=[add@0]},prune-unreachable")
    parts = partitions_of(split)  # passes after split run on the one graph that calls the partitions
    assert isinstance(split, Graph) and len(parts) == 2
    assert [str(p) for p in parts] == [str(p) for p in split_parts(g, at="mid/add@0")]
    assert symbolic(passes.inline_nested(split)) == symbolic(passes.inline_nested(g))  # inlining undoes split


def test_pipeline_quoted_refs_and_errors():
    g = ir(NESTED)
    parts = partitions_of(passes.run(g, 'split{at="mid/add@0"}'))
    assert output_names(parts[0]) == ["add"]
    with pytest.raises(PipelineError, match="inline-nested"):
        passes.run(g, "inline-nestd")
    with pytest.raises(PipelineError, match="no option"):
        passes.run(g, "split{where=a}")
    with pytest.raises(PipelineError):
        passes.run(g, "")
    with pytest.raises(PipelineError):
        passes.run(g, "split{at=[a,b}")
    with pytest.raises(PipelineError, match="no option"):
        split_parts(g, where="a")


def test_pass_errors_say_which_passes_ran():
    g = ir(LONG_SKIP)
    with pytest.raises(CutError) as info:
        passes.run(g, "inline-nested,prune-unreachable,split{at=p}")
    assert "inline-nested, prune-unreachable" in str(info.value)
    assert info.value.passes_run == ["inline-nested", "prune-unreachable"]
