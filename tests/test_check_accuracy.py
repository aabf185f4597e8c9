"""The CI gate on labelled data: accuracy of the compressed model and its drop."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import MODELS


def run(*args):
    return subprocess.run([sys.executable, "-m", "onnxcompress", *map(str, args)], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    d = tmp_path_factory.mktemp("acc")
    mild, harsh = d / "mild.onnx", d / "harsh.onnx"
    assert run(MODELS / "digits_cnn.onnx", "--ratio", "0.1", "-o", mild, "-q").returncode == 0
    assert run(MODELS / "digits_cnn.onnx", "--ratio", "0.5", "-o", harsh, "-q").returncode == 0
    return d, mild, harsh


def test_accuracy_gate_passes_mild_and_fails_harsh_pruning(pruned):
    d, mild, harsh = pruned
    ev = MODELS / "digits_eval.npz"
    ok = run("check", MODELS / "digits_cnn.onnx", mild, "--eval", ev, "--max-accuracy-drop", "0.02", "--json", d / "ok.json")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    acc = json.loads((d / "ok.json").read_text())["accuracy"]
    assert acc["samples"] == 540
    assert abs(acc["original"] - 0.9926) < 0.001
    assert acc["drop"] <= 0.02
    bad = run("check", MODELS / "digits_cnn.onnx", harsh, "--eval", ev, "--max-accuracy-drop", "0.02", "--junit", d / "j.xml")
    assert bad.returncode == 1
    assert "failure" in (d / "j.xml").read_text()


def test_accuracy_gate_needs_labels(pruned):
    _, mild, _ = pruned
    proc = run("check", MODELS / "digits_cnn.onnx", mild, "--min-accuracy", "0.9")
    assert proc.returncode == 2 and "--eval" in proc.stderr
