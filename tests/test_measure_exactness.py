"""--measure-exactness measures: each pass's findings reach the passes after it (issue 16's live bug).

The verify pass compares remove mode against the same plan in zero mode only when the prune
pass said remove mode is inexact; before the publish order was fixed it saw an empty
``exactness`` and measured nothing."""

from __future__ import annotations

import json
import math

import onnxcompress as oc
from onnxcompress.cli import main

from conftest import MODELS


def test_measure_exactness_reports_a_measured_figure(tmp_path):
    rep_path = tmp_path / "r.json"
    rc = main([str(MODELS / "resnet_small.onnx"), "--ratio", "0.5", "--measure-exactness", "--no-simplify",
               "-o", str(tmp_path / "o.onnx"), "--report", str(rep_path), "-q"])
    assert rc == 0
    exact = json.loads(rep_path.read_text())["exactness"]
    assert exact["exact"] is False  # resnet_small's removed channels carry a bias: remove mode is not exact
    m = exact["measured_vs_zero_mode"]
    assert -1.0 <= m["cosine_min"] <= 1.0 and math.isfinite(m["max_abs_diff"]) and m["max_abs_diff"] >= 0.0


def test_without_the_flag_nothing_is_measured():
    rep = oc.compress(str(MODELS / "resnet_small.onnx"), oc.CompressConfig(ratio=0.5, simplify=False)).report
    assert "measured_vs_zero_mode" not in rep.exactness and rep.exactness["exact"] is False
