"""Reshape: how a channel axis moves, splits into heads or groups, or merges back.

A Reshape pairs runs of input and output dims of equal product (``_segments``). A channel
axis may only move (``_moved_axes``), split into several dims (heads x d, q/k/v x heads x d,
a channel shuffle's groups: the split must stay a rectangle, settled by the engine once every
rule ran), or merge a split back. The target is rewritten to the kept counts: constant
targets directly, run-time ``Concat`` targets piece by piece (a constant piece, a
``bsz * num_heads`` piece whose heads constant is rewritten, or ``Shape(t)`` of a tensor
whose channels are tied to these, alone, times batch dims by ``ReduceProd``, or the ``Max``
of two such, as tf2onnx spells its batched MatMuls); any other run-time piece keeps the
channels.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxcompress.channels.protocols import AnalysisContext, ConstantReader, Outcome, RewriteContext
from onnxcompress.channels.rules import register
from onnxcompress.channels.rules.heads import tie_each_row
from onnxcompress.channels.rules.layout import LayoutRule, _norm
from onnxcompress.channels.rules.norm import normalise_groups
from onnxcompress.channels.state import ChannelInfo


def _segments(a: tuple[int, ...], b: tuple[int, ...]):
    """Pair up runs of dims of ``a`` and ``b`` with equal products (the reshape's blocks)."""
    segs, i, j = [], 0, 0
    while i < len(a) or j < len(b):
        si, sj, pa, pb = i, j, 1, 1
        if i < len(a):
            pa *= a[i]
            i += 1
        if j < len(b):
            pb *= b[j]
            j += 1
        while pa != pb:
            if pa < pb and i < len(a):
                pa *= a[i]
                i += 1
            elif pb < pa and j < len(b):
                pb *= b[j]
                j += 1
            else:
                return None
        segs.append((list(range(si, i)), list(range(sj, j))))
    return segs


def _moved_axes(segs, a, b, axes: tuple[int, ...]) -> tuple[int, ...] | None:
    """Where each channel axis lands when the Reshape only moves it (its block holds no other
    dim over 1 on either side), or None. Split channel axes (heads) travel this way through the
    (B*H, T, d) <-> (B, H, T, d) reshapes of unfused attention."""
    if segs is None:
        return None
    new = []
    for ax in axes:
        seg = next((s for s in segs if ax in s[0]), None)
        if seg is None:
            return None
        ins_nz = [i for i in seg[0] if a[i] != 1 or i == ax]
        outs_nz = [o for o in seg[1] if b[o] != 1]
        if ins_nz != [ax] or len(outs_nz) != 1 or b[outs_nz[0]] != a[ax]:
            return None
        new.append(outs_nz[0])
    return tuple(new)


def _producer_past(value: ir.Value, skipped: tuple[str, ...]) -> ir.Node | None:
    """The first node behind ``value`` that is not one of ``skipped`` (ops that pass a shape piece on)."""
    node = value.producer()
    while node is not None and node.op_type in skipped:
        node = node.inputs[0].producer()
    return node


def _scaled_count(piece: ir.Value, ctx: ConstantReader, count: int) -> tuple[ir.Node, int] | None:
    """A run-time target piece ``dim * count`` (torch's ``bsz * num_heads``), through Unsqueeze
    or Cast: the Mul and the index of its constant ``count``, which a rewrite can change."""
    node = _producer_past(piece, ("Unsqueeze", "Cast", "Identity", "Reshape"))
    if node is None or node.op_type != "Mul":
        return None
    for k, v in enumerate(node.inputs[:2]):
        c = ctx.const(v)
        if c is not None and c.size == 1 and int(c.ravel()[0]) == count:
            return node, k
    return None


def _shape_dims(piece: ir.Value, pos: int, ctx: ConstantReader) -> list[tuple[ir.Value, int]] | None:
    """The (tensor, axis) dims whose product is element ``pos`` of a run-time target piece, or None.

    ``Shape(t)``, sliced or gathered by constants, through Unsqueeze or Cast, gives one dim;
    ``ReduceProd`` over such a piece (tf2onnx's batch axes merged with the heads) gives several.
    """
    node = _producer_past(piece, ("Unsqueeze", "Cast", "Identity"))
    if node is None:
        return None
    if node.op_type == "ReduceProd":
        out = ctx.shape(node.outputs[0])
        axes = ctx.const(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] is not None else None
        if pos != 0 or out is None or int(np.prod(out)) != 1 or (axes is not None and axes.size > 1):
            return None
        width = int(np.prod(ctx.shape(node.inputs[0]) or (0,)))
        dims = [_shape_dims(node.inputs[0], k, ctx) for k in range(width)]
        return None if not width or any(d is None for d in dims) else [x for d in dims for x in d]
    if node.op_type in ("Slice", "Gather"):
        src = node.inputs[0].producer()
        if src is None or src.op_type != "Shape" or ctx.shape(src.outputs[0]) is None:
            return None
        n = int(ctx.shape(src.outputs[0])[0])  # how many dims Shape returned
        if node.op_type == "Gather":
            idx = ctx.const(node.inputs[1])
            if idx is None or not 0 <= pos < max(idx.size, 1) or (idx.ndim == 0 and pos != 0):
                return None
            pos = int(idx.ravel()[pos]) % max(n, 1)
        else:
            bounds = [ctx.const(node.inputs[k]) if len(node.inputs) > k and node.inputs[k] is not None else None
                      for k in (1, 2, 4)]
            starts, ends, steps = bounds
            if starts is None or ends is None or starts.size != 1 or ends.size != 1:
                return None
            if steps is not None and (steps.size != 1 or int(steps.ravel()[0]) != 1):
                return None
            lo, hi, _ = slice(int(starts.ravel()[0]), int(ends.ravel()[0]), 1).indices(n)
            if not lo + pos < hi:
                return None
            pos += lo
        node = src
    if node.op_type != "Shape":
        return None
    a = node.attributes.get("start")
    rank = ctx.shape(node.inputs[0])
    if rank is None or pos < 0:
        return None
    start = a.as_int() if a is not None else 0
    start = start + len(rank) if start < 0 else start
    return [(node.inputs[0], pos + start)]


def _alternatives(piece: ir.Value, pos: int, ctx: ConstantReader) -> list[list[tuple[ir.Value, int]]] | None:
    """Element ``pos`` of a run-time piece as one product of dims, or the elementwise Max of several
    (tf2onnx broadcasts two operands' batch dims that way): a list of products, or None."""
    node = piece.producer()
    if node is not None and node.op_type == "Max":
        each = [_shape_dims(v, pos, ctx) for v in node.inputs]
        return None if not each or any(d is None for d in each) else each  # type: ignore[return-value]
    dims = _shape_dims(piece, pos, ctx)
    return None if dims is None else [dims]


def _follows(product: list[tuple[ir.Value, int]], count: int, ctx: AnalysisContext) -> np.ndarray | None:
    """The channel positions that a product of dims carries, when exactly one of them is a channel
    axis with ``count`` channels and the others carry none (a batch dim): after pruning the product
    is the kept count times the same other dims, so the target follows by itself."""
    found = None
    for t, k in product:
        info = ctx.get(t)
        if info is None or k not in info.axes:
            continue
        if found is not None or info.ids.shape[info.axes.index(k)] != count:
            return None
        found = _along(info, k)
    return found


def _along(info, axis: int) -> np.ndarray:
    """One element per position of a channel axis (the first of each row on split axes)."""
    ids = np.moveaxis(info.ids, info.axes.index(axis), 0)
    return ids.reshape(ids.shape[0], -1)[:, 0]


def _target_concat(target: ir.Value) -> ir.Node | None:
    """The Concat that builds a run-time target, through Cast or Identity (tf2onnx casts it)."""
    prod = _producer_past(target, ("Cast", "Identity"))
    return prod if prod is not None and prod.op_type == "Concat" else None


def _target_pieces(node: ir.Node, ctx: ConstantReader, axes: tuple[int, ...]):
    """For a run-time (Concat) target: (axis, piece value, its index, its offset) per channel axis."""
    concat = _target_concat(node.inputs[1])
    offset = 0
    found = []
    for k, piece in enumerate(concat.inputs):
        c = ctx.const(piece)
        width = int(c.size) if c is not None else int(np.prod(ctx.shape(piece) or (1,)))
        for ax in axes:
            if offset <= ax < offset + width:
                found.append((ax, piece, k, offset))
        offset += width
    return found


def _shape_of(target: ir.Value) -> ir.Value | None:
    """t when a Reshape target is ``Shape(t)`` (whole), else None."""
    prod = target.producer()
    if prod is None or prod.op_type != "Shape" or "start" in prod.attributes or "end" in prod.attributes:
        return None
    return prod.inputs[0]


def _per_group(groups: int):
    """The recipe of GroupNorm's split: one element per group (its rows are tied), and a constant
    only where every channel of the group carries the same one."""

    def recipe(arrays, fill):
        rows = arrays[0].reshape(groups, -1)
        if rows.dtype.kind != "f":
            return [rows[:, 0].copy()]
        return [np.where(np.all(rows == rows[:, :1], axis=1), rows[:, 0], np.nan)]

    return recipe


def _group_norm_split(node: ir.Node, ctx: ConstantReader) -> int:
    """G when ``node`` is GroupNorm's first Reshape as torch exports it before opset 21: (N, C, *S)
    -> (N, G, C/G * prod(S)), read only by an InstanceNormalization with constant per-group scale
    and bias, whose output only a Reshape back to (N, C, *S) reads; else 0."""
    a, b = ctx.shape(node.inputs[0]), ctx.shape(node.outputs[0])
    if a is None or b is None or len(a) < 3 or len(b) != 3 or a[0] != b[0]:
        return 0
    c, g = a[1], b[1]
    if not (isinstance(c, int) and isinstance(g, int)) or g <= 0 or c % g or b[2] != c // g * int(np.prod(a[2:])):
        return 0
    uses = list(node.outputs[0].uses())
    if len(uses) != 1 or uses[0].idx != 0 or uses[0].node.op_type != "InstanceNormalization":
        return 0
    norm = uses[0].node
    params = [ctx.const(v) for v in norm.inputs[1:3]]
    if any(p is None or p.shape != (g,) for p in params):
        return 0
    after = list(norm.outputs[0].uses())
    if len(after) != 1 or after[0].idx != 0 or after[0].node.op_type != "Reshape":
        return 0
    back = after[0].node
    return g if ctx.shape(back.outputs[0]) == a and _back_target_ok(back, node.inputs[0], ctx) else 0


def _back_target_ok(back: ir.Node, x: ir.Value, ctx: ConstantReader) -> bool:
    """The Reshape back to x's shape spells it as ``Shape(x)`` or as constants (rewritten)."""
    return _shape_of(back.inputs[1]) is x or ctx.const(back.inputs[1]) is not None


def _group_norm_merge(node: ir.Node, ctx: ConstantReader) -> ir.Node | None:
    """GroupNorm's first Reshape when ``node`` is the Reshape back to channels (see above)."""
    norm = node.inputs[0].producer()
    if norm is None or norm.op_type != "InstanceNormalization":
        return None
    split = norm.inputs[0].producer()
    if split is None or split.op_type != "Reshape" or not _group_norm_split(split, ctx):
        return None
    return split if list(norm.outputs[0].uses())[0].node is node else None


@register("Reshape")
class ReshapeRule(LayoutRule):
    def propagate(self, node: ir.Node, ctx: AnalysisContext) -> Outcome | None:
        split = _group_norm_merge(node, ctx)
        x_info = ctx.get(split.inputs[0]) if split is not None else None
        if split is not None and x_info is not None and ctx.get(node.inputs[0]) is not None:
            # GroupNorm's groups back to channels: x's own elements, tied per group by the split
            ctx.set(node.outputs[0], ChannelInfo((1,), x_info.ids.copy()))
            return None
        outcome = self._track(node, ctx)
        info = ctx.get(node.outputs[0])
        if outcome is not None or info is None or ctx.is_const(node.inputs[1]):
            return outcome
        # A run-time target: each channel dim must be a constant piece (rewritten), or the
        # channel count times a run-time dim (the constant is rewritten), never anything else.
        for ax, piece, _, offset in _target_pieces(node, ctx, info.axes):
            count = info.ids.shape[info.axes.index(ax)]
            if ctx.is_const(piece) or _scaled_count(piece, ctx, count) is not None:
                continue
            # Shape(t)[k] of a tensor with as many channels on axis k (times batch dims, or the Max
            # of two such): tied to these, it follows the pruned tensors by itself
            alts = _alternatives(piece, ax - offset, ctx)
            tied = [_follows(p, count, ctx) for p in alts] if alts else None
            if tied and all(t is not None for t in tied):
                for t in tied:
                    ctx.union(t, _along(info, ax))
                continue
            return ctx.block(node, "Reshape target spells the channel count at run time in a way we cannot rewrite")
        return None

    def _track(self, node: ir.Node, ctx: AnalysisContext) -> Outcome | None:
        info = ctx.get(node.inputs[0])
        a, b = ctx.shape(node.inputs[0]), ctx.shape(node.outputs[0])
        if a is None or b is None:
            return ctx.block(node, "Reshape with unknown shapes")
        if not self._target_adapts(node, ctx):
            return ctx.block(node, "Reshape target is computed at run time from constants we cannot rewrite")
        segs = _segments(tuple(a), tuple(b))
        moved = _moved_axes(segs, a, b, info.axes)
        if moved is not None:
            self.apply_recipe(node, ctx, lambda arrays, fill: [arrays[0]], [moved])
            return
        seg = next((s for s in segs or [] if info.axes[0] in s[0]), None)
        if seg is None or not all(ax in seg[0] for ax in info.axes):
            return ctx.block(node, "Reshape mixes the channels with other dims")
        ins, outs = seg
        outs_nz = [o for o in outs if b[o] != 1]
        ins_nz = [i for i in ins if a[i] != 1 or i in info.axes]
        if len(info.axes) == 1:
            ax = info.axes[0]
            after = [i for i in ins_nz if i > ax]
            if [i for i in ins_nz if i < ax]:
                return ctx.block(node, "Reshape merges the channels into an outer dim")
            if len(outs_nz) == 1 and not after:
                recipe = lambda arrays, fill: [arrays[0]]  # noqa: E731 - the axis only moves
                self.apply_recipe(node, ctx, recipe, [(outs_nz[0],)])
                return
            if len(outs_nz) == 1:
                inner = int(np.prod([a[i] for i in after], dtype=np.int64))

                def recipe(arrays, fill, inner=inner):
                    return [np.repeat(arrays[0], inner)]

                self.apply_recipe(node, ctx, recipe, [(outs_nz[0],)])
                return
            if len(outs_nz) >= 2 and not after:
                dims = tuple(int(b[o]) for o in outs_nz)

                def recipe(arrays, fill, dims=dims):
                    return [arrays[0].reshape(dims)]

                self.apply_recipe(node, ctx, recipe, [tuple(outs_nz)])
                # Every row must keep the same width: whole rows go (heads) or the same columns.
                ctx.keep_rectangular(ctx.get(node.outputs[0]).ids)
                return
        elif len(outs_nz) == 1 and sorted(ins_nz) == list(info.axes):
            recipe = lambda arrays, fill: [arrays[0].reshape(-1)]  # noqa: E731 - shuffle merge
            self.apply_recipe(node, ctx, recipe, [(outs_nz[0],)])
            return
        groups = _group_norm_split(node, ctx) if info.axes == (1,) and info.ids.ndim == 1 else 0
        if groups:
            tie_each_row(ctx, info.ids.reshape(groups, -1))  # a group goes whole
            self.apply_recipe(node, ctx, _per_group(groups), [(1,)])
            return None
        return ctx.block(node, "Reshape splits or merges channels in a way we do not track")

    def _target_adapts(self, node: ir.Node, ctx: AnalysisContext) -> bool:
        """A constant target can be rewritten; a run-time one must be built from Shape pieces."""
        target = node.inputs[1]
        return ctx.is_const(target) or _target_concat(target) is not None

    def const_eval(self, node: ir.Node, app: RewriteContext) -> None:
        split = _group_norm_merge(node, app)
        if split is None or app.channels(node.outputs[0]) is None:
            return super().const_eval(node, app)
        # Each removed group's channels carry constants c: InstanceNorm gives s_g (c - mean c) / sd c + b_g.
        norm = node.inputs[0].producer()
        groups = int(app.shape(split.outputs[0])[1])
        normed = normalise_groups(app.const_of(split.inputs[0]), groups, norm)
        scale, bias = (app.tensor(v).astype(np.float64).reshape(groups, 1) for v in norm.inputs[1:3])
        app.set_const(node.outputs[0], (scale * normed + bias).ravel())

    def rewrite(self, node: ir.Node, app: RewriteContext) -> None:
        out = node.outputs[0]
        if app.channels(out) is None:
            return
        target = node.inputs[1]
        if _shape_of(target) is not None:
            return  # Shape(t): follows the pruned tensor by itself
        counts = app.kept_counts(out)
        info = app.channels(out)
        if app.is_const(target):
            shape = [int(x) for x in app.tensor(target).ravel()]
            old = app.shape(out)
            for ax, n in zip(info.axes, counts):
                if shape[ax] not in (0, -1):
                    shape[ax] = int(n * (old[ax] // info.ids.shape[info.axes.index(ax)]))
            app.set_input_const(node, 1, np.array(shape, dtype=np.int64))
            return
        # Run-time target built by a Concat: constant pieces that spell a channel count are
        # rewritten; pieces computed from Shape follow the pruned tensor by themselves.
        concat = _target_concat(target)
        old = app.shape(out)
        offset = 0
        for k, piece in enumerate(list(concat.inputs)):
            c = app.tensor(piece) if app.is_const(piece) else None
            width = int(c.size) if c is not None else int(np.prod(app.shape(piece) or (1,)))
            for ax, n in zip(info.axes, counts):
                count = info.ids.shape[info.axes.index(ax)]
                scaled = _scaled_count(piece, app, count) if c is None and offset <= ax < offset + width else None
                if scaled is not None:  # bsz * num_heads: the heads constant becomes the kept count
                    mul, idx = scaled
                    old_c = app.tensor(mul.inputs[idx])
                    app.set_input_const(mul, idx, np.full(old_c.shape, n, dtype=old_c.dtype))
            if c is not None:
                new_piece = c.astype(np.int64).ravel().copy()
                for ax, n in zip(info.axes, counts):
                    if offset <= ax < offset + width and new_piece[ax - offset] not in (0, -1):
                        new_piece[ax - offset] = int(n * (old[ax] // info.ids.shape[info.axes.index(ax)]))
                if not np.array_equal(new_piece, c.ravel()):
                    app.set_input_const(concat, k, new_piece.reshape(c.shape).astype(c.dtype))
            offset += width
