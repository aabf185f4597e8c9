import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the finetune extra (torch) is not installed")

from onnxcompress.finetune.ctc_term import CtcHead, find_ctc_heads, reading_loss  # noqa: E402


def _logits(ids: np.ndarray, classes: int = 5) -> np.ndarray:
    """(N, T, C) logits whose argmax is ``ids`` (N, T)."""
    out = np.zeros(ids.shape + (classes,), dtype=np.float32)
    np.put_along_axis(out, ids[..., None], 4.0, axis=-1)
    return out


READ_12 = np.array([[0, 1, 1, 0, 2, 0, 0, 0]])  # blank 0: reads (1, 2)


def test_heads_found_with_their_samples_axis_and_blank_in_either_layout():
    one = _logits(READ_12)
    two = np.concatenate([one, one])
    kinds = {"y": ("logits", 2)}
    assert find_ctc_heads(kinds, {"y": one}, {"y": two}) == {"y": CtcHead(0, 2, 0)}
    tnc = {"y": one.transpose(1, 0, 2)}
    assert find_ctc_heads(kinds, tnc, {"y": two.transpose(1, 0, 2)}) == {"y": CtcHead(1, 2, 0)}
    assert find_ctc_heads(kinds, tnc, None, {"y": 1}) == {"y": CtcHead(1, 2, 0)}


def test_no_dominant_class_or_no_class_axis_is_no_head():
    busy = _logits(np.array([[1, 2, 3, 4, 1, 2, 3, 4]]))
    assert find_ctc_heads({"y": ("logits", 2)}, {"y": busy}, None) == {}
    assert find_ctc_heads({"y": ("mse", None)}, {"y": _logits(READ_12)}, None) == {}


def test_reading_loss_rewards_any_alignment_of_the_teachers_reading_and_not_another_reading():
    head = CtcHead(0, 2, 0)
    teacher = _logits(READ_12)
    shifted = torch.from_numpy(_logits(np.array([[1, 0, 0, 2, 2, 0, 0, 0]])))  # (1, 2) aligned elsewhere
    wrong = torch.from_numpy(_logits(np.array([[0, 1, 1, 0, 3, 0, 0, 0]])))  # reads (1, 3)
    same = reading_loss(head, "logits", torch.from_numpy(teacher), teacher)
    loss_wrong = float(reading_loss(head, "logits", wrong, teacher))
    assert loss_wrong > float(same) + 1.0
    assert float(reading_loss(head, "logits", shifted, teacher)) < loss_wrong - 1.0


def test_reading_loss_reads_time_major_outputs_too():
    head = CtcHead(1, 2, 0)
    teacher = _logits(READ_12).transpose(1, 0, 2)
    wrong = torch.from_numpy(_logits(np.array([[0, 1, 1, 0, 3, 0, 0, 0]])).transpose(1, 0, 2).copy())
    same = reading_loss(head, "logits", torch.from_numpy(teacher.copy()), teacher)
    assert float(reading_loss(head, "logits", wrong, teacher)) > float(same) + 1.0
