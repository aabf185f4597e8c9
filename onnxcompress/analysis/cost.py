"""Parameters, MACs and receptive fields per node.

MACs follow one convention, stated in the README:
- Conv: output elements x (C_in / group) x prod(kernel)
- ConvTranspose: input elements x (C_out / group) x prod(kernel)
- Gemm and MatMul: output elements x K
Every other op counts zero MACs. Params are the elements of every float
initializer and Constant, counted once, at the first node that reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from onnxcompress.analysis.shapes import Shape
from onnxcompress.constants import const_tensor as _const_tensor

_FLOATS = {ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.DOUBLE, ir.DataType.BFLOAT16}
_WINDOW_OPS = {"Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool"}
_PASS_RF_OPS_STOP = {"GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool", "Flatten", "Gemm", "MatMul", "Reshape"}


@dataclass
class LayerCost:
    name: str
    op: str
    out_shape: list[int] | None
    params: int
    macs: int
    receptive_field: list[float] | None

    def to_dict(self) -> dict:
        rf = self.receptive_field
        if rf is not None:
            rf = [int(x) if float(x).is_integer() else float(x) for x in rf]
        return {
            "name": self.name,
            "op": self.op,
            "out_shape": self.out_shape,
            "params": self.params,
            "macs": self.macs,
            "receptive_field": rf,
        }


@dataclass
class CostSummary:
    params: int
    macs: int
    layers: list[LayerCost] = field(default_factory=list)


def _prod(xs) -> int:
    return int(np.prod(xs, dtype=np.int64)) if len(xs) else 1


def node_macs(node: ir.Node, shapes: dict[str, Shape]) -> int:
    op = node.op_type
    out = node.outputs[0]
    out_shape = shapes.get(out.name)
    if op == "Conv":
        w = shapes.get(node.inputs[1].name)
        if out_shape is None or w is None:
            return 0
        return _prod(out_shape) * int(w[1]) * _prod(w[2:])
    if op == "ConvTranspose":
        x = shapes.get(node.inputs[0].name)
        w = shapes.get(node.inputs[1].name)
        if x is None or w is None:
            return 0
        # The weight is [C_in, C_out / group, *kernel], so w[1] is already per group.
        return _prod(x) * int(w[1]) * _prod(w[2:])
    if op == "Gemm":
        a = shapes.get(node.inputs[0].name)
        if out_shape is None or a is None:
            return 0
        trans_a = node.attributes["transA"].as_int() if "transA" in node.attributes else 0
        k = a[0] if trans_a else a[1]
        return _prod(out_shape) * int(k)
    if op == "MatMul":
        a = shapes.get(node.inputs[0].name)
        if out_shape is None or a is None:
            return 0
        return _prod(out_shape) * int(a[-1])
    return 0


def _window(node: ir.Node, shapes: dict[str, Shape]) -> tuple[int, int] | None:
    """Effective kernel extent and stride along the first spatial axis (max over axes)."""
    op = node.op_type
    if op in ("Conv", "ConvTranspose"):
        w = shapes.get(node.inputs[1].name)
        kernel = list(w[2:]) if w is not None else None
        if "kernel_shape" in node.attributes:
            kernel = list(node.attributes["kernel_shape"].as_ints())
    else:
        kernel = list(node.attributes["kernel_shape"].as_ints()) if "kernel_shape" in node.attributes else None
    if not kernel:
        return None
    n = len(kernel)
    strides = list(node.attributes["strides"].as_ints()) if "strides" in node.attributes else [1] * n
    dil = list(node.attributes["dilations"].as_ints()) if "dilations" in node.attributes else [1] * n
    k_eff = max(d * (k - 1) + 1 for k, d in zip(kernel, dil))
    return k_eff, max(strides)


def analyse_costs(model: ir.Model, shapes: dict[str, Shape]) -> CostSummary:
    """Per-node params, MACs and receptive fields, in graph order."""
    graph = model.graph
    seen: set[int] = set()
    total_params = 0
    # Constant nodes and initializers nobody reads still count, once.
    layers: list[LayerCost] = []
    rf: dict[str, tuple[float, float]] = {}
    from onnxcompress.analysis.shapes import graph_inputs

    for v in graph_inputs(model):
        s = shapes.get(v.name)
        if s is not None and len(s) >= 3:
            rf[v.name] = (1.0, 1.0)
    total_macs = 0
    for node in graph:
        params = 0
        for inp in node.inputs:
            t = _const_tensor(inp)
            if t is None or t.dtype not in _FLOATS or id(t) in seen:
                continue
            if inp.producer() is not None and inp.producer().op_type == "Constant":
                continue  # counted at the Constant node itself
            seen.add(id(t))
            params += t.size
        if node.op_type == "Constant":
            t = _const_tensor(node.outputs[0])
            if t is not None and t.dtype in _FLOATS and id(t) not in seen:
                seen.add(id(t))
                params += t.size
        macs = node_macs(node, shapes)
        total_params += params
        total_macs += macs
        # Receptive field of this node's outputs on the image input.
        in_rf = [rf[i.name] for i in node.inputs if i is not None and i.name in rf]
        node_rf = None
        if in_rf and node.op_type not in _PASS_RF_OPS_STOP:
            r, j = max(x[0] for x in in_rf), max(x[1] for x in in_rf)
            if node.op_type in _WINDOW_OPS:
                win = _window(node, shapes)
                if win is not None:
                    k, s = win
                    if node.op_type == "ConvTranspose":
                        r, j = r + (k - 1) * j / s, j / s
                    else:
                        r, j = r + (k - 1) * j, j * s
            elif node.op_type in ("Resize", "Upsample"):
                x, y = shapes.get(node.inputs[0].name), shapes.get(node.outputs[0].name)
                if x is not None and y is not None and len(x) >= 3 and x[-1]:
                    j = j * x[-1] / y[-1]
            node_rf = (r, j)
            for o in node.outputs:
                rf[o.name] = node_rf
        out_shape = shapes.get(node.outputs[0].name) if node.outputs else None
        layers.append(
            LayerCost(
                name=node.name or f"{node.op_type}_{len(layers)}",
                op=node.op_type,
                out_shape=list(out_shape) if out_shape is not None else None,
                params=params,
                macs=macs,
                receptive_field=list(node_rf) if node_rf is not None else None,
            )
        )
    for v in graph.initializers.values():
        t = v.const_value
        if t is not None and t.dtype in _FLOATS and id(t) not in seen:
            seen.add(id(t))
            total_params += t.size
    return CostSummary(params=total_params, macs=total_macs, layers=layers)
