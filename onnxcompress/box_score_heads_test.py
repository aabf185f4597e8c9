"""Box-and-score heads: which outputs are split, how, and what fidelity and the sweep make of them."""

from __future__ import annotations

import numpy as np
import pytest

from onnxcompress.box_score_heads import box_score_fields, split_heads
from onnxcompress.fidelity import compare_outputs, drift_of


def _yolo(rng, n=2, classes=3, anchors=256, fields_first=True):
    """(N, 4 + classes, anchors) as YOLOv8 exports it (boxes in pixels, sigmoid scores), or anchor-major."""
    boxes = rng.uniform(0, 320, (n, 4, anchors)).astype(np.float32)
    scores = rng.uniform(0, 0.1, (n, classes, anchors)).astype(np.float32)
    scores[:, 1, 7] = 0.9  # anchor 7 detects class 1 in every sample
    a = np.concatenate([boxes, scores], axis=1)
    return a if fields_first else np.ascontiguousarray(a.transpose(0, 2, 1))


def test_which_outputs_are_box_and_score_heads():
    rng = np.random.default_rng(0)
    assert box_score_fields(_yolo(rng)) == (1, 4)
    assert box_score_fields(_yolo(rng, fields_first=False)) == (2, 4)  # YOLOv5 / YOLOX: anchors first
    v5 = _yolo(rng, classes=80, anchors=2000, fields_first=False)  # 4 box + objectness + 79: the tail starts at 4
    assert box_score_fields(v5) == (2, 4)
    # not heads: CTC probabilities (all in [0, 1]), CTC logits (none), a box output alone, too few
    # anchors, too many leading box fields, ranks other than 3, integers
    probs = rng.dirichlet(np.ones(100), size=(2, 40)).astype(np.float32)
    assert box_score_fields(probs) is None
    assert box_score_fields(rng.normal(size=(2, 40, 100)).astype(np.float32)) is None
    assert box_score_fields(rng.uniform(0, 320, (2, 500, 4)).astype(np.float32)) is None
    assert box_score_fields(_yolo(rng, anchors=32)) is None
    wide = np.concatenate([rng.uniform(2, 9, (2, 9, 300)), rng.uniform(0, 1, (2, 3, 300))], axis=1).astype(np.float32)
    assert box_score_fields(wide) is None
    assert box_score_fields(_yolo(rng)[:, :, 0]) is None
    assert box_score_fields(_yolo(rng).astype(np.int64)) is None


def test_split_heads_is_anchor_major_and_keeps_other_outputs():
    rng = np.random.default_rng(1)
    a = _yolo(rng)
    other = rng.normal(size=(2, 5)).astype(np.float32)
    parts = split_heads({"out": a, "other": other}, {"out": (1, 4)})
    assert list(parts) == ["out[boxes]", "out[scores]", "other"]
    assert parts["out[boxes]"].shape == (2, 256, 4) and parts["out[scores]"].shape == (2, 256, 3)
    np.testing.assert_array_equal(parts["out[boxes]"][1, 9], a[1, :4, 9])
    np.testing.assert_array_equal(parts["out[scores]"][0, 7], a[0, 4:, 7])
    assert parts["other"] is other


def test_fidelity_judges_boxes_at_confident_anchors_and_scores_as_a_map():
    """Found on NudeNet's YOLOv8n (N, 22, 2100): read whole, its argmax ran across anchors, "sequence
    agreement" was 0 for any pruned model, and --calib --target-macs 0.7 refused it as collapsed."""
    rng = np.random.default_rng(2)
    ref = _yolo(rng, n=4)
    noisy = ref.copy()
    noisy[:, :4] += rng.normal(scale=40.0, size=noisy[:, :4].shape).astype(np.float32)  # background boxes move
    noisy[:, :4, 7] = ref[:, :4, 7] * 1.01  # the detecting anchor's box holds
    fid = compare_outputs({"out": ref}, {"out": noisy}, inputs="calibration")
    assert set(fid.per_output) == {"out[boxes]", "out[scores]"}
    assert fid.per_output["out[scores]"].map_f1 == pytest.approx(1.0)
    assert fid.per_output["out[boxes]"].anchors == 4
    assert fid.per_output["out[boxes]"].anchor_cosine == pytest.approx(1.0)
    assert fid.sequence_agreement is None and fid.collapsed() is None
    assert drift_of(fid.to_dict())[0] == pytest.approx(0.0, abs=1e-6)
    # the detection lost: the score map's F1 falls to 0 and the model is refused as collapsed
    lost = ref.copy()
    lost[:, 5, 7] = 0.05
    gone = compare_outputs({"out": ref}, {"out": lost}, inputs="calibration")
    assert gone.per_output["out[scores]"].map_f1 == 0.0
    assert "out[scores]" in gone.collapsed()
    # --class-axis on the output reads it whole, as before
    named = compare_outputs({"out": ref}, {"out": noisy}, class_axes={"out": 1})
    assert set(named.per_output) == {"out"} and named.per_output["out"].class_axis == 1


def test_the_sweeps_drift_sees_a_lost_detection():
    """Relative L2 over the whole output is the boxes' (pixels): a lost detection barely moves it."""
    from onnxcompress.pruning.sensitivity import drift

    rng = np.random.default_rng(3)
    ref = _yolo(rng, n=4)
    lost = ref.copy()
    lost[:, 5, 7] = 0.05
    l2 = float(np.linalg.norm(lost - ref) / np.linalg.norm(ref))
    assert l2 < 1e-3
    assert drift({"out": ref}, {"out": lost}) == pytest.approx(1.0)
    assert drift({"out": ref}, {"out": ref.copy()}) == 0.0
