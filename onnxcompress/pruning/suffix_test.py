"""SuffixRunner: a candidate run from the cut equals a run of the whole masked model."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper as h
from onnx import numpy_helper as nh

from onnxcompress.pruning import prefix
from onnxcompress.pruning.suffix import SuffixRunner
from onnxcompress.runtime import Session

F = onnx.TensorProto.FLOAT
rng = np.random.default_rng(11)


def _masked() -> onnx.ModelProto:
    """Three convs, each input masked (x * m_i + s_i), a skip from c1 to the end, two outputs."""
    inits = [nh.from_array(rng.standard_normal((4, 4, 3, 3)).astype(np.float32) * 0.3, f"w{i}") for i in range(3)]
    nodes, prev = [], "x"
    for i in range(3):
        nodes += [h.make_node("Mul", [prev, f"m{i}"], [f"xm{i}"]), h.make_node("Add", [f"xm{i}", f"s{i}"], [f"xs{i}"]),
                  h.make_node("Conv", [f"xs{i}", f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
                  h.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        prev = f"r{i}"
    nodes += [h.make_node("Add", [prev, "c0"], ["out"]), h.make_node("ReduceMean", ["c0"], ["early"], keepdims=0)]
    switch = [h.make_tensor_value_info(f"{k}{i}", F, [1, 4, 1, 1]) for i in range(3) for k in "ms"]
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", F, ["N", 4, 6, 6]), *switch],
                     [h.make_tensor_value_info("out", F, ["N", 4, 6, 6]), h.make_tensor_value_info("early", F, [])], inits)
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


def _identity() -> dict[str, np.ndarray]:
    return {**{f"m{i}": np.ones((1, 4, 1, 1), np.float32) for i in range(3)},
            **{f"s{i}": np.zeros((1, 4, 1, 1), np.float32) for i in range(3)}}


def _candidate(i: int) -> dict[str, np.ndarray]:
    feeds = _identity()
    feeds[f"m{i}"] = np.array([1, 0, 1, 0], np.float32).reshape(1, 4, 1, 1)
    feeds[f"s{i}"] = np.array([0, 0.3, 0, -0.2], np.float32).reshape(1, 4, 1, 1)
    return feeds


@pytest.mark.parametrize("order", [[0, 1, 2, 2, 1, 0], [2, 0, 1]], ids=["forward-then-back", "mixed"])
def test_candidates_from_the_cut_equal_whole_runs(order):
    proto = _masked()
    batches = [{"x": rng.standard_normal((3, 4, 6, 6)).astype(np.float32)} for _ in range(2)]
    runner = SuffixRunner(proto, batches, _identity())
    whole = Session(proto, optimize=False)
    for i in order:
        feeds = _candidate(i)
        assert runner.start_of(feeds) == 4 * i  # the Mul that reads m_i
        got = runner.run(feeds)
        want = whole.run_all([{**b, **feeds} for b in batches])
        assert set(got) == {"out", "early"} and got["out"].shape == (6, 4, 6, 6)
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6)
    assert runner.start_of(_identity()) == len(proto.graph.node)
    assert runner.resumed == len(order)


def test_over_the_cut_bound_the_caller_runs_the_whole_model(monkeypatch):
    monkeypatch.setattr(prefix, "CUT_BYTES", 0)
    runner = SuffixRunner(_masked(), [{"x": rng.standard_normal((1, 4, 6, 6)).astype(np.float32)}], _identity())
    assert runner.run(_candidate(1)) is None and runner.enabled is False


def test_the_sweep_measures_the_same_curves_from_cuts(monkeypatch):
    """`--target-macs` on a residual conv net: the allocation's measured curves are the same with
    and without cuts."""
    import onnxcompress as oc

    inits, nodes, prev = [], [], "x"
    widths = [3, 16, 16, 16, 16, 8]
    for i in range(5):
        w = rng.standard_normal((widths[i + 1], widths[i], 3, 3)).astype("float32") * 0.3
        inits.append(nh.from_array(w, f"w{i}"))
        nodes += [h.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]), h.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        if i == 3:
            nodes.append(h.make_node("Add", ["r3", "r1"], ["a3"]))
            prev = "a3"
        else:
            prev = f"r{i}"
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", F, [None, 3, 8, 8])],
                     [h.make_tensor_value_info(prev, F, [None, 8, 8, 8])], inits)
    d = Path(tempfile.mkdtemp())
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), d / "m.onnx")
    np.savez(d / "calib.npz", x=rng.standard_normal((40, 3, 8, 8)).astype("float32"))

    def curves() -> list:
        rep = oc.compress(str(d / "m.onnx"), oc.CompressConfig(target_macs=0.6, calib=str(d / "calib.npz"))).report
        return [(g["filters"], [(c["ratio"], c["removed"], c["drift"]) for c in g["curve"]]) for g in rep.search["groups"]]

    resumed: list[bool] = []
    real_run = SuffixRunner.run

    def counted(self, feeds):
        got = real_run(self, feeds)
        resumed.append(got is not None)
        return got

    monkeypatch.setattr(SuffixRunner, "run", counted)
    with_cuts = curves()
    assert resumed and all(resumed)
    resumed.clear()
    monkeypatch.setattr(prefix, "CUT_BYTES", 0)
    whole = curves()
    assert resumed and not any(resumed)
    assert len(with_cuts) >= 3 and [n for n, _ in with_cuts] == [n for n, _ in whole]
    assert sum(len(c) for _, c in with_cuts) >= 5 and max(c[2] for _, cs in with_cuts for c in cs) > 0
    for (_, a), (_, b) in zip(with_cuts, whole):
        assert [c[:2] for c in a] == [c[:2] for c in b]
        np.testing.assert_allclose([c[2] for c in a], [c[2] for c in b], rtol=1e-4, atol=1e-6)
