"""--target-speedup: the search over MACs targets, its report, and its refusals.

The search is tested with a stand-in meter whose "speedup" is 1 / MACs kept, so its
choices are exact; one test times the real sessions and checks the figures are there."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import onnxcompress as oc
from onnxcompress import speed_target
from onnxcompress.cli import main
from onnxcompress.errors import BudgetError, InputError

MODELS = Path(__file__).resolve().parent.parent / "models"
DIGITS = str(MODELS / "digits_cnn.onnx")


@pytest.fixture(scope="module")
def calib(tmp_path_factory):
    z = np.load(MODELS / "digits_eval.npz")
    path = tmp_path_factory.mktemp("speed") / "calib.npz"
    np.savez(path, input=z["x"][:128])
    return str(path)


def _macs_meter(monkeypatch, scale: float = 1.0):
    """A meter whose speedup is scale / MACs kept, read from the candidate's own cost."""
    from onnxcompress.analysis.cost import analyse_costs
    from onnxcompress.analysis.shapes import infer_static_shapes, resolve_input_shapes

    base = {}

    def macs(model):
        return analyse_costs(model, infer_static_shapes(model, resolve_input_shapes(model, {}))).macs

    def fake_init(self, original_path, model, config, tmp):
        base["macs"] = macs(model)
        self.provider, self.batch, self.count = config.speed_provider, config.speed_batch, 0

    def fake_measure(self, candidate, seconds):
        s = scale * base["macs"] / macs(candidate)
        return {"speedup": s, "low": s * 0.98, "high": s * 1.02, "pairs": 40, "original_ms": 1.0, "candidate_ms": 1 / s}

    monkeypatch.setattr(speed_target.SpeedMeter, "__init__", fake_init)
    monkeypatch.setattr(speed_target.SpeedMeter, "measure", fake_measure)


def test_next_target_brackets_then_interpolates():
    # first probe at 1/S = 0.5 reached only 1.6x of the 2x wanted: extrapolate down to 0.5 * 1.6 / 2
    assert speed_target._next_target(None, (0.5, 1.6), 2.0) == pytest.approx(0.4)
    # it reached 2.5x: keep more, 0.5 * 2.5 / 2
    assert speed_target._next_target((0.5, 2.5), None, 2.0) == pytest.approx(0.625)
    # bracket [0.4 reached 2.2x, 0.6 missed at 1.8x]: 1/t interpolation lands inside it
    t = speed_target._next_target((0.4, 2.2), (0.6, 1.8), 2.0)
    assert 0.4 < t < 0.6 and t == pytest.approx(1 / (2.5 + (1 / 0.6 - 2.5) * 0.5))
    assert speed_target._next_target((0.40, 2.2), (0.42, 1.9), 2.0) is None  # narrower than RESOLUTION
    assert speed_target._next_target((1.0, 3.0), None, 2.0) is None  # nothing left to keep
    assert speed_target._next_target(None, (speed_target.MIN_TARGET, 1.1), 2.0) is None


def test_search_keeps_the_most_macs_that_reach_the_speedup(calib, monkeypatch):
    _macs_meter(monkeypatch)
    rep = oc.compress(DIGITS, oc.CompressConfig(calib=calib, target_speedup=1.6, recover="refit")).report
    s = rep.search
    kept = rep.after.macs / rep.before.macs
    assert s["target_speedup"] == 1.6 and s["provider"] == "cpu" and s["batch"] == 1
    assert s["measured_speedup"]["speedup"] == pytest.approx(1 / kept)
    assert 1 / kept >= 1.6 and kept <= s["chosen_target_macs"] + 1e-9
    probes = s["speed_probes"]
    assert 1 <= len(probes) <= speed_target.MAX_PROBES
    assert probes[0]["target_macs"] == pytest.approx(1 / 1.6, abs=1e-4)
    reached = [p for p in probes if p["reached"]]
    missed = [p for p in probes if not p["reached"]]
    assert max(p["target_macs"] for p in reached) == s["chosen_target_macs"]
    # every probe's verdict matches its own measurement, and a miss above the choice bounds it
    assert all((p["speedup"] >= 1.6) == p["reached"] for p in probes)
    if missed:
        assert min(p["target_macs"] for p in missed) > s["chosen_target_macs"]
    assert rep.recovery["method"] == "refit"  # the written model is recovered; the probes were not
    assert not rep.warnings or all("target-speedup" not in w for w in rep.warnings)


