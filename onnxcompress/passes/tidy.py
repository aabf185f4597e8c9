"""Tidy: drop dead nodes and initializers, keep the node order topological."""

from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes.common import (
    RemoveUnusedFunctionsPass,
    RemoveUnusedNodesPass,
    RemoveUnusedOpsetsPass,
    TopologicalSortPass,
)

from onnxcompress.passes.base import ReportingPass


class TidyPass(ReportingPass):
    """Remove what no output depends on and sort the graph."""

    name = "tidy"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        before_nodes = len(model.graph)
        before_inits = len(model.graph.initializers)
        seq = ir.passes.Sequential(
            RemoveUnusedNodesPass(), RemoveUnusedFunctionsPass(), RemoveUnusedOpsetsPass(), TopologicalSortPass()
        )
        result = seq(model)
        self.report = {
            "nodes_removed": before_nodes - len(model.graph),
            "initializers_removed": before_inits - len(model.graph.initializers),
        }
        return ir.passes.PassResult(result.model, result.modified)
