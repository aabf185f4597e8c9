"""Allocation of a MAC budget over groups from measured drift curves."""

from __future__ import annotations

import pytest

from onnxcompress.pruning.allocation import allocate
from onnxcompress.pruning.sensitivity import GroupSensitivity


def _g(key: int, macs_per_atom: float, curve: dict[float, tuple[int, float]]) -> GroupSensitivity:
    return GroupSensitivity((key,), [f"g{key}"], 16, macs_per_atom, curve)


def test_allocation_spreads_squared_drift_and_meets_the_target():
    cheap = _g(0, 10.0, {0.25: (4, 0.1), 0.5: (8, 0.3), 0.75: (12, 0.9)})
    dear = _g(1, 10.0, {0.25: (4, 0.2), 0.5: (8, 0.25), 0.75: (12, 0.3)})
    removed, kept = allocate([cheap, dear], total_macs=400.0, target_fraction=0.8)
    # 80 MACs to save = 8 atoms. Squared-drift costs per MAC: cheap 0->4: 0.01/40, dear 0->4: 0.04/40,
    # cheap 4->8: 0.08/40, dear 4->8: 0.0225/40: so cheap 4, then dear 4.
    assert removed == {(0,): 4, (1,): 4} and kept == pytest.approx(0.8)


def test_allocation_undoes_steps_that_overshoot():
    big = _g(0, 100.0, {0.5: (8, 0.1)})
    small = _g(1, 10.0, {0.25: (4, 0.5), 0.5: (8, 0.6)})
    removed, kept = allocate([big, small], total_macs=2000.0, target_fraction=0.9)
    # 200 MACs to save: small's steps are dear, big's single step saves 800 and suffices alone;
    # of its 8 atoms the target needs 2 (measured at 8, so their drift is at most 0.1)
    assert removed == {(0,): 2, (1,): 0} and kept == pytest.approx(0.9)


def test_an_allocation_within_the_slack_of_its_target_is_not_trimmed():
    """Under the target by less than TRIM_SLACK of the MACs: the measured step stays whole."""
    from onnxcompress.pruning.allocation import TRIM_SLACK

    g = _g(0, 1.0, {0.5: (8, 0.1)})  # 16 atoms of 1 MAC, in a model of 1000 MACs
    removed, kept = allocate([g], total_macs=1000.0, target_fraction=0.995)
    assert 8 * 1.0 / 1000 - 0.005 <= TRIM_SLACK  # 3 MACs under the target: within the slack
    assert removed == {(0,): 8} and kept == pytest.approx(0.992)
    removed, kept = allocate([_g(0, 10.0, {0.5: (8, 0.1)})], total_macs=1000.0, target_fraction=0.95)
    assert removed == {(0,): 5} and kept == pytest.approx(0.95)  # 30 MACs under: trimmed to 5


def test_the_step_that_crosses_the_target_gives_back_whole_rounding_steps():
    """One group holding 91% of the MACs, measured at half and three quarters of its 512 atoms
    (magika's Conv): a 0.5 target took three quarters and kept 32%; now the atoms past the
    target go back in steps of 8, and the plan keeps the nearest multiple of 8 under the target."""
    macs = 650454.0
    conv = GroupSensitivity((0,), ["conv"], 512, macs, {0.5: (256, 0.21), 0.75: (384, 0.38)}, step=8)
    total = 366717952.0
    removed, kept = allocate([conv], total, 0.5)
    k = removed[(0,)]
    assert 256 < k < 384 and k % 8 == 0 and (512 - k) % 8 == 0
    assert kept <= 0.5 and kept + 8 * macs / total > 0.5, kept
    assert k == 288
    # a step that the target needs whole stays whole: a group of 20 with step 8 keeps 20, 16 or 8
    g = GroupSensitivity((0,), ["g"], 20, 10.0, {0.25: (4, 0.1), 0.75: (12, 0.2)}, step=8)
    assert allocate([g], 200.0, 0.5) == ({(0,): 12}, pytest.approx(0.4))
    assert allocate([g], 200.0, 0.58) == ({(0,): 12}, pytest.approx(0.4))  # 4 -> 12 in one measured step


def test_a_target_of_one_removes_nothing():
    g = _g(0, 10.0, {0.5: (8, 0.1)})
    assert allocate([g], 160.0, 1.0) == ({(0,): 0}, 1.0)
