"""The ``kgraft`` command line, run as a user runs it: a subprocess per call.

Most tests feed textual IR (no TensorFlow in the subprocess, under a second each). The ones
that need weights use one tiny ``.keras`` model (a residual block around a nested model);
each of those pays a TensorFlow import, so they are few and each checks several things.
The demo and the keras.applications runs are marked slow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kgraft.ir import parse

# A residual block whose head is a nested Sequential: split points d1, add; a multi-tensor cut {a, d1}.
IR = str(parse("""
kgraft.model @res(%x: f32[?,8]) {
  %d1 = Dense @d1#0(%x) {activation="relu", units=8, use_bias=true} : f32[?,8]
  %a = Dense @a#0(%d1) {activation="relu", units=8, use_bias=true} : f32[?,8]
  %b = Dense @b#0(%a) {activation="linear", units=8, use_bias=true} : f32[?,8]
  %add = Add @add#0([%d1, %b]) : f32[?,8]
  %head = Sequential @head#0(%add) : f32[?,3] {
    kgraft.sequential @head(%head_in: f32[?,8]) {
      %r = ReLU @r#0(%head_in) : f32[?,8]
      %out = Dense @out#0(%r) {activation="linear", units=3, use_bias=true} : f32[?,3]
      return %out
    }
  }
  return %head
}
"""))

COMMANDS = ["show", "opt", "split", "draw", "plan", "demo"]


def kgraft(*args, cwd=None) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("kgraft")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", "from kgraft.cli import main; main()"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "-1"}
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, timeout=300, env=env,
                          cwd=cwd)


def fails(proc: subprocess.CompletedProcess, code: int, first_line: str) -> None:
    """Exit ``code``, nothing on stdout, no traceback, and the first line after the progress
    (``✓ step`` lines) says what is wrong."""
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    message = "".join(line for line in proc.stderr.splitlines(keepends=True) if not line.startswith("✓ "))
    assert message.startswith("kgraft: error: " + first_line), proc.stderr


@pytest.fixture
def ir(tmp_path) -> Path:
    path = tmp_path / "res.kgir"
    path.write_text(IR)
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """The residual block of ``IR`` as a trained-looking Keras model file."""
    import keras

    inner_in = keras.Input((8,), name="head_in")
    inner = keras.Sequential([inner_in, keras.layers.ReLU(name="r"), keras.layers.Dense(3, name="out")], name="head")
    x = keras.Input((8,), name="x")
    d1 = keras.layers.Dense(8, activation="relu", name="d1")(x)
    b = keras.layers.Dense(8, name="b")(keras.layers.Dense(8, activation="relu", name="a")(d1))
    model = keras.Model(x, inner(keras.layers.Add(name="add")([d1, b])), name="res")
    path = tmp_path_factory.mktemp("model") / "res.keras"
    model.save(path)
    return path


# ---------------------------------------------------------------------------- help
def test_help_lists_every_command_with_examples():
    proc = kgraft("--help")
    assert proc.returncode == 0
    for command in COMMANDS:
        assert f"  {command} " in proc.stdout
    assert "Examples:" in proc.stdout and "Exit codes" in proc.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command):
    proc = kgraft(command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert f"Usage: kgraft {command}" in proc.stdout
    assert "Example" in proc.stdout and f"kgraft {command}" in proc.stdout.split("Example", 1)[1]


# ---------------------------------------------------------------------------- show / opt
def test_show_prints_the_ir_nested_or_flat_and_the_split_points(ir, tmp_path):
    nested = kgraft("show", ir)
    assert nested.returncode == 0 and nested.stdout.startswith(IR)
    table = nested.stdout[len(IR):].splitlines()
    assert table[0] == "// 3 split points (FLOPs per sample):"  # r, inside the nested head, too
    assert table[1].split() == ["//", "split", "point", "shape", "bytes/sample", "params", "before", "params",
                                "after", "FLOPs", "before", "FLOPs", "after"]
    # params: d1 8*8+8 = 72 before; a, b, out after: 72 + 72 + 27 = 171. FLOPs: 2*8*8 per dense
    # layer (d1, a, b), 8 for add and for r, 2*8*3 for out
    assert [line.split()[1:] for line in table[3:]] == [["d1", "(?,", "8)", "32", "72", "171", "128", "320"],
                                                        ["add", "(?,", "8)", "32", "216", "27", "392", "56"],
                                                        ["r", "(?,", "8)", "32", "216", "27", "400", "48"]]
    (tmp_path / "again.kgir").write_text(nested.stdout)  # the table is comments: still parseable IR
    assert kgraft("show", tmp_path / "again.kgir").stdout == nested.stdout
    flat = kgraft("show", ir, "--flat")
    assert flat.returncode == 0
    assert "Sequential" not in flat.stdout and "%out = Dense @out#0(%r)" in flat.stdout
    data = json.loads(kgraft("show", ir, "--json").stdout)
    assert data["ir"] == IR and [p["ref"] for p in data["split_points"]] == ["d1", "add", "r"]
    assert data["split_points"][0] == {"ref": "d1", "shape": [None, 8], "dtype": "float32", "bytes_per_sample": 32,
                                       "params_before": 72, "params_after": 171, "flops_before": 128,
                                       "flops_after": 320}


def test_opt_prints_the_ir_after_the_pipeline(ir):
    proc = kgraft("opt", ir, "-p", "split{at=add}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("kgraft.model @") == 3  # one graph calling two partitions
    assert "@part0#0" in proc.stdout and "@part1#0" in proc.stdout


def test_opt_bad_pipeline_is_a_usage_error_before_loading(tmp_path):
    proc = kgraft("opt", tmp_path / "missing.keras", "-p", "inline-nested,splt{at=add}")
    fails(proc, 2, "bad pass pipeline at column 15: unknown pass 'splt'. Did you mean split?")
    assert len(proc.stderr.splitlines()) <= 3  # the message, then at most the text and a caret


def test_opt_needs_weights_to_write_or_verify(ir):
    fails(kgraft("opt", ir, "-p", "inline-nested", "-o", "x.keras"), 2, "-o needs a Keras model with weights")
    fails(kgraft("opt", ir, "-p", "inline-nested", "--verify"), 2, "--verify needs a Keras model")


# ---------------------------------------------------------------------------- split (IR: no weights)
def test_split_prints_what_crosses_each_cut(ir):
    proc = kgraft("split", ir, "--at", "d1", "--at", "add")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "cut 0 (d1): 32 B per sample crosses it" in out
    assert "cut 1 (add): 32 B per sample crosses it" in out
    assert "(?, 8)" in out and "float32" in out
    assert [line.split()[0] for line in out.splitlines() if line.startswith("part")] == ["partition", "part0",
                                                                                         "part1", "part2"]
    assert "nothing to check numerically" in proc.stderr


def test_split_json_multi_tensor_cut(ir):
    proc = kgraft("split", ir, "--at", "a,d1", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    (cut,) = result["cuts"]
    assert cut["refs"] == ["a", "d1"] and cut["bytes_per_sample"] == 64
    assert [(t["ref"], t["shape"], t["dtype"], t["bytes_per_sample"]) for t in cut["tensors"]] == [
        ("a", [None, 8], "float32", 32), ("d1", [None, 8], "float32", 32)]
    assert [p["inputs"] for p in result["partitions"]] == [["x"], ["a", "d1"]]


@pytest.mark.parametrize("args, code, message", [
    (["--at", "ad"], 1, "unknown tensor 'ad' in model 'res'"),
    (["--at", "b"], 1, "split: 'b' is not a split point: the path"),
    (["--at", "add", "--at", "d1"], 1, "split: cut {d1} does not come after the previous cut"),
    ([], 2, "Missing option '--at'"),
    (["--at", "a,,d1"], 2, "Invalid value for '--at': 'a,,d1' has an empty ref"),
    (["--at", "add", "--onnx", "out"], 2, "-o/--onnx need a Keras model with weights"),
])
def test_split_errors(ir, args, code, message):
    fails(kgraft("split", ir, *args), code, message)


def test_unreadable_and_missing_model_files(tmp_path):
    bad = tmp_path / "bad.kgir"
    bad.write_text("kgraft.model @m(%a: f32[?,2]) {\n  %r = ReLU @r#0(%zz) : f32[?,2]\n")
    fails(kgraft("show", bad), 1, "line 2, column")
    fails(kgraft("split", tmp_path / "nope.keras", "--at", "x"), 1, "no such model file")
    fails(kgraft("draw", tmp_path / "nope.kgir"), 1, "no such IR file")


# ---------------------------------------------------------------------------- plan
def test_plan_ranks_placements_from_flops(ir):
    proc = kgraft("plan", ir, "--bandwidth", "1kbps", "--edge-slowdown", "2", "--rtt", "0.01", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["bandwidth_bps"] == 1000 and result["layer_times"] == "FLOPs at 50 GFLOP/s"
    rows = result["rows"]
    assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
    assert rows[0]["label"] == "all on edge"  # 1 kbit/s: sending anything costs far more than computing
    assert sorted(r["total_s"] for r in rows) == [r["total_s"] for r in rows]
    assert {r["label"] for r in rows} >= {"all on edge", "all on server", "d1", "add"}
    table = kgraft("plan", ir, "--bandwidth", "1Gbps", "--top", "1")
    assert table.returncode == 0
    lines = [line.split()[1:3] for line in table.stdout.splitlines()[2:] if line[:1].isdigit()]
    assert len(lines) == 2 and ["all", "on"] in lines  # the best, and the baselines even beyond --top
    assert table.stdout.rstrip().splitlines()[-1].startswith("best: ")


@pytest.mark.parametrize("args, message", [
    (["--bandwidth", "20Mbpx"], "Invalid value for '--bandwidth': bandwidth '20Mbpx' is not understood"),
    (["--bandwidth", "20Mbps", "--edge-slowdown", "0"], "Invalid value for '--edge-slowdown'"),
    ([], "Missing option '--bandwidth'"),
])
def test_plan_usage_errors(ir, args, message):
    fails(kgraft("plan", ir, *args), 2, message)


# ---------------------------------------------------------------------------- draw
def test_draw_svg_html_and_stdout(ir, tmp_path):
    proc = kgraft("draw", ir, "--at", "add", cwd=tmp_path)  # default name: <model>.svg
    assert proc.returncode == 0, proc.stderr
    svg = (tmp_path / "res.svg").read_text()
    assert svg.startswith("<svg") and "cut 0: add" in svg and 'data-refs="d1"' in svg
    assert "head/r" in svg  # the nested model is a cluster holding its own layers
    html = kgraft("draw", ir, "--flat", "-o", tmp_path / "g.html")
    assert html.returncode == 0, html.stderr
    page = (tmp_path / "g.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and "addEventListener('wheel'" in page
    assert "http" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")  # nothing to fetch
    out = kgraft("draw", ir, "--no-collapse", "-o", "-")
    assert out.returncode == 0 and out.stdout.startswith("<svg") and out.stdout.count('class="b"') == 9


def test_draw_existing_output_needs_force(ir, tmp_path):
    target = tmp_path / "g.svg"
    target.write_text("mine")
    fails(kgraft("draw", ir, "-o", target), 2, f"-o: '{target}' already exists; pass --force")
    assert target.read_text() == "mine"
    assert kgraft("draw", ir, "-o", target, "--force").returncode == 0
    assert target.read_text().startswith("<svg")
    assert sorted(os.listdir(tmp_path)) == ["g.svg", "res.kgir"]  # no temporary files left


def test_draw_bad_format_and_png(ir, tmp_path):
    fails(kgraft("draw", ir, "-o", tmp_path / "g.gif"), 2, "-o ")
    proc = kgraft("draw", ir, "-o", tmp_path / "g.png")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        fails(proc, 1, "PNG output needs matplotlib, which is not installed: pip install matplotlib")
    else:
        assert proc.returncode == 0, proc.stderr
        assert (tmp_path / "g.png").read_bytes().startswith(b"\x89PNG")


# ---------------------------------------------------------------------------- with weights (TensorFlow)
def test_split_writes_checked_keras_and_onnx_partitions(tiny, tmp_path):
    import keras
    import numpy as np

    parts, onnx = tmp_path / "parts", tmp_path / "onnx"
    proc = kgraft("split", tiny, "--at", "a,d1", "--at", "add", "-o", parts, "--onnx", onnx, "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["check"]["ok"] and result["check"]["max_abs_diff"] <= 1e-5
    assert result["onnx"]["max_abs_diff"] <= 1e-4
    assert sorted(os.listdir(parts)) == ["part0.keras", "part1.keras", "part2.keras"]
    assert sorted(os.listdir(onnx)) == ["manifest.json", "part0.onnx", "part1.onnx", "part2.onnx"]
    assert sorted(os.listdir(tmp_path)) == ["onnx", "parts"]  # no temporary directories left
    assert "✓ converting to ONNX" in proc.stderr and "Traceback" not in proc.stderr

    source = keras.saving.load_model(tiny)
    x = np.random.default_rng(1).standard_normal((4, 8)).astype("float32")
    y = x
    for path in sorted(parts.iterdir()):
        y = keras.saving.load_model(path)(y)
    assert np.max(np.abs(np.asarray(source(x)) - np.asarray(y))) <= 1e-5

    again = kgraft("split", tiny, "--at", "add", "-o", parts)  # existing output: usage error, untouched
    fails(again, 2, f"-o: '{parts}' is not empty; pass --force")
    assert len(os.listdir(parts)) == 3


def test_opt_writes_and_verifies(tiny, tmp_path):
    proc = kgraft("opt", tiny, "-p", "split{at=add}", "-o", tmp_path / "parts", "--verify", "-q")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # -q: no progress
    assert "chain of partitions vs model: max abs diff 0 " in proc.stdout and "[OK]" in proc.stdout
    assert sorted(os.listdir(tmp_path / "parts")) == ["part0.keras", "part1.keras"]
    # extract: the outputs that correspond (an inner tensor of the nested model, and the output)
    proc = kgraft("opt", tiny, "-p", "extract{outputs=[head/r,out]}", "-o", tmp_path / "x.keras", "--verify")
    assert proc.returncode == 0, proc.stderr
    assert "result vs model: max abs diff 0 over 2 output(s)" in proc.stdout
    assert (tmp_path / "x.keras").is_file()


def test_plan_measures_layers_with_onnx_runtime(tiny):
    proc = kgraft("plan", tiny, "--bandwidth", "20Mbps", "--edge-slowdown", "8", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["layer_times"] == "measured with ONNX Runtime"
    assert all(r["edge_s"] + r["server_s"] > 0 for r in result["rows"])
    assert "✓ measuring each layer with ONNX Runtime" in proc.stderr


def test_model_errors_with_tensorflow(tmp_path):
    garbage = tmp_path / "garbage.keras"
    garbage.write_bytes(b"not a zip file")
    fails(kgraft("show", garbage), 1, f"model file '{garbage}' is corrupt or unreadable")
    fails(kgraft("show", "ResNet5O"), 1, "'ResNet5O' is neither a model file nor a keras.applications "
                                         "architecture. Did you mean ResNet50")


# ---------------------------------------------------------------------------- slow: real architectures
@pytest.mark.slow
def test_application_split_and_draw(tmp_path):
    proc = kgraft("split", "MobileNetV2", "--input-shape", "32,32,3", "--at", "block_6_expand", "--json", "-q")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["check"]["ok"]
    proc = kgraft("draw", "MobileNetV2", "--input-shape", "32,32,3", "-o", tmp_path / "m.html", "-q")
    assert proc.returncode == 0, proc.stderr
    assert "block_6_expand" in (tmp_path / "m.html").read_text()


@pytest.mark.slow
def test_demo(tmp_path):
    proc = kgraft("demo", "-o", tmp_path / "d", "--json", "-q")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["check"]["max_abs_diff"] <= 1e-5 and result["onnx_max_abs_diff"] <= 1e-4
    assert all(os.path.isfile(p) for paths in result["files"].values() for p in paths)
    fails(kgraft("demo", "-o", tmp_path / "d"), 2, "-o: ")


CUSTOM = '''
import keras


@keras.saving.register_keras_serializable(package="demo")
class Scale(keras.layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)

    def build(self, shape):
        self.w = self.add_weight(shape=(shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.w


def halve(t):
    return t * 0.5
'''


@pytest.fixture(scope="module")
def custom_file(tmp_path_factory):
    """A model file with a custom layer and a Lambda's named function, and the file defining them,
    written by a separate Python process (as a user's own script would)."""
    d = tmp_path_factory.mktemp("custom")
    (d / "objects.py").write_text(CUSTOM)
    script = ("import importlib.util, keras\n"
              f"spec = importlib.util.spec_from_file_location('objects', {str(d / 'objects.py')!r})\n"
              "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
              "x = keras.Input((4,), name='x')\n"
              "y = keras.layers.Lambda(m.halve, name='half')(m.Scale(name='scale')(keras.layers.Dense(4, name='d')(x)))\n"
              f"keras.Model(x, keras.layers.Dense(2, name='out')(y)).save({str(d / 'model.keras')!r})\n")
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, timeout=300,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return d


def test_custom_objects_file_makes_a_custom_model_usable(custom_file):
    model = custom_file / "model.keras"
    fails(kgraft("show", model, "--unsafe"), 1, "unknown layer class 'demo>Scale' and unknown function 'halve'")
    proc = kgraft("show", model, "--unsafe", "--custom-objects", custom_file / "objects.py")
    assert proc.returncode == 0, proc.stderr
    assert "Scale @scale#0" in proc.stdout and "scale" in proc.stdout
    out = custom_file / "parts"
    proc = kgraft("split", model, "--at", "scale", "-o", out, "--unsafe", "--custom-objects", custom_file / "objects.py")
    assert proc.returncode == 0, proc.stderr
    fails(kgraft("show", model, "--custom-objects", custom_file / "nope.py"), 2, "--custom-objects: no such file")
