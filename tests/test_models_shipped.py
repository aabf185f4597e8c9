"""The committed model corpus in models/ loads, checks and runs.

Every entry of models/MODELS.json must pass onnx's full checker and run in
onnxruntime at batch 1 and batch 2 (the batch dim is symbolic) with the
declared output shapes. The digits model must still classify its held-out
split as well as MODELS.json says. No torch here: the models are built by
models/build_models.py at development time only.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
with open(MODELS_DIR / "MODELS.json") as _f:
    MODELS: dict[str, dict] = json.load(_f)

ort.set_default_logger_severity(3)  # old-style models warn about initializers listed as inputs

EXPECTED = {
    "resnet_small.onnx", "mobilenet_se.onnx", "inception_concat.onnx", "digits_cnn.onnx",
    "zoo_opset9_resnet.onnx", "paddle_style_mbv3.onnx", "yolo_c2f.onnx", "densenet_tiny.onnx",
    "convnext_tiny.onnx", "shufflenet_tiny.onnx", "dynamo_ext.onnx", "weightnorm_nofold.onnx",
    "convtranspose_unet.onnx",
}
REQUIRED_KEYS = {"description", "exporter", "opset", "input_shapes", "output_shapes", "idioms",
                 "torch_macs", "torch_params", "batch_dim"}


def _session(name: str) -> ort.InferenceSession:
    return ort.InferenceSession(str(MODELS_DIR / name), providers=["CPUExecutionProvider"])


def test_corpus_is_complete():
    assert EXPECTED <= set(MODELS)
    for name, entry in MODELS.items():
        assert REQUIRED_KEYS <= set(entry), name
        assert (MODELS_DIR / name).is_file(), name
        assert entry["torch_macs"] > 0 and entry["torch_params"] > 0, name


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_checks_and_declares(name: str):
    entry = MODELS[name]
    onnx.checker.check_model(str(MODELS_DIR / name), full_check=True)
    model = onnx.load(str(MODELS_DIR / name), load_external_data=False)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    assert opset == entry["opset"]
    graph_inputs = {i.name: i for i in model.graph.input}
    for in_name, shape in entry["input_shapes"].items():
        dims = graph_inputs[in_name].type.tensor_type.shape.dim
        assert len(dims) == len(shape)
        assert dims[0].dim_param == entry["batch_dim"], "batch dim must be symbolic"
        for d, size in zip(dims[1:], shape[1:]):
            assert d.dim_value == size if d.HasField("dim_value") else d.dim_param, (in_name, shape)


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_runs(name: str, batch: int):
    entry = MODELS[name]
    sess = _session(name)
    rng = np.random.default_rng(0)
    feeds = {n: rng.random([batch] + s[1:], dtype=np.float32) for n, s in entry["input_shapes"].items()}
    outs = sess.run(None, feeds)
    got = {o.name: list(v.shape) for o, v in zip(sess.get_outputs(), outs)}
    want = {n: [batch] + s[1:] for n, s in entry["output_shapes"].items()}
    assert got == want
    for v in outs:
        assert np.isfinite(v).all()


def test_batch_rows_are_independent():
    """Batch 2 gives the same rows as two batch-1 runs (the symbolic batch is real)."""
    for name, entry in MODELS.items():
        sess = _session(name)
        rng = np.random.default_rng(1)
        feeds = {n: rng.random([2] + s[1:], dtype=np.float32) for n, s in entry["input_shapes"].items()}
        both = sess.run(None, feeds)
        for row in range(2):
            single = sess.run(None, {n: v[row:row + 1] for n, v in feeds.items()})
            for b, s in zip(both, single):
                np.testing.assert_allclose(b[row:row + 1], s, rtol=1e-4, atol=1e-5, err_msg=name)


def test_paddle_model_has_symbolic_spatial_dims():
    sess = _session("paddle_style_mbv3.onnx")
    (out,) = sess.run(None, {"x": np.zeros((2, 3, 96, 80), np.float32)})
    assert out.shape == (2, 10)


def test_dynamo_model_uses_external_data():
    entry = MODELS["dynamo_ext.onnx"]
    data = MODELS_DIR / entry["external_data"]
    assert data.is_file() and data.stat().st_size > 0
    model = onnx.load(str(MODELS_DIR / "dynamo_ext.onnx"), load_external_data=False)
    external = [t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert external and all(t.data_type == onnx.TensorProto.FLOAT for t in external)


def test_digits_accuracy():
    entry = MODELS["digits_cnn.onnx"]
    data = np.load(MODELS_DIR / entry["eval_data"])
    x, y = data["x"], data["y"]
    assert x.dtype == np.float32 and x.shape[1:] == (1, 8, 8) and y.dtype == np.int64
    assert len(y) == entry["eval_samples"]
    assert 0.0 <= x.min() and x.max() <= 1.0
    (logits,) = _session("digits_cnn.onnx").run(None, {"input": x})
    acc = float((logits.argmax(1) == y).mean())
    assert acc >= 0.95
    assert abs(acc - entry["eval_accuracy"]) <= 0.005


def test_models_folder_is_small():
    total = sum(p.stat().st_size for p in MODELS_DIR.rglob("*") if p.is_file())
    assert total < 30 * 1024 * 1024, f"models/ is {total / 1e6:.1f} MB"
