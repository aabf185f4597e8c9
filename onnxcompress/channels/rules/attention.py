"""onnxruntime's fused ``com.microsoft::Attention``: whole heads are its prunable output channels.

``Attention(input (B, S, K), weights (K, 3*H*d), bias (3*H*d), mask_index, ...)`` projects q, k
and v with one weight (columns q | k | v, head by head), attends per head and returns the heads
side by side, (B, S, H*d). onnxruntime's transformer optimizer writes it for BERT-style models.

- Output side: each head is one element, whose filters are its d columns in each of q, k and v
  (the same ids three times along the weight's and the bias's last axis). Removing a head is
  exact: with its columns gone its q, k and v are the bias, its softmax rows still sum to 1, so
  its output is v's bias, which folds into the next projection like any removed channel.
  ``num_heads`` is rewritten to the kept count.
- Input side: like MatMul, it reads its input channels through the weight's rows; a removed
  input channel's constant folds into the bias. It is not refit (its output is not x @ W).

What the rule does not follow, and keeps whole: unequal ``qkv_hidden_sizes``, rotary
embeddings, a per-head attention bias, and past/present key-value caches.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxcompress.channels.protocols import AnalysisContext, Outcome, RewriteContext
from onnxcompress.channels.rules import Rule, register
from onnxcompress.channels.rules.consumer import ConsumerHooks, FoldContext, add_to_bias_input
from onnxcompress.channels.state import ChannelInfo


class FusedAttentionConsumer(ConsumerHooks):
    """The removed input channels' constants go into the q/k/v bias; no least-squares refit."""

    def add_bias(self, app: FoldContext, node: ir.Node, delta: np.ndarray) -> None:
        add_to_bias_input(app, node, delta)

    def refit_reason(self, node: ir.Node) -> str | None:
        return "fused Attention (its output is not input @ weights; not refit)"


def _int(node: ir.Node, name: str, default: int = 0) -> int:
    a = node.attributes.get(name)
    return a.as_int() if a is not None else default


def _attention_macs(node: ir.Node, shapes: dict) -> int:
    x, w = shapes.get(node.inputs[0].name), shapes.get(node.inputs[1].name)
    if x is None or w is None or len(x) != 3:
        return 0
    b, s, k = (int(v) for v in x)
    hidden = int(w[1]) // 3
    return b * s * k * 3 * hidden + 2 * b * s * s * hidden  # projections, then scores and P @ V


@register("Attention", domain="com.microsoft")
class FusedAttentionRule(Rule):
    always = True
    consumer = FusedAttentionConsumer()

    def macs(self, node: ir.Node, shapes: dict) -> int:
        return _attention_macs(node, shapes)

    def _unsupported(self, node: ir.Node, ctx: AnalysisContext) -> str | None:
        if not ctx.is_const(node.inputs[1]) or len(node.inputs) < 3 or not ctx.is_const(node.inputs[2]):
            return "fused Attention with run-time weights or no bias"
        sizes = node.attributes.get("qkv_hidden_sizes")
        if sizes is not None and len(set(sizes.as_ints())) > 1:
            return "fused Attention with unequal qkv_hidden_sizes"
        if _int(node, "do_rotary"):
            return "fused Attention with rotary embeddings"
        if any(v is not None for v in node.inputs[4:]):
            return "fused Attention with a key-value cache or a per-head attention bias"
        if any(o.uses() or o.is_graph_output() for o in node.outputs[1:]):
            return "fused Attention whose key-value cache is read"
        w = ctx.shape(node.inputs[1])
        heads = _int(node, "num_heads")
        if w is None or len(w) != 2 or heads < 1 or w[1] % (3 * heads):
            return "fused Attention with weights we cannot split into heads"
        return None

    def propagate(self, node: ir.Node, ctx: AnalysisContext) -> Outcome | None:
        info = ctx.get(node.inputs[0])
        reason = self._unsupported(node, ctx)
        if reason is not None:
            return ctx.block(node, reason) if info is not None else None
        if info is not None:
            if info.axes != (2,):
                return ctx.block(node, "fused Attention input channels are not on its last axis")
            ctx.add_slot(node, node.inputs[1], 0, info.ids, "in")
        heads = _int(node, "num_heads")
        d = ctx.shape(node.inputs[1])[1] // (3 * heads)
        ids = ctx.fresh((heads, d), source=True)
        for h in range(heads):  # a head goes whole
            ctx.union(np.full(d - 1, ids[h, 0]), ids[h, 1:])
        if ctx.excluded(node):
            ctx.fix(ids, node, "excluded by --exclude")
        flat = ids.ravel()
        ctx.add_slot(node, node.inputs[1], 1, np.concatenate([flat, flat, flat]), "out")
        ctx.add_slot(node, node.inputs[2], 0, np.concatenate([flat, flat, flat]), "bias")
        ctx.set(node.outputs[0], ChannelInfo((2,), flat.copy()))
        return None

    def const_eval(self, node: ir.Node, app: RewriteContext) -> None:
        """A removed head outputs v's bias (zero with --zero-bias)."""
        out = node.outputs[0]
        ids = app.channels(out).ids
        bias = app.tensor(node.inputs[2]).astype(np.float64)
        v_bias = bias[2 * ids.size:] if not app.zero_bias else np.zeros(ids.size)
        app.set_const(out, np.where(app.removed(ids), v_bias, np.nan))

    def rewrite(self, node: ir.Node, app: RewriteContext) -> None:
        ids = app.channels(node.outputs[0]).ids
        heads = _int(node, "num_heads")
        d = ids.size // heads
        kept = app.kept_count(node.outputs[0]) // d
        node.attributes["num_heads"] = ir.AttrInt64("num_heads", int(kept))
        sizes = node.attributes.get("qkv_hidden_sizes")
        if sizes is not None:
            node.attributes["qkv_hidden_sizes"] = ir.AttrInt64s("qkv_hidden_sizes", [int(kept * d)] * 3)
