"""Placeholder: filled in by the folding work (issue 4). Does nothing and says so."""

from __future__ import annotations

import onnx_ir as ir


class FoldConstantWeightsPass(ir.passes.InPlacePass):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__()
        self.report: dict = {"status": "not implemented yet"}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        return ir.passes.PassResult(model, False)
