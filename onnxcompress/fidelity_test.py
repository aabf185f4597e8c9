"""CTC heads are compared as they are read: greedy-decoded, so a frame moved by one position is no drift."""

from __future__ import annotations

import numpy as np
import pytest

from onnxcompress.fidelity import compare_outputs, ctc_decode, drift_of, signal_inputs

BLANK = 0


def _logits(ids: list[list[int]], classes: int = 6) -> np.ndarray:
    """(N, T, C) scores whose per-position argmax is ``ids``."""
    rng = np.random.default_rng(0)
    a = rng.uniform(-1, 1, (len(ids), len(ids[0]), classes)).astype(np.float32)
    for n, row in enumerate(ids):
        for t, c in enumerate(row):
            a[n, t, c] = 5.0
    return a


# 4 samples of 10 frames, the blank at 75% of them
REF = [[1, 1, 0, 0, 2, 0, 0, 0, 0, 0],
       [0, 3, 0, 3, 0, 0, 0, 0, 0, 0],
       [0, 0, 4, 4, 0, 5, 0, 0, 0, 0],
       [2, 0, 0, 0, 0, 0, 0, 1, 0, 0]]
# the same readings, every sample's frames moved or stretched by one position
JITTER = [[0, 1, 1, 0, 2, 0, 0, 0, 0, 0],
          [0, 3, 0, 0, 3, 0, 0, 0, 0, 0],
          [0, 0, 0, 4, 0, 5, 5, 0, 0, 0],
          [2, 2, 0, 0, 0, 0, 0, 1, 0, 0]]


def test_ctc_decode_merges_repeats_then_drops_blanks():
    assert ctc_decode(np.array([1, 1, 0, 1, 2, 2, 0]), BLANK) == (1, 1, 2)
    assert ctc_decode(np.array([0, 0, 0]), BLANK) == ()


def test_a_moved_frame_is_no_drift_on_signal_inputs_but_counts_per_position_elsewhere():
    ref, got = _logits(REF), _logits(JITTER)
    decoded = compare_outputs({"y": ref}, {"y": got}, inputs="calibration", signals=True)
    o = decoded.per_output["y"]
    assert o.ctc_blank == BLANK and o.frame_agreement == 0.0 and o.sequence_agreement == 1.0
    assert o.task_figure() == (1.0, "sequence agreement (CTC-decoded)")
    assert drift_of(decoded.to_dict()) == (0.0, "1 - sequence agreement (held out)")
    # token ids in (a tagger, not a CTC head): every position must agree, as before
    frames = compare_outputs({"y": ref}, {"y": got}, inputs="calibration")
    f = frames.per_output["y"]
    assert f.ctc_blank is None and f.sequence_agreement == 0.0 and "ctc_blank" not in f.to_dict()
    assert drift_of(frames.to_dict())[0] == 1.0


def test_a_changed_reading_still_counts():
    changed = [row[:] for row in JITTER]
    changed[0][:4] = [1, 0, 1, 0]  # "1 2" -> "1 1 2": a blank between repeats is a second character
    changed[2][5:7] = [0, 0]  # "4 5" -> "4"
    o = compare_outputs({"y": _logits(REF)}, {"y": _logits(changed)}, signals=True).per_output["y"]
    assert o.sequence_agreement == pytest.approx(2 / 4) and o.frame_agreement == 0.0


def test_no_dominant_class_is_no_ctc_head():
    rng = np.random.default_rng(1)
    ref = rng.standard_normal((8, 10, 6)).astype(np.float32)  # argmax spread over six classes
    o = compare_outputs({"y": ref}, {"y": ref}, signals=True).per_output["y"]
    assert o.ctc_blank is None and o.sequence_agreement == 1.0
    scores = np.zeros((4, 6), np.float32)  # (N, C) class scores are no sequence
    assert compare_outputs({"y": scores}, {"y": scores}, signals=True).per_output["y"].ctc_blank is None


def test_signal_inputs_are_float_arrays_of_rank_two_or_more():
    img = np.zeros((2, 3, 8, 8), np.float32)
    assert signal_inputs({"x": img}) and signal_inputs([{"x": img}, {"x": img}])
    assert signal_inputs({"audio": np.zeros((2, 16000), np.float32)})
    assert not signal_inputs({"ids": np.zeros((2, 16), np.int64)})
    assert not signal_inputs({"x": img, "mask": np.ones((2, 16), np.int64)})
    assert not signal_inputs({}) and not signal_inputs([])


def test_one_probability_per_sample_is_judged_by_its_decision():
    """silero-vad's (N, 1) speech probability: a pruned model that never says 'speech' again had every per-sample
    cosine at 1.0 (a cosine of two positive numbers). Its decisions at 0.5 are compared, and its cosine is the
    batch column's."""
    ref = np.array([[0.9], [0.8], [0.1], [0.7], [0.2], [0.95], [0.05], [0.6]], np.float32)
    dead = np.full_like(ref, 0.3)  # every sample below 0.5
    fid = compare_outputs({"p": ref}, {"p": dead}, inputs="calibration")
    out = fid.per_output["p"]
    assert out.task_figure() == (pytest.approx(3 / 8), "decision agreement")
    assert out.decision_threshold == 0.5 and out.class_axis is None
    assert out.cosine_min == pytest.approx(float(ref[:, 0] @ dead[:, 0] / np.linalg.norm(ref) / np.linalg.norm(dead)))
    assert fid.collapsed() is not None and drift_of(fid.to_dict()) == (pytest.approx(5 / 8), "1 - decision agreement (held out)")
    assert fid.top1_agreement is None  # not a class score: check --min-top1 does not read it
    close = compare_outputs({"p": ref}, {"p": ref * 0.98}, inputs="calibration")
    assert close.per_output["p"].task_figure()[0] == 1.0 and close.collapsed() is None
    # rank 1 (a sequence of per-frame probabilities) likewise; a (N, 1) output outside [0, 1] keeps the cosine
    seq = compare_outputs({"s": ref[:, 0]}, {"s": dead[:, 0]}, inputs="calibration").per_output["s"]
    assert seq.task_figure()[1] == "decision agreement"
    logit = compare_outputs({"z": ref * 10 - 5}, {"z": dead * 10 - 5}, inputs="calibration").per_output["z"]
    assert logit.decision_threshold is None and logit.task_figure()[1] == "mean cosine"
    # a rank-1 softmax (a model without a batch axis) is one distribution, not a probability per sample
    soft = np.exp(np.linspace(0, 3, 1000)).astype(np.float32)
    soft /= soft.sum()
    flat = np.full_like(soft, 1 / 1000)
    dist = compare_outputs({"p": soft}, {"p": flat}, inputs="calibration")
    assert dist.per_output["p"].decision_threshold is None and dist.per_output["p"].task_figure()[1] == "mean cosine"
    # beside a class-score output, the budget names top-1 agreement
    both = compare_outputs({"p": ref, "c": np.eye(8, dtype=np.float32)}, {"p": dead, "c": np.eye(8, dtype=np.float32)},
                           inputs="calibration")
    assert drift_of(both.to_dict()) == (pytest.approx(5 / 8), "1 - top-1 agreement (held out)")
