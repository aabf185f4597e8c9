"""Torch implementations of the ONNX neural-network ops: conv, pooling, norms, Resize, LSTM.

Registered into ``ops.OPS`` / ``ops.CHECKS`` on import (see ``ops`` for the conventions).
Asymmetric pads are applied explicitly, so the results follow onnxruntime rather than
torch's symmetric-padding rules.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .ops import UnsupportedGraph, ints, norm_axis, op

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONVT = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
_MAXPOOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVGPOOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def _spatial_pads(n, sizes, kernel, strides, dilations, pool: bool = False) -> list[tuple[int, int]]:
    """(begin, end) pad per spatial axis, resolving auto_pad as onnxruntime does (for pooling
    it does not clamp a negative total at 0, so a kernel smaller than the stride shifts)."""
    nd = len(sizes)
    auto = n.a("auto_pad", "NOTSET") or "NOTSET"
    if auto == "NOTSET":
        pads = n.a("pads") or [0] * (2 * nd)
        return [(pads[i], pads[i + nd]) for i in range(nd)]
    if auto == "VALID":
        return [(0, 0)] * nd
    out = []
    for size, k, s, d in zip(sizes, kernel, strides, dilations):
        total = (math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size
        total = total if pool else max(total, 0)
        half = int(total / 2) if auto == "SAME_UPPER" else int((total + 1) / 2)  # C++ truncation
        out.append((half, total - half))
    return out


def _flat_pad(pads: list[tuple[int, int]]) -> list[int]:
    flat: list[int] = []
    for begin, end in reversed(pads):
        flat += [begin, end]
    return flat


def _check_spatial(n, const):
    auto = n.a("auto_pad", "NOTSET")
    if auto not in ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER", ""):
        return f"auto_pad {auto!r}"
    if auto in ("SAME_UPPER", "SAME_LOWER") and any(d != 1 for d in n.a("dilations") or []):
        return f"{n.op_type} with auto_pad SAME and dilations (onnxruntime's handling differs by kernel)"
    return None


@op("Conv", check=_check_spatial)
def _conv(n, x, w, b=None):
    nd = x.dim() - 2
    if nd not in _CONV:
        raise UnsupportedGraph(f"Conv on a {x.dim()}-D input")
    kernel = list(w.shape[2:])
    strides = n.a("strides") or [1] * nd
    dilations = n.a("dilations") or [1] * nd
    pads = _spatial_pads(n, list(x.shape[2:]), kernel, strides, dilations)
    group = n.a("group", 1)
    if all(p0 == p1 for p0, p1 in pads):
        return _CONV[nd](x, w, b, strides, [p0 for p0, _ in pads], dilations, group)
    return _CONV[nd](F.pad(x, _flat_pad(pads)), w, b, strides, 0, dilations, group)


def _check_convt(n, const):
    if n.a("output_shape") is not None:
        return "ConvTranspose with output_shape"
    if n.a("auto_pad", "NOTSET") not in ("NOTSET", "VALID", ""):
        return f"ConvTranspose auto_pad {n.a('auto_pad')!r}"
    return None


@op("ConvTranspose", check=_check_convt)
def _conv_transpose(n, x, w, b=None):
    nd = x.dim() - 2
    if nd not in _CONVT:
        raise UnsupportedGraph(f"ConvTranspose on a {x.dim()}-D input")
    strides = n.a("strides") or [1] * nd
    dilations = n.a("dilations") or [1] * nd
    out_pad = n.a("output_padding") or [0] * nd
    pads = n.a("pads") if n.a("auto_pad", "NOTSET") in ("NOTSET", "") else None
    pads = pads or [0] * (2 * nd)
    group = n.a("group", 1)
    begins, ends = pads[:nd], pads[nd:]
    if begins == ends and all(op_ < max(s, d) for op_, s, d in zip(out_pad, strides, dilations)):
        return _CONVT[nd](x, w, b, strides, begins, out_pad, group, dilations)
    # Asymmetric pads: the full output, extended by output_padding at the end, then cropped.
    y = _CONVT[nd](x, w, None, strides, 0, 0, group, dilations)
    y = F.pad(y, _flat_pad([(0, p) for p in out_pad]))
    for i in range(nd):
        y = y.narrow(2 + i, begins[i], y.shape[2 + i] - begins[i] - ends[i])
    if b is not None:
        y = y + b.reshape([1, -1] + [1] * nd)
    return y


def _pool_geometry(n, x):
    nd = x.dim() - 2
    kernel = n.a("kernel_shape")
    strides = n.a("strides") or [1] * nd
    dilations = n.a("dilations") or [1] * nd
    pads = _spatial_pads(n, list(x.shape[2:]), kernel, strides, dilations, pool=True)
    return nd, kernel, strides, dilations, pads


def _pool_len(size: int, k: int, s: int, d: int, begin: int, end: int, ceil: bool) -> int:
    """onnxruntime's pooled length: with ceil_mode, a last window that would start in the
    end padding is dropped (torch keeps it when that padding was applied explicitly)."""
    span = size + begin + end - ((k - 1) * d + 1)
    out = (-(-span // s) if ceil else span // s) + 1
    if ceil and (out - 1) * s >= size + begin:
        out -= 1
    return out


def _crop_pooled(y, x, kernel, strides, dilations, pads, ceil):
    if not ceil:
        return y
    for i, (k, s, d, (p0, p1)) in enumerate(zip(kernel, strides, dilations, pads)):
        y = y.narrow(2 + i, 0, _pool_len(x.shape[2 + i], k, s, d, p0, p1, True))
    return y


def _check_pool(n, const):
    if any(d != 1 for d in n.a("dilations") or []):
        if n.op_type == "AveragePool":
            return "AveragePool with dilations"
        if n.a("auto_pad", "NOTSET") in ("SAME_UPPER", "SAME_LOWER"):
            return f"{n.op_type} with auto_pad SAME and dilations (onnxruntime ignores the dilation there)"
    if len(n.outputs) > 1 and n.outputs[1]:
        return "MaxPool with an Indices output"
    return _check_spatial(n, const)


@op("MaxPool", check=_check_pool)
def _maxpool(n, x):
    nd, kernel, strides, dilations, pads = _pool_geometry(n, x)
    ceil = bool(n.a("ceil_mode", 0))
    if all(p0 == p1 and 0 <= p0 <= k // 2 for (p0, p1), k in zip(pads, kernel)):
        return _MAXPOOL[nd](x, kernel, strides, [p for p, _ in pads], dilations, ceil)
    y = _MAXPOOL[nd](F.pad(x, _flat_pad(pads), value=float("-inf")), kernel, strides, 0, dilations, ceil)
    return _crop_pooled(y, x, kernel, strides, dilations, pads, ceil)


@op("AveragePool", check=_check_pool)
def _avgpool(n, x):
    nd, kernel, strides, dilations, pads = _pool_geometry(n, x)
    ceil = bool(n.a("ceil_mode", 0))
    include = bool(n.a("count_include_pad", 0))
    if all(p0 == p1 == 0 for p0, p1 in pads):
        return _AVGPOOL[nd](x, kernel, strides, 0, ceil, True)
    # Pads applied explicitly; without count_include_pad the divisor is the pooled valid mask.
    flat = _flat_pad(pads)
    y = _AVGPOOL[nd](F.pad(x, flat), kernel, strides, 0, ceil, True)
    if not include:
        mask = F.pad(torch.ones((1, 1) + tuple(x.shape[2:]), dtype=x.dtype, device=x.device), flat)
        y = y / _AVGPOOL[nd](mask, kernel, strides, 0, ceil, True)
    return _crop_pooled(y, x, kernel, strides, dilations, pads, ceil)


@op("GlobalAveragePool")
def _gap(n, x):
    return x.mean(dim=tuple(range(2, x.dim())), keepdim=True)


@op("GlobalMaxPool")
def _gmp(n, x):
    return x.amax(dim=tuple(range(2, x.dim())), keepdim=True)


# ---------------------------------------------------------------- normalisation


def _check_bn(n, const):
    if n.opset < 9 and n.a("spatial", 1) != 1:
        return "BatchNormalization spatial=0"
    if n.a("training_mode", 0) or sum(1 for o in n.outputs[1:] if o):
        return "BatchNormalization in training mode"
    return None


@op("BatchNormalization", check=_check_bn)
def _batchnorm(n, x, scale, bias, mean, var):
    return F.batch_norm(x, mean, var, scale, bias, False, 0.0, n.a("epsilon", 1e-5))


def _check_ln(n, const):
    if sum(1 for o in n.outputs[1:] if o):
        return "LayerNormalization with Mean/InvStdDev outputs"
    return None


@op("LayerNormalization", check=_check_ln)
def _layernorm(n, x, scale, bias=None):
    axis = norm_axis(n.a("axis", -1), x.dim())
    shape = tuple(x.shape[axis:])
    if tuple(scale.shape) == shape and (bias is None or tuple(bias.shape) == shape):
        return F.layer_norm(x, shape, scale, bias, n.a("epsilon", 1e-5))
    y = F.layer_norm(x, shape, None, None, n.a("epsilon", 1e-5)) * scale
    return y if bias is None else y + bias


@op("InstanceNormalization")
def _instancenorm(n, x, scale, bias):
    return F.instance_norm(x, weight=scale, bias=bias, eps=n.a("epsilon", 1e-5))


@op("GroupNormalization")
def _groupnorm(n, x, scale, bias):
    groups = n.a("num_groups")
    y = F.group_norm(x, groups, None, None, n.a("epsilon", 1e-5))
    channels = x.shape[1]
    if n.opset < 21 and scale.numel() == groups and groups != channels:
        # GroupNormalization-18 has one scale and bias per group.
        scale, bias = scale.repeat_interleave(channels // groups), bias.repeat_interleave(channels // groups)
    shape = [1, -1] + [1] * (x.dim() - 2)
    return y * scale.reshape(shape) + bias.reshape(shape)


# ---------------------------------------------------------------- Resize / Upsample

_COORD_MODES = {"half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric",
                "tf_half_pixel_for_nn", "half_pixel_symmetric"}
_NEAREST_MODES = {"round_prefer_floor", "round_prefer_ceil", "floor", "ceil"}


def _check_resize(n, const):
    mode = n.a("mode", "nearest")
    if mode not in ("nearest", "linear", "bilinear"):
        return f"{n.op_type} mode {mode!r}"
    if n.op_type == "Upsample" or n.opset < 11:
        return None
    coord = n.a("coordinate_transformation_mode", "half_pixel")
    if coord not in _COORD_MODES:
        return f"Resize coordinate_transformation_mode {coord!r}"
    if mode == "nearest" and n.a("nearest_mode", "round_prefer_floor") not in _NEAREST_MODES:
        return f"Resize nearest_mode {n.a('nearest_mode')!r}"
    if mode == "nearest" and coord == "half_pixel_symmetric":
        return "Resize nearest with half_pixel_symmetric (onnxruntime's float rounding differs at ties)"
    if n.a("antialias", 0) and mode != "nearest":
        return "Resize with antialias"
    if n.a("keep_aspect_ratio_policy", "stretch") != "stretch":
        return "Resize keep_aspect_ratio_policy"
    return None


def _source_coords(coord: str, out: int, size: int, scale, dtype=np.float32) -> np.ndarray:
    """Fractional source coordinate of every output position (float32 as onnxruntime; float64
    serves as the near-exact value that exposes positions within rounding of a tie)."""
    t = np.dtype(dtype).type
    x = np.arange(out, dtype=dtype)
    one, half, scale = t(1), t(0.5), t(scale)
    if coord == "asymmetric":
        return x / scale
    if coord == "align_corners":
        return np.zeros_like(x) if out == 1 else x * t(size - 1) / t(out - 1)
    if coord == "pytorch_half_pixel":
        return (x + half) / scale - half if out > 1 else np.zeros_like(x)
    if coord == "tf_half_pixel_for_nn":
        return (x + half) / scale
    if coord == "half_pixel_symmetric":
        adjustment = t(out) / (scale * t(size))
        center = t(size) / t(2)
        return center * (one - adjustment) + (x + half) / scale - half
    return (x + half) / scale - half  # half_pixel


def _ambiguous(mode: str, exact: np.ndarray) -> bool:
    """Whether a nearest pick lies within float rounding of a tie without being exactly on it:
    there onnxruntime's float arithmetic decides, and we cannot reproduce it."""
    if mode in ("round_prefer_floor", "round_prefer_ceil"):
        bound = np.floor(exact) + 0.5
    else:
        bound = np.round(exact)
    gap = np.abs(exact - bound)
    return bool(np.any((gap > 0) & (gap <= 1e-5 * np.maximum(1.0, np.abs(bound)))))


