"""Dense single-channel probability maps (text detectors, saliency, masks): measured, scored, floored.

A DBNet text detector compressed with ``--calib --target-macs 0.8`` came out dead (no
pixel over its threshold), and was written without a warning. Root cause: the group
feeding its ConvTranspose head was never masked in the sensitivity model, so it measured
as free (drift 0) and was emptied, without mean compensation. These tests hold the fix:
ConvTranspose inputs are measured and compensated, a group whose removal cannot be
simulated is kept whole, maps are scored by F1/IoU/recall, and a collapsed model is
refused.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnx.helper as oh
import onnx.numpy_helper as onh
import pytest

from onnxcompress.cli import main
from onnxcompress.config import CompressConfig
from onnxcompress.fidelity import compare_outputs, is_probability_map, map_scores
from onnxcompress.runtime import Session


def _init(name: str, a: np.ndarray) -> onnx.TensorProto:
    return onh.from_array(np.asarray(a, np.float32), name)


def db_like(path) -> str:
    """Conv-Relu-Conv-Relu-ConvTranspose(2x)-Relu-Conv(1x1)-Sigmoid: a (N,1,32,32) map from (N,3,16,16)."""
    rng = np.random.default_rng(3)
    inits = [
        _init("w1", rng.standard_normal((16, 3, 3, 3)) * 0.4), _init("b1", rng.standard_normal(16) * 0.1),
        _init("w2", rng.standard_normal((16, 16, 3, 3)) * 0.15), _init("b2", np.abs(rng.standard_normal(16)) * 0.3),
        _init("wt", rng.standard_normal((16, 8, 2, 2)) * 0.3), _init("bt", rng.standard_normal(8) * 0.1),
        _init("w3", rng.standard_normal((1, 8, 1, 1))), _init("b3", np.full(1, -1.0)),
    ]
    nodes = [
        oh.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]), oh.make_node("Relu", ["c1"], ["r1"]),
        oh.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]), oh.make_node("Relu", ["c2"], ["r2"]),
        oh.make_node("ConvTranspose", ["r2", "wt", "bt"], ["t"], kernel_shape=[2, 2], strides=[2, 2]),
        oh.make_node("Relu", ["t"], ["rt"]),
        oh.make_node("Conv", ["rt", "w3", "b3"], ["logit"]), oh.make_node("Sigmoid", ["logit"], ["prob"]),
    ]
    g = oh.make_graph(nodes, "db_like", [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, 16, 16])],
                      [oh.make_tensor_value_info("prob", onnx.TensorProto.FLOAT, ["N", 1, 32, 32])], inits)
    m = oh.make_model(g, opset_imports=[oh.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, path)
    return str(path)


def threshold_map(path) -> str:
    """16 identical channels (x0 through a Relu) summed into sigmoid(4·Σ - 32): foreground where x0 > 0.5.

    Remove half of the channels without compensation and the logit loses 32·x0: no pixel is
    foreground any more. With the calibrated means folded in, the map survives.
    """
    w1 = np.zeros((16, 3, 1, 1))
    w1[:, 0] = 1.0
    inits = [_init("w1", w1), _init("b1", np.zeros(16)), _init("w2", np.full((1, 16, 1, 1), 4.0)), _init("b2", [-32.0])]
    nodes = [oh.make_node("Conv", ["x", "w1", "b1"], ["c1"]), oh.make_node("Relu", ["c1"], ["r1"]),
             oh.make_node("Conv", ["r1", "w2", "b2"], ["logit"]), oh.make_node("Sigmoid", ["logit"], ["prob"])]
    g = oh.make_graph(nodes, "threshold_map", [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, 8, 8])],
                      [oh.make_tensor_value_info("prob", onnx.TensorProto.FLOAT, ["N", 1, 8, 8])], inits)
    m = oh.make_model(g, opset_imports=[oh.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, path)
    return str(path)


def _calib(path, shape, n=48, seed=0) -> str:
    np.savez(path, x=np.random.default_rng(seed).uniform(0, 1, (n, *shape)).astype(np.float32))
    return str(path)


def test_map_scores_and_detection():
    ref = np.zeros((2, 1, 4, 4), np.float32)
    ref[:, :, :2, :2] = 0.9  # 8 foreground pixels
    got = ref.copy()
    got[0, 0, 0, 0] = 0.1  # one lost
    got[1, 0, 3, 3] = 0.8  # one spurious
    iou, f1, recall = map_scores(ref, got, 0.5)
    assert (iou, f1, recall) == pytest.approx((7 / 9, 14 / 16, 7 / 8))
    assert is_probability_map(ref) and not is_probability_map(ref * 3)
    # rank 3 in [0, 1]: a map when its rows are not distributions (see the sigmoid-scores test below)
    assert is_probability_map(ref[:, 0]) and not is_probability_map(np.full((2, 4, 4), 0.25, np.float32))
    assert is_probability_map(np.moveaxis(ref, 1, -1))  # NHWC
    fid = compare_outputs({"p": ref}, {"p": got}, inputs="calibration")
    o = fid.per_output["p"]
    assert o.agreement is None and o.map_f1 == pytest.approx(14 / 16) and o.map_threshold == 0.5
    assert fid.to_dict()["map_recall"] == pytest.approx(7 / 8)
    assert fid.collapsed() is None
    # a dead map: nothing over the threshold; F1 0 although 87% of the pixels still "agree"
    dead = np.full_like(ref, 0.06)
    fid = compare_outputs({"p": ref}, {"p": dead}, inputs="calibration")
    assert fid.map_f1 == 0.0 and "map F1 0.000" in fid.collapsed()
    # --map-threshold moves the cut: at 0.05 the dead map covers everything
    assert compare_outputs({"p": ref}, {"p": dead}, map_thresholds={"p": 0.05}).map_f1 == pytest.approx(16 / 40)


def test_convtranspose_inputs_are_measured_not_free(tmp_path):
    """The DBNet bug: the group read only by a ConvTranspose measured drift 0 and was emptied."""
    from onnxcompress.sensitivity_cmd import sensitivity

    model = db_like(tmp_path / "db.onnx")
    calib = _calib(tmp_path / "c.npz", (3, 16, 16))
    rep = sensitivity(model, CompressConfig(calib=calib, round_to=4), ratios=(0.25, 0.5))
    # three groups: conv 1's filters (read by conv 2), conv 2's (read by the ConvTranspose only),
    # the ConvTranspose's (read by the 1x1 head); each is measured and none is free
    assert len(rep.groups) == 3, rep.groups
    for g in rep.groups:
        assert g["curve"] and all(c["drift"] > 1e-4 for c in g["curve"]), g
        assert "unmeasured" not in g


def test_a_group_that_cannot_be_simulated_is_kept_whole(tmp_path, monkeypatch):
    """If an op reading a group is not one the sensitivity model masks, the group is not free: it stays."""
    from onnxcompress.channels.rules import conv

    # a ConvTranspose rule without consumer hooks: its input channels cannot be measured or masked
    monkeypatch.setattr(conv.ConvTransposeRule, "consumer", None)
    model = db_like(tmp_path / "db.onnx")
    calib = _calib(tmp_path / "c.npz", (3, 16, 16))
    out, report = tmp_path / "o.onnx", tmp_path / "r.json"
    assert main([model, "--calib", calib, "--target-macs", "0.6", "--round-to", "4", "-o", str(out),
                 "--report", str(report), "-q", "--force"]) in (0, 1)
    r = json.loads(report.read_text())
    blind = [g for g in r["search"]["groups"] if g.get("unmeasured")]
    assert len(blind) == 1 and "ConvTranspose" in blind[0]["unmeasured"] and blind[0]["removed"] == 0
    assert any("cannot be simulated" in w for w in r["warnings"])


def test_dense_map_compress_reports_map_fidelity(tmp_path):
    model = db_like(tmp_path / "db.onnx")
    calib = _calib(tmp_path / "c.npz", (3, 16, 16))
    out, report = tmp_path / "o.onnx", tmp_path / "r.json"
    assert main([model, "--calib", calib, "--target-macs", "0.7", "--round-to", "4", "-o", str(out),
                 "--report", str(report), "-q"]) == 0
    r = json.loads(report.read_text())
    f = r["fidelity"]
    assert f["inputs"] == "calibration" and f["per_output"]["prob"]["map_threshold"] == 0.5
    assert f["map_f1"] > 0.5 and 0 < f["map_iou"] <= f["map_f1"] and f["map_recall"] > 0.5
    assert r["after"]["macs"] <= 0.7 * r["before"]["macs"] + 1
    # the written map still has foreground where the original has it
    x = np.load(calib)["x"][-8:]
    ref, got = Session(model).run({"x": x})["prob"], Session(str(out)).run({"x": x})["prob"]
    assert map_scores(ref, got, 0.5)[1] > 0.5


def test_a_collapsed_model_is_refused_unless_forced(tmp_path, capsys):
    model = threshold_map(tmp_path / "m.onnx")
    calib = _calib(tmp_path / "c.npz", (3, 8, 8))
    out = tmp_path / "o.onnx"
    args = [model, "--calib", calib, "--ratio", "0.5", "--round-to", "8", "--recover", "none", "-o", str(out)]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "collapsed" in err and "map F1 0.000" in err and not out.exists()
    assert len(err.strip().splitlines()) == 1
    # with the calibrated means folded in (--recover bias) the same pruning keeps the map
    assert main([*args[:-3], "bias", "-o", str(out), "-q"]) == 0
    x = np.load(calib)["x"]
    ref, got = Session(model).run({"x": x})["prob"], Session(str(out)).run({"x": x})["prob"]
    assert map_scores(ref, got, 0.5)[1] > 0.9
    out.unlink()
    # --force writes the dead one, with a warning in the report
    report = tmp_path / "r.json"
    assert main([*args, "--force", "--report", str(report), "-q"]) == 0 and out.exists()
    r = json.loads(report.read_text())
    assert r["fidelity"]["map_f1"] == 0.0 and any("--force" in w for w in r["warnings"])
    # check warns when no gate was set and the model is dead, and a map gate fails it
    capsys.readouterr()
    assert main(["check", model, str(out), "--calib", calib]) == 0
    text = capsys.readouterr().out
    assert "warning" in text and "collapsed" in text and "see the warning above" in text
    assert main(["check", model, str(out), "--calib", calib, "--min-map-f1", "0.5", "-q"]) == 1


def test_a_detectors_anchor_output_is_no_sequence():
    """(N, 3549, 6) YOLOX rows: one anchor differing out of thousands is not a different reading.
    With "every position agrees" a well-pruned detector (cosine 0.96) scored 0 and hit the floor."""
    from onnxcompress.fidelity import MAX_SEQUENCE_POSITIONS, compare_outputs

    rng = np.random.default_rng(0)
    ref = rng.normal(size=(4, 3549, 6)).astype(np.float32)
    got = ref + rng.normal(scale=0.05, size=ref.shape).astype(np.float32)
    fid = compare_outputs({"out": ref}, {"out": got}, inputs="calibration")
    o = fid.per_output["out"]
    assert o.sequence_agreement is None and o.agreement > 0.9
    assert fid.collapsed() is None
    assert o.task_figure()[1] == "top-1 agreement"
    # a CTC-sized sequence still is one
    short = ref[:, :MAX_SEQUENCE_POSITIONS]
    bad = short.copy()
    bad[:, 0] = -bad[:, 0]  # the first position's argmax changes in every sample
    f2 = compare_outputs({"out": short}, {"out": bad}, inputs="calibration").per_output["out"]
    assert f2.sequence_agreement is not None and f2.sequence_agreement < 0.5


def test_a_detectors_sigmoid_class_scores_are_judged_as_a_map():
    """(N, anchors, classes) sigmoid scores (PicoDet's 130-anchor level): background anchors' argmax is
    noise, so "every position agrees" scored a good layout detector 0 and refused it. Scores whose
    rows do not sum to 1 are a multi-label map: F1 of the cells over 0.5."""
    from onnxcompress.fidelity import compare_outputs, is_probability_map

    rng = np.random.default_rng(0)
    ref = rng.uniform(0.0, 0.05, size=(8, 130, 10)).astype(np.float32)  # background everywhere
    ref[:, 3, 2] = 0.9  # one detection per sample
    got = np.clip(ref + rng.normal(scale=0.01, size=ref.shape), 0, 1).astype(np.float32)
    assert is_probability_map(ref)
    o = compare_outputs({"out": ref}, {"out": got}, inputs="calibration").per_output["out"]
    assert o.task_figure() == (1.0, "map F1")
    missed = got.copy()
    missed[:4, 3, 2] = 0.1  # half the detections gone
    o2 = compare_outputs({"out": ref}, {"out": missed}, inputs="calibration").per_output["out"]
    assert abs(o2.map_f1 - 2 / 3) < 1e-9
    # a sequence of distributions (CTC, rows summing to 1) stays a sequence
    soft = rng.dirichlet(np.ones(10), size=(8, 40)).astype(np.float32)
    assert not is_probability_map(soft)
    assert compare_outputs({"out": soft}, {"out": soft}).per_output["out"].sequence_agreement == 1.0


def test_a_detectors_box_logits_are_judged_at_confident_anchors():
    """PicoDet's (1, 130, 32) box logits (4 sides x 8 bins) beside its (1, 130, 10) scores: read as a
    32-class sequence, bin noise at background anchors scored a pruned layout detector 0 and refused it.
    Box outputs aligned with a score map are judged by their cosine at the anchors the original detects."""
    from onnxcompress.fidelity import compare_outputs, confident_anchors, drift_of

    rng = np.random.default_rng(1)
    scores = rng.uniform(0.0, 0.05, size=(8, 130, 10)).astype(np.float32)
    scores[:, 3, 2] = 0.9  # anchor 3 detects in every sample
    boxes = rng.normal(size=(8, 130, 32)).astype(np.float32)
    noisy = boxes + rng.normal(scale=1.0, size=boxes.shape).astype(np.float32)  # background anchors: noise
    noisy[:, 3] = boxes[:, 3] * 1.1  # the detecting anchor: same direction
    ref, got = {"s": scores, "b": boxes}, {"s": scores, "b": noisy}
    mask = confident_anchors(ref, {}, {})["b"]
    assert mask.shape == (8, 130) and mask.sum() == 8 and mask[:, 3].all()
    fid = compare_outputs(ref, got, inputs="calibration")
    o = fid.per_output["b"]
    assert o.sequence_agreement is None and o.agreement is None and o.anchors == 8
    assert o.task_figure() == (pytest.approx(1.0), "cosine at confident anchors")
    assert fid.collapsed() is None
    # a wrong box at the detecting anchor is seen, in the figure and in the budgeted drift
    bad = noisy.copy()
    bad[:, 3] = -boxes[:, 3]
    fb = compare_outputs(ref, {"s": scores, "b": bad}, inputs="calibration")
    assert fb.per_output["b"].anchor_cosine == pytest.approx(-1.0)
    assert "cosine at confident anchors" in fb.collapsed()
    assert drift_of(fb.to_dict())[0] == pytest.approx(2.0)
    # without a score output beside it, or with --class-axis, it is a sequence as before
    alone = compare_outputs({"b": boxes}, {"b": noisy}).per_output["b"]
    assert alone.anchor_cosine is None and alone.sequence_agreement is not None
    named = compare_outputs(ref, got, class_axes={"b": 2}).per_output["b"]
    assert named.anchor_cosine is None and named.agreement is not None


def yolo_head(path) -> str:
    """A YOLOv8-style head on a small backbone: (N, 4 + 3, 256) from (N, 3, 16, 16). Boxes are
    decoded to pixels (50 + 40 * conv), the 3 class scores sigmoided, both concatenated on axis 1."""
    rng = np.random.default_rng(5)
    inits = [
        _init("w1", rng.standard_normal((16, 3, 3, 3)) * 0.4), _init("b1", rng.standard_normal(16) * 0.1),
        _init("w2", rng.standard_normal((16, 16, 3, 3)) * 0.15), _init("b2", np.abs(rng.standard_normal(16)) * 0.3),
        _init("wb", rng.standard_normal((4, 16, 1, 1)) * 0.3), _init("bb", np.zeros(4)),
        _init("wc", rng.standard_normal((3, 16, 1, 1)) * 0.8), _init("bc", np.full(3, -1.0)),
        _init("scale", [40.0]), _init("offset", [50.0]),
        onh.from_array(np.array([0, 4, -1], np.int64), "box_shape"),
        onh.from_array(np.array([0, 3, -1], np.int64), "cls_shape"),
    ]
    nodes = [
        oh.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]), oh.make_node("Relu", ["c1"], ["r1"]),
        oh.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]), oh.make_node("Relu", ["c2"], ["r2"]),
        oh.make_node("Conv", ["r2", "wb", "bb"], ["box_raw"]), oh.make_node("Mul", ["box_raw", "scale"], ["box_s"]),
        oh.make_node("Add", ["box_s", "offset"], ["box"]), oh.make_node("Reshape", ["box", "box_shape"], ["box_flat"]),
        oh.make_node("Conv", ["r2", "wc", "bc"], ["cls_logit"]), oh.make_node("Sigmoid", ["cls_logit"], ["cls"]),
        oh.make_node("Reshape", ["cls", "cls_shape"], ["cls_flat"]),
        oh.make_node("Concat", ["box_flat", "cls_flat"], ["y"], axis=1),
    ]
    g = oh.make_graph(nodes, "yolo_head", [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, 16, 16])],
                      [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 7, 256])], inits)
    m = oh.make_model(g, opset_imports=[oh.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, path)
    return str(path)


def test_a_yolo_head_is_judged_as_boxes_and_scores_end_to_end(tmp_path):
    """NudeNet's YOLOv8n (N, 22, 2100) was refused as collapsed at every target ("sequence agreement
    0.000", an argmax across anchors): the head is now split, and the written model keeps the detections."""
    model = yolo_head(tmp_path / "yolo.onnx")
    calib = _calib(tmp_path / "c.npz", (3, 16, 16), n=64)
    ref = Session(model).run({"x": np.load(calib)["x"][:8]})["y"]
    assert (ref[:, 4:] > 0.5).sum() > 20 and ref[:, :4].max() > 60  # detections, and boxes in pixels
    out, report = tmp_path / "o.onnx", tmp_path / "r.json"
    assert main([model, "--calib", calib, "--target-macs", "0.7", "--round-to", "4", "-o", str(out),
                 "--report", str(report), "-q"]) == 0
    r = json.loads(report.read_text())
    f = r["fidelity"]
    assert set(f["per_output"]) == {"y[boxes]", "y[scores]"} and f["sequence_agreement"] is None
    assert f["per_output"]["y[scores]"]["map_threshold"] == 0.5 and f["map_f1"] > 0.5
    assert f["per_output"]["y[boxes]"]["anchors"] > 0 and f["anchor_cosine"] > 0.9
    assert "YOLO head's scores" in r["recovery"]["drift_metric"]
    assert r["after"]["macs"] <= 0.7 * r["before"]["macs"] + 1
    # the refit's perturbations are off, as on every detector
    assert r["recovery"]["refit_augment"] == [] and "output 'y'" in r["recovery"]["refit_augment_off"]
    got = Session(str(out)).run({"x": np.load(calib)["x"][:8]})["y"]
    assert got.shape == ref.shape
    _iou, f1, _recall = map_scores(ref[:, 4:], got[:, 4:], 0.5)
    assert f1 > 0.5
