"""Torch implementations of ONNX ops: elementwise, reductions, shape and tensor ops.

Each op is a function ``fn(node, *inputs) -> Tensor | tuple[Tensor, ...]`` registered in
``OPS`` under its op type (ai.onnx domain only); missing optional inputs arrive as None.
An op whose attributes may ask for something torch cannot express also registers a check
``check(node, const) -> str | None`` that names the reason, so the node is reported as
unsupported instead of being computed differently. ``const(name)`` returns the numpy value
of a constant input, or None when it is only known at run time.
The neural-network ops (conv, pooling, norms, Resize, LSTM) live in ``ops_nn``, the shape and
tensor ops (Reshape, Slice, Gather, Pad, ...) in ``ops_shape``.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import onnx
import torch
import torch.nn.functional as F

OPS: dict[str, Callable[..., Any]] = {}
CHECKS: dict[str, Callable[..., str | None]] = {}

# ONNX tensor element type -> torch dtype. Unsigned types torch barely supports are widened.
DTYPES: dict[int, torch.dtype] = {
    onnx.TensorProto.FLOAT: torch.float32, onnx.TensorProto.DOUBLE: torch.float64,
    onnx.TensorProto.FLOAT16: torch.float16, onnx.TensorProto.BFLOAT16: torch.bfloat16,
    onnx.TensorProto.INT8: torch.int8, onnx.TensorProto.UINT8: torch.uint8,
    onnx.TensorProto.INT16: torch.int16, onnx.TensorProto.UINT16: torch.int32,
    onnx.TensorProto.INT32: torch.int32, onnx.TensorProto.UINT32: torch.int64,
    onnx.TensorProto.INT64: torch.int64, onnx.TensorProto.UINT64: torch.int64,
    onnx.TensorProto.BOOL: torch.bool,
}


class UnsupportedGraph(Exception):
    """The graph holds ops (or op attributes) the torch executor cannot run faithfully."""


@dataclass
class Node:
    """What an op implementation needs of one NodeProto, parsed once."""

    op_type: str
    domain: str
    name: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any]
    opset: int
    extra: dict[str, Any] = field(default_factory=dict)

    def a(self, key: str, default: Any = None) -> Any:
        return self.attrs.get(key, default)

    @staticmethod
    def from_proto(proto: onnx.NodeProto, opset: int) -> "Node":
        attrs = {}
        for attr in proto.attribute:
            value = onnx.helper.get_attribute_value(attr)
            if isinstance(value, bytes):
                value = value.decode("utf-8", "replace")
            elif isinstance(value, list) and value and isinstance(value[0], bytes):
                value = [v.decode("utf-8", "replace") for v in value]
            elif isinstance(value, onnx.TensorProto):
                value = onnx.numpy_helper.to_array(value)
            attrs[attr.name] = value
        return Node(proto.op_type, proto.domain, proto.name, list(proto.input), list(proto.output),
                    attrs, opset)


def op(*names: str, check: Callable[..., str | None] | None = None):
    """Registers an implementation (and an optional attribute check) under op type names."""
    def deco(fn):
        for name in names:
            OPS[name] = fn
            if check is not None:
                CHECKS[name] = check
        return fn
    return deco


def ints(t: torch.Tensor | None) -> list[int] | None:
    """An int64 shape/axes tensor as a Python list (shape subgraphs need not be traceable)."""
    return None if t is None else [int(v) for v in t.reshape(-1).tolist()]


def norm_axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def to_tensor(array: np.ndarray, device: torch.device | None = None) -> torch.Tensor:
    """A numpy array as a torch tensor of the executor's dtype for its ONNX type."""
    if array.dtype == np.uint16 or array.dtype == np.uint32 or array.dtype == np.uint64:
        array = array.astype(np.int64 if array.dtype != np.uint16 else np.int32)
    if array.dtype == object or array.dtype.kind in "SU":
        raise UnsupportedGraph("string tensors are not supported")
    return torch.from_numpy(np.array(array, order="C", copy=True)).to(device)


# ---------------------------------------------------------------- elementwise


