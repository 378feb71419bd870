"""Pass infrastructure: pipeline text, the registry, the manager, prune-unreachable, the CLI.

Pure IR (no TensorFlow). Throwaway passes are registered per test and the registry is restored
afterwards, so no test leaks a pass into another.
"""

import dataclasses
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

import kgraft.passes
from kgraft.ir import (
    CutError,
    Graph,
    PassError,
    PipelineError,
    ValueRef,
    VerificationError,
    parse,
)
from kgraft.passes import Pass, parse_pipeline, register, registry, run
from kgraft.passes.delete_channels import DeleteChannels
from kgraft.passes.extract import Extract
from kgraft.passes.rename import Rename
from kgraft.passes.split import Split
from kgraft.passes import infra
from kgraft.passes.infra import Refs, required
from kgraft.passes.prune_unreachable import PruneUnreachable


# ---------------------------------------------------------------------------- throwaway passes
@dataclass(frozen=True)
class OptsPass(Pass):
    """Options of every supported type."""

    name: ClassVar[str] = "test-opts"
    count: int = 1
    ratio: float = 0.5
    flag: bool = False
    names: tuple[str, ...] = ()
    label: str | None = None

    def apply(self, graph: Graph) -> Graph:
        return graph.copy()


@dataclass(frozen=True)
class BreakPass(Pass):
    """Returns an invalid graph (no outputs)."""

    name: ClassVar[str] = "test-break"

    def apply(self, graph: Graph) -> Graph:
        new = graph.copy()
        new.set_outputs([])
        return new


@dataclass(frozen=True)
class MutatePass(Pass):
    """Changes its input (forbidden), then returns a copy."""

    name: ClassVar[str] = "test-mutate"

    def apply(self, graph: Graph) -> Graph:
        graph.set_outputs(list(graph.outputs))
        return graph.copy()


@dataclass(frozen=True)
class FailPass(Pass):
    name: ClassVar[str] = "test-fail"
    error: str = "runtime"

    def apply(self, graph: Graph) -> Graph:
        if self.error == "cut":
            raise CutError("no cut here")
        raise RuntimeError("boom")


@dataclass(frozen=True)
class BodyMutatePass(Pass):
    """Edits a nested model's body in place (forbidden; the manager must notice)."""

    name: ClassVar[str] = "test-mutate-body"

    def apply(self, graph: Graph) -> Graph:
        body = next(layer.body for layer in graph.layers.values() if layer.body is not None)
        body.set_outputs(list(body.outputs))
        return graph.copy()


@dataclass(frozen=True)
class RequiredPass(Pass):
    """A required option of type "a ref or a list of refs", and an optional one."""

    name: ClassVar[str] = "test-required"
    at: Refs = required("conv1")
    depth: int = 0

    def apply(self, graph: Graph) -> Graph:
        return graph.copy()


TEST_PASSES = [OptsPass, BreakPass, MutatePass, FailPass, BodyMutatePass, RequiredPass]


@pytest.fixture
def test_passes():
    saved = dict(infra._REGISTRY)
    for cls in TEST_PASSES:
        register(cls)
    yield
    infra._REGISTRY.clear()
    infra._REGISTRY.update(saved)


@pytest.fixture(autouse=True)
def registry_is_restored():
    before = registry()
    yield
    assert registry() == before, "a test leaked passes into the registry"


TEXT = """\
kgraft.model @m(%a: f32[?,4], %b: f32[?,4]) {
  %shared@0 = Dense @shared#0(%a) {units=4} : f32[?,4]
  %shared@1 = Dense @shared#1(%b) {units=4} : f32[?,4]
  %keep = ReLU @keep#0(%shared@0) : f32[?,4]
  %dead = Add @dead#0([%shared@1, %keep]) : f32[?,4]
  %seq = Sequential @seq#0(%keep) : f32[?,2] {
    kgraft.sequential @seq(%input_layer: f32[?,4]) {
      %d1 = Dense @d1#0(%input_layer) {units=2} : f32[?,2]
      %inner_dead = Dense @inner_dead#0(%input_layer) {units=3} : f32[?,3]
      return %d1
    }
  }
  return %seq
}
"""

