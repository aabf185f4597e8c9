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
