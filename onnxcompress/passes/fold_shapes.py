"""Fold shape arithmetic whose result does not depend on the dynamic dims.

Exporters write ``x.view(b, -1)``, ``chunk`` and channel shuffles as Shape -> Gather ->
Div -> Concat chains, so a Slice bound or Reshape target that is really the constant
channel count arrives as a run-time value, and the channel analysis must block there.
This pass evaluates those chains at two different sizings of every dynamic input dim
(the analysis shapes, then batch + 1 and other symbolic dims doubled) and replaces each
value that comes out the same both times with an initializer. Values that follow the
dynamic dims (the batch, a dynamic H) stay computed.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

from onnxcompress.analysis.shapes import Shape, ShapeOracle
from onnxcompress.runtime import second_sizing
from onnxcompress._ir_utils import add_initializer, const_array, is_const, unique_name, used_names
from onnxcompress.passes.fold_constants import evaluate_node
from onnxcompress.passes.base import ReportingPass

logger = logging.getLogger(__name__)

_MAX_ELEMENTS = 64  # shape arithmetic is small; anything bigger is data, not shape
_NON_DETERMINISTIC = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}


def _axes(node: ir.Node, arrays: list) -> list[int] | None:
    a = node.attributes.get("axes")
    if a is not None:
        return list(a.as_ints())
    return [int(x) for x in arrays[1].ravel()] if len(arrays) > 1 and arrays[1] is not None else None


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if np.issubdtype(a.dtype, np.integer):
        return np.trunc(a / b).astype(a.dtype)  # ONNX integer Div truncates
    return a / b


# numpy for the common shape-arithmetic ops; anything else goes to the ONNX reference evaluator.
_FAST = {
    "Identity": lambda n, x: x[0],
    "Gather": lambda n, x: np.take(x[0], x[1], axis=n.attributes["axis"].as_int() if "axis" in n.attributes else 0),
    "Unsqueeze": lambda n, x: np.expand_dims(x[0], tuple(a % (x[0].ndim + len(_axes(n, x))) for a in _axes(n, x))),
    "Squeeze": lambda n, x: np.squeeze(x[0], tuple(a % x[0].ndim for a in _axes(n, x)) if _axes(n, x) else None),
    "Concat": lambda n, x: np.concatenate(x, axis=n.attributes["axis"].as_int()),
    "Add": lambda n, x: np.add(x[0], x[1]).astype(x[0].dtype),
    "Sub": lambda n, x: np.subtract(x[0], x[1]).astype(x[0].dtype),
    "Mul": lambda n, x: np.multiply(x[0], x[1]).astype(x[0].dtype),
    "Div": lambda n, x: _div(x[0], x[1]),
}


def _fast_eval(node: ir.Node, arrays: list) -> list[np.ndarray] | None:
    fn = _FAST.get(node.op_type)
    if fn is None or any(a is None for a in arrays) or len(node.outputs) != 1:
        return None
    return [np.asarray(fn(node, arrays))]


def _shape_of(node: ir.Node, shape: Shape) -> np.ndarray:
    arr = np.array(shape, dtype=np.int64)
    if node.op_type == "Size":
        return np.array(int(np.prod(arr)), dtype=np.int64)
    start = node.attributes["start"].as_int() if "start" in node.attributes else 0
    end = node.attributes["end"].as_int() if "end" in node.attributes else None
    return arr[start:end]


class FoldShapeComputationsPass(ReportingPass):
    """Replace shape arithmetic that is the same for any input size by initializers."""

    name = "fold_shapes"

    def __init__(self, input_shapes: dict[str, Shape], oracle: ShapeOracle | None = None) -> None:
        super().__init__()
        self.input_shapes = input_shapes
        self.oracle = oracle or ShapeOracle()

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        if not any(n.op_type in ("Shape", "Size") for n in graph):
            return ir.passes.PassResult(model, False)
        alt = second_sizing(model, self.input_shapes)
        try:
            sizings = [self.oracle.shapes(model, self.input_shapes)]
            if alt is not None:
                sizings.append(self.oracle.shapes(model, alt))
        except Exception as exc:  # noqa: BLE001 - folding is an optimisation, never a failure
            self.report = {"skipped": f"shapes could not be inferred: {exc}"}
            return ir.passes.PassResult(model, False)
        values: dict[ir.Value, list[np.ndarray]] = {}
        for node in graph:
            outs = self._evaluate(model, node, sizings, values)
            if outs is not None:
                for o, arrs in zip(node.outputs, outs):
                    values[o] = arrs
        folded = 0
        taken = used_names(graph)
        for v, arrs in values.items():
            if v.is_graph_output() or not v.uses():
                continue
            if not all(a.shape == arrs[0].shape and np.array_equal(a, arrs[0]) for a in arrs[1:]):
                continue
            if v.producer() is not None and v.producer().op_type == "Constant":
                continue
            name = unique_name(graph, f"{v.name}_folded", taken)
            taken.add(name)
            v.replace_all_uses_with(add_initializer(model, name, arrs[0]))
            folded += 1
        self.report = {"values_folded": folded, "sizings_compared": len(sizings)}
        return ir.passes.PassResult(model, folded > 0)

    @staticmethod
    def _evaluate(model, node, sizings, values) -> list[list[np.ndarray]] | None:
        """This node's outputs under each sizing, or None when it is not shape arithmetic."""
        if node.domain not in ("", "ai.onnx") or node.op_type in _NON_DETERMINISTIC:
            return None
        if any(a.type == ir.AttributeType.GRAPH or a.type == ir.AttributeType.GRAPHS for a in node.attributes.values()):
            return None
        if node.op_type in ("Shape", "Size"):
            x = node.inputs[0]
            shapes = [s.get(x.name) for s in sizings]
            if any(s is None for s in shapes):
                return None
            return [[_shape_of(node, s) for s in shapes]]
        ins = [v for v in node.inputs if v is not None]
        if not ins or not any(v in values for v in ins):
            return None
        if not all(v in values or is_const(v) for v in ins):
            return None
        results = []
        for k in range(len(sizings)):
            arrays = [None if v is None else (values[v][k] if v in values else const_array(v)) for v in node.inputs]
            if any(a is not None and a.size > _MAX_ELEMENTS for a in arrays):
                return None
            try:
                outs = _fast_eval(node, arrays) or evaluate_node(model, node, arrays)
            except Exception:  # noqa: BLE001 - not evaluable: leave it computed
                return None
            if any(o.size > _MAX_ELEMENTS for o in outs):
                return None
            results.append(outs)
        return [list(per_out) for per_out in zip(*results)]