PRUNED = """\
kgraft.model @m(%a: f32[?,4]) {
  %shared = Dense @shared#0(%a) {units=4} : f32[?,4]
  %keep = ReLU @keep#0(%shared) : f32[?,4]
  %seq = Sequential @seq#0(%keep) : f32[?,2] {
    kgraft.sequential @seq(%input_layer: f32[?,4]) {
      %d1 = Dense @d1#0(%input_layer) {units=2} : f32[?,2]
      return %d1
    }
  }
  return %seq
}
"""


@pytest.fixture
def graph() -> Graph:
    return parse(TEXT)


# ---------------------------------------------------------------------------- pipeline text
def test_parse_single_pass():
    passes = parse_pipeline("prune-unreachable")
    assert passes == [PruneUnreachable()]
    assert str(passes[0]) == "prune-unreachable"
    assert registry()["prune-unreachable"] is PruneUnreachable


def test_parse_several_passes_with_whitespace():
    assert parse_pipeline("  prune-unreachable ,\tprune-unreachable ") == [PruneUnreachable()] * 2


def test_options_are_converted_to_their_types(test_passes):
    (p,) = parse_pipeline("test-opts{count=3, ratio=0.25, flag=true, names=[a, b], label=none}")
    assert p == OptsPass(count=3, ratio=0.25, flag=True, names=("a", "b"), label=None)
    assert type(p.count) is int and type(p.ratio) is float and type(p.names) is tuple
    (q,) = parse_pipeline("test-opts{flag=no,names=single,label=hello}")
    assert q == OptsPass(flag=False, names=("single",), label="hello")


@pytest.mark.parametrize("p", [
    OptsPass(),
    OptsPass(count=3, ratio=0.25, flag=True, names=("a", "b")),
    OptsPass(label="plain"),
    OptsPass(names=("x",)),
    OptsPass(label="needs, quoting}"),
    OptsPass(names=("a,b", "c]d")),
])
def test_str_round_trip(test_passes, p):
    text = str(p)
    assert parse_pipeline(text) == [p], text
    assert parse_pipeline(f"{text},prune-unreachable") == [p, PruneUnreachable()]


def test_str_shows_only_non_default_options():
    assert str(OptsPass()) == "test-opts"
    assert str(OptsPass(count=3, flag=True, names=("a", "b"))) == "test-opts{count=3,flag=true,names=[a,b]}"


def _caret_column(message: str) -> int:
    """The 1-based column the caret points at, in the text echoed above it."""
    lines = message.splitlines()
    assert lines[-1].strip() == "^", message
    return lines[-1].index("^") - 2 + 1


def test_unknown_pass_suggests_a_name(test_passes):
    with pytest.raises(PipelineError) as info:
        parse_pipeline("prune-unreachable,prune-unreachabel")
    message = str(info.value)
    first = message.splitlines()[0]
    assert first.startswith("bad pass pipeline at column 19: unknown pass 'prune-unreachabel'.")
    assert "Did you mean prune-unreachable?" in first
    assert "Known passes: " in first and "prune-unreachable" in first.split("Known passes: ")[1]
    assert message.splitlines()[1] == "  prune-unreachable,prune-unreachabel"
    assert _caret_column(message) == 19


def test_unknown_pass_without_close_match():
    with pytest.raises(PipelineError, match="unknown pass 'zzzz'. Known passes: ") as info:
        parse_pipeline("zzzz")
    assert "Did you mean" not in str(info.value)


def test_unknown_option(test_passes):
    with pytest.raises(PipelineError, match="pass 'prune-unreachable' has no option 'x'; its options: none"):
        parse_pipeline("prune-unreachable{x=1}")
    with pytest.raises(PipelineError,
                       match="pass 'test-opts' has no option 'colour'; its options: count, ratio, flag, names, label"):
        parse_pipeline("test-opts{colour=red}")


