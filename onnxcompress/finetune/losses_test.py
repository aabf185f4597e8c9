from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the finetune extra (torch) is not installed")

from onnxcompress.finetune.losses import loss_kinds, output_loss  # noqa: E402

CFG = SimpleNamespace(class_axes={}, map_thresholds={})


def test_each_output_gets_its_kind_of_loss():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((4, 10)).astype(np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    prob_map = rng.uniform(0, 1, (2, 1, 32, 32)).astype(np.float32)
    kinds = loss_kinds({"l": logits, "p": probs, "m": prob_map, "i": np.arange(4), "h": logits}, CFG, frozenset({"h"}))
    assert kinds == {"l": ("logits", 1), "p": ("probs", 1), "m": ("map", None), "i": ("skip", None), "h": ("mse", None)}


def test_losses_are_zero_on_the_teacher_and_grow_away_from_it():
    t = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.1, 0.0]])
    for kind, target in (("logits", t), ("probs", torch.softmax(t, 1)), ("mse", t)):
        assert float(output_loss(kind, 1, target, target)) == pytest.approx(0.0, abs=1e-6)
        assert float(output_loss(kind, 1, target.flip(1), target)) > 0.05


def test_a_yolo_head_gets_cross_entropy_on_its_scores_and_mse_on_its_boxes():
    """(N, 4 + classes, anchors): read whole it was "logits" softmaxed across 2100 anchors (NudeNet)."""
    rng = np.random.default_rng(1)
    head = np.concatenate([rng.uniform(0, 320, (2, 4, 300)), rng.uniform(0, 0.2, (2, 3, 300))], axis=1).astype(np.float32)
    assert loss_kinds({"out": head}, CFG) == {"out": ("boxscores", (1, 4))}
    assert loss_kinds({"out": head}, SimpleNamespace(class_axes={"out": 1}, map_thresholds={}))["out"] == ("logits", 1)
    t = torch.from_numpy(head)
    bce_floor = float(output_loss("map", None, t[:, 4:], t[:, 4:]))  # the scores' own entropy
    assert float(output_loss("boxscores", (1, 4), t, t)) == pytest.approx(bce_floor, rel=1e-5)
    moved_box, moved_score = t.clone(), t.clone()
    moved_box[:, :4] *= 1.2
    moved_score[:, 5] = 0.9
    assert float(output_loss("boxscores", (1, 4), moved_box, t)) == pytest.approx(bce_floor + 0.04, rel=1e-3)
    assert float(output_loss("boxscores", (1, 4), moved_score, t)) > bce_floor + 0.1
