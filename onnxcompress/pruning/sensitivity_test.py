"""The sensitivity sweep: drift per group and ratio, its samples, its masks and what it cannot measure."""

from __future__ import annotations

import numpy as np
import pytest


def test_target_macs_holds_when_savings_are_not_additive():
    """Two groups on both sides of one conv: the exact recount pushes the allocation until it fits."""
    import numpy as np
    import onnx
    import onnx.helper as h

    import onnxcompress as oc

    rng = np.random.default_rng(0)
    inits, nodes, prev = [], [], "x"
    widths = [3, 32, 32, 32, 8]
    for i in range(4):
        w = rng.standard_normal((widths[i + 1], widths[i], 3, 3)).astype("float32") * 0.3
        inits.append(onnx.numpy_helper.from_array(w, f"w{i}"))
        nodes += [h.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]), h.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        prev = f"r{i}"
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, 3, 8, 8])],
                     [h.make_tensor_value_info(prev, onnx.TensorProto.FLOAT, [None, 8, 8, 8])], inits)
    model = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    import tempfile
    from pathlib import Path

    d = Path(tempfile.mkdtemp())
    onnx.save(model, d / "m.onnx")
    np.savez(d / "calib.npz", x=rng.standard_normal((40, 3, 8, 8)).astype("float32"))
    for target in (0.7, 0.5):
        rep = oc.compress(str(d / "m.onnx"), oc.CompressConfig(target_macs=target, calib=str(d / "calib.npz"), round_to=4)).report
        assert rep.after.macs <= target * rep.before.macs + 1e-6, (target, rep.search["allocation_rounds"])


def test_sensitivity_samples_are_bounded_by_input_bytes():
    from onnxcompress.pruning.sensitivity import sensitivity_sample_count

    small = [{"x": np.zeros((128, 3, 48, 320), np.float32)}]  # 184 kB a sample: all 32
    page = [{"x": np.zeros((4, 3, 640, 640), np.float32)}]  # 4.9 MB a sample: 6 by bytes, floored at 8
    mid = [{"x": np.zeros((4, 3, 320, 320), np.float32)}]  # 1.2 MB a sample: 26
    assert [sensitivity_sample_count(b) for b in (small, page, mid)] == [32, 8, 27]


def test_q_and_k_dims_are_masked_where_they_are_made(tmp_path):
    """--attention dims on unfused attention: q's and k's dims are read only by the scores
    product, which no consumer mask reaches. Unmasked, their removal measured as free (and an
    empty suffix session crashed); masked at the q and k projections, it costs what it costs."""
    import onnx

    import onnxcompress as oc
    from onnxcompress.channels.rules._testing import Net

    n = Net(17)
    x = n.input((1, 5, 12))

    def heads_of(name: str, perm: list[int]) -> str:
        mm = n.op("MatMul", [x, n.const(n.rng.standard_normal((12, 12)))], name=name)
        return n.op("Transpose", [n.op("Reshape", [mm, n.const([1, 5, 4, 3], np.int64)])], perm=perm)

    q, kt, v = heads_of("q", [0, 2, 1, 3]), heads_of("k", [0, 2, 3, 1]), heads_of("v", [0, 2, 1, 3])
    p = n.op("Softmax", [n.op("Div", [n.op("MatMul", [q, kt]), n.const(np.array(2.0))])], axis=-1)
    o = n.op("Reshape", [n.op("Transpose", [n.op("MatMul", [p, v])], perm=[0, 2, 1, 3]), n.const([1, 5, 12], np.int64)])
    y = n.op("MatMul", [o, n.const(n.rng.standard_normal((12, 12)))], name="out_proj")
    onnx.save(n.proto([y]), tmp_path / "m.onnx")
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(0).standard_normal((64, 5, 12)).astype(np.float32))
    cfg = oc.CompressConfig(target_macs=0.6, calib=str(tmp_path / "calib.npz"), attention="dims", round_to=1, force=True)
    groups = {tuple(g["filters"]): g for g in oc.compress(str(tmp_path / "m.onnx"), cfg).report.search["groups"]}
    qk, v_dims = groups[("k", "q")], groups[("v",)]
    assert "unmeasured" not in qk and [c["removed"] for c in qk["curve"]] == [1, 1, 2]
    assert all(c["drift"] > 0.1 for c in qk["curve"]) and qk["curve"][-1]["drift"] > qk["curve"][0]["drift"]
    assert v_dims["curve"] and all(c["drift"] > 0.01 for c in v_dims["curve"]) and v_dims["removed"] > 0


def test_a_group_no_mask_reaches_is_unmeasured_not_free(tmp_path):
    """--attention dims on a fused Attention: q's and k's dims live only inside the op's weight,
    where no mask reaches. They are reported as unmeasured and kept, never measured as free."""
    import onnx

    import onnxcompress as oc
    from onnxcompress.channels.rules._testing import Net
    from onnxcompress.channels.rules.attention_test import _with_output_shape, fused_block

    n = Net(17)
    onnx.save(_with_output_shape(n.proto([fused_block(n, tracked_input=True)], check=False)), tmp_path / "m.onnx")
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(0).standard_normal((64, 5, 12)).astype(np.float32))
    cfg = oc.CompressConfig(target_macs=0.7, calib=str(tmp_path / "calib.npz"), attention="dims", round_to=1, force=True)
    groups = oc.compress(str(tmp_path / "m.onnx"), cfg).report.search["groups"]
    blind = [g for g in groups if g.get("unmeasured")]
    assert len(blind) == 1 and blind[0]["removed"] == 0 and blind[0]["curve"] == []
    assert "no weight layer reads" in blind[0]["unmeasured"] and blind[0]["atoms"] == 3  # dims of q and k


def test_drift_reference_scores_every_candidate_exactly_as_drift_does():
    import math

    from onnxcompress.fidelity import map_scores
    from onnxcompress.pruning.sensitivity import DriftReference, drift

    rng = np.random.default_rng(0)
    ref: dict[str, np.ndarray] = {"logits": rng.normal(size=(4, 10)).astype(np.float32),
           "map": rng.uniform(size=(4, 1, 8, 8)).astype(np.float32),  # a probability map: judged by F1 too
           "ids": np.arange(4, dtype=np.int64)}
    reference = DriftReference(ref)
    assert set(reference.map_threshold) == {"map"}
    for scale in (0.01, 0.3, 2.0):
        got: dict[str, np.ndarray] = {k: (v + scale * rng.normal(size=v.shape)).astype(v.dtype) for k, v in ref.items()}
        got["map"] = np.clip(got["map"], 0, 1)
        # the formula before DriftReference: float64 copies, sums and the map check on every call
        num = sum(float(np.square(ref[k].astype(np.float64) - got[k]).sum()) for k in ("logits", "map"))
        den = sum(float(np.square(ref[k].astype(np.float64)).sum()) for k in ("logits", "map"))
        want = max(math.sqrt(num / den), 1.0 - map_scores(ref["map"], got["map"], 0.5)[1])
        assert reference(got) == drift(ref, got) == want
    # an output of another shape (or missing) is left out of both sums
    short: dict[str, np.ndarray] = {"logits": ref["logits"] * 1.5, "map": ref["map"][:2]}
    assert reference(short) == drift(ref, short) == pytest.approx(0.5, abs=1e-7)
