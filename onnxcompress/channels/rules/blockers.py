"""Ops known to mix channels. Listing them gives the report a precise reason.

Any op without a rule blocks too, with a generic reason; these are the common ones.
"""

from __future__ import annotations

import onnx_ir as ir

from onnxcompress.channels.rules import Rule, register

_REASONS = {
    "LRN": "LRN normalises across neighbouring channels",
    "LayerNormalization": "LayerNormalization normalises over a set of axes as one",
    "GroupNormalization": "GroupNormalization normalises groups of channels together",
    "MeanVarianceNormalization": "MeanVarianceNormalization may reduce over channels",
    "LpNormalization": "LpNormalization may normalise across channels",
    "Hardmax": "Hardmax may run over the channel axis",
    "DepthToSpace": "DepthToSpace moves channels into space",
    "SpaceToDepth": "SpaceToDepth moves space into channels",
    "Gather": "Gather picks positions we do not track",
    "GatherElements": "GatherElements picks positions we do not track",
    "GatherND": "GatherND picks positions we do not track",
    "ScatterND": "ScatterND writes positions we do not track",
    "ScatterElements": "ScatterElements writes positions we do not track",
    "Expand": "Expand may broadcast the channel axis",
    "Tile": "Tile repeats along axes we do not track",
    "Einsum": "Einsum contracts axes we do not track",
    "Where": "Where selects between tensors elementwise (not tracked yet)",
    "TopK": "TopK selects along an axis",
    "ArgMax": "ArgMax reduces an axis",
    "ArgMin": "ArgMin reduces an axis",
    "CumSum": "CumSum accumulates along an axis",
    "If": "If: control flow",
    "Loop": "Loop: control flow",
    "Scan": "Scan: control flow",
    "NonMaxSuppression": "NonMaxSuppression consumes boxes",
    "Attention": "Attention mixes channels",
    "RoiAlign": "RoiAlign (channels kept)",
}


@register(*_REASONS)
class KnownBlockerRule(Rule):
    def propagate(self, node: ir.Node, ctx) -> None:
        ctx.block(node, _REASONS[node.op_type])
