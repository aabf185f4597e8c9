"""bench/distill_checkpoints.rules_table: each rule's pick, scored over runs, against the judge's."""

from __future__ import annotations

from bench.distill_checkpoints import RULES, rules_table


def _run(judge_step: int, rows: list[tuple[int, float, float, float]]) -> dict:
    return {"judge_step": judge_step, "checkpoints": [
        {"step": s, "held_out_drift": 0.0, "held_out_loss": loss, "eval": ev, "shift": sh} for s, loss, ev, sh in rows]}


def test_rules_pick_and_average() -> None:
    a = _run(25, [(0, 0.9, 0.80, 0.40), (25, 0.5, 0.90, 0.50), (50, 0.4, 0.94, 0.44), (75, 0.6, 0.92, 0.42)])
    b = _run(50, [(0, 0.9, 0.70, 0.30), (25, 0.3, 0.96, 0.36), (50, 0.5, 0.90, 0.50), (75, 0.35, 0.80, 0.40)])
    cs = a["checkpoints"]
    assert RULES["least held-out loss"](cs) == 2
    assert RULES["held-out loss, mean with both neighbours"](cs) == 2  # (0.5+0.4+0.6)/3 < (0.9+0.5+0.4)/3
    assert RULES["last checkpoint"](cs) == 3
    assert RULES["best eval (an oracle)"](b["checkpoints"]) == 1
    lines = {ln.split(" | ")[0].lstrip("| "): ln for ln in rules_table([a, b]).splitlines() if ln.startswith("| ")}
    assert lines["judge (least drift, ties by loss)"] == "| judge (least drift, ties by loss) | 0.9000 | 0.5000 |  |"
    # least loss: a step 50 (0.94 / 0.44, above the judge's 0.90), b step 25 (0.96 / 0.36, above 0.90)
    assert lines["least held-out loss"] == "| least held-out loss | 0.9500 | 0.4000 | 2 / 0 |"
    # last: a 0.92 (above), b 0.80 (below)
    assert lines["last checkpoint"] == "| last checkpoint | 0.8600 | 0.4100 | 1 / 1 |"


def test_rules_on_a_run_with_one_checkpoint() -> None:
    """A run stopped before its first evaluation has only step 0: every rule picks it."""
    only = _run(0, [(0, 0.9, 0.80, 0.40)])["checkpoints"]
    assert [rule(only) for rule in RULES.values() if rule is not None] == [0, 0, 0, 0]
