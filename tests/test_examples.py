"""The runnable examples in examples/ (the five classic Keras problems, the edge/cloud split) work.

Each example is imported by path and its ``main()`` called; the returned results are checked
(numbers equal to the source model, expected shapes, error messages a user can act on).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
ATOL = 1e-5


def run_example(stem: str) -> dict:
    spec = importlib.util.spec_from_file_location(f"kgraft_example_{stem}", EXAMPLES / f"{stem}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main()


def test_examples_readme_lists_every_example():
    readme = (EXAMPLES / "README.md").read_text()
    scripts = sorted(p.name for p in EXAMPLES.glob("[0-9][0-9]_*.py"))
    assert len(scripts) == 6
    for name in scripts:
        assert name in readme, f"{name} is missing from examples/README.md"


def test_01_gradcam_nested_vgg16():
    r = run_example("01_gradcam_nested_vgg16")
    assert r["naive_error"] and "not connected" in r["naive_error"]
    assert r["diff"] <= ATOL
    assert r["conv_shape"] == (2, 4, 4, 512) and r["pred_shape"] == (2, 5)
    assert r["heatmap_shape"] == (2, 4, 4)
    assert 0 < r["grad_norm"] < float("inf")


def test_02_resnet_split():
    r = run_example("02_resnet_split")
    assert r["split_diff"] <= ATOL and r["multi_cut_diff"] <= ATOL and r["custom_diff"] <= ATOL
    msg = r["cut_error"]
    assert "'conv3_block1_2_conv' is not a split point" in msg
    assert "conv3_block1_0_conv" in msg  # the skip branch that bypasses the cut
    assert "Nearest split points: conv2_block3_out (before), conv3_block1_add (after)" in msg
    assert r["multi_cut_shapes"] == [(None, 8, 8, 128), (None, 8, 8, 512)]
    assert 0 < r["n_trainable_layers"] < r["n_layers"]
    assert r["n_trainable_weights"] > 0


def test_03_feature_extractor_siamese():
    r = run_example("03_feature_extractor_siamese")
    assert r["feature_diff"] <= ATOL
    assert r["feature_shapes"] == [(2, 16, 16, 256), (2, 8, 8, 512), (2, 4, 4, 1024)]
    kept, total = r["feature_layers"]
    assert kept < total  # conv5 and after are pruned
    assert r["triplet_shapes"] == [(2, 32)] * 3
    assert r["embed_layers"] == 1 and r["embed_calls"] == 3 and r["shared_weights"]
    assert r["anchor_vs_negative"] <= ATOL


def test_04_aux_head_efficientnet():
    r = run_example("04_aux_head_efficientnet")
    assert r["diff"] <= ATOL and r["spread"] > 1e-3  # predictions depend on the input: the check can fail
    assert r["n_outputs"] == (1, 2)
    assert r["main_shape"] == (2, 10) and r["aux_shape"] == (2, 4)
    before, after = r["trainable_weights"]
    assert after == before + 2  # the aux Dense kernel and bias


def test_05_encoder_by_name():
    r = run_example("05_encoder_by_name")
    assert r["enc_diff"] <= ATOL and r["dec_diff"] <= ATOL
    assert r["code_shape"] == (4, 8, 8, 8) and r["decoder_input_shape"] == (None, 8, 8, 8)
    assert r["encoder_layers"][-1] == "bottleneck"
    assert not any(n.startswith("dec_") or n == "reconstruction" for n in r["encoder_layers"])
    assert not any(n.startswith("enc_") for n in r["decoder_layers"])
    assert r["decoder_layers"][-1] == "reconstruction"


def test_06_edge_cloud_onnx():
    r = run_example("06_edge_cloud_onnx")
    assert r["diff"] <= 1e-4 and r["spread"] > 1e-2  # the outputs depend on the input: the check can fail
    assert r["crossing"] == r["expected_crossing"] > 0
    assert r["n_points"] > 10
    assert [row.total_s for row in r["plan"]] == sorted(row.total_s for row in r["plan"])


def test_example_runs_as_a_script():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, str(EXAMPLES / "05_encoder_by_name.py")], capture_output=True,
                          text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "encoder:" in done.stdout and "decoder:" in done.stdout
