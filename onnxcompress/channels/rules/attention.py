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

With ``--attention dims`` every head stays and the same dims go from each (the op keeps one
head size): q's dim j with k's, which shifts every score of a row by one constant that the
softmax drops, and v's dims apart, which the output carries. ``qkv_hidden_sizes`` is rewritten
to the new q, k and v widths, and ``scale`` is pinned to the original 1/sqrt(d), which the op
would otherwise recompute from the smaller head.

What the rule does not follow, and keeps whole: q and k of different widths, rotary
embeddings, a per-head attention bias, and past/present key-value caches.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxcompress.channels.protocols import AnalysisContext, Outcome, RewriteContext
from onnxcompress.channels.rules import Rule, register
from onnxcompress.channels.rules.consumer import ConsumerHooks, FoldContext, add_to_bias_input
from onnxcompress.channels.rules.heads import join_scores, join_weighted, tie_dims_across_heads, tie_each_row, tie_rows
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
    sizes = node.attributes.get("qkv_hidden_sizes")
    q, _, v = sizes.as_ints() if sizes is not None else [int(w[1]) // 3] * 3
    return b * s * k * int(w[1]) + b * s * s * (q + v)  # projections, then scores and P @ V


@register("Attention", domain="com.microsoft")
class FusedAttentionRule(Rule):
    always = True
    consumer = FusedAttentionConsumer()

    def macs(self, node: ir.Node, shapes: dict) -> int:
        return _attention_macs(node, shapes)

    def _unsupported(self, node: ir.Node, ctx: AnalysisContext) -> str | None:
        if not ctx.is_const(node.inputs[1]) or len(node.inputs) < 3 or not ctx.is_const(node.inputs[2]):
            return "fused Attention with run-time weights or no bias"
        if _int(node, "do_rotary"):
            return "fused Attention with rotary embeddings"
        if any(v is not None for v in node.inputs[4:]):
            return "fused Attention with a key-value cache or a per-head attention bias"
        if any(o.uses() or o.is_graph_output() for o in node.outputs[1:]):
            return "fused Attention whose key-value cache is read"
        if self._head_sizes(node, ctx) is None:
            return "fused Attention with weights we cannot split into heads (or q's and k's widths differ)"
        return None

    @staticmethod
    def _head_sizes(node: ir.Node, ctx: AnalysisContext) -> tuple[int, int] | None:
        """(q's and k's head size, v's), from ``qkv_hidden_sizes`` (q = k, v may differ: a model
        written by ``--attention dims``) or a third of the weight's width each."""
        w, heads = ctx.shape(node.inputs[1]), _int(node, "num_heads")
        if w is None or len(w) != 2 or heads < 1:
            return None
        a = node.attributes.get("qkv_hidden_sizes")
        q, k, v = a.as_ints() if a is not None else [w[1] // 3] * 3
        if q != k or q + k + v != w[1] or q % heads or v % heads:
            return None
        return q // heads, v // heads

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
        d_qk, d_v = self._head_sizes(node, ctx)
        qk, v = ctx.fresh((heads, d_qk), source=True), ctx.fresh((heads, d_v), source=True)
        if ctx.attention == "dims":
            tie_dims_across_heads(ctx, qk)
            tie_dims_across_heads(ctx, v)
        else:  # a head goes whole: its q, k and v columns are one element
            tie_rows(ctx, qk)
            tie_each_row(ctx, v)
            ctx.union(qk[:, 0], v[:, 0])
        if ctx.excluded(node):
            ctx.fix(np.concatenate([qk.ravel(), v.ravel()]), node, "excluded by --exclude")
        columns = np.concatenate([qk.ravel(), qk.ravel(), v.ravel()])  # q | k | v
        ctx.add_slot(node, node.inputs[1], 1, columns, "out")
        ctx.add_slot(node, node.inputs[2], 0, columns.copy(), "bias")
        ctx.set(node.outputs[0], ChannelInfo((2,), v.ravel().copy()))
        return None

    def const_eval(self, node: ir.Node, app: RewriteContext) -> None:
        """A removed head outputs v's bias (zero with --zero-bias)."""
        out = node.outputs[0]
        ids = app.channels(out).ids
        bias = app.tensor(node.inputs[2]).astype(np.float64)
        v_bias = bias[bias.size - ids.size:] if not app.zero_bias else np.zeros(ids.size)
        app.set_const(out, np.where(app.removed(ids), v_bias, np.nan))

    def rewrite(self, node: ir.Node, app: RewriteContext) -> None:
        """Whole heads: fewer heads. Dims: every head, smaller (q and k from the cut weight's width)."""
        heads = _int(node, "num_heads")
        keep = app.keep_mask(node.outputs[0]).reshape(heads, -1)
        old = node.attributes.get("qkv_hidden_sizes")
        d = (old.as_ints()[0] if old is not None else keep.size) // heads  # q's and k's head size before
        kept = int(keep[:, 0].sum()) if (keep == keep[:, :1]).all() else heads
        d_v = int(keep.sum()) // kept
        d_qk = (int(app.tensor(node.inputs[1]).shape[1]) - kept * d_v) // (2 * kept)
        node.attributes["num_heads"] = ir.AttrInt64("num_heads", kept)
        if old is not None or (d_qk, d_v) != (d, keep.shape[1]):
            sizes = [kept * d_qk, kept * d_qk, kept * d_v]
            node.attributes["qkv_hidden_sizes"] = ir.AttrInt64s("qkv_hidden_sizes", sizes)
        pin_scale(node, d, d_qk)


def pin_scale(node: ir.Node, d: int, d_qk: int) -> None:
    """Keep the scores' scale 1/sqrt(d) where q's and k's head size shrank from d to ``d_qk``:
    the op's default scale would follow the new size."""
    scale = node.attributes.get("scale")
    if d_qk != d and (scale is None or scale.as_float() == 0.0):
        node.attributes["scale"] = ir.AttrFloat32("scale", float(1.0 / np.sqrt(d)))


def _projected_macs(node: ir.Node, shapes: dict) -> int:
    q, k, out = (shapes.get(v.name) if v is not None else None for v in (node.inputs[0], node.inputs[1], node.outputs[0]))
    if q is None or k is None or len(q) != 3 or len(k) != 3:
        return 0
    out_width = int(out[2]) if out is not None and len(out) == 3 else int(q[2])
    return int(q[0]) * int(q[1]) * int(k[1]) * (int(q[2]) + out_width)  # scores, then P @ V


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

    With ``--attention dims`` (not GroupQueryAttention, whose q, k and v share one head size, nor
    a softcap) every head stays: dim j of every q and k head is one element, and v's dims another
    set; the head counts stay and ``scale`` is pinned to the original 1/sqrt(d).
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
        if ctx.attention == "dims" and self._dims_reason(node, ctx) is None:
            tie_dims_across_heads(ctx, q.ids.reshape(hq, -1), k.ids.reshape(hkv, -1))
            tie_dims_across_heads(ctx, v.ids.reshape(hkv, -1))
        else:
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

    def _dims_reason(self, node: ir.Node, ctx: AnalysisContext) -> str | None:
        """Why ``--attention dims`` falls back to whole heads here (None: it does not)."""
        softcap = node.attributes.get("softcap")
        if softcap is not None and softcap.as_float() != 0.0:
            return "a softcap (tanh) between the scores and the softmax does not pass a constant shift"
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
        """Whole heads: fewer heads. Dims: every head, with q's and k's head size pinned in ``scale``."""
        hq, hkv = self._heads(node)
        keep = app.keep_mask(node.inputs[0]).reshape(hq, -1)
        kept_q = int(keep[:, 0].sum()) if (keep == keep[:, :1]).all() else hq
        node.attributes[self.q_heads_attr] = ir.AttrInt64(self.q_heads_attr, kept_q)
        if node.attributes.get(self.kv_heads_attr) is not None:
            node.attributes[self.kv_heads_attr] = ir.AttrInt64(self.kv_heads_attr, kept_q // (hq // hkv))
        pin_scale(node, keep.shape[1], int(keep.sum()) // kept_q)


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

    def _dims_reason(self, node: ir.Node, ctx: AnalysisContext) -> str | None:
        return "GroupQueryAttention has one head size for q, k and v (and its CPU kernel wants multiples of 16)"

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
