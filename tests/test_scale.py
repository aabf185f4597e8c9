"""Scale: compressing a model with external data never makes a second serialised copy of its weights.

The memory and time of big models (bench/SCALE.md) come from copies: ``ir.to_proto`` and
``SerializeToString`` of the whole model for each onnxruntime session and for onnxsim. These
tests check the mechanism, not the clock: every session and the onnxsim step see the graph
with its big weights declared, and the weights reach onnxruntime by reference.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import onnxsim
import pytest

from bench.scale_bench import build_wide
from onnxcompress.api import compress
from onnxcompress.config import CompressConfig
from onnxcompress.runtime import Serialized, open_session

#: a declared weight has more elements than this (runtime/simplify thresholds)
BIG = 4096


def _inline_bytes(proto: onnx.ModelProto) -> int:
    """Bytes of tensor data the proto itself carries (external references excluded)."""
    total = 0
    for t in proto.graph.initializer:
        if t.data_location != onnx.TensorProto.EXTERNAL:
            total += len(t.raw_data) + 4 * (len(t.float_data) + len(t.int32_data)) + 8 * len(t.int64_data)
    return total


@pytest.fixture()
def external_model(tmp_path):
    """Two residual blocks of 64-channel 3x3 convs with BatchNorm, weights in model.onnx.data (~0.6 MB)."""
    path = build_wide(tmp_path / "model.onnx", channels=64, blocks=2)
    assert (tmp_path / "model.onnx.data").stat().st_size > 500_000
    return path


def test_compress_never_serialises_the_weights(external_model, tmp_path, monkeypatch):
    sources, simplified = [], []
    real_session, real_simplify = ort.InferenceSession, onnxsim.simplify

    def session(src, *args, **kwargs):
        model = onnx.load_from_string(src) if isinstance(src, bytes) else onnx.load(src, load_external_data=False)
        sources.append(_inline_bytes(model))
        return real_session(src, *args, **kwargs)

    def spy(proto, **kwargs):
        simplified.append(proto)
        return real_simplify(proto, **kwargs)

    def no_full_copy(self):
        raise AssertionError("the whole model was serialised")

    monkeypatch.setattr(ort, "InferenceSession", session)
    monkeypatch.setattr(onnxsim, "simplify", spy)
    monkeypatch.setattr(Serialized, "_self_contained", no_full_copy)

    result = compress(external_model, CompressConfig(ratio=0.5))
    assert result.report.passes["simplify"]["weights"] == "declared", result.report.passes["simplify"]
    assert result.report.passes["simplify"]["status"] == "simplified"
    (proto,) = simplified
    assert all(np.prod(t.dims) <= BIG for t in proto.graph.initializer)
    declared = [vi.name for vi in proto.graph.input if vi.name != "input"]
    assert len(declared) >= 4, "the conv weights should reach onnxsim as declared inputs"
    assert sources, "no onnxruntime session was opened"
    assert max(sources) < 4 * BIG * 4, "a session got the weights serialised"
    out = result.save(tmp_path / "out.onnx")
    assert (tmp_path / "out.onnx.data").exists()
    assert onnx.load(out, load_external_data=False).graph.node


def test_serialized_model_shares_its_weights():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 256)).astype(np.float32)
    x = ir.Value(name="x", shape=ir.Shape([1, 256]), type=ir.TensorType(ir.DataType.FLOAT))
    wv = ir.Value(name="w", const_value=ir.tensor(w), shape=ir.Shape(w.shape), type=ir.TensorType(ir.DataType.FLOAT))
    node = ir.node("Gemm", [x, wv], attributes={"transB": 1})
    node.outputs[0].name = "y"
    graph = ir.Graph([x], node.outputs, nodes=[node], initializers=[wv], opset_imports={"": 17})
    model = ir.Model(graph, ir_version=8)

    ser = Serialized(model)
    assert np.shares_memory(ser.shared["w"], w)
    assert onnx.load(ser.path, load_external_data=False).ByteSize() < 4096
    feeds = {"x": rng.standard_normal((1, 256)).astype(np.float32)}
    got = open_session(ser).run(None, feeds)[0]
    np.testing.assert_allclose(got, feeds["x"] @ w.T, rtol=1e-5, atol=1e-5)
    # The self-contained form, built only on request, computes the same.
    full = ort.InferenceSession(ser.data, providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(full.run(None, feeds)[0], got, rtol=1e-6, atol=1e-6)


_HUGEPAGE_PROBE = """
import os, sys
from onnxcompress.cli import main
rc = main(["inspect", sys.argv[1]])
import numpy._core.multiarray as mu
# _set_madvise_hugepage (private) returns the setting numpy had (read from the environment at import)
setter = getattr(mu, "_set_madvise_hugepage", None)
print("no-setter" if setter is None else f"{rc} {setter(True)} {os.environ.get('NUMPY_MADVISE_HUGEPAGE')}")
"""


@pytest.mark.parametrize(("user", "expected"), [(None, "0 False None"), ("1", "0 True 1")])
def test_cli_imports_numpy_without_huge_page_advice(external_model, user, expected):
    """The CLI turns numpy's huge-page advice off (bench/SCALE.md round 3), unless the user set it; the
    environment is as it was afterwards."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "NUMPY_MADVISE_HUGEPAGE"}
    if user is not None:
        env["NUMPY_MADVISE_HUGEPAGE"] = user
    out = subprocess.run([sys.executable, "-c", _HUGEPAGE_PROBE, str(external_model)], env=env,
                         capture_output=True, text=True, check=True).stdout
    last = out.strip().splitlines()[-1]
    if last == "no-setter":
        pytest.skip("this numpy has no _set_madvise_hugepage to read the setting back")
    assert last == expected


