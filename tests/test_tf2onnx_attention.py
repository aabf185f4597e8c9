"""Attention heads through tf2onnx (issue 16): Keras MultiHeadAttention as the real tf2onnx writes it.

``models/tf_keras_mha.onnx`` (models/build_tf.py) has two pre-LN blocks of 4 heads. tf2onnx lowers
the attention einsums to Reshapes whose targets it computes at run time: the heads merge with the
batch as ``Concat(ReduceProd(Shape(t)[0, 1]), -1, Shape(t)[4])`` and split back as
``Concat(Max(Shape(q)[0, 1], Shape(k)[0, 1]), ...)``; each Dense on (N, L, C) reshapes its MatMul
back through ``Cast(Concat(Shape(x)[0, 1], C))``. Every one of those pieces follows the pruned
tensors by itself (or, for C, is rewritten), so whole heads and MLP features go, exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from onnxcompress.api import compress, inspect
from onnxcompress.config import CompressConfig

MODEL = str(Path(__file__).resolve().parent.parent / "models" / "tf_keras_mha.onnx")
L, C, HEADS = 16, 64, 4


def _run(path: str, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_inspect_finds_the_heads_and_the_mlp_features():
    rep = inspect(MODEL, {"x": (1, L, C)}, groups=True)
    heads = sorted((g["prunable_units"], g["channels_per_unit"], g["outcome"]) for g in rep.groups if g["unit"] == "head")
    assert heads == [(HEADS, C // HEADS, "exact")] * 2  # separate q, k and v projections, tied per head
    mlp = [g for g in rep.groups if g["unit"] == "channel"]
    assert sorted(g["prunable_units"] for g in mlp) == [4 * C, 4 * C]
    # the residual stream starts at the graph input: it stays, and the report says why
    assert any("Add with a tensor whose channels are not tracked (x)" in b["reason"] for b in rep.blockers)
    assert not any("Reshape" in b["reason"] for b in rep.blockers)


@pytest.mark.parametrize("simplify", [False, True])
def test_heads_and_mlp_are_removed_exactly_at_any_batch(tmp_path, simplify):
    cfg = dict(ratio=0.5, round_to=1, simplify=simplify)
    removed = compress(MODEL, CompressConfig(**cfg))
    removed.save(tmp_path / "removed.onnx")
    compress(MODEL, CompressConfig(mode="zero", **cfg)).save(tmp_path / "zeroed.onnx")
    groups = removed.report.passes["prune"]["group_details"]
    assert sorted((g["atoms"], g["kept"]) for g in groups if g["unit"] == "head") == [(HEADS, 2)] * 2
    assert sorted((g["atoms"], g["kept"]) for g in groups if g["unit"] == "channel" and g["atoms"] == 4 * C) == \
        [(4 * C, 2 * C)] * 2
    assert removed.report.after.macs / removed.report.before.macs == pytest.approx(0.5, abs=0.01)
    assert removed.report.exactness["exact"] is True
    if not simplify:
        # the Dense's (N, L, 256) target: its constant piece now says 128, the Shape pieces are untouched
        m = onnx.load(tmp_path / "removed.onnx")
        inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
        pieces = [inits[i].tolist() for n in m.graph.node if n.op_type == "Concat" for i in n.input if i in inits]
        assert [2 * C] in pieces and [4 * C] not in pieces
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, L, C)).astype(np.float32)
        got = _run(str(tmp_path / "removed.onnx"), x)
        np.testing.assert_allclose(got, _run(str(tmp_path / "zeroed.onnx"), x), rtol=1e-4, atol=1e-5)
        assert got.shape == (batch, 10)
        assert not np.allclose(got, _run(MODEL, x), atol=1e-3)  # something was really removed
