"""Ops known to mix channels, as registry entries with their reason.

Any op without an entry blocks too, with a generic reason; these are the common ones,
so the report can say precisely why their channels stay.
"""

from __future__ import annotations

from onnxcompress.analysis.macs import conv_macs, gemm_macs, matmul_macs, recurrent
from onnxcompress.channels.rules import block_op

for _op, _reason in {
    "LRN": "LRN normalises across neighbouring channels",
    "MeanVarianceNormalization": "MeanVarianceNormalization may reduce over channels",
    "LpNormalization": "LpNormalization may normalise across channels",
    "Hardmax": "Hardmax may run over the channel axis",
    "DepthToSpace": "DepthToSpace moves channels into space",
    "SpaceToDepth": "SpaceToDepth moves space into channels",
    "GatherElements": "GatherElements picks positions we do not track",
    "GatherND": "GatherND picks positions we do not track",
    "ScatterND": "ScatterND writes positions we do not track",
    "ScatterElements": "ScatterElements writes positions we do not track",
    "Expand": "Expand may broadcast the channel axis",
    "Tile": "Tile repeats along axes we do not track",
    "Where": "Where selects between tensors elementwise (not tracked yet)",
    "TopK": "TopK selects along an axis",
    "ArgMax": "ArgMax reduces an axis",
    "ArgMin": "ArgMin reduces an axis",
    "CumSum": "CumSum accumulates along an axis",
    "If": "If: control flow",
    "Loop": "Loop: control flow",
    "Scan": "Scan: control flow",
    "NonMaxSuppression": "NonMaxSuppression consumes boxes",
    "RoiAlign": "RoiAlign (channels kept)",
}.items():
    block_op(_op, _reason)

# Ops that mix channels and cost MACs: their rule owns their cost too (``analysis.cost``).
block_op("LSTM", "LSTM mixes its input features into every gate", macs=recurrent(4))
block_op("GRU", "GRU mixes its input features into every gate", macs=recurrent(3))
block_op("RNN", "RNN mixes its input features into its hidden state", macs=recurrent(1))
#: the reason every quantized layer blocks (``pruning.nothing_to_prune`` recognises them by it)
INT8_REASON = "quantized weights are not pruned through (prune the float model, then quantize)"
block_op("ConvInteger", f"ConvInteger: {INT8_REASON}", macs=conv_macs)
block_op("QLinearConv", f"QLinearConv: {INT8_REASON}", macs=lambda n, s: conv_macs(n, s, 3))
block_op("MatMulInteger", f"MatMulInteger: {INT8_REASON}", macs=matmul_macs)
block_op("QLinearMatMul", f"QLinearMatMul: {INT8_REASON}", macs=matmul_macs)
# onnxruntime's contrib ops; DynamicQuantizeLSTM stores W and R transposed (see ``macs.recurrent_macs``)
block_op("QGemm", f"QGemm: {INT8_REASON}", domain="com.microsoft", macs=gemm_macs)
block_op("DynamicQuantizeMatMul", f"DynamicQuantizeMatMul: {INT8_REASON}", domain="com.microsoft", macs=matmul_macs)
block_op("MatMulIntegerToFloat", f"MatMulIntegerToFloat: {INT8_REASON}", domain="com.microsoft", macs=matmul_macs)
block_op("DynamicQuantizeLSTM", f"DynamicQuantizeLSTM: {INT8_REASON}", domain="com.microsoft", macs=recurrent(4, True))
