from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from onnxcompress.bench.testing import tiny_classifier
from onnxcompress.cli import main


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("check")
    junk = d / "junk.onnx"
    junk.write_bytes(b"not a model")
    return {
        "a": tiny_classifier(d / "a.onnx"),
        "same": tiny_classifier(d / "same.onnx"),
        "perturbed": tiny_classifier(d / "p.onnx", perturb=0.3),
        "junk": str(junk),
        "features": tiny_classifier(d / "f.onnx", head=False),
        "dir": str(d),
    }


def _junit(path):
    root = ET.parse(path).getroot()
    suite = root.find("testsuite")
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    return suite, cases


def test_identical_models_pass_every_gate(models, tmp_path):
    j, x = tmp_path / "r.json", tmp_path / "r.xml"
    rc = main(["check", models["a"], models["same"], "--min-cosine", "0.9999", "--max-abs-diff", "0", "--min-top1", "1",
               "--max-macs-ratio", "1.0", "--max-params-ratio", "1.0", "--max-size-mb", "1",
               "--min-speedup", "0.01", "--iters", "3", "--warmup", "1", "--markdown", str(tmp_path / "r.md"),
               "--json", str(j), "--junit", str(x), "-q"])
    assert rc == 0
    d = json.loads(j.read_text())
    assert d["passed"] is True
    f = d["fidelity"]
    assert (f["cosine_min"], f["max_abs_diff"], f["top1_agreement"], f["rel_l2_max"]) == (pytest.approx(1.0), 0.0, 1.0, 0.0)
    assert d["macs"]["ratio"] == pytest.approx(1.0)
    # 3 pairs cannot show anything at 95%: the gate doubles them until its interval clears 0.01
    assert d["speedup"]["verdict"] == "pass" and [lk["pairs"] for lk in d["speedup"]["looks"]][0] == 3
    assert d["speedup"]["pairs"] > 3 and d["speedup"]["looks"][0]["low"] is None
    assert d["figures"]["original"] == d["figures"]["compressed"]
    suite, cases = _junit(x)
    assert set(cases) == {"loads_and_runs", "min_cosine", "max_abs_diff", "min_top1", "max_macs_ratio",
                          "max_params_ratio", "max_size_mb", "min_speedup"}
    assert suite.get("tests") == "8" and suite.get("failures") == "0"
    assert all(c.find("failure") is None for c in cases.values())


def test_impossible_cosine_fails_the_gate(models, tmp_path):
    x = tmp_path / "r.xml"
    assert main(["check", models["a"], models["same"], "--min-cosine", "1.1", "--junit", str(x), "-q"]) == 1
    suite, cases = _junit(x)
    assert suite.get("failures") == "1"
    assert cases["min_cosine"].find("failure") is not None
    assert cases["loads_and_runs"].find("failure") is None
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert props["max_abs_diff"] == "0"  # ungated measurements are still reported


def test_perturbed_weights_fail_fidelity(models, tmp_path):
    j = tmp_path / "r.json"
    assert main(["check", models["a"], models["perturbed"], "--min-cosine", "0.999", "--json", str(j), "-q"]) == 1
    crit = {c["name"]: c for c in json.loads(j.read_text())["criteria"]}
    assert crit["min_cosine"]["passed"] is False and crit["min_cosine"]["value"] < 0.999
    assert crit["max_abs_diff"]["passed"] is None  # reported, not gated


def test_fidelity_is_reported_without_gates(models, tmp_path):
    j = tmp_path / "r.json"
    assert main(["check", models["a"], models["perturbed"], "--json", str(j), "-q"]) == 0
    d = json.loads(j.read_text())
    assert d["fidelity"]["cosine_min"] < 1.0


def test_unloadable_compressed_model_fails(models, tmp_path):
    x = tmp_path / "r.xml"
    assert main(["check", models["a"], models["junk"], "--junit", str(x), "-q"]) == 1
    _, cases = _junit(x)
    assert cases["loads_and_runs"].find("failure") is not None


def test_npz_inputs(models, tmp_path):
    f = tmp_path / "in.npz"
    np.savez(f, x=np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32))
    assert main(["check", models["a"], models["same"], "--inputs", str(f), "--min-cosine", "0.99", "-q"]) == 0
    np.savez(f, wrong=np.zeros((1, 3, 16, 16), np.float32))
    assert main(["check", models["a"], models["same"], "--inputs", str(f), "-q"]) == 2


@pytest.mark.parametrize("which", ["missing_model", "missing_compressed", "bad_shape"])
def test_bad_input_exits_2(models, which, capsys):
    args = {
        "missing_model": [models["dir"] + "/nope.onnx", models["a"]],
        "missing_compressed": [models["a"], models["dir"] + "/nope.onnx"],
        "bad_shape": [models["a"], models["same"], "--input-shape", "x:1,3"],
    }[which]
    assert main(["check", *args, "-q"]) == 2
    assert capsys.readouterr().err.startswith("onnxcompress: error:")


def test_top1_gate_on_feature_maps_is_an_input_error(models, capsys):
    assert main(["check", models["features"], models["features"], "--min-cosine", "0.99", "-q"]) == 0
    assert main(["check", models["features"], models["features"], "--min-top1", "0.9", "-q"]) == 2
    assert "class scores" in capsys.readouterr().err


def test_a_report_path_that_is_an_input_exits_2(models, capsys):
    assert main(["check", models["a"], models["same"], "--json", models["same"], "-q"]) == 2
    assert capsys.readouterr().err.startswith("onnxcompress: error:")
    assert open(models["same"], "rb").read(4) != b"{\n  "  # the model was not overwritten
