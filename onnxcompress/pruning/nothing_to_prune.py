"""Why a model offers no channel group at all, said once instead of a silent "0 total".

A QDQ int8 ResNet-50 and a voice-activity model whose whole graph sits in an ``If`` branch
were both written unchanged with "groups: 0 total, 0 blocked" and no reason.
"""

from __future__ import annotations

import onnx_ir as ir

_LAYERS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
_QUANTIZED = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul",
              "ConvInteger", "MatMulInteger"}


def nothing_to_prune(model: ir.Model) -> str:
    """The reason, as one warning line."""
    ops = {n.op_type for n in model.graph}
    quantized = sorted(ops & _QUANTIZED)
    if quantized:
        return (f"nothing to prune: the model is quantized ({', '.join(quantized[:3])}), and quantized weights are not "
                "pruned; prune the float model, then quantize it")
    inner = sum(1 for n in ir.traversal.RecursiveGraphIterator(model.graph) if n.op_type in _LAYERS) \
        - sum(1 for n in model.graph if n.op_type in _LAYERS)
    holders = sorted({n.op_type for n in model.graph
                      if any(a.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS) for a in n.attributes.values())})
    if inner and holders:
        return (f"nothing to prune: {inner} of the model's layers sit inside {' / '.join(holders)} subgraphs, which are "
                "not analysed")
    if not ops & _LAYERS:
        return "nothing to prune: the graph has no Conv, ConvTranspose, Gemm or MatMul layer"
    return ("nothing to prune: no layer has a constant weight whose output channels could be cut (a MatMul of two "
            "activations, or weights fed as inputs)")