@pytest.mark.parametrize("text, message, column", [
    ("prune-unreachable,,", "expected a name or value", 19),
    ("test-opts{count}", "expected '=' after option 'count'", 16),
    ("test-opts{count=1", "expected ',' or '}' between options", 18),
    ('test-opts{label="abc}', "unterminated string", 17),
    ("test-opts{names=[a,b}", "expected ',' or ']'", 21),
    ("prune-unreachable prune-unreachable", "unknown pass 'prune-unreachable prune-unreachable'", 1),
])
def test_bad_syntax_points_at_the_column(test_passes, text, message, column):
    with pytest.raises(PipelineError) as info:
        parse_pipeline(text)
    first = str(info.value).splitlines()[0]
    assert first.startswith(f"bad pass pipeline at column {column}: {message}"), first
    assert str(info.value).splitlines()[1] == "  " + text
    assert _caret_column(str(info.value)) == column


@pytest.mark.parametrize("text, message", [
    ("test-opts{count=abc}", "option test-opts{count} expects a number, got 'abc'"),
    ("test-opts{ratio=fast}", "option test-opts{ratio} expects a number, got 'fast'"),
    ("test-opts{flag=maybe}", "option test-opts{flag} expects true or false, got 'maybe'"),
    ("test-opts{count=1 flag=true}", "option test-opts{count} expects a number, got '1 flag=true'"),
])
def test_bad_option_values(test_passes, text, message):
    with pytest.raises(PipelineError, match=message.replace("{", r"\{").replace("}", r"\}")):
        parse_pipeline(text)


@pytest.mark.parametrize("text", ["", "   "])
def test_empty_pipeline(text):
    with pytest.raises(PipelineError, match="empty pass pipeline: name at least one pass"):
        parse_pipeline(text)


# ---------------------------------------------------------------------------- registry
def test_register_rejects_duplicates_and_empty_names(test_passes):
    with pytest.raises(ValueError, match="'prune-unreachable' is empty or already registered"):
        register(PruneUnreachable)

    @dataclass(frozen=True)
    class Nameless(Pass):
        pass

    with pytest.raises(ValueError, match="'' is empty or already registered"):
        register(Nameless)


def test_registry_returns_a_copy():
    reg = registry()
    reg["bogus"] = PruneUnreachable
    assert "bogus" not in registry()


# ---------------------------------------------------------------------------- the manager
def test_run_applies_passes_and_reports_each(graph, test_passes):
    seen = []
    out = run(graph, "test-opts{count=2},prune-unreachable", after_each=lambda p, g: seen.append((str(p), str(g))))
    assert [name for name, _ in seen] == ["test-opts{count=2}", "prune-unreachable"]
    assert seen[0][1] == TEXT and seen[1][1] == PRUNED
    assert str(out) == PRUNED
    assert str(graph) == TEXT


def test_run_accepts_pass_objects(graph):
    assert str(run(graph, PruneUnreachable())) == PRUNED
    assert str(run(graph, [PruneUnreachable(), PruneUnreachable()])) == PRUNED


def test_manager_verifies_after_each_pass(graph, test_passes):
    with pytest.raises(VerificationError) as info:
        run(graph, "prune-unreachable,test-break,prune-unreachable")
    message = str(info.value)
    assert "m: the model has no outputs" in message
    assert message.endswith("(in pass 'test-break'; passes already run: prune-unreachable)")
    assert info.value.passes_run == ["prune-unreachable"]


def test_manager_detects_a_pass_that_mutates_its_input(graph, test_passes):
    with pytest.raises(PassError) as info:
        run(graph, "test-mutate")
    assert str(info.value) == ("pass 'test-mutate' changed its input graph; passes must build a new one "
                               "(in pass 'test-mutate'; passes already run: none)")


