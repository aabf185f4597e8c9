"""Einsum: followed for the two products of attention written as einsums (MaxViT, some tf2onnx
and hand-written exports); any other equation keeps its channels.

- scores, ``...hid,...hjd->...hij``: q and k tracked on a head label ``h`` (kept in the output)
  and a contracted label ``d``. Each head's q and k channels are one element, as in
  ``MatMul``'s attention case, and the scores carry ``h``.
- weighted sum, ``...hij,...hjd->...hid``: P tracked on ``h`` only, v on ``h`` and ``d`` (both
  kept): P's head joins v's head, and the output carries v's channels.

Removing a whole head is exact for the same reason as with MatMul: constant scores, softmax
rows that sum to 1, and v's constant out.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxcompress.channels.protocols import AnalysisContext, Outcome, RewriteContext
from onnxcompress.channels.rules import Rule, register
from onnxcompress.channels.rules.heads import join_scores, join_weighted, scores_const, softmax_over, weighted_const
from onnxcompress.channels.state import ChannelInfo

REASON = "Einsum contracts axes we do not track (only attention's two products are followed)"


def parse(equation: str) -> tuple[list[str], str] | None:
    """Input label strings and output labels of an explicit equation without ellipses."""
    eq = equation.replace(" ", "")
    if "->" not in eq or "." in eq:
        return None
    lhs, out = eq.split("->")
    ins = lhs.split(",")
    if any(len(set(x)) != len(x) for x in [*ins, out]):
        return None  # a repeated label takes a diagonal
    return ins, out


def _labels(info, labels: str) -> list[str]:
    return [labels[a] for a in info.axes]


def _by(info, labels: str, order: list[str], arr: np.ndarray | None = None) -> np.ndarray:
    """``info.ids`` (or ``arr``, laid out like them) with its dims in the label order ``order``."""
    have = _labels(info, labels)
    return np.transpose(info.ids if arr is None else arr, [have.index(x) for x in order])


def _equation(node: ir.Node) -> str:
    a = node.attributes.get("equation")
    return a.as_string() if a is not None else ""


@register("Einsum")
class EinsumRule(Rule):
    def propagate(self, node: ir.Node, ctx: AnalysisContext) -> Outcome | None:
        parsed = parse(_equation(node))
        infos = [ctx.get(v) for v in node.inputs]
        if parsed is None or len(node.inputs) != 2 or any(i is None for i in infos):
            return ctx.block(node, REASON)
        (la, lb), lo = parsed
        a, b = infos
        ta, tb = _labels(a, la), _labels(b, lb)
        if len(ta) == 2 and sorted(ta) == sorted(tb):
            h = next((x for x in ta if x in lo), None)
            d = next((x for x in ta if x not in lo), None)
            if h is None or d is None:
                return ctx.block(node, REASON)
            qa, kb = _by(a, la, [h, d]), _by(b, lb, [h, d])
            if qa.shape != kb.shape:
                return ctx.block(node, REASON)
            ctx.set(node.outputs[0], ChannelInfo((lo.index(h),), join_scores(ctx, qa, kb)))
            return None
        if len(ta) == 1 and len(tb) == 2 and ta[0] in tb and ta[0] in lo and all(x in lo for x in tb):
            h = ta[0]
            e = next(x for x in tb if x != h)
            vb = _by(b, lb, [h, e])
            if vb.shape[0] != a.ids.shape[0]:
                return ctx.block(node, REASON)
            join_weighted(ctx, a.ids, vb)
            axes = sorted((lo.index(h), lo.index(e)))
            ids = vb if lo.index(h) < lo.index(e) else vb.T
            ctx.set(node.outputs[0], ChannelInfo(tuple(axes), ids.copy()))
            return None
        return ctx.block(node, REASON)

    def const_eval(self, node: ir.Node, app: RewriteContext) -> None:
        (la, lb), lo = parse(_equation(node))
        out = app.channels(node.outputs[0])
        ia, ib = app.channels(node.inputs[0]), app.channels(node.inputs[1])
        ca, cb = app.const_of(node.inputs[0]), app.const_of(node.inputs[1])
        if len(out.axes) == 1:  # scores: a head's sum over d of q * k
            h = lo[out.axes[0]]
            d = next(x for x in _labels(ia, la) if x != h)
            app.set_const(node.outputs[0], scores_const(_by(ia, la, [h, d], ca), _by(ib, lb, [h, d], cb)))
            return
        h = _labels(ia, la)[0]
        e = next(x for x in _labels(ib, lb) if x != h)
        vb = _by(ib, lb, [h, e], cb)
        j = next(x for x in la if x not in lo)  # the label summed over
        val = weighted_const(ca, vb, app.shape(node.inputs[0])[la.index(j)],
                             softmax_over(node.inputs[0], la.index(j), len(la)))
        app.set_const(node.outputs[0], val if lo.index(h) < lo.index(e) else val.T)
