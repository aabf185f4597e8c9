"""Torch implementations of the ONNX shape and tensor ops (Reshape, Slice, Gather, Pad, ...).

Registered into ``ops.OPS`` / ``ops.CHECKS`` on import (see ``ops`` for the conventions).
Shape tensors flow as int64 tensors and are read with ``.tolist()``: shape subgraphs are
computed eagerly, not traced.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .ops import OPS, ints, norm_axis, op, to_tensor


@op("Shape")
def _shape(n, x):
    dims = list(x.shape)
    start, end = n.a("start", 0), n.a("end", len(dims))
    return torch.tensor(dims[slice(start, end)], dtype=torch.int64, device=x.device)


OPS["Size"] = lambda n, x: torch.tensor(x.numel(), dtype=torch.int64, device=x.device)


@op("Reshape")
def _reshape(n, x, shape):
    dims = ints(shape)
    if not n.a("allowzero", 0):
        dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    return x.reshape(dims)


@op("Flatten")
def _flatten(n, x):
    axis = norm_axis(n.a("axis", 1), x.dim())
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


@op("Transpose")
def _transpose(n, x):
    perm = n.a("perm") or list(range(x.dim()))[::-1]
    return x.permute(*perm)


@op("Squeeze")
def _squeeze(n, x, axes=None):
    axes = ints(axes) if axes is not None else n.a("axes")
    if not axes:
        return x.reshape([d for d in x.shape if d != 1])
    drop = {norm_axis(a, x.dim()) for a in axes}
    return x.reshape([d for i, d in enumerate(x.shape) if i not in drop])


@op("Unsqueeze")
def _unsqueeze(n, x, axes=None):
    axes = ints(axes) if axes is not None else n.a("axes")
    rank = x.dim() + len(axes)
    for a in sorted(norm_axis(a, rank) for a in axes):
        x = x.unsqueeze(a)
    return x


@op("Concat")
def _concat(n, *xs):
    xs = [x for x in xs if x is not None]
    return torch.cat(xs, dim=norm_axis(n.a("axis"), xs[0].dim()))


@op("Split")
def _split(n, x, split=None):
    axis = norm_axis(n.a("axis", 0), x.dim())
    sizes = ints(split) if split is not None else n.a("split")
    if not sizes:
        parts = n.a("num_outputs") or len(n.outputs)
        sizes = math.ceil(x.shape[axis] / parts)  # opset 18: the last chunk may be smaller
    return tuple(torch.split(x, sizes, dim=axis))


@op("Slice")
def _slice(n, x, starts=None, ends=None, axes=None, steps=None):
    if n.opset < 10:
        starts, ends, axes, steps = n.a("starts"), n.a("ends"), n.a("axes"), None
    else:
        starts, ends, axes, steps = ints(starts), ints(ends), ints(axes), ints(steps)
    axes = axes if axes is not None else list(range(len(starts)))
    steps = steps if steps is not None else [1] * len(starts)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = norm_axis(axis, x.dim())
        dim = x.shape[axis]
        start = start + dim if start < 0 else start
        end = end + dim if end < 0 else end
        if step > 0:
            start, end = min(max(start, 0), dim), min(max(end, 0), dim)
            x = x.narrow(axis, start, max(end - start, 0))[(slice(None),) * axis + (slice(None, None, step),)] \
                if step != 1 else x.narrow(axis, start, max(end - start, 0))
        else:
            start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
            index = torch.arange(start, end, step, device=x.device)
            x = x.index_select(axis, index)
    return x


@op("Gather")
def _gather(n, x, indices):
    axis = norm_axis(n.a("axis", 0), x.dim())
    idx = torch.where(indices < 0, indices + x.shape[axis], indices).long()
    out = x.index_select(axis, idx.reshape(-1))
    return out.reshape(list(x.shape[:axis]) + list(idx.shape) + list(x.shape[axis + 1:]))


@op("ConstantOfShape")
def _constant_of_shape(n, shape):
    value = n.a("value")
    value = np.zeros(1, np.float32) if value is None else value
    fill = to_tensor(value.reshape(-1)[:1], shape.device)
    return fill.expand(ints(shape) or []).clone() if shape.numel() else fill.reshape([])


@op("Expand")
def _expand(n, x, shape):
    return x.expand(torch.broadcast_shapes(tuple(x.shape), tuple(ints(shape))))


@op("Tile")
def _tile(n, x, repeats):
    return x.repeat(ints(repeats))


@op("Range")
def _range(n, start, limit, delta):
    return torch.arange(start.item(), limit.item(), delta.item(), dtype=start.dtype, device=start.device)


def _check_dropout(n, const):
    if len(n.inputs) > 2 and n.inputs[2]:
        mode = const(n.inputs[2])
        if mode is None or bool(mode.reshape(-1)[0]):
            return "Dropout in training mode (or with a run-time training_mode)"
    return None


@op("Dropout", check=_check_dropout)
def _dropout(n, x, ratio=None, training=None):
    if len(n.outputs) > 1 and n.outputs[1]:
        return x, torch.ones_like(x, dtype=torch.bool)
    return x


def _check_pad(n, const):
    mode = n.a("mode", "constant")
    return None if mode in ("constant", "reflect", "edge", "wrap") else f"Pad mode {mode!r}"


def _pad_index(mode: str, size: int, begin: int, end: int, device) -> torch.Tensor:
    """Source indices along one axis for a reflect / edge / wrap pad (negative pads crop)."""
    pos = torch.arange(-begin, size + end, device=device)
    if mode == "edge":
        return pos.clamp(0, size - 1)
    if mode == "wrap":
        return pos.remainder(size)
    period = 2 * (size - 1)
    if period == 0:
        return torch.zeros_like(pos)
    m = pos.remainder(period)
    return torch.where(m < size, m, period - m)


@op("Pad", check=_check_pad)
def _pad(n, x, pads=None, value=None, axes=None):
    mode = n.a("mode", "constant")
    rank = x.dim()
    if n.opset < 11:
        pads, fill = n.a("pads") or n.a("paddings"), n.a("value", 0.0)
        axes = list(range(rank))
    else:
        pads, fill = ints(pads), (value.item() if value is not None and value.numel() else 0)
        axes = [norm_axis(a, rank) for a in ints(axes)] if axes is not None else list(range(rank))
    k = len(axes)
    per_axis = {ax: (pads[i], pads[i + k]) for i, ax in enumerate(axes)}
    if mode == "constant":
        flat: list[int] = []
        for ax in reversed(range(rank)):
            flat += list(per_axis.get(ax, (0, 0)))
        return F.pad(x, flat, value=fill)
    for ax, (begin, end) in per_axis.items():
        if begin or end:
            x = x.index_select(ax, _pad_index(mode, x.shape[ax], begin, end, x.device))
    return x
