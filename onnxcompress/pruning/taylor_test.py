"""The first-order sensitivity estimate: exact to noise on a linear graph, rank-faithful on a trained
CNN, and a warning plus the forward sweep where it cannot run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxcompress as oc

pytest.importorskip("torch", reason="the Taylor estimate needs the finetune extra (torch); bench/TAYLOR.md measures it")

MODELS = Path(__file__).resolve().parents[2] / "models"


def _curves(rep) -> np.ndarray:
    return np.array([c["drift"] for g in rep.search["groups"] for c in g["curve"]])


def _both(src, calib, **kw):
    out = {}
    for est in ("sweep", "taylor"):
        rep = oc.compress(src, oc.CompressConfig(calib=calib, target_macs=0.6, recover="none", verify=False,
                                                 sensitivity_estimate=est, **kw)).report
        assert rep.search["sensitivity_estimate"] == est
        out[est] = rep
    return out


def test_exact_to_noise_on_a_linear_graph(tmp_path):
    # conv 3->16 then conv 16->4, no nonlinearity: removing channels changes the output linearly
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(size=(16, 3, 3, 3)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(rng.normal(size=16).astype(np.float32), "b1")
    w2 = numpy_helper.from_array(rng.normal(size=(4, 16, 1, 1)).astype(np.float32), "w2")
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w1", "b1"], ["h"], pads=[1, 1, 1, 1]), helper.make_node("Conv", ["h", "w2"], ["y"])],
        "lin", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8])], [w1, b1, w2])
    path = tmp_path / "lin.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    np.savez(tmp_path / "c.npz", x=rng.normal(size=(128, 3, 8, 8)).astype(np.float32))
    r = _both(str(path), str(tmp_path / "c.npz"), round_to=1)
    sweep, taylor = _curves(r["sweep"]), _curves(r["taylor"])
    assert len(sweep) == len(taylor) >= 3 and (sweep > 0).all()
    # 8 random directions x 32 samples: the Hutchinson estimate's spread is about 9%
    np.testing.assert_allclose(taylor, sweep, rtol=0.25)


def test_ranks_a_trained_cnns_groups_like_the_sweep(tmp_path):
    z = np.load(MODELS / "digits_eval.npz")
    np.savez(tmp_path / "c.npz", input=z["x"][:128])
    r = _both(str(MODELS / "digits_cnn.onnx"), str(tmp_path / "c.npz"))
    sweep, taylor = _curves(r["sweep"]), _curves(r["taylor"])
    ranks = lambda a: np.argsort(np.argsort(a))  # noqa: E731
    assert np.corrcoef(ranks(sweep), ranks(taylor))[0, 1] > 0.8
    assert 0.33 < np.median(taylor / sweep) < 3.0


def test_falls_back_to_the_sweep_with_a_warning(tmp_path, monkeypatch):
    import onnxcompress.finetune.graph_module as gm

    monkeypatch.setattr(gm, "unsupported_ops", lambda proto: {"Custom": 1})
    z = np.load(MODELS / "digits_eval.npz")
    np.savez(tmp_path / "c.npz", input=z["x"][:128])
    rep = oc.compress(str(MODELS / "digits_cnn.onnx"), oc.CompressConfig(
        calib=str(tmp_path / "c.npz"), target_macs=0.6, recover="none", verify=False, sensitivity_estimate="taylor")).report
    assert rep.search["sensitivity_estimate"] == "sweep"
    assert any("taylor" in w and "cannot run Custom" in w for w in rep.warnings)
