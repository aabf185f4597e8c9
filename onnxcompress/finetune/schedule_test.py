"""The learning rate over a distillation run: warm-up, then constant or a cosine decay to zero."""

from __future__ import annotations

import math

import numpy as np
import pytest

from onnxcompress.finetune.schedule import progress, rate_factor


def test_rate_factor_ramps_up_then_holds_or_falls_along_a_cosine():
    assert [rate_factor(s, 4, "constant", 0.0) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert rate_factor(100, 10, "constant", 0.9) == 1.0
    assert rate_factor(100, 10, "cosine", 0.0) == 1.0
    assert rate_factor(100, 10, "cosine", 0.5) == pytest.approx(0.5)
    assert rate_factor(100, 10, "cosine", 0.25) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert rate_factor(100, 10, "cosine", 1.0) == pytest.approx(0.0, abs=1e-12)
    assert rate_factor(100, 10, "cosine", 1.7) == pytest.approx(0.0, abs=1e-12)  # past the budget: stays at zero
    assert rate_factor(1, 4, "cosine", 0.5) == pytest.approx(0.25)  # the warm-up and the decay multiply
    with pytest.raises(ValueError, match="unknown learning-rate schedule 'linear'"):
        rate_factor(0, 1, "linear", 0.0)


def test_progress_follows_whichever_budget_is_further_along():
    assert progress(50, 200, 10.0, 100.0) == 0.25
    assert progress(50, 200, 60.0, 100.0) == 0.6
    assert progress(300, 200, 1.0, 100.0) == 1.0
    assert progress(0, 200, 0.0, 100.0) == 0.0


torch = pytest.importorskip("torch", reason="the finetune extra (torch) is not installed")


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_the_distiller_steps_at_the_scheduled_rates(schedule, monkeypatch):
    """Each Adam step of a run runs at lr * (its tensor's factor) * rate_factor for that step, with the
    step limit binding (a time limit that is not reached): the schedule is the same on any machine."""
    from onnxcompress.finetune.distill import DistillConfig, Distiller
    from onnxcompress.finetune.step_sizes_test import _two_convs

    used: list[float] = []
    step = torch.optim.Adam.step

    def recording(self, *a, **k):
        g = self.param_groups[0]
        used.append(g["lr"] / g["factor"])
        return step(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "step", recording)
    teacher, student = _two_convs(1.0), _two_convs(1.0, seed=1)
    rng = np.random.default_rng(1)
    batches = [{"x": rng.normal(0, 1, (8, 3, 6, 6)).astype(np.float32)} for _ in range(6)]
    cfg = DistillConfig(seconds=1e6, steps=40, lr=1e-3, eval_every=10, min_steps=1000, schedule=schedule)
    result = Distiller(student, teacher, [], batches[:4], batches[4:], cfg).run()
    assert result["schedule"] == schedule and result["steps"] == 40 and len(used) == 40
    want = [1e-3 * rate_factor(s, cfg.warmup, schedule, s / 40) for s in range(40)]
    assert np.allclose(used, want, rtol=1e-4, atol=1e-12)
    if schedule == "cosine":
        assert used[20] == pytest.approx(0.5e-3, rel=0.01) and used[39] < 0.01e-3
        assert all(a > b for a, b in zip(used[9:], used[10:]))  # falling every step after the warm-up
    else:
        assert used[9:] == [1e-3] * 31
