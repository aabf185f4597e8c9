"""bench/allocation_oracle's labelled and log-domain drift references, bench/ingroup_order's greedy order,
bench/deployment_mix's labels, and bench/perturbed_agreement's ranks."""

from __future__ import annotations

import numpy as np

from bench.allocation_oracle import LogReference, OracleReference, right_count
from bench.deployment_mix import PARTS, pad_labels
from bench.ingroup_order import greedy_costs, input_covariances, mixes_channels
from bench.perturbed_agreement import ranks, spearman
from onnxcompress.pruning.sensitivity import DriftReference

CLASSIFY = {"task": "classify", "output_name": "p"}
CTC = {"task": "ctc", "output_name": "p", "blank_index": 0, "output_layout": "NTC"}


def _one_hot(ids: list[list[int]], classes: int) -> np.ndarray:
    return np.eye(classes, dtype=np.float32)[np.asarray(ids)]


def test_right_count_reads_ctc_like_the_evaluator() -> None:
    # sample 0 reads [1, 2] (repeat merged, blanks dropped); sample 1 reads [2, 2] (a blank between repeats)
    y = _one_hot([[1, 1, 0, 2], [2, 0, 2, 0]], 3)
    labels = np.array([[1, 2, -1], [2, 2, -1]])
    assert right_count(CTC, y, labels) == 2
    assert right_count(CTC, y, np.array([[1, 2, -1], [2, -1, -1]])) == 1
    # the sweep joins every output batch-first (output_join), so a time-major model's is read the same way
    assert right_count({**CTC, "output_layout": "TNC"}, y, labels) == 2


def test_oracle_reference_is_the_accuracy_lost_plus_the_weighted_drift() -> None:
    labels = np.array([0, 1, 1, 0])
    ref = {"p": np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4]], dtype=np.float32)}  # 4 of 4 right
    worse = {"p": ref["p"][[0, 1, 3, 3]]}  # sample 2 now reads class 0: one of four lost
    better = {"p": ref["p"].copy()}
    assert OracleReference(CLASSIFY, labels, 0.0, ref)(worse) == np.sqrt(0.25)
    assert OracleReference(CLASSIFY, labels, 0.0, ref)(better) == 0.0
    drift = DriftReference(ref)(worse)
    assert drift > 0
    assert np.isclose(OracleReference(CLASSIFY, labels, 0.1, ref)(worse), np.sqrt(0.25 + 0.1 * drift ** 2))
    # a candidate that reads more samples right than the original costs no accuracy (never negative)
    wrong_ref = {"p": ref["p"][[3, 1, 2, 3]]}
    assert OracleReference(CLASSIFY, labels, 0.0, wrong_ref)(ref) == 0.0


def test_log_reference_sees_a_margin_the_probabilities_hide() -> None:
    """A confident softmax whose runner-up rises from 1e-6 to 1e-3: p barely moves, log p does."""
    ref = {"p": np.array([[1 - 1e-6, 1e-6, 0.0]] * 4, dtype=np.float32)}
    eroded = {"p": np.array([[1 - 1e-3, 1e-3, 0.0]] * 4, dtype=np.float32)}
    plain = DriftReference(ref)(eroded)
    logged = LogReference(1e-4, ref)(eroded)
    assert plain < 2e-3
    assert logged > 0.2  # log(1e-3 / 1e-4) against log(1 / 1e-4): sqrt(2.30^2 / 9.21^2) = 0.25
    assert np.isclose(logged, np.log(10) / np.log(1e4), rtol=1e-3)
    # outputs that are not distributions are compared as they are
    feat = {"f": np.array([[1.0, 2.0]], dtype=np.float32)}
    assert LogReference(1e-4, feat).soft == set()
    assert np.isclose(LogReference(1e-4, feat)({"f": np.array([[1.0, 1.0]], dtype=np.float32)}),
                      DriftReference(feat)({"f": np.array([[1.0, 1.0]], dtype=np.float32)}))


def test_spearman_with_ties_and_constant_columns() -> None:
    assert ranks([0.0, 0.0, 0.0]).tolist() == [1.0, 1.0, 1.0]
    assert ranks([0.3, 0.1, 0.2]).tolist() == [2.0, 0.0, 1.0]
    assert ranks([1.0, 1.0, 2.0]).tolist() == [0.5, 0.5, 2.0]
    assert spearman([0.0, 0.0, 0.0, 0.0], [1.0, 2.0, 3.0, 4.0]) is None  # a drift that never moves predicts nothing
    assert spearman([1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0, 9.0]) == 1.0
    assert spearman([1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]) == -1.0
    assert spearman([1.0, 2.0], [1.0, 2.0]) is None


