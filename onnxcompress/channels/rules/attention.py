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
from onnxcompress.channels.rules.heads import join_scores, join_weighted, tie_rows
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
        tie_rows(ctx, ids)  # a head goes whole
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


def _projected_macs(node: ir.Node, shapes: dict) -> int:
    q, k = shapes.get(node.inputs[0].name), shapes.get(node.inputs[1].name)
    if q is None or k is None or len(q) != 3 or len(k) != 3:
        return 0
    return 2 * int(q[0]) * int(q[1]) * int(k[1]) * int(q[2])  # scores and P @ V


class ProjectedAttentionRule(Rule):
    """Attention over q, k and v projected outside the op, (B, S, H*d) each: onnxruntime's
    ``com.microsoft::MultiHeadAttention`` and ``GroupQueryAttention``, and ``ai.onnx::Attention``
    (opset 23) in its 3-D form.

    Channel h*d+j of q and of k are one element, and a head's channels go whole together with
    v's head; the output carries v's channels. Removing a head is exact as in the unfused form
    (constant scores, rows of the softmax summing to 1, output v's constant). With grouped
    queries (H_q = g * H_kv heads; q head h attends with k and v head h // g) a kv head goes
    whole with its g q heads, and the output carries each v head g times. The head count
    attributes are rewritten. Inputs that carry per-head values it does not slice (a per-head
    bias or mask, a key-value cache) keep the heads whole. Rotary embeddings turn dims within a
    head, so whole heads still go exactly.
    """

    #: the attributes that count q's heads and k's and v's (the same one without grouped queries),
    #: and the input indices that must be absent or head-free
    q_heads_attr: str = "num_heads"
    kv_heads_attr: str = "num_heads"
    cache_inputs: tuple[int, ...] = ()
    per_head_inputs: tuple[int, ...] = ()

    def macs(self, node: ir.Node, shapes: dict) -> int:
        return _projected_macs(node, shapes)

    def _heads(self, node: ir.Node) -> tuple[int, int] | None:
        """(q heads, kv heads), or None when they are missing or q's are not a multiple of kv's."""
        q = _int(node, self.q_heads_attr)
        kv = _int(node, self.kv_heads_attr) if node.attributes.get(self.kv_heads_attr) is not None else q
        return (q, kv) if q > 0 and kv > 0 and q % kv == 0 else None

    def _unsupported(self, node: ir.Node, ctx: AnalysisContext) -> str | None:
        qkv = node.inputs[:3]
        if len(qkv) < 3 or any(v is None or ctx.rank(v) != 3 for v in qkv):
            return f"{node.op_type} without 3-D q, k and v inputs (packed or 4-D forms are not followed)"
        if self._heads(node) is None:
            return f"{node.op_type} with head counts we cannot group (q's not a multiple of k's and v's)"
        for i in self.cache_inputs:
            if len(node.inputs) > i and node.inputs[i] is not None:
                return f"{node.op_type} with a key-value cache"
        for i in self.per_head_inputs:
            s = ctx.shape(node.inputs[i]) if len(node.inputs) > i and node.inputs[i] is not None else None
            if s is not None and len(s) == 4 and s[1] != 1:
                return f"{node.op_type} with a per-head bias or mask"
            if len(node.inputs) > i and node.inputs[i] is not None and s is None:
                return f"{node.op_type} with a bias or mask of unknown shape"
        if any(o.uses() or o.is_graph_output() for o in node.outputs[1:]):
            return f"{node.op_type} whose cache or scores output is read"
        return None

    def propagate(self, node: ir.Node, ctx: AnalysisContext) -> Outcome | None:
        reason = self._unsupported(node, ctx)
        infos = [ctx.get(v) for v in node.inputs[:3]]
        if reason is None and any(i is None or i.axes != (2,) for i in infos):
            reason = f"{node.op_type} with q, k or v channels we do not track"
        if reason is not None:
            return ctx.block(node, reason)
        q, k, v = infos
        hq, hkv = self._heads(node)
        g = hq // hkv
        if q.ids.size != g * k.ids.size or q.ids.size % hq or k.ids.size % hkv or v.ids.size % hkv:
            return ctx.block(node, f"{node.op_type} with q, k and v widths that do not split into heads")
        # each kv head serves g q heads: repeated, it joins each of them (a group goes whole)
        v_rows = np.repeat(v.ids.reshape(hkv, -1), g, axis=0)
        scores = join_scores(ctx, q.ids.reshape(hq, -1), np.repeat(k.ids.reshape(hkv, -1), g, axis=0))
        join_weighted(ctx, scores, v_rows)
        bias = self._bias(node)
        if bias is not None:
            if g != 1 or not ctx.is_const(bias) or ctx.shape(bias) != (q.ids.size + k.ids.size + v.ids.size,):
                return ctx.block(node, f"{node.op_type} with a bias that is not one q|k|v vector")
            ctx.add_slot(node, bias, 0, np.concatenate([q.ids, k.ids, v.ids]), "param")
        ctx.set(node.outputs[0], ChannelInfo((2,), v_rows.ravel()))
        return None

    def _bias(self, node: ir.Node) -> ir.Value | None:
        return None

    def const_eval(self, node: ir.Node, app: RewriteContext) -> None:
        """A removed head outputs v's constant (plus its part of the bias), once per q head it serves."""
        cv = app.const_of(node.inputs[2])
        bias = self._bias(node)
        if bias is not None:
            b = app.tensor(bias).astype(np.float64)
            cv = cv + b[b.size - cv.size:]
        hq, hkv = self._heads(node)
        app.set_const(node.outputs[0], np.repeat(cv.reshape(hkv, -1), hq // hkv, axis=0).ravel())

    def rewrite(self, node: ir.Node, app: RewriteContext) -> None:
        hq, hkv = self._heads(node)
        d_v = app.channels(node.outputs[0]).ids.size // hq
        kept_q = app.kept_count(node.outputs[0]) // d_v
        node.attributes[self.q_heads_attr] = ir.AttrInt64(self.q_heads_attr, int(kept_q))
        if node.attributes.get(self.kv_heads_attr) is not None:
            node.attributes[self.kv_heads_attr] = ir.AttrInt64(self.kv_heads_attr, int(kept_q // (hq // hkv)))


@register("MultiHeadAttention", domain="com.microsoft")
class MultiHeadAttentionRule(ProjectedAttentionRule):
    cache_inputs = (6, 7, 8, 9)
    per_head_inputs = (5,)

    def _bias(self, node: ir.Node) -> ir.Value | None:
        return node.inputs[3] if len(node.inputs) > 3 else None


@register("GroupQueryAttention", domain="com.microsoft")
class GroupQueryAttentionRule(ProjectedAttentionRule):
    """onnxruntime's grouped-query attention (LLM exports): query (B, S, H_q*d), key and value
    (B, S, H_kv*d), optional past key and value, sequence lengths, rotary caches. Without a past
    cache, whole kv groups go; with one (or a read present cache, a per-head bias or head sink)
    the heads stay, since a cache's heads are the caller's to feed."""

    kv_heads_attr = "kv_num_heads"
    cache_inputs = (3, 4)
    per_head_inputs = (10,)

    def _unsupported(self, node: ir.Node, ctx: AnalysisContext) -> str | None:
        if len(node.inputs) > 11 and node.inputs[11] is not None:
            return "GroupQueryAttention with a per-head sink"
        return super()._unsupported(node, ctx)

    def rewrite(self, node: ir.Node, app: RewriteContext) -> None:
        super().rewrite(node, app)
        for present in node.outputs[1:]:  # unread, and now with fewer kv heads
            present.shape = None


@register("Attention", since=23)
class OnnxAttentionRule(ProjectedAttentionRule):
    q_heads_attr = "q_num_heads"
    kv_heads_attr = "kv_num_heads"
    cache_inputs = (4, 5)
    per_head_inputs = (3,)
