"""Post-training recovery: refit the consumers of removed channels by ridge least squares.

For each consumer that lost input channels (an op whose rule has consumer hooks that say it
is refit: Conv, grouped and depthwise too; Gemm; MatMul), in topological order: run the *pruned* model to get the layer's actual inputs, the original
model to get the layer's original outputs, and solve

    min_W ||Y_orig - [X_pruned, 1] W||^2 + λ ||W||^2

in float64 normal equations streamed batch by batch (a Conv is solved on im2col patches,
positions subsampled; a grouped Conv as one small problem per group, solved together).
λ is a small fraction of the mean diagonal.

A layer's refit is kept only if it lowers the layer's own error on the held-out
calibration split; the report gives both errors per layer. (Gating each refit, or all of
them, on the end-to-end drift of the held-out outputs was measured and is not done: that
drift does not follow accuracy. See bench/ACCURACY_REAL.md, "Refit of grouped convs".)
Bias compensation (the removed channels' calibrated means folded into the bias) happens
before, in the applier.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from onnxcompress._ir_utils import const_array, set_weight
from onnxcompress.channels.rules import consumer_of
from onnxcompress.pruning.prefix import PrefixRunner
from onnxcompress.runtime import Session

logger = logging.getLogger(__name__)

#: rows (im2col patches or tokens) sampled per layer over the whole fit split, at least
#: twice the unknowns per output: this bounds the cost of X'X on big feature maps
MIN_ROWS, MAX_ROWS = 4096, 16384
#: fit samples the refit reads (each consumer's input is computed for every one of them): rows
#: are subsampled to MAX_ROWS anyway, so more samples mostly cost time
REFIT_SAMPLES = 64
#: ridge strength, relative to the mean diagonal of X'X
RIDGE = 1e-3
#: a bias-less op whose folded bias follows it is refit (with that addend as its bias) only from
#: at least this many fit rows per unknown, as ``MIN_ROWS`` asks of the row sample
FOLDED_BIAS_ROWS = 2
#: what the ridge pulls the weights toward: "zero", or "original" (the layer's weights before
#: the refit: the original's, restricted to the kept inputs, with the bias compensated)
RIDGE_TOWARD = "zero"


@dataclass
class Consumer:
    node: ir.Node
    #: output channels this node keeps (it may be a pruned producer too); None = all
    out_keep: np.ndarray | None
    #: the node's output name in the reference (unpruned) model
    ref_output: str = ""


def refittable(node: ir.Node) -> str | None:
    """None if ``node`` can be refit, else why not (its rule's consumer hooks decide)."""
    hooks = consumer_of(node)
    return f"{node.op_type} (not refit)" if hooks is None else hooks.refit_reason(node)


def _by_group(t: np.ndarray, groups: int) -> np.ndarray:
    """Target rows (rows, out) as (G, rows, out/G): group g owns a contiguous block of outputs."""
    return t.reshape(len(t), groups, -1).transpose(1, 0, 2)


def _row_limit(node: ir.Node, w: np.ndarray, n_batches: int) -> int:
    k = consumer_of(node).row_width(node, w)
    return max(1, min(MAX_ROWS, max(MIN_ROWS, 2 * k)) // max(n_batches, 1))


def _layer_error(mat, b, xs, ys) -> float:
    num = den = 0.0
    for p, t in zip(xs, ys):
        pred = np.matmul(p, mat) + (b[:, None, :] if b is not None else 0.0)
        num += float(np.square(pred - t).sum())
        den += float(np.square(t).sum())
    return float(np.sqrt(num / den)) if den > 0 else 0.0


def refit(
    model: ir.Model,
    reference: ir.Model,
    consumers: list[Consumer],
    fit_batches: list[dict[str, np.ndarray]],
    held_batches: list[dict[str, np.ndarray]],
    seed: int = 0,
    progress=None,
    augment=None,
) -> list[dict]:
    """Refit each consumer in order (in place on ``model``); returns one report row per layer.

    The original outputs of every consumer come from one pass of the reference model;
    the sampled rows are fixed there, so the pruned model's inputs are read at the same
    positions. Each consumer then needs its actual input in the pruned model, which the
    ``PrefixRunner`` computes from where the previous consumer's run stopped.

    ``augment`` (the fit batches -> more fit batches, ``finetune.augment.perturbed_copies``) adds
    perturbed copies of the fit samples: the least squares then also match the original off the
    calibration data (bench/CALIB_AUGMENT.md). The copies are more samples to run (the refit
    reads 64 + 64 by default), not more rows to solve: each layer's row budget is shared by all
    of them, so half the sampled rows come from the copies. The held-out split, which keeps or
    rejects each layer's refit, stays as given.
    """
    rows: list[dict] = []
    todo: list[Consumer] = []
    folded: dict[int, ir.Value] = {}  # consumer index in todo -> the addend of the Add after it
    for c in consumers:
        node = c.node
        why = refittable(node)
        if why is None and node.outputs[0].name != c.ref_output:
            # A folded bias now follows this node (a bias-less MatMul): it is refit as the bias.
            addend = folded_bias(node, c.ref_output)
            if addend is None:
                why = "bias folded after the node (not refit)"
            else:
                folded[len(todo)] = addend
        if why is not None:
            rows.append({"layer": node.name or node.outputs[0].name, "op": node.op_type, "kept": False, "reason": why})
        else:
            todo.append(c)
    fit_batches = first_samples(fit_batches, REFIT_SAMPLES)
    if augment is not None:
        fit_batches = fit_batches + augment(fit_batches)
    from onnxcompress.pruning.activations import rebatch

    # Every consumer's output is exposed at once in the reference pass: small feeds bound memory.
    batches = [("fit", f) for f in rebatch(fit_batches)] + [("held", f) for f in rebatch(held_batches)]
    targets = _reference_targets(reference, todo, batches, sum(1 for s, _ in batches if s == "fit"), seed)
    runner = PrefixRunner(model, [f for _, f in batches])
    for i, c in enumerate(todo):
        rows.append(_refit_one(model, c, batches, targets[i], runner.inputs(c.node), folded.get(i)))
        if progress is not None:
            progress(i + 1, len(todo))
    return rows


def first_samples(batches: list[dict[str, np.ndarray]], n: int) -> list[dict[str, np.ndarray]]:
    out, taken = [], 0
    for f in batches:
        if taken >= n:
            break
        size = len(next(iter(f.values())))
        keep = min(size, n - taken)
        out.append(f if keep == size else {k: v[:keep] for k, v in f.items()})
        taken += keep
    return out


def _reference_targets(reference: ir.Model, todo: list[Consumer], batches, n_fit: int, seed: int) -> list[list]:
    """Per consumer and batch: (row indices, target rows) from one pass of the reference model."""
    out: list[list] = [[] for _ in todo]
    if not todo:
        return out
    session = Session(reference, expose=[c.ref_output for c in todo])
    for b, (_split, feeds) in enumerate(batches):
        ys = session.run(feeds, [c.ref_output for c in todo])
        for i, c in enumerate(todo):
            t = consumer_of(c.node).target_rows(c.node, ys[c.ref_output])
            if c.out_keep is not None and t.shape[1] != int(c.out_keep.sum()):
                t = t[:, c.out_keep]
            limit = _row_limit(c.node, const_array(c.node.inputs[1]), n_fit)
            rng = np.random.default_rng([seed, i, b])
            idx = np.sort(rng.choice(len(t), limit, replace=False)) if len(t) > limit else np.arange(len(t))
            out[i].append((idx, t[idx].astype(np.float32)))
    return out


def folded_bias(node: ir.Node, ref_output: str) -> ir.Value | None:
    """The constant addend of the Add that remove mode put after ``node`` for the removed channels'
    constants (it took over the output's name), where it holds one value per output and ``node``
    has one group and no bias input of its own (the addend is then its whole bias); else None."""
    if consumer_of(node).groups(node) != 1 or (len(node.inputs) > 2 and node.inputs[2] is not None):
        return None
    uses = list(node.outputs[0].uses())
    if len(uses) != 1 or node.outputs[0].is_graph_output():
        return None
    add, idx = uses[0].node, uses[0].idx
    if add.op_type != "Add" or add.domain not in ("", "ai.onnx") or add.outputs[0].name != ref_output:
        return None
    addend = add.inputs[1 - idx]
    arr = const_array(addend)
    w = const_array(node.inputs[1])
    if arr is None or w is None or arr.size != w.shape[-1] or arr.shape[-1] != arr.size:
        return None
    return addend


def _refit_one(model: ir.Model, c: Consumer, batches, targets, inputs: list[np.ndarray],
               addend: ir.Value | None = None) -> dict:
    """Refit ``c`` from its actual ``inputs`` (one array per batch) against its original outputs;
    ``addend`` (a bias folded after a bias-less op) is solved as its bias and written back there."""
    node = c.node
    hooks = consumer_of(node)
    w = const_array(node.inputs[1])
    mat, b = hooks.matrices(node)
    if addend is not None:  # folded_bias checked: one group, no bias input
        b = const_array(addend).astype(np.float64).reshape(1, -1)
    normal = _NormalEquations(bias=b is not None)
    held: tuple[list, list] = ([], [])
    fit_rows = 0
    for (split, _feeds), x, (idx, t) in zip(batches, inputs, targets):
        p = hooks.as_rows(node, x, w.shape)[:, idx].astype(np.float64)
        t = _by_group(t.astype(np.float64), mat.shape[0])
        if split == "fit":
            normal.add(p, t)
            fit_rows += p.shape[1]
        else:
            held[0].append(p)
            held[1].append(t)
    name = node.name or node.outputs[0].name
    unknowns = mat.shape[1] + 1
    if addend is not None and fit_rows < FOLDED_BIAS_ROWS * unknowns:
        # One row per sample (a classifier's last MatMul): the least squares would fit the few
        # samples, and 32 held-out ones do not show it (refit from 128 rows for 177 unknowns,
        # PP-OCR's classifier at 0.8x lost 1.1-1.6 points more on data drawn unlike its calibration set).
        return {"layer": name, "op": node.op_type, "kept": False,
                "reason": f"bias folded after the node, {fit_rows} fit rows for {unknowns} unknowns (not refit)"}
    before = _layer_error(mat, b, *held)
    new_mat, new_b = normal.solve(prior=(mat, b) if RIDGE_TOWARD == "original" else None)
    after = _layer_error(new_mat, new_b, *held)
    keep = after < before
    if keep:
        hooks.write(model, node, new_mat, None if addend is not None else new_b)
        if addend is not None:
            old = const_array(addend)
            set_weight(addend, new_b.reshape(old.shape).astype(old.dtype))
    return {"layer": name, "op": node.op_type, "kept": keep,
            "held_out_error_before": before, "held_out_error_after": after}


class _NormalEquations:
    """X'X and X'Y per group, accumulated in float64 batch by batch (memory bounded by G x K x K)."""

    def __init__(self, bias: bool) -> None:
        self.bias = bias
        self.a: np.ndarray | None = None
        self.c: np.ndarray | None = None

    def add(self, p: np.ndarray, t: np.ndarray) -> None:
        """``p`` (G, rows, K) inputs and ``t`` (G, rows, out/G) targets."""
        if self.bias:
            p = np.concatenate([p, np.ones(p.shape[:2] + (1,))], axis=2)
        pt = p.transpose(0, 2, 1)
        if self.a is None:
            self.a = np.zeros((p.shape[0], p.shape[2], p.shape[2]))
            self.c = np.zeros((p.shape[0], p.shape[2], t.shape[2]))
        self.a += pt @ p
        self.c += pt @ t

    def solve(self, prior: tuple[np.ndarray, np.ndarray | None] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Ridge solution, pulled toward zero, or toward ``prior`` = (G, K, out/G) weights and (G, out/G) bias."""
        k = self.a.shape[1]
        lam = np.maximum(RIDGE * np.trace(self.a, axis1=1, axis2=2) / k, 1e-12)  # per group; > 0 for dead inputs
        rhs = self.c
        if prior is not None:
            w0 = prior[0] if not self.bias else np.concatenate(
                [prior[0], (prior[1] if prior[1] is not None else np.zeros(prior[0].shape[::2]))[:, None, :]], axis=1)
            rhs = self.c + lam[:, None, None] * w0
        sol = np.linalg.solve(self.a + lam[:, None, None] * np.eye(k), rhs)
        return (sol[:, :-1], sol[:, -1]) if self.bias else (sol, None)