def test_unreachable_speedup_writes_nothing_and_exits_1(calib, tmp_path, monkeypatch, capsys):
    _macs_meter(monkeypatch, scale=0.01)  # every candidate "a hundred times slower" than its MACs say
    out, rep, md = tmp_path / "o.onnx", tmp_path / "o.json", tmp_path / "o.md"
    rc = main([DIGITS, "--calib", calib, "--target-speedup", "1.5", "-o", str(out), "-q", "--report", str(rep),
               "--markdown", str(md)])
    assert rc == 1 and not out.exists()
    err = capsys.readouterr().err
    assert "no candidate reached it" in err and "MACs" in err
    d = json.loads(rep.read_text())  # the refusal's --report: the probes timed, none at 1.5x
    m = d["measured"]
    assert d["written"] is False and (m["target_speedup"], m["provider"], m["batch"]) == (1.5, "cpu", 1)
    assert m["probes"] and all(p["speedup"] < 1.5 for p in m["probes"] if p.get("speedup") is not None)
    text = md.read_text().splitlines()  # --markdown: the same probes, one row each, none reached
    assert "Wanted 1.5x on cpu at batch 1." in text
    rows = [ln for ln in text if ln.startswith("| 0.") or ln.startswith("| 1.")]
    assert len(rows) == len(m["probes"]) and all(r.endswith("| no |") or "| no: " in r for r in rows)
    with pytest.raises(BudgetError):
        oc.compress(DIGITS, oc.CompressConfig(calib=calib, target_speedup=1.5))


@pytest.mark.parametrize("extra, message", [
    (["--target-macs", "0.5"], "cannot be combined with --target-macs"),
    (["--max-drift", "0.1"], "cannot be combined with --max-drift"),
    (["--mode", "zero"], "needs --mode remove"),
    (["--batch", "0"], "--batch must be at least 1"),
])
def test_refusals_are_one_line_exit_2(calib, tmp_path, capsys, extra, message):
    rc = main([DIGITS, "--calib", calib, "--target-speedup", "1.5", *extra, "-o", str(tmp_path / "o.onnx"), "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1
    with pytest.raises(InputError):
        oc.CompressConfig(target_speedup=1.5).validate()  # no calibration data
    with pytest.raises(InputError, match="above 1"):
        oc.CompressConfig(calib=calib, target_speedup=0.9).validate()


def test_real_timing_reports_the_written_models_speedup(calib, tmp_path, monkeypatch):
    monkeypatch.setattr(speed_target, "PROBE_SECONDS", 0.2)
    monkeypatch.setattr(speed_target, "FINAL_SECONDS", 0.2)
    out, rep_path = tmp_path / "o.onnx", tmp_path / "r.json"
    # 1.01x: reachable on any machine by a model with a quarter of its MACs gone, or refused with exit 1
    rc = main([DIGITS, "--calib", calib, "--target-speedup", "1.01", "-o", str(out), "--report", str(rep_path), "-q"])
    if rc == 1:
        assert not out.exists()
        return
    assert rc == 0
    s = json.loads(rep_path.read_text())["search"]
    m = s["measured_speedup"]
    assert m["pairs"] >= speed_target.MIN_PAIRS and m["low"] <= m["speedup"] <= m["high"]
    assert m["original_ms"] > 0 and m["candidate_ms"] > 0
    assert all(p["pairs"] >= speed_target.MIN_PAIRS for p in s["speed_probes"] if p.get("speedup") is not None)