def _unary(name: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
    OPS[name] = lambda n, x: fn(x)


for _name, _fn in {
    "Relu": torch.relu, "Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "Erf": torch.erf,
    "Sqrt": torch.sqrt, "Exp": torch.exp, "Log": torch.log, "Neg": torch.neg, "Abs": torch.abs,
    "Reciprocal": torch.reciprocal, "Floor": torch.floor, "Ceil": torch.ceil,
    "Round": torch.round,  # both round half to even
    "Softplus": F.softplus, "HardSwish": F.hardswish, "Sin": torch.sin, "Cos": torch.cos,
    "Sign": torch.sign, "Not": torch.logical_not, "Softsign": F.softsign,
}.items():
    _unary(_name, _fn)

OPS["Identity"] = lambda n, x: x


@op("LeakyRelu")
def _leaky_relu(n, x):
    return F.leaky_relu(x, n.a("alpha", 0.01))


@op("PRelu")
def _prelu(n, x, slope):
    # ONNX broadcasts slope unidirectionally onto x, which F.prelu does not.
    return torch.where(x < 0, x * slope, x)


@op("Elu")
def _elu(n, x):
    return F.elu(x, n.a("alpha", 1.0))


@op("Selu")
def _selu(n, x):
    alpha = n.a("alpha", 1.67326319217681884765625)
    gamma = n.a("gamma", 1.05070102214813232421875)
    return gamma * torch.where(x > 0, x, alpha * (torch.exp(x) - 1))


@op("Celu")
def _celu(n, x):
    return F.celu(x, n.a("alpha", 1.0))


@op("HardSigmoid")
def _hard_sigmoid(n, x):
    return torch.clamp(x * n.a("alpha", 0.2) + n.a("beta", 0.5), 0.0, 1.0)


def _check_gelu(n, const):
    return None if n.a("approximate", "none") in ("none", "tanh") else "unknown Gelu approximation"


@op("Gelu", check=_check_gelu)
def _gelu(n, x):
    return F.gelu(x, approximate=n.a("approximate", "none"))


@op("Clip")
def _clip(n, x, lo=None, hi=None):
    if n.opset < 11:
        lo, hi = n.a("min"), n.a("max")
        return torch.clamp(x, min=lo, max=hi)
    if lo is not None and lo.numel() == 1 and hi is not None and hi.numel() == 1 and not lo.requires_grad \
            and not hi.requires_grad:
        return torch.clamp(x, min=lo.item(), max=hi.item())
    out = x
    if lo is not None:
        out = torch.maximum(out, lo.to(x.dtype))
    if hi is not None:
        out = torch.minimum(out, hi.to(x.dtype))
    return out


OPS["Add"] = lambda n, a, b: a + b
OPS["Sub"] = lambda n, a, b: a - b
OPS["Mul"] = lambda n, a, b: a * b
OPS["Equal"] = lambda n, a, b: a == b
OPS["Less"] = lambda n, a, b: a < b
OPS["LessOrEqual"] = lambda n, a, b: a <= b
OPS["Greater"] = lambda n, a, b: a > b
OPS["GreaterOrEqual"] = lambda n, a, b: a >= b
OPS["And"] = lambda n, a, b: torch.logical_and(a, b)
OPS["Or"] = lambda n, a, b: torch.logical_or(a, b)
OPS["Xor"] = lambda n, a, b: torch.logical_xor(a, b)
OPS["Where"] = lambda n, c, a, b: torch.where(c.bool(), a, b)


@op("Div")
def _div(n, a, b):
    if not a.is_floating_point() and not b.is_floating_point():
        return torch.div(a, b, rounding_mode="trunc")  # C integer division, as onnxruntime
    return a / b


@op("Pow")
def _pow(n, a, b):
    out = torch.pow(a, b)
    return out if out.dtype == a.dtype else out.to(a.dtype)


OPS["Max"] = lambda n, *xs: functools.reduce(torch.maximum, xs)
OPS["Min"] = lambda n, *xs: functools.reduce(torch.minimum, xs)
OPS["Sum"] = lambda n, *xs: functools.reduce(torch.add, xs)
OPS["Mean"] = lambda n, *xs: functools.reduce(torch.add, xs) / len(xs)


def _flat_softmax(n, x, fn):
    if n.opset >= 13:
        return fn(x, norm_axis(n.a("axis", -1), x.dim()))
    # Before opset 13 the input is coerced to 2-D at `axis` and normalised over the tail.
    axis = norm_axis(n.a("axis", 1), x.dim())
    return fn(x.reshape(math.prod(x.shape[:axis]), -1), 1).reshape(x.shape)


OPS["Softmax"] = lambda n, x: _flat_softmax(n, x, torch.softmax)
OPS["LogSoftmax"] = lambda n, x: _flat_softmax(n, x, torch.log_softmax)


@op("MatMul")
def _matmul(n, a, b):
    return torch.matmul(a, b)


@op("Gemm")
def _gemm(n, a, b, c=None):
    if n.a("transA", 0):
        a = a.t()
    if n.a("transB", 0):
        b = b.t()
    out = torch.matmul(a, b)
    alpha, beta = n.a("alpha", 1.0), n.a("beta", 1.0)
    if alpha != 1.0:
        out = out * alpha
    if c is not None:
        out = out + (c * beta if beta != 1.0 else c)
    return out


@op("Einsum")
def _einsum(n, *xs):
    return torch.einsum(n.a("equation").replace(" ", ""), *xs)


@op("Cast", "CastLike", check=lambda n, const: None if n.op_type == "CastLike" or n.a("to") in DTYPES
    else f"Cast to ONNX type {n.a('to')}")
def _cast(n, x, like=None):
    dtype = like.dtype if like is not None else DTYPES[n.a("to")]
    return x.to(dtype)


# ---------------------------------------------------------------- reductions


def _reduce_axes(n, x, axes_in):
    """The reduced axes (None: all) of a Reduce* node across its attribute and input forms."""
    axes = ints(axes_in) if axes_in is not None else n.a("axes")
    if not axes:
        return [] if n.a("noop_with_empty_axes", 0) else None
    return [norm_axis(a, x.dim()) for a in axes]


def _reduction(fn):
    def run(n, x, axes_in=None):
        axes = _reduce_axes(n, x, axes_in)
        if axes == []:
            return x
        if axes is None:
            axes = list(range(x.dim()))
        return fn(x, axes, bool(n.a("keepdims", 1)))
    return run


OPS["ReduceMean"] = _reduction(lambda x, ax, k: torch.mean(x, dim=ax, keepdim=k))
OPS["ReduceSum"] = _reduction(lambda x, ax, k: torch.sum(x, dim=ax, keepdim=k))
OPS["ReduceMax"] = _reduction(lambda x, ax, k: torch.amax(x, dim=ax, keepdim=k))
OPS["ReduceMin"] = _reduction(lambda x, ax, k: torch.amin(x, dim=ax, keepdim=k))
OPS["ReduceL2"] = _reduction(lambda x, ax, k: torch.sqrt(torch.sum(x * x, dim=ax, keepdim=k)))
OPS["ReduceL1"] = _reduction(lambda x, ax, k: torch.sum(torch.abs(x), dim=ax, keepdim=k))
OPS["ReduceSumSquare"] = _reduction(lambda x, ax, k: torch.sum(x * x, dim=ax, keepdim=k))
OPS["ReduceLogSumExp"] = _reduction(lambda x, ax, k: torch.logsumexp(x, dim=ax, keepdim=k))


def _prod(x, axes, keep):
    """torch.prod takes one dim at a time (tf2onnx multiplies shape dims with ReduceProd)."""
    for a in axes:
        x = torch.prod(x, dim=a, keepdim=True)
    return x if keep else x.squeeze(tuple(axes))


OPS["ReduceProd"] = _reduction(_prod)


@op("ArgMax", "ArgMin")
def _argmax(n, x):
    axis = norm_axis(n.a("axis", 0), x.dim())
    keep = bool(n.a("keepdims", 1))
    fn = torch.argmax if n.op_type == "ArgMax" else torch.argmin
    if n.a("select_last_index", 0):
        flipped = fn(x.flip(axis), dim=axis, keepdim=keep)
        return x.shape[axis] - 1 - flipped
    return fn(x, dim=axis, keepdim=keep)
