"""What attention's two products mean for channels, shared by every op that computes them
(MatMul, Einsum, onnxruntime's fused ops): the rules decide which axes hold heads, these
helpers couple the elements and carry a removed head's constants.

- scores = q . k over d: a head's q and k channels are one element, the scores carry the head;
- out = P @ v: P's head joins v's head, the output carries v's channels.

A removed head's q, k and v are per-channel constants, so its scores are one constant and,
after a softmax (whose rows sum to 1 whatever is added to the scores), its output is v's.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxcompress.channels.protocols import AnalysisContext


def tie_rows(ctx: AnalysisContext, ids: np.ndarray) -> None:
    """Each row of (heads, width) ids becomes one element: a head goes whole."""
    ctx.mark_heads(ids[:, 0])
    for row in ids:
        ctx.union(np.full(row.size - 1, row[0]), row[1:])


def join_scores(ctx: AnalysisContext, q: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Couple (heads, d) ids of q and k; the scores' ids, one per head."""
    ctx.union(q, k)
    tie_rows(ctx, q)
    return q[:, 0].copy()


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


def softmax_over(v: ir.Value, axis: int, rank: int) -> bool:
    """``v`` is a Softmax output normalised over ``axis`` (its rows there sum to 1)."""
    p = v.producer()
    if p is None or p.op_type != "Softmax" or rank < 1:
        return False
    a = p.attributes.get("axis")
    return (a.as_int() if a is not None else -1) % rank == axis % rank
