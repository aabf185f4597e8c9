"""onnxruntime's fused LayerNorms of a transformer's residual stream (its BERT optimizer writes them).

- ``SkipLayerNormalization(input, skip, gamma, beta?, bias?)`` = LayerNorm(input + skip + bias),
  with the sum as an optional fourth output; ``SkipSimplifiedLayerNormalization`` is its RMSNorm.
  The input and the skip are one stream: their channels are coupled, and the bias, scale and
  shift are per-channel slots.
- ``EmbedLayerNormalization(ids, segment ids, word, position, segment tables, gamma, beta, ...)``
  = LayerNorm(word[ids] + position[pos] + segment[seg]): the stream's source. Each of the
  tables' columns is a filter of it (as an unfused embedding Gather's is).

Both normalise over the channels, so removing stream channels is lossy, as for
``LayerNormalization`` (``norm.ChannelStatisticsRule``): calibration must justify it, and the
sensitivity model runs them over the kept channels only (``simulate``).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from onnx import helper as oh

from onnxcompress.channels.protocols import AnalysisContext, Lossy, Outcome
from onnxcompress.channels.rules import register
from onnxcompress.channels.rules.norm import LAYERNORM_LOSS, ChannelStatisticsRule, norm_over_kept, per_channel_params
from onnxcompress.channels.state import ChannelInfo


def _used(v: ir.Value | None) -> bool:
    return v is not None and (bool(v.uses()) or v.is_graph_output())


class _StreamNorm(ChannelStatisticsRule):
    #: the outputs that hold per-row statistics (mean, inverse deviation), which must stay unread
    statistics_outputs: tuple[int, ...] = ()

    def _finish(self, node: ir.Node, ctx: AnalysisContext, ids: np.ndarray, rank: int, sum_output: int) -> Outcome | None:
        """Statistics outputs unread, the normalised output (and the sum, where read) carry ``ids``."""
        stats = [o for i, o in enumerate(node.outputs) if i in self.statistics_outputs]
        if any(_used(o) for o in stats):
            return ctx.block(node, f"{node.op_type}'s mean or inverse-deviation output is used")
        info = ChannelInfo((rank - 1,), ids)
        ctx.set(node.outputs[0], info)
        if len(node.outputs) > sum_output and _used(node.outputs[sum_output]):
            ctx.set(node.outputs[sum_output], info)
        return Lossy(f"{node.op_type}: {LAYERNORM_LOSS}")

    @staticmethod
    def _eps(pnode: onnx.NodeProto) -> float:
        return next((a.f for a in pnode.attribute if a.name == "epsilon"), 1e-12)


@register("SkipLayerNormalization", "SkipSimplifiedLayerNormalization", domain="com.microsoft")
class SkipLayerNormRule(_StreamNorm):
    """LayerNorm(input + skip + bias) of a channels-last stream; output 3 is the sum."""

    statistics_outputs = (1, 2)

    def propagate(self, node: ir.Node, ctx: AnalysisContext) -> Outcome | None:
        a, b = ctx.get(node.inputs[0]), ctx.get(node.inputs[1])
        if a is None and b is None:
            return None
        rank, skip_rank = ctx.rank(node.outputs[0]), ctx.rank(node.inputs[1])
        if a is None or b is None or rank is None or skip_rank is None or a.axes != (rank - 1,) \
                or b.axes != (skip_rank - 1,) or a.ids.shape != b.ids.shape:
            return ctx.block(node, f"{node.op_type} whose input and skip do not both carry the stream's channels "
                                   "on their last axis")
        ctx.union(a.ids, b.ids)
        centred = node.op_type == "SkipLayerNormalization"  # the simplified form has no shift: (gamma, bias)
        why = per_channel_params(node, ctx, (2, 3, 4) if centred else (2, 3), a.ids)
        if why is not None:
            return ctx.block(node, why)
        return self._finish(node, ctx, a.ids, rank, sum_output=3)

    def simulate(self, pnode: onnx.NodeProto, mask: str, factor: str, axis: int, opset: int,
                 dtype: np.dtype) -> list[onnx.NodeProto]:
        """The sum, then the norm over the kept channels; the sum is output 3 where there is one."""
        ins = list(pnode.input) + [""] * 5
        centred = pnode.op_type == "SkipLayerNormalization"
        bias = ins[4] if centred else ins[3]
        s = f"{pnode.output[0]}__skip_sum"
        nodes = [oh.make_node("Add", [ins[0], ins[1]], [s + "0" if bias else s])]
        if bias:
            nodes.append(oh.make_node("Add", [s + "0", bias], [s]))
        nodes += norm_over_kept(s, ins[2], ins[3] if centred else "", pnode.output[0], self._eps(pnode), centred,
                                mask, factor, axis, opset, dtype)
        if len(pnode.output) > 3 and pnode.output[3]:
            nodes.append(oh.make_node("Identity", [s], [pnode.output[3]]))
        return nodes


@register("EmbedLayerNormalization", domain="com.microsoft")
class EmbedLayerNormRule(_StreamNorm):
    """The stream's source: word, position (and segment) table columns are its filters; output 2 is the sum."""

    TABLES = (2, 3, 4)
    #: a source: it runs with no tracked input (its inputs are token ids)
    always = True

    def propagate(self, node: ir.Node, ctx: AnalysisContext) -> Outcome | None:
        word = ctx.const(node.inputs[2])
        if word is None or word.ndim != 2:
            return ctx.block(node, "EmbedLayerNormalization with a run-time word table")
        ids = ctx.fresh(word.shape[1], source=True)
        if ctx.excluded(node):
            ctx.fix(ids, node, "excluded by --exclude")
        for i in self.TABLES:
            t = node.inputs[i] if len(node.inputs) > i else None
            if t is None:
                continue
            c = ctx.const(t)
            if c is None or c.ndim != 2 or c.shape[1] != ids.size:
                return ctx.block(node, "EmbedLayerNormalization with a table that is not a constant (rows, width)")
            ctx.add_slot(node, t, 1, ids, "out")
        why = per_channel_params(node, ctx, (5, 6), ids)
        if why is not None:
            return ctx.block(node, why)
        return self._finish(node, ctx, ids, 3, sum_output=2)

    def simulated_value(self, node: ir.Node) -> ir.Value:
        """The value whose channels the sensitivity model masks here: the output (the inputs are ids)."""
        return node.outputs[0]

    def simulate(self, pnode: onnx.NodeProto, mask: str, factor: str, axis: int, opset: int,
                 dtype: np.dtype) -> list[onnx.NodeProto]:
        """The op itself for the embedding sum (and the mask index), then the norm over the kept channels."""
        s = f"{pnode.output[0]}__embed_sum"
        op = onnx.NodeProto()
        op.CopyFrom(pnode)
        del op.output[:]
        op.output.extend([f"{pnode.output[0]}__embed_full", pnode.output[1] if len(pnode.output) > 1 else "", s])
        nodes = [op, *norm_over_kept(s, pnode.input[5], pnode.input[6], pnode.output[0], self._eps(pnode), True,
                                     mask, factor, axis, opset, dtype)]
        if len(pnode.output) > 2 and pnode.output[2]:
            nodes.append(oh.make_node("Identity", [s], [pnode.output[2]]))
        return nodes
