"""The consumer side of an op rule: how an op that reads pruned channels through a constant
weight treats them once they are gone.

A rule whose op is such a consumer (Conv, ConvTranspose, Gemm, MatMul) sets
``consumer = SomeHooks()``. The engines ask these hooks, and no list of op names:

- remove mode (``pruning.consumer_folding``): ``fold`` gives what the removed input
  channels' constants (or calibrated means) add to each output channel, and ``add_bias``
  writes that into the op;
- recovery (``pruning.recover``, ``pruning.calibrated``): ``refit_reason`` says whether the op
  is refit by least squares (None) or why not, and ``as_rows`` / ``target_rows`` /
  ``matrices`` / ``write`` lay its input, output and weight out as a (G, K, out/G) problem;
- measurement (``pruning.activations``): every consumer's input features are measured;
- distillation (``pruning.distill_step``): ``channels_first`` says whether its output
  channels lie on axis 1, so a boundary feature can drop the removed ones.

The defaults describe ``x[..., K] @ W[K, N]`` (MatMul); Conv and Gemm override what differs.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import onnx_ir as ir

from onnxcompress._ir_utils import const_array, set_weight
from onnxcompress.channels.state import Slot


class FoldContext(Protocol):
    """What a consumer hook may use of the applier while remove mode folds constants."""

    exact_borders: bool

    def tensor(self, v: ir.Value) -> np.ndarray: ...
    def shape(self, v: ir.Value | None) -> tuple[int, ...] | None: ...
    def inexact(self, note: str) -> None: ...
    def checked(self, node: ir.Node, vals: np.ndarray) -> np.ndarray: ...
    def write(self, v: ir.Value, arr: np.ndarray) -> None: ...
    def set_input_const(self, node: ir.Node, index: int, arr: np.ndarray) -> None: ...
    def add_after(self, node: ir.Node, const: np.ndarray, label: str) -> ir.Value: ...
    def track_new_bias(self, node: ir.Node, bias: ir.Value) -> None: ...
    def can_map_borders(self, node: ir.Node) -> bool: ...
    def defer_border_map(self, node: ir.Node, taps: np.ndarray) -> None: ...
    def border_map(self, node: ir.Node, taps: np.ndarray) -> np.ndarray | None: ...


def ints_attr(node: ir.Node, name: str, default: list[int]) -> list[int]:
    a = node.attributes.get(name)
    return list(a.as_ints()) if a is not None else list(default)


#: float64 elements of a removed weight slice widened at once when folding its constant
FOLD_CHUNK_ELEMENTS = 8 << 20


def linear_fold(app: FoldContext, s: Slot, c: np.ndarray, gone: np.ndarray) -> np.ndarray:
    """sum over removed inputs k of c[k] * W[k along the slot axis]: a delta per output feature."""
    node = s.node
    w = app.tensor(s.value)
    vals = app.checked(node, c[gone]).astype(np.float64)
    if not vals.any():  # nothing to fold: the removed slice is not even read
        return np.zeros([d for i, d in enumerate(w.shape) if i != s.axis % w.ndim])
    idx = np.flatnonzero(gone)
    # The removed slice is read a chunk at a time and widened to float64 there: a 1 GB
    # weight must not get a float64 twin (issue 17's 16384 x 16384 Gemm peaked at 2.2x).
    per_row = max(w.size // max(w.shape[s.axis], 1), 1)
    step = max(1, FOLD_CHUNK_ELEMENTS // per_row)
    delta = None
    for k in range(0, len(idx), step):
        part = np.take(w, idx[k:k + step], axis=s.axis).astype(np.float64)
        contrib = np.tensordot(vals[k:k + step], part, axes=([0], [s.axis]))
        delta = contrib if delta is None else delta + contrib
    return delta


def add_to_bias_input(app: FoldContext, node: ir.Node, delta: np.ndarray) -> None:
    """Add ``delta`` to input 2 (a per-output-channel bias), creating it when absent."""
    dtype = app.tensor(node.inputs[1]).dtype
    if len(node.inputs) > 2 and node.inputs[2] is not None:
        bias_v = node.inputs[2]
        app.write(bias_v, (app.tensor(bias_v).astype(np.float64) + delta).astype(dtype))
    else:
        app.set_input_const(node, 2, delta.astype(dtype))
        app.track_new_bias(node, node.inputs[2])


def write_bias(model: ir.Model, node: ir.Node, b: np.ndarray, dtype) -> None:
    """Write a refit bias into input 2, in place where it exists with that size, else as a new initializer."""
    bv = node.inputs[2] if len(node.inputs) > 2 else None
    old = const_array(bv) if bv is not None else None
    if old is not None and old.size == b.size:
        set_weight(bv, b.reshape(old.shape).astype(dtype))
        return
    from onnxcompress._ir_utils import add_initializer

    v = add_initializer(model, f"{node.name or node.op_type}_refit_bias", b.astype(dtype))
    if len(node.inputs) < 3:
        node.resize_inputs(3)
    node.replace_input_with(2, v)


class ConsumerHooks:
    """An op that reads channels through its constant weight (input 1), as ``x[..., K] @ W[K, N]``."""

    #: its output channels lie on axis 1 (NCHW) rather than on the last axis
    channels_first = False

    # ----- remove mode: the removed channels' constants -----
    def fold(self, app: FoldContext, s: Slot, c: np.ndarray, gone: np.ndarray) -> np.ndarray | None:
        """What the removed inputs (``gone``, worth ``c`` each) add per output channel."""
        return linear_fold(app, s, c, gone)

    def add_bias(self, app: FoldContext, node: ir.Node, delta: np.ndarray) -> None:
        """Make the op's output ``delta`` larger per output channel (MatMul: an Add after it)."""
        bias = app.add_after(node, delta.astype(app.tensor(node.inputs[1]).dtype), "folded_bias")
        app.track_new_bias(node, bias)

    # ----- recovery: least-squares refit -----
    def refit_reason(self, node: ir.Node) -> str | None:
        """None when the op is refit by least squares, else why not."""
        return None

    def groups(self, node: ir.Node) -> int:
        return 1

    def as_rows(self, node: ir.Node, x: np.ndarray, w_shape: tuple[int, ...]) -> np.ndarray:
        """The op's input as rows per group, (G, rows, K)."""
        return x.reshape(-1, x.shape[-1])[None]

    def target_rows(self, node: ir.Node, y: np.ndarray) -> np.ndarray:
        """The op's output as (rows, out), in the order ``as_rows`` gives its inputs."""
        return y.reshape(-1, y.shape[-1])

    def row_width(self, node: ir.Node, w: np.ndarray) -> int:
        """K: the unknowns per output of the least-squares problem."""
        return int(w.shape[0])

    def matrices(self, node: ir.Node) -> tuple[np.ndarray, np.ndarray | None]:
        """The weight as (G, K, out/G) float64 matrices and the bias as (G, out/G) (None: no bias input)."""
        return const_array(node.inputs[1]).astype(np.float64)[None], None

    def write(self, model: ir.Model, node: ir.Node, mat: np.ndarray, b: np.ndarray | None) -> None:
        """Store refit matrices (as ``matrices`` gives them) back into the op's initializers."""
        w_old = const_array(node.inputs[1])
        set_weight(node.inputs[1], mat[0].astype(w_old.dtype))


def bias_matrix(node: ir.Node, mat: np.ndarray) -> np.ndarray:
    """Input 2 broadcast to (G, out/G) in float64 (zeros when absent)."""
    bv = node.inputs[2] if len(node.inputs) > 2 else None
    barr = const_array(bv) if bv is not None else None
    n_out = mat.shape[0] * mat.shape[2]
    b = np.zeros(n_out) if barr is None else np.broadcast_to(barr.astype(np.float64), (n_out,)).copy()
    return b.reshape(mat.shape[0], mat.shape[2])
