"""Distillation's learning rate over a run: a linear warm-up, then constant or a cosine decay.

Adam at the full rate from the first step knocks a refit model off (the held-out loss jumps),
so the rate ramps up linearly over ``warmup`` steps. After that it stays at the given rate
("constant", the default) or falls along half a cosine to zero at the end of the budget
("cosine"), so the last steps make small moves around what the run has found.

The budget is a step limit and a time limit, whichever comes first, and the decay follows the
one further along (``progress``). With ``--distill-steps`` and a time limit that is not reached
the schedule is the same on any machine, as the run is; under a time limit it follows the clock,
as the run's length does.
"""

from __future__ import annotations

import math

SCHEDULES = ("constant", "cosine")


def progress(step: int, steps: int, elapsed: float, seconds: float) -> float:
    """How far through its budget a run is, in [0, 1]: the larger of the steps and the seconds used."""
    by_steps = step / steps if steps > 0 else 0.0
    by_time = elapsed / seconds if seconds > 0 else 0.0
    return min(1.0, max(by_steps, by_time))


def rate_factor(step: int, warmup: int, schedule: str, done: float) -> float:
    """The share of the learning rate for step ``step`` (0-based), ``done`` through the budget."""
    ramp = min(1.0, (step + 1) / max(warmup, 1))
    if schedule == "constant":
        return ramp
    if schedule == "cosine":
        return ramp * 0.5 * (1.0 + math.cos(math.pi * min(max(done, 0.0), 1.0)))
    raise ValueError(f"unknown learning-rate schedule {schedule!r} (known: {', '.join(SCHEDULES)})")
