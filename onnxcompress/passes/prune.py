"""Placeholder for the pruning pass; replaced by the channel-group engine."""

from __future__ import annotations

import onnx_ir as ir

from onnxcompress.errors import InputError


class PrunePass(ir.passes.InPlacePass):
    def __init__(self, config, input_shapes) -> None:
        super().__init__()
        self.report: dict = {}
        self.result = None

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        raise InputError("pruning is not implemented yet")
