"""The reference run's findings travel to the verify pass as its own result, not through the context."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import onnx_ir as ir
import pytest

from onnxcompress.config import CompressConfig
from onnxcompress.context import CompressContext
from onnxcompress.pipeline import build_passes
from onnxcompress.report import CompressReport, ModelStats
from onnxcompress.verify import Reference, ReferencePass, VerifyPass

MODEL = Path(__file__).resolve().parent.parent / "models" / "resnet_small.onnx"


def _ctx(**config) -> CompressContext:
    report = CompressReport(input=None, output=None, config={}, before=ModelStats(0, 0, 0), after=ModelStats(0, 0, 0))
    shapes = {v.name: tuple(d if isinstance(d, int) else 2 for d in v.shape) for v in ir.load(str(MODEL)).graph.inputs}
    return CompressContext(config=CompressConfig(**config), input_shapes=shapes, report=report, source=str(MODEL))


def test_the_context_holds_no_pass_results():
    names = {f.name for f in fields(CompressContext)}
    # data_sink is where the output's weights are written (the CLI's staged data file), not a result
    assert names == {"config", "input_shapes", "report", "source", "oracle", "progress", "calib", "held_out",
                     "search_cache", "data_sink"}


def test_build_passes_hands_the_reference_pass_to_verify():
    passes = build_passes(_ctx(ratio=0.5))
    ref, verify = passes[0], passes[-1]
    assert isinstance(ref, ReferencePass) and isinstance(verify, VerifyPass)
    assert verify.reference_pass is ref
    assert all(not isinstance(p, (ReferencePass, VerifyPass)) for p in build_passes(_ctx(ratio=0.5), verify=False))


def test_reference_result_and_verify_reading_it():
    ctx = _ctx(ratio=0.5, measure_exactness=True)
    model = ir.load(str(MODEL))
    ref = ReferencePass(ctx)
    ref(model)
    r = ref.result
    assert isinstance(r, Reference) and r.inputs == "random" and len(r.feeds) == 1
    (out,) = r.outputs.values()
    assert out.shape[0] == next(iter(r.feeds[0].values())).shape[0] == 2
    assert r.snapshot is not None and r.snapshot is not model  # a copy, for the zero-mode measurement
    verify = VerifyPass(ctx, ref)
    verify(model)  # the untouched model against its own reference
    assert ctx.report.fidelity["cosine_min"] == pytest.approx(1.0, abs=1e-6)
    assert ctx.report.fidelity["max_abs_diff"] == pytest.approx(0.0, abs=1e-5)


def test_verify_before_its_reference_run_is_an_error():
    ctx = _ctx(ratio=0.5)
    with pytest.raises(Exception, match="before its ReferencePass"):
        VerifyPass(ctx, ReferencePass(ctx))(ir.load(str(MODEL)))


def test_hidden_states_are_judged_by_cosine_not_as_class_scores():
    """BERT's last_hidden_state (a LayerNorm's output, (N, T, 768)) read as a sequence of 768-way
    class scores agreed at no position after pruning, and the floor refused every model. An output
    made by a normalisation (past reshapes) or a Tanh is a feature: judged by cosine alone."""
    import numpy as np
    import onnx
    import onnx.helper as h
    from onnx import TensorProto, numpy_helper

    from onnxcompress.feature_outputs import feature_outputs
    from onnxcompress.fidelity import compare_outputs
    from onnxcompress.io import load_model

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "w"),
             numpy_helper.from_array(np.ones(8, np.float32), "g"), numpy_helper.from_array(np.zeros(8, np.float32), "b")]
    nodes = [h.make_node("MatMul", ["x", "w"], ["logits"]), h.make_node("LayerNormalization", ["logits", "g", "b"], ["ln"]),
             h.make_node("Identity", ["ln"], ["hidden"]), h.make_node("Tanh", ["logits"], ["pooled"]),
             # the decomposed LayerNorm of opset < 17 exports
             h.make_node("ReduceMean", ["logits"], ["mu"], axes=[-1]), h.make_node("Sub", ["logits", "mu"], ["d"]),
             h.make_node("Mul", ["d", "d"], ["sq"]), h.make_node("ReduceMean", ["sq"], ["var"], axes=[-1]),
             h.make_node("Sqrt", ["var"], ["sd"]), h.make_node("Div", ["d", "sd"], ["n"]),
             h.make_node("Mul", ["n", "g"], ["s"]), h.make_node("Add", ["s", "b"], ["decomposed"])]
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5, 8])],
                     [h.make_tensor_value_info(n, TensorProto.FLOAT, [2, 5, 8])
                      for n in ("logits", "hidden", "pooled", "decomposed")], inits)
    model = load_model(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]))
    assert feature_outputs(model) == {"hidden", "pooled", "decomposed"}
    a = rng.standard_normal((2, 5, 8)).astype(np.float32)
    b = a + 0.3 * rng.standard_normal(a.shape).astype(np.float32)  # flips some argmaxes, keeps the direction
    as_scores = compare_outputs({"hidden": a}, {"hidden": b}, inputs="calibration")
    as_features = compare_outputs({"hidden": a}, {"hidden": b}, inputs="calibration", features=frozenset({"hidden"}))
    assert as_scores.per_output["hidden"].task_figure()[1] == "sequence agreement"
    figure, name = as_features.per_output["hidden"].task_figure()
    assert name == "mean cosine" and figure > 0.9 and as_features.collapsed() is None
    assert as_features.per_output["hidden"].sequence_agreement is None


def _class_scores_agreeing_on(share: float, n: int = 40) -> tuple:
    """(N, 10) class scores of an 'original' and a 'compressed' model whose top-1 agree on ``share`` of N."""
    import numpy as np

    rng = np.random.default_rng(1)
    ref = rng.standard_normal((n, 10)).astype(np.float32)
    got = ref.copy()
    differ = n - round(share * n)
    got[:differ] = np.roll(ref[:differ], 1, axis=1)  # another class on top for the first ``differ`` rows
    assert (got.argmax(1) != ref.argmax(1)).sum() == differ
    return {"y": ref}, {"y": got}


@pytest.mark.parametrize("share, warned", [(0.75, True), (0.875, True), (0.9, False), (1.0, False)])
def test_a_model_far_from_the_original_is_written_with_a_warning(share, warned):
    """PP-OCRv5 rec at 0.8x (--calib-augment 1, perturbing in place as it then did) agreed with the
    original on 0.77 of its held-out lines and read 0.774 of eval's against 0.980: over the floor, so
    written, and nothing but the figure in the report said so. Under DEGRADED_BELOW the verify step
    now warns, naming the output and figure."""
    from onnxcompress.fidelity import compare_outputs
    from onnxcompress.verify import DEGRADED_BELOW

    ref, got = _class_scores_agreeing_on(share)
    fid = compare_outputs(ref, got, inputs="calibration")
    assert fid.per_output["y"].task_figure() == (pytest.approx(share), "top-1 agreement")
    verify = VerifyPass(_ctx(ratio=0.5), ReferencePass(_ctx(ratio=0.5)))
    verify._floor(fid)
    if not warned:
        assert verify.warnings == []
        return
    (w,) = verify.warnings
    assert f"far from the original on 40 held-out calibration samples (output 'y': top-1 agreement {share:.3f}, " \
           f"under {DEGRADED_BELOW})" in w and "--max-drift" in w


def test_no_far_warning_under_a_fidelity_budget_or_on_random_inputs():
    """A --max-drift or --max-accuracy-drop search already bounds the drift it accepts; on random inputs
    the figure predicts nothing (and a collapse there is not refused either)."""
    from onnxcompress.fidelity import compare_outputs

    ref, got = _class_scores_agreeing_on(0.75)
    for ctx, inputs in ((_ctx(ratio=0.5, max_drift=0.3), "calibration"), (_ctx(ratio=0.5), "random")):
        verify = VerifyPass(ctx, ReferencePass(ctx))
        verify._floor(compare_outputs(ref, got, inputs=inputs))
        assert verify.warnings == []


def test_a_model_onnxruntime_cannot_load_gets_no_hint_about_inputs(tmp_path, capsys):
    """magika cut after its graph (no opset): the error line added a hint about random integer inputs,
    which were never fed."""
    import numpy as np
    import onnx
    import onnx.helper as h
    from onnx import TensorProto, numpy_helper

    from onnxcompress.cli import main

    emb = numpy_helper.from_array(np.ones((8, 4), np.float32), "emb")
    g = h.make_graph([h.make_node("Gather", ["emb", "ids"], ["y"])], "g",
                     [h.make_tensor_value_info("ids", TensorProto.INT64, [1, 5])],
                     [h.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5, 4])], [emb])
    proto = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    del proto.opset_import[:]
    onnx.save(proto, tmp_path / "no_opset.onnx")
    assert main([str(tmp_path / "no_opset.onnx"), "-o", str(tmp_path / "out.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("onnxcompress: error: onnxruntime cannot load the input model: ")
    assert "random inputs" not in err[0] and not (tmp_path / "out.onnx").exists()
