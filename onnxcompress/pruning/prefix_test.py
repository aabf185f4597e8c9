"""PrefixRunner: each consumer's input equals a full run of the current model, resumed or not."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import helper as h
from onnx import numpy_helper as nh

from onnxcompress.pruning import prefix
from onnxcompress.pruning.prefix import PrefixRunner
from onnxcompress.runtime import Session

F = onnx.TensorProto.FLOAT
rng = np.random.default_rng(5)


def _model() -> ir.Model:
    """Conv chain with a skip over c2, a Constant made early and read late, a second input read late."""
    w = {f"w{i}": rng.standard_normal((4, 4, 3, 3)).astype(np.float32) * 0.3 for i in range(1, 5)}
    nodes = [
        h.make_node("Constant", [], ["k"], value=nh.from_array(np.array(0.5, np.float32))),
        h.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="c1"),
        h.make_node("Relu", ["c1"], ["r1"]),
        h.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], name="c2"),
        h.make_node("Add", ["c2", "c1"], ["a"]),
        h.make_node("Conv", ["a", "w3"], ["c3"], pads=[1, 1, 1, 1], name="c3"),
        h.make_node("Mul", ["c3", "y2"], ["m0"]),
        h.make_node("Mul", ["m0", "k"], ["m"]),
        h.make_node("Conv", ["m", "w4"], ["out"], pads=[1, 1, 1, 1], name="c4"),
    ]
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", F, ["N", 4, 6, 6]),
                                  h.make_tensor_value_info("y2", F, ["N", 4, 6, 6])],
                     [h.make_tensor_value_info("out", F, ["N", 4, 6, 6])],
                     [nh.from_array(a, n) for n, a in w.items()])
    return ir.serde.deserialize_model(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]))


def _batches(n: int = 3) -> list[dict[str, np.ndarray]]:
    return [{"x": rng.standard_normal((2, 4, 6, 6)).astype(np.float32),
             "y2": rng.standard_normal((2, 4, 6, 6)).astype(np.float32)} for _ in range(n)]


def _full(model: ir.Model, name: str, batches) -> list[np.ndarray]:
    s = Session(model, expose=[name])
    return [s.run(f, [name])[name] for f in batches]


@pytest.mark.parametrize("cut_bytes", [prefix.CUT_BYTES, 0], ids=["resumed", "from-inputs"])
def test_inputs_follow_the_weights_written_between_runs(cut_bytes, monkeypatch):
    """Like the refit: ask for c2, c3, c4's inputs in order, rewriting each consumer's weight after
    its turn; every answer matches a full run of the model as it is then."""
    monkeypatch.setattr(prefix, "CUT_BYTES", cut_bytes)
    model, batches = _model(), _batches()
    nodes = {n.name: n for n in model.graph}
    runner = PrefixRunner(model, batches)
    for name in ("c2", "c3", "c4"):
        node = nodes[name]
        got = runner.inputs(node)
        want = _full(model, node.inputs[0].name, batches)
        assert len(got) == len(batches)
        for a, b in zip(got, want):
            assert a.shape == (2, 4, 6, 6)
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
        w = node.inputs[1]
        w.const_value = ir.tensor(np.asarray(w.const_value.numpy()) * -1.7 + 0.1, name=w.name)
    assert runner.resumed == (2 if cut_bytes else 0)


def test_the_cut_holds_what_later_nodes_read():
    """At c3, the run from there needs a (its input), y2 (read by a Mul after it) and the early
    Constant k; c1 is read only before c3 and is not held."""
    model = _model()
    end = next(i for i, n in enumerate(model.graph) if n.name == "c3")
    assert sorted(prefix.live_at(ir.to_proto(model).graph, end)) == ["a", "k", "y2"]
    assert sorted(prefix.live_at(ir.to_proto(model).graph, end, keep_outputs=True)) == ["a", "k", "y2"]


def test_a_graph_with_subgraphs_always_runs_from_the_inputs():
    model, batches = _model(), _batches(1)
    then = h.make_graph([h.make_node("Identity", ["c1"], ["t"])], "then", [], [h.make_tensor_value_info("t", F, None)])
    cond = ir.serde.deserialize_model(h.make_model(h.make_graph(
        [h.make_node("Constant", [], ["b"], value=nh.from_array(np.array(True))),
         h.make_node("If", ["b"], ["o"], then_branch=then, else_branch=then)],
        "g", [], [h.make_tensor_value_info("o", F, None)]), opset_imports=[h.make_opsetid("", 17)]))
    assert PrefixRunner(cond, []).enabled is False
    assert PrefixRunner(model, batches).enabled is True