def _floats(t: torch.Tensor | None) -> list[float] | None:
    return None if t is None else [float(v) for v in t.reshape(-1).tolist()]


def _round_away(v: np.ndarray) -> np.ndarray:
    return np.sign(v) * np.floor(np.abs(v) + 0.5)


def _nearest_index(mode: str, v: np.ndarray, downsample: bool) -> np.ndarray:
    if mode == "simple":  # Upsample and Resize-10 in onnxruntime
        return np.ceil(v) if downsample else np.trunc(v)
    if mode == "floor":
        return np.floor(v)
    if mode == "ceil":
        return np.ceil(v)
    tie = v == np.trunc(v) + np.float32(0.5)
    if mode == "round_prefer_ceil":
        return np.where(tie, np.ceil(v), _round_away(v))
    return np.where(tie, np.trunc(v), _round_away(v))  # round_prefer_floor


@op("Resize", "Upsample", check=_check_resize)
def _resize(n, x, *rest):
    rank = x.dim()
    legacy = n.op_type == "Upsample" or n.opset < 11
    mode = "linear" if n.a("mode", "nearest") in ("linear", "bilinear") else "nearest"
    if n.op_type == "Upsample":
        scales, sizes = (n.a("scales") if n.opset < 9 else _floats(rest[0])), None
    elif n.opset < 11:
        scales, sizes = _floats(rest[0]), None
    else:
        scales = _floats(rest[1]) if len(rest) > 1 and rest[1] is not None and rest[1].numel() else None
        sizes = ints(rest[2]) if len(rest) > 2 and rest[2] is not None and rest[2].numel() else None
    axes = [norm_axis(a, rank) for a in n.a("axes")] if n.a("axes") else list(range(rank))
    coord = "asymmetric" if legacy else n.a("coordinate_transformation_mode", "half_pixel")
    nearest = "simple" if legacy else n.a("nearest_mode", "round_prefer_floor")
    for i, axis in enumerate(axes):
        size = x.shape[axis]
        if sizes is not None:
            out = sizes[i]
            scale = np.float32(out) / np.float32(size)
        else:
            scale = np.float32(scales[i])
            out = int(np.float32(size) * scale)
        if out == size and scale == 1:
            continue
        src = _source_coords(coord, out, size, scale)
        if mode == "nearest":
            if _ambiguous(nearest, _source_coords(coord, out, size, scale, np.float64)):
                raise UnsupportedGraph(f"{n.op_type} node {n.name!r}: nearest_mode {nearest!r} meets a tie "
                                       f"within float rounding on axis {axis} ({size} -> {out})")
            idx = np.clip(_nearest_index(nearest, src, scale < 1), 0, size - 1).astype(np.int64)
            x = x.index_select(axis, torch.from_numpy(idx).to(x.device))
            continue
        src = np.clip(src, 0, size - 1)
        lo = np.minimum(np.trunc(src).astype(np.int64), size - 1)
        hi = np.minimum(lo + 1, size - 1)
        w_hi = (src - lo).astype(np.float32)
        shape = [1] * rank
        shape[axis] = out
        w = torch.from_numpy(w_hi).to(device=x.device, dtype=x.dtype).reshape(shape)
        x_lo = x.index_select(axis, torch.from_numpy(lo).to(x.device))
        x_hi = x.index_select(axis, torch.from_numpy(hi).to(x.device))
        x = x_lo + (x_hi - x_lo) * w
    return x


