"""``--allocation-rounds auto``: both candidates compressed, the lower held-out drift kept, one sweep shared."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import onnxcompress as oc
from onnxcompress import auto_rounds
from onnxcompress.errors import InputError

MODELS = Path(__file__).resolve().parents[1] / "models"


@pytest.fixture
def digits(tmp_path):
    z = np.load(MODELS / "digits_eval.npz")
    np.savez(tmp_path / "calib.npz", input=z["x"][:128])
    return str(MODELS / "digits_cnn.onnx"), str(tmp_path / "calib.npz")


def test_auto_keeps_the_candidate_with_the_lower_held_out_drift(digits):
    model, calib = digits
    res = oc.compress(model, oc.CompressConfig(target_macs=0.4, calib=calib, allocation_rounds="auto"))
    choice = res.report.search["rounds_choice"]
    by = {c["rounds"]: c for c in choice["candidates"]}
    assert sorted(by) == [1, 2]
    d1, d2 = by[1]["held_out_drift"], by[2]["held_out_drift"]
    assert choice["chosen"] == (2 if d2 < d1 else 1)
    # the written model is the chosen candidate: two rounds leave their targets in the report
    assert bool(res.report.search.get("rounds")) == (choice["chosen"] == 2)
    assert res.report.after.macs / res.report.before.macs == pytest.approx(by[choice["chosen"]]["macs_kept"])
    # each candidate is what a plain run with that many rounds writes
    for n in (1, 2):
        plain = oc.compress(model, oc.CompressConfig(target_macs=0.4, calib=calib, allocation_rounds=n))
        assert plain.report.after.macs / plain.report.before.macs == pytest.approx(by[n]["macs_kept"])


def test_a_tie_keeps_one_allocation(digits, monkeypatch):
    model, calib = digits
    monkeypatch.setattr(auto_rounds, "drift_of", lambda fidelity: (0.0, "stub"))
    res = oc.compress(model, oc.CompressConfig(target_macs=0.5, calib=calib, allocation_rounds="auto"))
    assert res.report.search["rounds_choice"]["chosen"] == 1
    assert not res.report.search.get("rounds")


def test_the_sensitivity_sweep_of_the_unpruned_model_runs_once(digits, monkeypatch):
    from onnxcompress.pruning import calibrated

    model, calib = digits
    calls = []
    real = calibrated.measure
    monkeypatch.setattr(calibrated, "measure", lambda *a, **k: calls.append(1) or real(*a, **k))
    oc.compress(model, oc.CompressConfig(target_macs=0.5, calib=calib, allocation_rounds="auto"))
    # one sweep of the original (shared by both candidates) and one of the model the first round pruned
    assert len(calls) == 2


def test_without_a_calibrated_target_auto_is_one_round_and_bad_values_are_refused(digits):
    model, _ = digits
    res = oc.compress(model, oc.CompressConfig(ratio=0.3, allocation_rounds="auto"))
    assert not (res.report.search or {}).get("rounds_choice")
    for bad in ("twice", 0, 9):
        with pytest.raises(InputError):
            oc.CompressConfig(ratio=0.3, allocation_rounds=bad).validate()


def test_the_command_line_takes_a_count_or_auto():
    from onnxcompress.compress_args import compress_parser

    p = compress_parser()
    assert p.parse_args(["m.onnx", "--allocation-rounds", "auto"]).allocation_rounds == "auto"
    assert p.parse_args(["m.onnx", "--allocation-rounds", "2"]).allocation_rounds == 2
    assert p.parse_args(["m.onnx"]).allocation_rounds == 1
    with pytest.raises(SystemExit):
        p.parse_args(["m.onnx", "--allocation-rounds", "twice"])


def test_both_candidates_collapsed_is_one_refusal_with_both_in_its_report(digits, tmp_path, monkeypatch):
    """Neither one allocation nor two rounds clear the floor: exit 1, no model, and the refusal's
    --report lists both candidates with why each was refused."""
    import json

    from onnxcompress.cli import main
    from onnxcompress.fidelity import Fidelity

    model, calib = digits
    monkeypatch.setattr(Fidelity, "collapsed", lambda self: "forced for the test")
    out, rep, md = tmp_path / "o.onnx", tmp_path / "r.json", tmp_path / "r.md"
    rc = main([model, "--calib", calib, "--target-macs", "0.5", "--allocation-rounds", "auto", "-o", str(out),
               "--report", str(rep), "--markdown", str(md), "-q", "--no-simplify"])
    assert rc == 1 and not out.exists()
    d = json.loads(rep.read_text())
    tried = d["measured"]["rounds_choice"]
    assert [t["rounds"] for t in tried] == [1, 2] and all("forced for the test" in t["collapsed"] for t in tried)
    assert d["written"] is False and d["report"]["fidelity"]["inputs"] == "calibration"
    text = md.read_text()  # --markdown names both candidates and why each was refused
    assert "1 allocation round(s): collapsed: " in text and "2 allocation round(s): collapsed: " in text
