"""Placeholder: filled in by the folding work (issue 4)."""

from __future__ import annotations

import onnx_ir as ir

from onnxcompress.errors import InputError


class ProjectWeightsPass(ir.passes.InPlacePass):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__()
        self.report: dict = {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        raise InputError("--max-norm/--spectral-clip are not implemented yet")
