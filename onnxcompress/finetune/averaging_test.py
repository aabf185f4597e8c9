"""The weight average the distillation judge scores: exact update, swap in and back, and the CLI run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper as onh
import pytest

torch = pytest.importorskip("torch", reason="the finetune extra (torch) is not installed")

from onnxcompress.cli import main  # noqa: E402
from onnxcompress.finetune.averaging import WeightAverage  # noqa: E402

MODELS = Path(__file__).resolve().parents[2] / "models"


def test_the_average_follows_the_weights_by_its_decay_and_swaps_in_and_back():
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    avg = WeightAverage({"w": w}, 0.75)
    with torch.no_grad():
        w.copy_(torch.tensor([5.0, 6.0]))
    avg.update()  # 0.75 * [1, 2] + 0.25 * [5, 6]
    assert avg.average["w"].tolist() == [2.0, 3.0]
    with torch.no_grad():
        w.copy_(torch.tensor([2.0, 3.0]))
    avg.update()  # the weights equal the average: it stays
    with torch.no_grad():
        w.copy_(torch.tensor([10.0, 10.0]))
    with avg.swapped_in():
        assert w.tolist() == [2.0, 3.0]
    assert w.tolist() == [10.0, 10.0]  # the trained weights are back, training goes on from them
    assert w.requires_grad
    for bad in (0.0, 1.0, -0.5):
        with pytest.raises(ValueError):
            WeightAverage({"w": w}, bad)


def test_distill_average_writes_the_average_the_judge_chose(tmp_path):
    z = np.load(MODELS / "digits_eval.npz")
    np.savez(tmp_path / "calib.npz", input=z["x"][:160])
    reports = {}
    for name, extra in (("raw", ["--distill-average", "0"]), ("avg", ["--distill-average", "0.9"])):  # the same training
        out, rep = tmp_path / f"{name}.onnx", tmp_path / f"{name}.json"
        assert main([str(MODELS / "digits_cnn.onnx"), "--calib", str(tmp_path / "calib.npz"), "--target-macs", "0.3",
                     "-o", str(out), "--report", str(rep), "-q", "--no-simplify", "--recover", "distill",
                     "--distill-steps", "50", "--distill-lr", "1e-3", "--distill-augment", "0", *extra]) == 0
        reports[name] = json.loads(rep.read_text())
    raw, avg = (reports[k]["recovery"]["distill"] for k in ("raw", "avg"))
    assert raw["average"] == 0.0 and avg["average"] == 0.9
    # the same training run (same seed, same steps): only what the judge scores differs
    assert [h["step"] for h in raw["history"]] == [h["step"] for h in avg["history"]] == [0, 25, 50]
    assert raw["history"][0] == avg["history"][0]  # step 0 is the refit either way
    assert [h["train_loss"] for h in raw["history"][1:]] == [h["train_loss"] for h in avg["history"][1:]]
    assert [h["held_out_loss"] for h in raw["history"][1:]] != [h["held_out_loss"] for h in avg["history"][1:]]
    # what was kept is what was written: the verify step measures the judge's held-out drift
    for name in ("raw", "avg"):
        d = reports[name]["recovery"]["distill"]
        assert 1 - reports[name]["fidelity"]["top1_agreement"] == pytest.approx(d["held_out_drift_distill"])
    a, b = (onnx.load(tmp_path / f"{k}.onnx") for k in ("raw", "avg"))
    assert raw["kept"] == avg["kept"] == "distill" and raw["best_step"] == avg["best_step"] == 25  # measured
    # the average of steps 1-25 was written, not the step-25 weights
    assert any(not np.array_equal(onh.to_array(x), onh.to_array(y)) for x, y in zip(a.graph.initializer, b.graph.initializer))