def test_failing_pass_reports_passes_already_run(graph, test_passes):
    with pytest.raises(PassError) as info:
        run(graph, "prune-unreachable,test-opts{count=2},test-fail")
    message = str(info.value)
    assert message.startswith("pass 'test-fail' failed unexpectedly: RuntimeError: boom")
    assert message.endswith("(in pass 'test-fail'; passes already run: prune-unreachable, test-opts{count=2})")
    assert isinstance(info.value.__cause__, RuntimeError)


def test_kgraft_errors_from_a_pass_keep_their_type(graph, test_passes):
    with pytest.raises(CutError) as info:
        run(graph, "prune-unreachable,test-fail{error=cut}")
    assert str(info.value) == "no cut here\n(in pass 'test-fail{error=cut}'; passes already run: prune-unreachable)"


NESTED_TEXT = """
kgraft.model @m(%x: f32[?,4]) {
  %enc = Functional @enc#0(%x) : f32[?,4] {
    kgraft.model @enc(%i: f32[?,4]) {
      %d = Dense @d#0(%i) {units=4} : f32[?,4]
      return %d
    }
  }
  return %enc
}
"""


def test_a_pass_that_edits_a_nested_body_in_place_is_caught(test_passes):
    with pytest.raises(PassError) as info:
        run(parse(NESTED_TEXT), "test-mutate-body")
    assert str(info.value) == ("pass 'test-mutate-body' changed the body of nested model 'enc' in its input; passes "
                               "must build a new one (in pass 'test-mutate-body'; passes already run: none)")


def test_a_nested_body_can_only_change_through_its_methods():
    body = parse(NESTED_TEXT).layers["enc"].body
    with pytest.raises(AttributeError):
        body.outputs.append(ValueRef("i#0"))  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        body.layers["d"] = body.layers["d"]  # type: ignore[index]
    with pytest.raises(AttributeError):
        body.node("d#0").args.append(ValueRef("i#0"))  # type: ignore[attr-defined]


def test_manager_verifies_its_input_before_the_first_pass(test_passes):
    graph = parse(PRUNED)
    graph.set_outputs([])
    with pytest.raises(VerificationError, match="the model has no outputs") as info:
        run(graph, "test-fail")  # test-fail would raise a RuntimeError had it run
    assert "(in pass" not in str(info.value)


def test_run_takes_one_graph():
    with pytest.raises(PipelineError, match="passes run on a kgraft IR Graph, got list"):
        run([parse(PRUNED)], "prune-unreachable")


def test_run_rejects_invalid_pipeline_before_running(graph, test_passes):
    with pytest.raises(PipelineError):
        run(graph, "test-mutate,nope")  # test-mutate never ran: the input is untouched
    assert graph.version == parse(TEXT).version and str(graph) == TEXT


def test_pass_function_rejects_unknown_options(graph):
    with pytest.raises(PipelineError, match="pass 'prune-unreachable' has no option 'bogus'; its options: none"):
        kgraft.passes.prune_unreachable(graph, bogus=1)


@pytest.mark.parametrize("text, message", [
    ("test-required", "pass 'test-required' needs option 'at', e.g. test-required{at=conv1}; "
                      "its options: at (required), depth"),
    ("test-required{depth=2}", "pass 'test-required' needs option 'at'"),
    ("split", "pass 'split' needs option 'at', e.g. split{at=conv4_block6_out}; its options: at (required)"),
    ("extract{inputs=a}", "pass 'extract' needs option 'outputs', e.g. extract{outputs=block5_conv3}"),
    ("add-head{at=pool}", "pass 'add-head' needs option 'head', e.g. add-head{head=<IR graph or .kgir file>}"),
    ("delete-channels", "pass 'delete-channels' needs option 'ref', 'channels', e.g. "
                        "delete-channels{ref=conv1,channels=[0,3]}"),
    ("delete-channels{ref=c1,channels=[0,x]}", "option delete-channels{channels} expects a number, got 'x'"),
])
def test_options_are_checked_when_the_pipeline_is_parsed(graph, test_passes, text, message):
    with pytest.raises(PipelineError) as info:
        run(graph, f"test-mutate,{text}")  # nothing runs: test-mutate would fail the run
    assert str(info.value).startswith(message), str(info.value)
    assert graph.version == parse(TEXT).version


