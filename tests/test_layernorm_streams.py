"""LayerNorm-coupled residual streams: pruned across every block they touch, with calibration only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort

from onnxcompress.cli import main

MODEL = Path(__file__).resolve().parent.parent / "models" / "convnext_tiny.onnx"


def _run(tmp_path: Path, *extra: str) -> dict:
    out, rep = tmp_path / "o.onnx", tmp_path / "r.json"
    ratio = [] if "--target-macs" in extra else ["--ratio", "0.5"]
    assert main([str(MODEL), *ratio, "-o", str(out), "--report", str(rep), "-q", "--force", *extra]) == 0
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"input": np.random.default_rng(1).standard_normal((2, 3, 64, 64)).astype(np.float32)})[0]
    assert y.shape == (2, 10) and np.isfinite(y).all()
    return json.loads(rep.read_text())


def test_convnext_streams_prune_only_with_calibration(tmp_path):
    plain = _run(tmp_path)
    assert plain["exactness"]["lossy"] == []
    assert sum(b["op"] == "LayerNormalization" for b in plain["blockers"]) == 7
    kept_plain = plain["after"]["macs"] / plain["before"]["macs"]

    calib = tmp_path / "calib.npz"
    np.savez(calib, input=np.random.default_rng(0).standard_normal((32, 3, 64, 64)).astype(np.float32))
    lossy = _run(tmp_path, "--calib", str(calib), "--recover", "refit")
    kept = lossy["after"]["macs"] / lossy["before"]["macs"]
    # the two residual streams (32 and 64 wide) shrink too: from 0.60 to about 0.29 of the MACs
    assert kept_plain > 0.55 and kept < 0.35, (kept_plain, kept)
    assert len(lossy["exactness"]["lossy"]) == 7
    assert {x["op"] for x in lossy["exactness"]["lossy"]} == {"LayerNormalization"}
    assert "inexactly" in lossy["exactness"]["note"]
    assert not any(b["op"] == "LayerNormalization" for b in lossy["blockers"])


def test_stream_removal_is_measured_with_the_norms_over_the_kept_channels(tmp_path):
    """--target-macs measures a lossy stream's drift with each LayerNorm simulated over the kept channels."""
    calib = tmp_path / "calib.npz"
    np.savez(calib, input=np.random.default_rng(0).standard_normal((32, 3, 64, 64)).astype(np.float32))
    r = _run(tmp_path, "--calib", str(calib), "--recover", "refit", "--target-macs", "0.5")
    streams = [g for g in r["search"]["groups"] if any("dwconv" in f for f in g["filters"])]
    assert len(streams) == 2
    for g in streams:
        assert "unmeasured" not in g and g["curve"] and all(c["drift"] > 1e-3 for c in g["curve"]), g