def test_reduced_rank_refit_recovers_the_layer_and_its_best_rank_r_fit() -> None:
    from bench.lowrank_probe import reduced_rank_refit

    rng = np.random.default_rng(0)
    w = rng.normal(size=(6, 5))
    x = rng.normal(size=(5, 400))
    auto = x @ x.T
    full = {"w": w, "rank": 6}
    # same inputs, full rank: the layer itself (up to the tiny ridge)
    assert np.allclose(reduced_rank_refit(full, auto, auto), w, atol=1e-3)
    # inputs that moved (x_c = 2 x): the fit undoes it
    xc = 2 * x
    assert np.allclose(reduced_rank_refit(full, x @ xc.T, xc @ xc.T), w / 2, atol=1e-3)
    # rank 2: the projection of W X on its top two principal directions, which no other rank-2 W' beats
    w2 = reduced_rank_refit({"w": w, "rank": 2}, auto, auto)
    assert np.linalg.matrix_rank(w2, tol=1e-8) == 2
    best = np.linalg.norm(w @ x - w2 @ x)
    u, s, vt = np.linalg.svd(w @ x, full_matrices=False)
    assert np.isclose(best, np.sqrt((s[2:] ** 2).sum()), rtol=1e-3)
    for _ in range(5):  # nor does another rank-2 layer
        other = rng.normal(size=(6, 2)) @ rng.normal(size=(2, 5))
        assert best < np.linalg.norm(w @ x - other @ x)


def test_greedy_costs_are_the_refit_error_of_each_prefix_of_the_order() -> None:
    """Channel 5 copies channel 0 (up to noise), so it goes first at almost no cost; each cumulative cost is
    the least-squares error left after refitting the kept channels to the full layer's outputs."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 6))
    x[:, 5] = x[:, 0] + 0.01 * rng.normal(size=500)
    w = rng.normal(size=(6, 4))
    costs = greedy_costs(w, x.T @ x / len(x), ridge=0.0)
    order = np.argsort(costs)
    assert order[0] in (0, 5) and costs[order[0]] < 1e-3
    assert np.all(np.diff(costs[order]) > 0)
    y = x @ w
    for k in range(1, 6):
        kept = np.sort(order[k:])
        fit, *_ = np.linalg.lstsq(x[:, kept], y, rcond=None)
        assert np.isclose(costs[order[k - 1]], np.square(y - x[:, kept] @ fit).sum() / len(x), rtol=1e-6)


def test_only_dense_consumers_mix_channels() -> None:
    import onnx_ir as ir

    def node(op: str, **attrs) -> ir.Node:
        return ir.Node("", op, [], attributes=[ir.AttrInt64(k, v) for k, v in attrs.items()])

    assert mixes_channels(node("Conv")) and mixes_channels(node("Conv", group=1))
    assert not mixes_channels(node("Conv", group=8))
    assert mixes_channels(node("MatMul")) and mixes_channels(node("Gemm"))
    assert not mixes_channels(node("Mul"))


def test_mix_labels_pad_sequences_and_keep_classes() -> None:
    a, b = np.array([[3, 4, -1], [5, -1, -1]]), np.array([[1, 2, 3, 4]])
    assert pad_labels([a, b]).tolist() == [[3, 4, -1, -1], [5, -1, -1, -1], [1, 2, 3, 4]]
    assert pad_labels([np.array([0, 1]), np.array([1])]).tolist() == [0, 1, 1]
    # the shift and wild draws start past every index a scored split reads (shift 0-499, wild and confirm 0-1499)
    starts = {split: (first, first + n) for split, n, first in PARTS}
    assert starts["shift"][0] >= 500 and starts["wild"][0] >= 1500


def test_input_covariances_stream_the_channel_covariance() -> None:
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Identity", ["r"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 4, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3, 4, 5])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.random.default_rng(1).normal(size=(12, 3, 4, 5)).astype(np.float32)
    batches = [{"x": x[:5]}, {"x": x[5:]}]
    rows = np.moveaxis(np.maximum(x, 0), 1, -1).reshape(-1, 3).astype(np.float64)
    centered = input_covariances(model, batches, {"r": 1}, centered=True)["r"]
    raw = input_covariances(model, batches, {"r": 1}, centered=False)["r"]
    assert centered.shape == (3, 3)
    assert np.allclose(centered, np.cov(rows, rowvar=False, bias=True))
    assert np.allclose(raw, rows.T @ rows / len(rows))
