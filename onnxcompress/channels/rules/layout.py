"""Ops that move channels around: Concat, Split, Slice, Flatten, Transpose, (Un)Squeeze, Gather
(Reshape lives in ``reshape.py``).

Each rule builds a *recipe*: a pure function from the input channel arrays to the output
ones (concatenate, slice, repeat, reshape, transpose). Propagation runs it on element ids;
remove mode runs it again on the removed channels' constants, so both stay in step.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxcompress.channels.protocols import AnalysisContext, ConstantReader, Outcome, RewriteContext
from onnxcompress.channels.rules import Rule, register
from onnxcompress.channels.state import ChannelInfo


def _ints_attr(node: ir.Node, name: str):
    a = node.attributes.get(name)
    return list(a.as_ints()) if a is not None else None


def _int_attr(node: ir.Node, name: str, default: int) -> int:
    a = node.attributes.get(name)
    return a.as_int() if a is not None else default


def _norm(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


class LayoutRule(Rule):
    """Shared machinery: run the recipe on ids (fresh fixed ids fill untracked parts)."""

    def apply_recipe(self, node: ir.Node, ctx: AnalysisContext, recipe, axes_out: list[tuple[int, ...] | None]) -> None:
        arrays = [ctx.get(v).ids if ctx.get(v) is not None else None for v in node.inputs]
        outs = recipe(arrays, lambda shape: ctx.fresh(shape, fixed=True))
        ctx.record_recipe(node, recipe)
        for o, arr, axes in zip(node.outputs, outs, axes_out):
            if arr is not None and axes is not None:
                ctx.set(o, ChannelInfo(axes, arr))

    def const_eval(self, node: ir.Node, app: RewriteContext) -> None:
        recipe = app.recipe(node)
        if recipe is None:
            return super().const_eval(node, app)
        arrays = [app.const_of(v) if app.channels(v) is not None else None for v in node.inputs]
        outs = recipe(arrays, lambda shape: np.full(shape, np.nan))
        for o, arr in zip(node.outputs, outs):
            if app.channels(o) is not None and arr is not None:
                app.set_const(o, arr)


@register("Concat")
class ConcatRule(LayoutRule):
    def propagate(self, node: ir.Node, ctx: AnalysisContext) -> Outcome | None:
        rank = ctx.rank(node.outputs[0])
        axis = _norm(_int_attr(node, "axis", 0), rank)
        infos = [ctx.get(v) for v in node.inputs]
        tracked = [i for i in infos if i is not None]
        if any(len(i.axes) != 1 for i in tracked):
            return ctx.block(node, "Concat of a split channel axis")
        ch_axis = tracked[0].axes[0]
        if any(i.axes != (ch_axis,) for i in tracked):
            return ctx.block(node, "Concat of tensors with channels on different axes")
        if axis == ch_axis:
            sizes = []
            for v, i in zip(node.inputs, infos):
                s = ctx.shape(v)
                if i is None and s is None:
                    return ctx.block(node, "Concat input of unknown size")
                sizes.append(i.ids.size if i is not None else int(s[axis]))

            def recipe(arrays, fill, sizes=sizes):
                return [np.concatenate([a if a is not None else fill(n) for a, n in zip(arrays, sizes)])]

            self.apply_recipe(node, ctx, recipe, [(ch_axis,)])
            return
        # Concatenated along another axis: every input's channels must line up. A constant
        # input (a transformer's class token, a learned query) is per-channel: it shrinks too.
        rank_out = ctx.rank(node.outputs[0])
        for v, i in zip(node.inputs, infos):
            if i is None:
                if not _constant_rows(node, v, ctx, ch_axis, rank_out, tracked[0].ids):
                    return ctx.block(node, f"Concat along axis {axis} with an untracked tensor")
                continue
            ctx.union(tracked[0].ids, i.ids)
        ctx.set(node.outputs[0], tracked[0])


def _constant_rows(node: ir.Node, v: ir.Value, ctx: AnalysisContext, ch_axis: int, rank: int, ids: np.ndarray) -> bool:
    """Register a constant Concat input, or an Expand of one, as a per-channel parameter slot.

    The Expand's target shape must be computed at run time or say 1 on the channel axis, so
    that it follows the sliced constant by broadcasting.
    """
    reader, const_v = node, v
    prod = v.producer()
    if not ctx.is_const(v) and prod is not None and prod.op_type == "Expand" and ctx.is_const(prod.inputs[0]):
        target = ctx.const(prod.inputs[1])
        if target is not None:
            t_axis = target.size - (rank - ch_axis)
            if 0 <= t_axis < target.size and int(target.ravel()[t_axis]) not in (1, -1):
                return False
        reader, const_v = prod, prod.inputs[0]
    c = ctx.const(const_v)
    if c is None:
        return False
    caxis = c.ndim - (rank - ch_axis)
    if caxis < 0 or c.shape[caxis] != ids.size:
        return False
    ctx.add_slot(reader, const_v, caxis, ids, "param")
    return True


def _split_sizes(node: ir.Node, ctx: AnalysisContext, total: int) -> list[int] | None:
    sizes = _ints_attr(node, "split")
    if sizes is None and len(node.inputs) > 1 and node.inputs[1] is not None:
        c = ctx.const(node.inputs[1])
        if c is None:
            return None
        sizes = [int(x) for x in c.ravel()]
    if sizes is None:
        n = len(node.outputs)
        chunk = -(-total // n)
        sizes = [min(chunk, total - k * chunk) for k in range(n)]
    return sizes


@register("Split")
class SplitRule(LayoutRule):
    def propagate(self, node: ir.Node, ctx: AnalysisContext) -> Outcome | None:
        info = ctx.get(node.inputs[0])
        rank = ctx.rank(node.inputs[0])
        axis = _norm(_int_attr(node, "axis", 0), rank)
        if axis not in info.axes:
            for o in node.outputs:
                ctx.set(o, info)
            return
        if info.axes != (axis,):
            return ctx.block(node, "Split of a split channel axis")
        sizes = _split_sizes(node, ctx, info.ids.size)
        if sizes is None or sum(sizes) != info.ids.size:
            return ctx.block(node, "Split with run-time or inconsistent sizes")
        bounds = np.cumsum([0] + sizes)

        def recipe(arrays, fill, bounds=bounds):
            return [arrays[0][bounds[k] : bounds[k + 1]] for k in range(len(bounds) - 1)]

        self.apply_recipe(node, ctx, recipe, [(axis,)] * len(node.outputs))

    def rewrite(self, node: ir.Node, app: RewriteContext) -> None:
        info = app.channels(node.inputs[0])
        rank = len(app.shape(node.inputs[0]))
        axis = _norm(_int_attr(node, "axis", 0), rank)
        if info.axes != (axis,):
            return
        sizes = [int(app.kept_count(o)) for o in node.outputs]
        if app.opset >= 13:
            node.attributes.pop("num_outputs", None)
            app.set_input_const(node, 1, np.array(sizes, dtype=np.int64))
        else:
            node.attributes["split"] = ir.AttrInt64s("split", sizes)


@register("Slice")
class SliceRule(LayoutRule):
    def _params(self, node: ir.Node, ctx: ConstantReader):
        if "starts" in node.attributes:  # opset < 10
            starts, ends = _ints_attr(node, "starts"), _ints_attr(node, "ends")
            axes = _ints_attr(node, "axes") or list(range(len(starts)))
            return starts, ends, axes, [1] * len(starts)
        vals: list[list[int] | None] = []
        for k in range(1, 5):
            v = node.inputs[k] if len(node.inputs) > k else None
            if v is None:
                vals.append(None)
                continue
            c = ctx.const(v)
            if c is None:
                return None
            vals.append([int(x) for x in c.ravel()])
        starts, ends, axes, steps = vals
        axes = axes or list(range(len(starts)))
        steps = steps or [1] * len(starts)
        return starts, ends, axes, steps

    def propagate(self, node: ir.Node, ctx: AnalysisContext) -> Outcome | None:
        info = ctx.get(node.inputs[0])
        rank = ctx.rank(node.inputs[0])
        params = self._params(node, ctx)
        if params is None:
            return ctx.block(node, "Slice with run-time bounds")
        starts, ends, axes, steps = params
        axes = [_norm(a, rank) for a in axes]
        hit = [k for k, a in enumerate(axes) if a in info.axes]
        if not hit:
            ctx.set(node.outputs[0], info)
            return
        k = hit[0]
        if len(hit) == 1 and len(info.axes) > 1 and axes[k] == info.axes[0] and steps[k] == 1:
            return self._rows(node, ctx, info, starts[k], ends[k])
        if len(hit) > 1 or len(info.axes) != 1 or steps[k] != 1:
            return ctx.block(node, "Slice of channels with a step or on a split channel axis")
        n = info.ids.size
        lo, hi, _ = slice(starts[k], ends[k], 1).indices(n)

        def recipe(arrays, fill, lo=lo, hi=hi):
            return [arrays[0][lo:hi]]

        self.apply_recipe(node, ctx, recipe, [info.axes])

    def _rows(self, node: ir.Node, ctx: AnalysisContext, info, start: int, end: int) -> Outcome | None:
        """Rows of a split channel axis (paddle's ``qkv[0:1]``): rows are tied column by column,
        so none is ever removed and the bounds stay valid."""
        rows = info.ids.shape[0]
        for r in range(rows):
            ctx.union(info.ids[0], info.ids[r])
        lo, hi, _ = slice(start, end, 1).indices(rows)

        def recipe(arrays, fill, lo=lo, hi=hi):
            return [arrays[0][lo:hi]]

        self.apply_recipe(node, ctx, recipe, [info.axes])
        return None

    def rewrite(self, node: ir.Node, app: RewriteContext) -> None:
        info = app.channels(node.inputs[0])
        if len(info.axes) > 1:
            return  # rows of a split axis: tied, never removed
        params = self._params(node, app)
        starts, ends, axes, steps = params
        rank = len(app.shape(node.inputs[0]))
        axes = [_norm(a, rank) for a in axes]
        if info.axes[0] not in axes:
            return
        k = axes.index(info.axes[0])
        lo, hi, _ = slice(starts[k], ends[k], 1).indices(info.ids.size)
        keep = app.keep_mask(node.inputs[0])
        new_lo = int(keep[:lo].sum())
        new_hi = new_lo + int(keep[lo:hi].sum())
        starts, ends = list(starts), list(ends)
        starts[k], ends[k] = new_lo, new_hi
        if "starts" in node.attributes:
            node.attributes["starts"] = ir.AttrInt64s("starts", starts)
            node.attributes["ends"] = ir.AttrInt64s("ends", ends)
        else:
            app.set_input_const(node, 1, np.array(starts, dtype=np.int64))
            app.set_input_const(node, 2, np.array(ends, dtype=np.int64))


@register("Flatten")
class FlattenRule(LayoutRule):
    def propagate(self, node: ir.Node, ctx: AnalysisContext) -> Outcome | None:
        info = ctx.get(node.inputs[0])
        shape = ctx.shape(node.inputs[0])
        axis = _norm(_int_attr(node, "axis", 1), len(shape))
        if info.axes != (axis,):
            return ctx.block(node, f"Flatten(axis={axis}) mixes the channels with other dims")
        inner = int(np.prod(shape[axis + 1 :], dtype=np.int64))

        def recipe(arrays, fill, inner=inner):
            return [np.repeat(arrays[0], inner)]

        self.apply_recipe(node, ctx, recipe, [(1,)])


@register("Transpose")
class TransposeRule(LayoutRule):
    def propagate(self, node: ir.Node, ctx: AnalysisContext) -> Outcome | None:
        info = ctx.get(node.inputs[0])
        rank = ctx.rank(node.inputs[0])
        perm = _ints_attr(node, "perm") or list(reversed(range(rank)))
        new_axes = [perm.index(ax) for ax in info.axes]
        order = list(np.argsort(new_axes))

        def recipe(arrays, fill, order=order):
            return [np.transpose(arrays[0], order)]

        self.apply_recipe(node, ctx, recipe, [tuple(sorted(new_axes))])


@register("Squeeze", "Unsqueeze")
class SqueezeRule(LayoutRule):
    def propagate(self, node: ir.Node, ctx: AnalysisContext) -> Outcome | None:
        info = ctx.get(node.inputs[0])
        in_rank, out_rank = ctx.rank(node.inputs[0]), ctx.rank(node.outputs[0])
        axes = _ints_attr(node, "axes")
        if axes is None and len(node.inputs) > 1 and node.inputs[1] is not None:
            c = ctx.const(node.inputs[1])
            if c is None:
                return ctx.block(node, f"{node.op_type} with run-time axes")
            axes = [int(x) for x in c.ravel()]
        if in_rank is None or out_rank is None:
            return ctx.block(node, f"{node.op_type} with unknown rank")
        if node.op_type == "Squeeze":
            if axes is None:
                shape = ctx.shape(node.inputs[0])
                axes = [i for i, d in enumerate(shape) if d == 1]
            axes = [_norm(a, in_rank) for a in axes]
            if len(info.axes) > 1 and axes == [info.axes[0]] and info.ids.shape[0] == 1:
                # the one row left of a split channel axis (after Slice): the rest carries on
                inner = tuple(ax - 1 for ax in info.axes[1:])
                self.apply_recipe(node, ctx, lambda arrays, fill: [arrays[0][0]], [inner])
                return None
            if any(a in info.axes for a in axes):
                return ctx.block(node, "Squeeze removes the channel axis")
            new = [ax - sum(1 for a in axes if a < ax) for ax in info.axes]
        else:
            axes = sorted(_norm(a, out_rank) for a in axes)
            new = []
            for ax in info.axes:
                pos = ax
                for a in axes:
                    if a <= pos:
                        pos += 1
                new.append(pos)
        ctx.set(node.outputs[0], ChannelInfo(tuple(new), info.ids))
        ctx.record_recipe(node, lambda arrays, fill: [arrays[0]])


@register("Gather")
class GatherRule(LayoutRule):
    """Gather along a non-channel axis (a transformer's class token, a sequence position) keeps
    every channel: the channel axes move by the indices' rank minus one past the gathered axis.

    Along the outer axis of a split channel axis, one constant index picks a row: torch's fused
    in-projection is reshaped to (3, ..., E) and q, k and v are rows 0, 1 and 2. The rows are
    tied column by column, so no row is ever removed and the index stays valid. Any other
    Gather along channels picks positions we do not track, and blocks.

    An embedding lookup, rows of a constant (vocab, E) table picked by run-time token ids, is
    a source: each of its E columns is a filter (BERT's word and position embeddings start
    the residual stream this way)."""

    always = True

    def propagate(self, node: ir.Node, ctx: AnalysisContext) -> Outcome | None:
        info = ctx.get(node.inputs[0])
        rank, idx_rank = ctx.rank(node.inputs[0]), ctx.rank(node.inputs[1])
        if ctx.get(node.inputs[1]) is not None:
            return ctx.block(node, "Gather with channel-carrying indices")
        if info is None:
            return self._embedding(node, ctx, rank, idx_rank)
        if rank is None or idx_rank is None:
            return ctx.block(node, "Gather with unknown rank")
        a = node.attributes.get("axis")
        axis = _norm(a.as_int() if a is not None else 0, rank)
        if axis in info.axes:
            return self._pick_row(node, ctx, info, axis)
        new = tuple(ax if ax < axis else ax + idx_rank - 1 for ax in info.axes)
        ctx.set(node.outputs[0], ChannelInfo(new, info.ids))
        ctx.record_recipe(node, lambda arrays, fill: [arrays[0]])

    def _pick_row(self, node: ir.Node, ctx: AnalysisContext, info, axis: int) -> Outcome | None:
        idx = ctx.const(node.inputs[1])
        if len(info.axes) < 2 or axis != info.axes[0] or idx is None or idx.ndim != 0:
            return ctx.block(node, "Gather picks positions we do not track (along the channel axis)")
        rows = info.ids.shape[0]
        k = int(idx) % rows
        for r in range(rows):
            ctx.union(info.ids[0], info.ids[r])
        inner = tuple(a - 1 for a in info.axes[1:])

        def recipe(arrays, fill, k=k):
            return [arrays[0][k]]

        self.apply_recipe(node, ctx, recipe, [inner])
        return None

    def _embedding(self, node: ir.Node, ctx: AnalysisContext, rank: int | None, idx_rank: int | None) -> Outcome | None:
        a = node.attributes.get("axis")
        table = ctx.const(node.inputs[0])
        if (table is None or table.ndim != 2 or ctx.is_const(node.inputs[1]) or idx_rank is None
                or (a is not None and a.as_int() not in (0, -2)) or not np.issubdtype(table.dtype, np.floating)):
            return None
        ids = ctx.fresh(table.shape[1], source=True)
        if ctx.excluded(node):
            ctx.fix(ids, node, "excluded by --exclude")
        ctx.add_slot(node, node.inputs[0], 1, ids, "out")
        ctx.set(node.outputs[0], ChannelInfo((idx_rank,), ids))
        return None

    def const_eval(self, node: ir.Node, app: RewriteContext) -> None:
        if app.recipe(node) is not None:
            return super().const_eval(node, app)
        ids = app.channels(node.outputs[0]).ids  # an embedding: a removed column is zero
        app.set_const(node.outputs[0], np.where(app.removed(ids), 0.0, np.nan))
