from __future__ import annotations

import json

import numpy as np
import pytest

from onnxcompress.bench.runner import BenchConfig, TimedSession, run_benchmark
from onnxcompress.bench.testing import tiny_classifier
from onnxcompress.errors import InputError

QUICK = {"iters": 8, "warmup": 2}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench")
    return {
        "a": tiny_classifier(d / "a.onnx", width=32, size=32),
        "a_copy": tiny_classifier(d / "a_copy.onnx", width=32, size=32),
        "perturbed": tiny_classifier(d / "p.onnx", width=32, size=32, perturb=0.5),
        "fixed": tiny_classifier(d / "fixed.onnx", batch=1),
        "other_input": tiny_classifier(d / "other.onnx", input_name="image"),
    }


def test_paired_run_of_a_model_against_itself(models):
    rep = run_benchmark(models["a"], models["a_copy"], BenchConfig(batches=[1, 3], **QUICK))
    assert [r.batch for r in rep.runs] == [1, 3]
    for r in rep.runs:
        assert r.provider_used == "CPUExecutionProvider" and not r.io_binding
        assert r.a.iters == r.b.iters == r.paired.pairs == 8
        assert r.paired.ratio_lo <= r.paired.ratio_hi
        # Not a timing assertion: a sanity bound that catches a swapped or miscounted ratio.
        assert 1 / 3 < r.paired.speedup < 3
        assert r.fidelity["cosine_min"] == pytest.approx(1.0, abs=1e-12)
        assert r.fidelity["max_abs_diff"] == 0.0
        assert r.fidelity["top1_agreement"] == 1.0
    assert rep.file_bytes_a == rep.file_bytes_b > 0
    assert not rep.warnings


def test_fidelity_sees_perturbed_weights(models):
    rep = run_benchmark(models["a"], models["perturbed"], BenchConfig(batches=[8], **QUICK))
    f = rep.runs[0].fidelity
    assert f["cosine_min"] < 0.999 and f["max_abs_diff"] > 0


def test_json_has_the_fields(models):
    rep = run_benchmark(models["a"], models["a_copy"], BenchConfig(**QUICK))
    d = json.loads(rep.to_json())
    assert {"model_a", "model_b", "file_bytes_a", "file_bytes_b", "settings", "machine", "runs", "warnings"} <= set(d)
    run = d["runs"][0]
    assert {"provider", "provider_used", "batch", "io_binding", "a", "b", "paired", "fidelity"} <= set(run)
    assert {"p50_ms", "p90_ms", "p99_ms", "mean_ms", "throughput", "iters"} <= set(run["a"])
    assert {"speedup", "ratio_lo", "ratio_hi", "pairs"} <= set(run["paired"])
    assert {"cosine_min", "max_abs_diff", "top1_agreement"} <= set(run["fidelity"])
    assert {"cpu", "cores", "onnxruntime"} <= set(d["machine"])
    assert "speedup" in rep.to_markdown()


def test_single_model_has_no_pair(models):
    rep = run_benchmark(models["a"], None, BenchConfig(**QUICK))
    r = rep.runs[0]
    assert r.b is None and r.paired is None and r.fidelity is None and rep.model_b is None


def test_cuda_unavailable_falls_back_with_a_warning(models, monkeypatch):
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    rep = run_benchmark(models["a"], models["a_copy"], BenchConfig(providers=["cuda", "cpu"], **QUICK))
    assert len(rep.runs) == 1  # cuda became cpu; cpu is not timed twice
    assert rep.runs[0].provider_used == "CPUExecutionProvider"
    assert any("CUDA" in w and "CPU" in w for w in rep.warnings)


@pytest.mark.filterwarnings("ignore:Specified provider")
def test_cuda_listed_but_not_started_is_reported(models, monkeypatch):
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    rep = run_benchmark(models["a"], None, BenchConfig(providers=["cuda"], **QUICK))
    assert rep.runs[0].provider_used == "CPUExecutionProvider"
    assert rep.warnings and "CUDA" in rep.warnings[0]


def test_io_binding_path_matches_plain_run(models):
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)
    bound = TimedSession(models["a"], "cpu", None, {"x": x}, io_binding=True)
    plain = TimedSession(models["a"], "cpu", None, {"x": x})
    assert bound.binding is not None and plain.binding is None
    assert bound.timed() > 0
    np.testing.assert_array_equal(bound.outputs()["y"], plain.outputs()["y"])


def test_batch_against_fixed_batch_dim_is_an_input_error(models):
    with pytest.raises(InputError, match="fixed batch"):
        run_benchmark(models["fixed"], None, BenchConfig(batches=[4], **QUICK))


def test_models_with_different_inputs_cannot_pair(models):
    with pytest.raises(InputError, match="different inputs"):
        run_benchmark(models["a"], models["other_input"], BenchConfig(**QUICK))


def test_npz_inputs_fix_the_batch_and_must_match(models, tmp_path):
    rep = run_benchmark(models["a"], None, BenchConfig(inputs={"x": np.zeros((5, 3, 32, 32), np.float32)}, **QUICK))
    assert [r.batch for r in rep.runs] == [5] and rep.settings["inputs"] == "npz"
    with pytest.raises(InputError, match="missing: x"):
        run_benchmark(models["a"], None, BenchConfig(inputs={"z": np.zeros((1, 3, 32, 32), np.float32)}, **QUICK))


def test_time_budget_stops_early(models):
    rep = run_benchmark(models["a"], None, BenchConfig(iters=100000, warmup=1, max_seconds=0.05))
    assert 5 <= rep.runs[0].a.iters < 100000


def test_min_seconds_keeps_timing_small_models(models):
    rep = run_benchmark(models["a"], models["a_copy"], BenchConfig(iters=3, warmup=1, min_seconds=0.05))
    r = rep.runs[0]
    assert r.a.iters == r.b.iters == r.paired.pairs > 3


@pytest.mark.parametrize(
    "kw",
    [{"providers": ["tpu"]}, {"batches": [0]}, {"iters": 0}, {"warmup": -1}, {"threads": 0}, {"providers": []},
     {"min_seconds": -1}],
)
def test_bad_config_is_an_input_error(models, kw):
    with pytest.raises(InputError):
        run_benchmark(models["a"], None, BenchConfig(**kw))