# ---------------------------------------------------------------- LSTM


def _check_lstm(n, const):
    acts = n.a("activations")
    if acts and [a.lower() for a in acts] != ["sigmoid", "tanh", "tanh"] * (len(acts) // 3):
        return "LSTM with non-default activations"
    if n.a("clip") is not None:
        return "LSTM with clip"
    if n.a("input_forget", 0):
        return "LSTM with input_forget"
    if len(n.inputs) > 7 and n.inputs[7]:
        return "LSTM with peepholes"
    if n.a("layout", 0):
        return "LSTM with layout=1 (onnxruntime has no reference for it)"
    return None


# ONNX stacks the gates as i, o, f, c; torch as i, f, g(=c), o.
def _gate_perm(hidden: int, device) -> torch.Tensor:
    h = torch.arange(hidden, device=device)
    return torch.cat([h, h + 2 * hidden, h + 3 * hidden, h + hidden])


@op("LSTM", check=_check_lstm)
def _lstm(n, x, w, r, b=None, seq_lens=None, h0=None, c0=None, p=None):
    hidden = n.a("hidden_size") or r.shape[-1]
    direction = n.a("direction", "forward")
    num_dir = 2 if direction == "bidirectional" else 1
    seq, batch = x.shape[0], x.shape[1]
    if seq_lens is not None and bool((seq_lens != seq).any()):
        raise UnsupportedGraph("LSTM with sequence_lens shorter than the sequence")
    zeros = x.new_zeros(num_dir, batch, hidden)
    h0 = zeros if h0 is None else h0
    c0 = zeros if c0 is None else c0
    b = x.new_zeros(num_dir, 8 * hidden) if b is None else b
    perm = _gate_perm(hidden, x.device)
    ys, hs, cs = [], [], []
    for d in range(num_dir):
        reverse = direction == "reverse" or d == 1
        params = [w[d].index_select(0, perm), r[d].index_select(0, perm),
                  b[d, :4 * hidden].index_select(0, perm), b[d, 4 * hidden:].index_select(0, perm)]
        xd = x.flip(0) if reverse else x
        y, h, c = torch.lstm(xd, (h0[d:d + 1].contiguous(), c0[d:d + 1].contiguous()), params,
                             True, 1, 0.0, False, False, False)
        ys.append(y.flip(0) if reverse else y)
        hs.append(h)
        cs.append(c)
    y = torch.stack(ys, dim=1)  # seq, num_dir, batch, hidden
    h, c = torch.cat(hs, 0), torch.cat(cs, 0)
    return y, h, c
