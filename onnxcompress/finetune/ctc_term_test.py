import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the finetune extra (torch) is not installed")

from onnxcompress.finetune.ctc_term import CtcHead, find_ctc_heads, reading_loss, with_judged_blanks  # noqa: E402


def _logits(ids: np.ndarray, classes: int = 5) -> np.ndarray:
    """(N, T, C) logits whose argmax is ``ids`` (N, T)."""
    out = np.zeros(ids.shape + (classes,), dtype=np.float32)
    np.put_along_axis(out, ids[..., None], 4.0, axis=-1)
    return out


READ_12 = np.array([[0, 1, 1, 0, 2, 0, 0, 0]])  # blank 0: reads (1, 2)
KINDS = {"y": ("logits", 2)}


def test_heads_found_with_their_samples_axis_in_either_layout():
    one = _logits(READ_12)
    two = np.concatenate([one, one])
    assert find_ctc_heads(KINDS, {"y": one}, {"y": two}) == {"y": CtcHead(0, 2)}
    tnc = {"y": one.transpose(1, 0, 2)}
    assert find_ctc_heads(KINDS, tnc, {"y": two.transpose(1, 0, 2)}) == {"y": CtcHead(1, 2)}
    assert find_ctc_heads(KINDS, tnc, None, {"y": 1}) == {"y": CtcHead(1, 2)}


def test_a_classifier_a_detector_a_feature_or_no_class_axis_is_no_head():
    cls1 = _logits(np.array([[3]]))  # (1, 1, C): a classifier with a unit axis
    assert find_ctc_heads(KINDS, {"y": cls1}, {"y": np.concatenate([cls1, cls1])}) == {}
    anchors = _logits(np.zeros((1, 8732), dtype=int), 21)  # a detector's anchors, background dominant
    assert find_ctc_heads(KINDS, {"y": anchors}, {"y": np.concatenate([anchors, anchors])}) == {}
    one = _logits(READ_12)
    assert find_ctc_heads(KINDS, {"y": one}, None, {"y": 0}, features=frozenset({"y"})) == {}
    assert find_ctc_heads({"y": ("mse", None)}, {"y": one}, None) == {}


def test_blanks_are_read_on_the_held_out_reference_as_fidelity_reads_them():
    heads = {"y": CtcHead(0, 2), "z": CtcHead(0, 2)}
    busy = _logits(np.array([[1, 2, 3, 4, 1, 2, 3, 4]] * 3))  # no dominant class: not CTC
    ref = {"y": _logits(np.concatenate([READ_12, READ_12 * 2])), "z": busy}
    assert with_judged_blanks(heads, ref, {}) == {"y": CtcHead(0, 2, 0)}


def test_reading_loss_prefers_the_teachers_reading_in_any_alignment():
    head = CtcHead(0, 2, 0)
    teacher = _logits(READ_12)
    shifted = torch.from_numpy(_logits(np.array([[1, 0, 0, 2, 2, 0, 0, 0]])))  # (1, 2) aligned elsewhere
    wrong = torch.from_numpy(_logits(np.array([[0, 1, 1, 0, 3, 0, 0, 0]])))  # reads (1, 3)
    same = reading_loss(head, "logits", torch.from_numpy(teacher), teacher)
    loss_wrong = float(reading_loss(head, "logits", wrong, teacher))
    assert loss_wrong > float(same) + 1.0
    assert float(reading_loss(head, "logits", shifted, teacher)) < loss_wrong - 1.0


def test_reading_loss_reads_time_major_outputs_and_empty_readings():
    head = CtcHead(1, 2, 0)
    teacher = _logits(READ_12).transpose(1, 0, 2)
    wrong = torch.from_numpy(_logits(np.array([[0, 1, 1, 0, 3, 0, 0, 0]])).transpose(1, 0, 2).copy())
    same = reading_loss(head, "logits", torch.from_numpy(teacher.copy()), teacher)
    assert float(reading_loss(head, "logits", wrong, teacher)) > float(same) + 1.0
    blank_only = _logits(np.zeros((1, 8), dtype=int))
    s = torch.from_numpy(_logits(READ_12)).requires_grad_()
    loss = reading_loss(CtcHead(0, 2, 0), "logits", s, blank_only)
    loss.backward()
    assert np.isfinite(float(loss.detach())) and float(s.grad.abs().sum()) > 0