def test_a_missing_option_from_python_is_the_same_error(graph):
    with pytest.raises(PipelineError, match=r"pass 'split' needs option 'at', e\.g\. split\{at=conv4_block6_out\}"):
        kgraft.passes.split(graph)


@pytest.mark.parametrize("text, built", [
    ("test-required{at=a}", RequiredPass(at="a")),
    ("test-required{at=[a]}", RequiredPass(at=["a"])),
    ("test-required{at=[a,b],depth=3}", RequiredPass(at=("a", "b"), depth=3)),
    ("split{at=a}", Split(at="a")),
    ("split{at=[a,[b,c]]}", Split(at=["a", ["b", "c"]])),
    ("extract{outputs=[x,y],inputs=z}", Extract(outputs=["x", "y"], inputs="z")),
    ("extract{outputs=x,inputs=none}", Extract(outputs="x")),
    ("delete-channels{ref=c1,channels=[0,3]}", DeleteChannels(ref="c1", channels=[0, 3])),
    ("delete-channels{ref=[c1,c2],channels=[[0],[1,2]]}", DeleteChannels(ref=["c1", "c2"], channels=[[0], [1, 2]])),
])
def test_a_pass_from_text_equals_the_pass_from_python(test_passes, text, built):
    (parsed,) = parse_pipeline(text)
    assert parsed == built and hash(parsed) == hash(built)
    assert parse_pipeline(str(built)) == [built]  # and prints back to the same pass


def test_a_ref_or_a_list_of_refs_is_a_tuple(test_passes):
    assert RequiredPass(at="a").at == ("a",) and RequiredPass(at=["a", "b"]).at == ("a", "b")
    assert Extract(outputs="x").outputs == ("x",) and Extract(outputs="x").inputs is None
    assert Split(at=["a", ["b", "c"]]).at == ("a", ("b", "c"))
    assert str(Split(at=[["b", "c"]])) == "split{at=[[b,c]]}"  # one two-tensor cut stays one


def test_pass_objects_are_hashable(test_passes):
    passes = [cls(**options) for cls, options in [
        (PruneUnreachable, {}), (OptsPass, {"names": ["a"]}), (Split, {"at": ["a", ["b", "c"]]}),
        (Extract, {"outputs": ["x"]}), (Rename, {"names": {"a": "b"}}), (DeleteChannels, {"ref": "c", "channels": [1]}),
    ]]
    assert len(set(passes)) == len(passes)
    assert {Extract(outputs="x"), Extract(outputs=["x"]), Extract(outputs=("x",))} == {Extract(outputs="x")}
    assert Rename(names={"a": "b"}) == Rename(names={"a": "b"}) and hash(Rename(names={"a": "b"}))
    with pytest.raises(TypeError, match="read-only"):
        Rename(names={"a": "b"}).names["c"] = "d"


