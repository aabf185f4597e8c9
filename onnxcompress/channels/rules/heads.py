"""What attention's two products mean for channels, shared by every op that computes them
(MatMul, Einsum, onnxruntime's fused ops): the rules decide which axes hold heads, these
helpers couple the elements and carry a removed head's constants.

- scores = q . k over d: a head's q and k channels are one element, the scores carry the head;
- out = P @ v: P's head joins v's head, the output carries v's channels.

A removed head's q, k and v are per-channel constants, so its scores are one constant and,
after a softmax (whose rows sum to 1 whatever is added to the scores), its output is v's.

With ``--attention dims`` every head stays and the same dims go from each: q's dim j with
k's (``join_dims``): q_j k_j is then one constant added to every score of a row, which the
softmax drops (``scores_meet_softmax`` checks that nothing between them could not pass a
constant shift); and v's dims with the output projection, since P's rows sum to 1.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxcompress.channels.protocols import AnalysisContext


def tie_each_row(ctx: AnalysisContext, ids: np.ndarray) -> None:
    """Each row of (rows, width) ids becomes one element: a head or a channel group goes whole."""
    for row in ids:
        ctx.union(np.full(row.size - 1, row[0]), row[1:])


def tie_rows(ctx: AnalysisContext, ids: np.ndarray) -> None:
    """Each row of (heads, width) ids becomes one element: a head goes whole."""
    ctx.mark_heads(ids[:, 0])
    tie_each_row(ctx, ids)


def join_scores(ctx: AnalysisContext, q: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Couple (heads, d) ids of q and k; the scores' ids, one per head."""
    ctx.union(q, k)
    tie_rows(ctx, q)
    return q[:, 0].copy()


def join_dims(ctx: AnalysisContext, q: np.ndarray, k: np.ndarray) -> None:
    """Couple (heads, d) ids of q and k dim by dim: q's dim j of a head goes with k's."""
    ctx.union(q, k)


def scores_meet_softmax(ctx: AnalysisContext, scores: ir.Value) -> bool:
    """The scores reach a Softmax over their last axis through ops that keep a constant added
    to every score of a row a per-row constant: Add or Sub of anything, Mul or Div by a constant
    scalar, Where with a fill that no softmax weight survives (<= -1e4), a Reshape that keeps
    the last axis. Then removing one of q's dims with k's is exact."""
    v = scores
    for _ in range(16):
        uses = list(v.uses())
        rank = ctx.rank(v)
        if len(uses) != 1 or v.is_graph_output() or rank is None:
            return False
        node, slot = uses[0].node, uses[0].idx
        op = node.op_type if node.domain in ("", "ai.onnx") else ""
        if op == "Softmax":
            return softmax_over(node.outputs[0], rank - 1, rank, ctx.opset)
        if op in ("Mul", "Div") and not (op == "Div" and slot == 1):
            other = ctx.const(node.inputs[1 - slot])
            if other is None or other.size != 1:
                return False
        elif op == "Where" and slot in (1, 2):
            fill = ctx.const(node.inputs[3 - slot])
            if fill is None or fill.size != 1 or not float(fill.ravel()[0]) <= -1e4:
                return False
        elif op == "Reshape" and slot == 0:
            before, after = ctx.shape(v), ctx.shape(node.outputs[0])
            if not before or not after or before[-1] != after[-1] or not isinstance(after[-1], int):
                return False
        elif op not in ("Add", "Sub"):
            return False
        v = node.outputs[0]
    return False


def join_weighted(ctx: AnalysisContext, p: np.ndarray, v: np.ndarray) -> None:
    """Couple P's (heads,) ids with v's (heads, width) ids, head by head."""
    for r in range(v.shape[0]):
        ctx.union(np.full(v.shape[1], p[r]), v[r])


def scores_const(cq: np.ndarray, ck: np.ndarray) -> np.ndarray:
    """A removed head's scores: the sum over its d of q's times k's constants."""
    return np.sum(cq * ck, axis=1)


def weighted_const(cp: np.ndarray, cv: np.ndarray, summed: int, rows_sum_to_one: bool) -> np.ndarray:
    """A removed head's output: v's constant when P's rows sum to 1, else P's constant times
    v's, ``summed`` times."""
    return cv.copy() if rows_sum_to_one else cp[:, None] * float(summed) * cv


def softmax_over(v: ir.Value, axis: int, rank: int, opset: int = 13) -> bool:
    """``v`` is a Softmax output normalised over ``axis`` (its rows there sum to 1). Without an
    ``axis`` attribute a Softmax normalises over the last axis from opset 13, and over all the
    axes from 1 on before it (the last one alone only at rank 2)."""
    p = v.producer()
    if p is None or p.op_type != "Softmax" or rank < 1:
        return False
    a = p.attributes.get("axis")
    return (a.as_int() if a is not None else (-1 if opset >= 13 else 1)) % rank == axis % rank


def tie_dims_across_heads(ctx: AnalysisContext, *rows: np.ndarray) -> None:
    """Dim j of every head (of every (heads, d) array given) becomes one element: a fused op keeps
    one head size, so the same dims go from each head."""
    first = rows[0][0]
    for ids in rows:
        for row in ids:
            ctx.union(first, row)
