"""Why a model offers no channel group at all, said once instead of a silent "0 total".

A QDQ int8 ResNet-50 and a voice-activity model whose whole graph sits in an ``If`` branch
were both written unchanged with "groups: 0 total, 0 blocked" and no reason.
"""

from __future__ import annotations

import onnx_ir as ir

from onnxcompress.channels.rules import BlockerRule, rule_of
from onnxcompress.channels.rules.blockers import INT8_REASON

_LAYERS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
#: a QDQ graph's markers: float layers whose weights come out of DequantizeLinear (no rule of their own)
_QDQ = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}


def _quantized(node: ir.Node) -> bool:
    """A QDQ marker, or a quantized layer: one whose registry rule blocks for ``INT8_REASON``."""
    if node.op_type in _QDQ:
        return True
    rule = rule_of(node)
    return isinstance(rule, BlockerRule) and rule.reason.endswith(INT8_REASON)


def nothing_to_prune(model: ir.Model) -> str:
    """The reason, as one warning line."""
    ops = {n.op_type for n in model.graph}
    quantized = sorted({n.op_type for n in model.graph if _quantized(n)})
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