def test_compress_output_does_not_depend_on_threads(external_model, tmp_path, monkeypatch):
    """1 and 3 threads give the same weights, bit for bit (fold, norms, slicing all threaded)."""
    results = []
    for threads in ("1", "3"):
        monkeypatch.setenv("ONNXCOMPRESS_THREADS", threads)
        model = compress(str(external_model), CompressConfig(ratio=0.5)).model
        results.append({name: v.const_value.numpy().copy() for name, v in model.graph.initializers.items()})
    assert results[0].keys() == results[1].keys()
    for name, arr in results[0].items():
        assert np.array_equal(arr, results[1][name]), name


@pytest.mark.parametrize("args", [[], ["--no-simplify"]], ids=["simplify", "no-simplify"])
def test_cli_writes_the_cut_weights_once_into_the_output_data_file(external_model, tmp_path, monkeypatch, args):
    """The CLI cuts the big weights straight into the output's data file (``spill.DataSink``), and
    saving keeps that file: the written model holds the same values as the API's ordinary save."""
    from onnxcompress import spill
    from onnxcompress.cli import main

    monkeypatch.setattr(spill, "MIN_BYTES", 16 << 10)  # the fixture's convs are 147 kB
    kept = []
    real = spill.DataSink.complete

    def complete(self, model):
        swapped = real(self, model)
        kept.append((len(self.regions), swapped is not None))
        return swapped

    monkeypatch.setattr(spill.DataSink, "complete", complete)
    out = tmp_path / "cli" / "out.onnx"
    assert main([str(external_model), "-o", str(out), "--ratio", "0.5", "-q", *args]) == 0
    ((regions, used),) = kept
    assert regions >= 4 and used, "the cut weights were not written into the output's data file"
    assert sorted(p.name for p in out.parent.iterdir()) == ["out.onnx", "out.onnx.data"]  # no staging left

    reference = compress(str(external_model), CompressConfig(ratio=0.5, simplify=not args))
    ref_out = reference.save(tmp_path / "api" / "out.onnx")
    got, want = ir.load(out), ir.load(ref_out)
    assert list(got.graph.initializers) == list(want.graph.initializers)
    for name, v in want.graph.initializers.items():
        assert got.graph.initializers[name].const_value.tobytes() == v.const_value.tobytes(), name
    assert [n.op_type for n in got.graph] == [n.op_type for n in want.graph]
    x = np.random.default_rng(0).standard_normal((2, 64, 4, 4)).astype(np.float32)
    run = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
           for p in (out, ref_out)]
    np.testing.assert_array_equal(*run)


@pytest.mark.parametrize("sink", [False, True], ids=["memory", "output-data-file"])
def test_l1_mass_is_taken_from_the_scores_and_the_cut(external_model, tmp_path, monkeypatch, sink):
    """The report's L1 mass without a second read of the weights: a scored weight's total is the sum of
    its L1 filter norms and its kept part is summed by the cut. The figure is the one a full read gives."""
    import onnxcompress.passes.prune as prune
    from onnxcompress import spill
    from onnxcompress.io import data_path
    from onnxcompress.paths import Staging

    monkeypatch.setattr(spill, "MIN_BYTES", 16 << 10)
    reads = []
    real_l1 = prune.l1_kept
    monkeypatch.setattr(prune, "l1_kept", lambda w, keep: reads.append(w.shape) or real_l1(w, keep))

    def run(**kw):
        with Staging() as staging:
            out = tmp_path / f"o{len(reads)}" / "m.onnx"
            ds = spill.DataSink(lambda: staging.temp_dir(out), data_path(out).name) if sink else None
            return compress(str(external_model), CompressConfig(ratio=0.5, simplify=False), data_sink=ds, **kw)

    fast = run().report.pruned_l1_mass
    assert reads == [], reads  # every weight here is scored (the head too, its filters all kept)
    real_plan = prune.make_plan

    def unscored(*a, **k):  # no totals from the scores: every weight is read, as before
        plan = real_plan(*a, **k)
        plan.l1_totals = {}
        return plan

    monkeypatch.setattr(prune, "make_plan", unscored)
    reads.clear()
    full = run().report.pruned_l1_mass
    assert len(reads) == 6
    assert 0.4 < fast < 0.9 and fast == pytest.approx(full, rel=1e-12)


_IMPORTS_PROBE = """
import sys
from onnxcompress.cli import main
rc = main([sys.argv[1], "-o", sys.argv[2], "--ratio", "0.5", "-q"])
lazy = ["onnxcompress.pruning.calibrated", "onnxcompress.pruning.recover", "onnxcompress.pruning.sensitivity",
        "onnxcompress.check_args", "onnxcompress.speedgate", "torch"]
print(rc, [m for m in lazy if m in sys.modules])
"""


def test_a_plain_compress_leaves_calibration_and_check_modules_unimported(external_model, tmp_path):
    """Issue 17: lazy imports where a command does not need a module. Without --calib or --recipe,
    recovery, sensitivity and ``check``'s options (with the speed gate) are never imported."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    here = str(Path(__file__).resolve().parents[1])  # this checkout's package, not an installed one
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-c", _IMPORTS_PROBE, str(external_model), str(tmp_path / "out.onnx")],
                         capture_output=True, text=True, check=True, env=env).stdout
    assert out.strip().splitlines()[-1] == "0 []"
