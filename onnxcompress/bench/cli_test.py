from __future__ import annotations

import io
import json

import numpy as np
import pytest
from rich.console import Console

from onnxcompress.bench.cli import bench_after_compress
from onnxcompress.bench.testing import tiny_classifier
from onnxcompress.cli import main


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("benchcli")
    return tiny_classifier(d / "a.onnx"), tiny_classifier(d / "b.onnx", perturb=0.1)


def test_bench_writes_json_and_markdown(pair, tmp_path, capsys):
    j, md = tmp_path / "r.json", tmp_path / "r.md"
    rc = main(["bench", *pair, "--batch", "1,2", "--iters", "3", "--warmup", "1", "--json", str(j), "--markdown", str(md)])
    assert rc == 0
    d = json.loads(j.read_text())
    assert [r["batch"] for r in d["runs"]] == [1, 2]
    assert d["runs"][0]["paired"]["pairs"] == 3
    assert "| provider | batch |" in md.read_text()
    out = capsys.readouterr().out
    assert "fidelity B vs A" in out


def test_bench_json_to_stdout(pair, capsys):
    assert main(["bench", pair[0], "--iters", "2", "--warmup", "0", "--json", "-"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["model_b"] is None and d["runs"][0]["a"]["iters"] == 2


def test_bench_cuda_request_warns_and_runs(pair, capsys):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA is available here")
    assert main(["bench", pair[0], "--providers", "cuda", "--iters", "2", "--warmup", "0"]) == 0
    assert "CUDA execution provider is not available" in capsys.readouterr().out


def test_bench_npz_inputs(pair, tmp_path):
    f = tmp_path / "in.npz"
    np.savez(f, x=np.ones((3, 3, 16, 16), np.float32))
    j = tmp_path / "r.json"
    assert main(["bench", *pair, "--inputs", str(f), "--iters", "2", "--warmup", "0", "--json", str(j), "-q"]) == 0
    assert json.loads(j.read_text())["runs"][0]["batch"] == 3


@pytest.mark.parametrize(
    "extra",
    [["--providers", "tpu"], ["--batch", "x"], ["--batch", "0"], ["--iters", "0"], ["--inputs", "/nonexistent.npz"],
     ["--input-shape", "nope:1,2"], ["--batch", "2", "--inputs", "whatever.npz"]],
)
def test_bench_bad_input_exits_2(pair, extra, capsys):
    assert main(["bench", pair[0], *extra]) == 2
    assert capsys.readouterr().err.startswith("onnxcompress: error:")


def test_bench_missing_model_exits_2(tmp_path, capsys):
    assert main(["bench", str(tmp_path / "missing.onnx")]) == 2


def test_bench_after_compress_returns_a_report(pair):
    buf = io.StringIO()
    d = bench_after_compress(pair[0], pair[1], {}, Console(file=buf, width=120))
    json.dumps(d)
    assert d["runs"][0]["batch"] == 1 and d["runs"][0]["paired"]["speedup"] > 0
    assert "speedup" in buf.getvalue()


def test_bench_after_compress_reports_failure(pair, tmp_path):
    d = bench_after_compress(pair[0], tmp_path / "gone.onnx", {}, Console(file=io.StringIO()))
    assert "error" in d
