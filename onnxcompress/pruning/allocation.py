"""Allocation of a MAC budget over channel groups from their measured drift curves (``sensitivity.measure``)."""

from __future__ import annotations

import math

from onnxcompress.pruning.sensitivity import GroupSensitivity

#: an allocation under its target by at most this share of the model's MACs is left as it is; past
#: it, the step that crossed the target gives back what the target does not need. (Trimmed by 0.3%
#: of the MACs, PP-OCR's classifier at 0.6x kept other channels, and its distillation stopped early
#: 10 points lower off the calibration data: a small change sends training elsewhere.)
TRIM_SLACK = 0.01


def allocate(sens: list[GroupSensitivity], total_macs: float, target_fraction: float) -> tuple[dict[tuple[int, ...], int], float]:
    """Atoms removed per group: the cheapest drift per MAC saved first, until the MAC target is met.

    Errors from different groups add roughly orthogonally at the output, so the cost of a
    step is its increase of ε² per MAC saved: this spreads pruning over groups instead of
    emptying the one that looked cheapest alone. Steps that overshoot the target are then
    undone where the target still holds, and the last step still taken gives back the atoms the
    target does not need (``_trim_last_step``). Returns the removal counts and the estimated
    MACs fraction kept.
    """
    removed = {g.key: 0 for g in sens}
    eps2 = {g.key: 0.0 for g in sens}
    history: list[tuple[tuple[int, ...], int, int, float, float]] = []  # key, k, previous k, previous eps2, saved
    kept = float(total_macs)
    goal = target_fraction * total_macs
    while kept > goal:
        best = None
        for g in sens:
            nxt = next(((k, e) for _r, (k, e) in sorted(g.curve.items()) if k > removed[g.key]), None)
            if nxt is None:
                continue
            k, e = nxt
            saved = (k - removed[g.key]) * g.macs_per_atom
            if saved <= 0:
                continue
            cost = max(e * e - eps2[g.key], 0.0) / saved
            if best is None or cost < best[0]:
                best = (cost, g, k, e, saved)
        if best is None:
            break
        _, g, k, e, saved = best
        history.append((g.key, k, removed[g.key], eps2[g.key], saved))
        removed[g.key], eps2[g.key] = k, e * e
        kept -= saved
    # Undo the most recent steps that are not needed to stay at or under the target.
    for key, k, prev_k, prev_e2, saved in reversed(history):
        if kept + saved <= goal and removed[key] == k:
            removed[key], eps2[key] = prev_k, prev_e2
            kept += saved
    if goal - kept > TRIM_SLACK * total_macs:
        kept = _trim_last_step(sens, history, removed, kept, goal)
    return removed, kept / total_macs if total_macs else 1.0


def _trim_last_step(sens: list[GroupSensitivity], history: list, removed: dict, kept: float, goal: float) -> float:
    """Give back the atoms of the last step still taken that the target does not need.

    The curve is measured at a few ratios (``RATIOS``), so the step that crosses the target may
    cross it by far: one Conv holding 91% of a model's MACs went from half its filters to three
    quarters, and ``--target-macs 0.5`` kept 32%. Removing fewer atoms of that step's group, in
    whole rounding steps, lands nearer the target; its drift is at most the measured point's.
    Returns the MACs kept.
    """
    by_key = {g.key: g for g in sens}
    for key, k, prev_k, _e2, _saved in reversed(history):
        if removed[key] != k:
            continue
        g = by_key[key]
        if g.macs_per_atom <= 0:
            return kept
        spare = math.floor((goal - kept) / (g.macs_per_atom * g.step) + 1e-9) * g.step
        back = min(spare, (k - prev_k - 1) // g.step * g.step)  # a whole number of steps, short of the whole step
        if back > 0:
            removed[key] = k - back
            kept += back * g.macs_per_atom
        return kept
    return kept
