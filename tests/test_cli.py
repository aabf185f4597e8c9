"""The real entry point: errors are one line and exit 2; outputs land where promised."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import onnx
import pytest

from tests.conftest import MODELS


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "onnxcompress", *map(str, args)], capture_output=True, text=True, timeout=300, cwd=cwd)


@pytest.mark.parametrize(
    "args,needle",
    [
        (["missing.onnx"], "no such file"),
        (["inspect", "missing.onnx"], "no such file"),
        (["NOTONNX"], "not an ONNX model"),
        (["MODEL", "--input-shape", "x:1,a"], "bad --input-shape"),
        (["MODEL", "--input-shape", "nope:1,3,64,64"], "names no input"),
        (["MODEL", "--ratio", "1.5"], "--ratio must be in [0, 1)"),
        (["MODEL", "--exclude", "("], "bad --exclude regex"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, args, needle):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf at all \x00\xff" * 10)
    model = tmp_path / "m.onnx"
    shutil.copy(MODELS / "resnet_small.onnx", model)
    args = [str(bad) if a == "NOTONNX" else str(model) if a == "MODEL" else a for a in args]
    before = model.read_bytes()
    proc = cli(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert model.read_bytes() == before
    assert not (tmp_path / "m.compressed.onnx").exists()


def test_compress_writes_default_output_and_report(tmp_path):
    model = tmp_path / "resnet.onnx"
    shutil.copy(MODELS / "resnet_small.onnx", model)
    before = model.read_bytes()
    proc = cli(model, "--ratio", "0.5", "--report", tmp_path / "rep.json", "--markdown", tmp_path / "rep.md")
    assert proc.returncode == 0, proc.stderr
    md = (tmp_path / "rep.md").read_text()
    assert "| MACs |" in md and "channels before" in md
    out = tmp_path / "resnet.compressed.onnx"
    assert out.exists() and model.read_bytes() == before
    onnx.checker.check_model(onnx.load(out), full_check=True)
    rep = json.loads((tmp_path / "rep.json").read_text())
    for key in ("before", "after", "groups", "blockers", "layers", "fidelity", "pruned_l1_mass"):
        assert key in rep
    assert rep["after"]["macs"] < 0.4 * rep["before"]["macs"]
    assert rep["after"]["file_bytes"] == out.stat().st_size
    assert rep["groups"]["pruned"] >= 1
    assert 0 < rep["pruned_l1_mass"] < 1
    assert set(rep["fidelity"]) >= {"cosine_min", "max_abs_diff"}
    pruned = [layer for layer in rep["layers"] if layer["channels_after"] < layer["channels_before"]]
    assert pruned and all(layer["channels_after"] % 8 == 0 for layer in pruned)
    assert "params" in proc.stdout and "MACs" in proc.stdout


def test_output_path_equal_to_input_is_refused(tmp_path):
    model = tmp_path / "m.onnx"
    shutil.copy(MODELS / "resnet_small.onnx", model)
    before = model.read_bytes()
    proc = cli(model, "-o", model)
    assert proc.returncode == 2
    assert "refusing to overwrite the input" in proc.stderr
    assert model.read_bytes() == before


def test_help_teaches():
    proc = cli("--help")
    assert proc.returncode == 0
    for word in ("--ratio", "--round-to", "default", "inspect", "bench", "check", "examples"):
        assert word in proc.stdout


def test_failed_verification_writes_nothing(tmp_path, monkeypatch, capsys):
    from onnxcompress import cli, verify
    from onnxcompress.errors import VerificationError

    def reject(model):
        raise VerificationError("onnx checker rejected the output: simulated")

    monkeypatch.setattr(verify, "check_model", reject)
    model = tmp_path / "m.onnx"
    shutil.copy(MODELS / "resnet_small.onnx", model)
    rc = cli.main([str(model), "--ratio", "0.5"])
    assert rc == 2
    assert "simulated" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_exclude_leaves_matching_layers_whole(tmp_path):
    model = tmp_path / "m.onnx"
    shutil.copy(MODELS / "resnet_small.onnx", model)
    proc = cli(model, "--ratio", "0.5", "--exclude", r"layers\.2", "--report", tmp_path / "r.json")
    assert proc.returncode == 0, proc.stderr
    layers = json.loads((tmp_path / "r.json").read_text())["layers"]
    excluded = [l for l in layers if "layers.2" in l["name"]]
    assert excluded and all(l["channels_after"] == l["channels_before"] for l in excluded)
    assert any(l["channels_after"] < l["channels_before"] for l in layers if "layers.2" not in l["name"])