def test_pass_objects_are_frozen():
    p = OptsPass(count=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.count = 3


# ---------------------------------------------------------------------------- prune-unreachable
def test_prune_removes_dead_branches_and_never_mutates(graph):
    text, version = str(graph), graph.version
    pruned = kgraft.passes.prune_unreachable(graph)
    assert str(graph) == text and graph.version == version
    assert str(pruned) == PRUNED
    assert pruned is not graph
    assert "dead" not in pruned.layers and "dead#0" not in pruned
    assert pruned.inputs == ("a#0",) and "b" not in pruned.layers  # only the dead branch used b
    assert [n.id for n in pruned.call_sites("shared")] == ["shared#0"]
    body = pruned.layers["seq"].body
    assert "inner_dead" not in body.layers and body.inputs == ("input_layer#0",)
    assert "inner_dead" in graph.layers["seq"].body.layers  # the input's body is untouched


def test_prune_keeps_body_inputs_that_are_unused():
    text = """\
kgraft.model @m(%a: f32[?,4]) {
  %s = Functional @s#0(%a, %a) : f32[?,4] {
    kgraft.model @s(%x: f32[?,4], %y: f32[?,4]) {
      %r = ReLU @r#0(%x) : f32[?,4]
      return %r
    }
  }
  return %s
}
"""
    pruned = kgraft.passes.prune_unreachable(parse(text))
    assert pruned.layers["s"].body.inputs == ("x#0", "y#0")  # the caller still passes two tensors
    assert str(pruned) == text


def test_prune_with_nothing_dead_returns_an_equal_copy():
    g = parse(PRUNED)
    out = kgraft.passes.prune_unreachable(g)
    assert out is not g and str(out) == PRUNED
    out.set_outputs([ValueRef("keep#0")])
    assert str(g) == PRUNED


# ---------------------------------------------------------------------------- CLI
def _kgraft(*args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("kgraft")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", "from kgraft.cli import main; main()"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=120, env=env)


@pytest.fixture
def kgir(tmp_path) -> Path:
    path = tmp_path / "model.kgir"
    path.write_text("// a comment line\n" + TEXT)
    return path


def test_cli_opt_prints_ir(kgir):
    proc = _kgraft("opt", str(kgir), "-p", "prune-unreachable")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == PRUNED
    assert "Traceback" not in proc.stderr


def test_cli_opt_print_ir_after_all(kgir):
    proc = _kgraft("opt", str(kgir), "-p", "prune-unreachable,prune-unreachable", "--print-ir-after-all")
    assert proc.returncode == 0, proc.stderr
    banner = "// -----// IR after prune-unreachable //----- //\n"
    assert proc.stdout == (banner + PRUNED) * 2
    assert str(parse(banner + PRUNED)) == PRUNED  # banners are comments


def test_cli_unknown_pass_exits_2_without_traceback(kgir):
    proc = _kgraft("opt", str(kgir), "-p", "prune-unreachabel")
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert "Traceback" not in proc.stderr
    # one error line; the pipeline text and a caret under the bad name may follow it
    assert [line for line in lines if line.startswith("kgraft:")] == lines[:1]
    assert lines[0].startswith("kgraft: error: bad pass pipeline at column 1: unknown pass 'prune-unreachabel'.")
    assert "Did you mean prune-unreachable?" in lines[0]
    assert lines[1:] in ([], ["  prune-unreachabel", "  ^"])


def test_cli_unknown_option_exits_2(kgir):
    proc = _kgraft("opt", str(kgir), "-p", "prune-unreachable{depth=3}")
    assert proc.returncode == 2
    assert proc.stderr == "kgraft: error: pass 'prune-unreachable' has no option 'depth'; its options: none\n"


def test_cli_missing_ir_file_exits_1(tmp_path):
    proc = _kgraft("opt", str(tmp_path / "nope.kgir"), "-p", "prune-unreachable")
    assert proc.returncode == 1
    assert proc.stderr.startswith("kgraft: error: no such IR file: ")
    assert "Traceback" not in proc.stderr


def test_cli_invalid_ir_exits_1(tmp_path):
    path = tmp_path / "bad.kgir"
    path.write_text(TEXT.replace("%shared@0 = Dense @shared#0(%a)", "%shared@0 = Dense @shared#0(%zz)"))
    proc = _kgraft("opt", str(path), "-p", "prune-unreachable")
    assert proc.returncode == 1
    assert proc.stderr.startswith("kgraft: error: line 2, column ")
    assert "value %zz is used before it is defined" in proc.stderr
    assert "Traceback" not in proc.stderr
