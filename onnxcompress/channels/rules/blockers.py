"""Ops known to mix channels, as registry entries with their reason.

Any op without an entry blocks too, with a generic reason; these are the common ones,
so the report can say precisely why their channels stay.
"""

from __future__ import annotations

from onnxcompress.channels.rules import block_op

for _op, _reason in {
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
    "LSTM": "LSTM mixes its input features into every gate",
    "GRU": "GRU mixes its input features into every gate",
    "RNN": "RNN mixes its input features into its hidden state",
}.items():
    block_op(_op, _reason)

# Before opset 13 Softmax and LogSoftmax flatten the input from their axis into one
# dimension, so channels mix whatever the axis (the opset-13 rule lives in spatial.py).
for _op in ("Softmax", "LogSoftmax"):
    block_op(_op, f"{_op} before opset 13 flattens from its axis, mixing channels", until=12)
