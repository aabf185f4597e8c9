"""The order of passes, kept in one place.

fold (lossless: constant weight subgraphs, size-independent shape arithmetic, BN into
Conv/Gemm) -> project (norm constraints into weights)
-> prune (channel groups, zero or remove) -> tidy (dead nodes, shapes)
-> simplify (onnxsim, guarded). Verification and saving happen in ``api``.
"""

from __future__ import annotations

import onnx_ir as ir

from onnxcompress.analysis.shapes import Shape, ShapeOracle
from onnxcompress.config import CompressConfig


def build_passes(
    config: CompressConfig, input_shapes: dict[str, Shape], oracle: ShapeOracle | None = None
) -> list[tuple[str, ir.passes.PassBase]]:
    """The named passes ``config`` asks for, in pipeline order; ``oracle`` shares shape analysis."""
    oracle = oracle or ShapeOracle()
    from onnxcompress.passes.fold_batchnorm import FoldBatchNormPass
    from onnxcompress.passes.fold_constants import FoldConstantWeightsPass
    from onnxcompress.passes.fold_shapes import FoldShapeComputationsPass
    from onnxcompress.passes.project import ProjectWeightsPass
    from onnxcompress.passes.prune import PrunePass
    from onnxcompress.passes.simplify import SimplifyPass
    from onnxcompress.passes.tidy import TidyPass

    passes: list[tuple[str, ir.passes.PassBase]] = []
    if config.fold:
        passes.append(("fold_constants", FoldConstantWeightsPass()))
        passes.append(("fold_shapes", FoldShapeComputationsPass(input_shapes, oracle)))
        passes.append(("fold_batchnorm", FoldBatchNormPass()))
    if config.max_norm is not None or config.spectral_clip is not None:
        passes.append(
            ("project", ProjectWeightsPass(max_norm=config.max_norm, spectral_clip=config.spectral_clip, exclude=config.exclude))
        )
    if config.ratio > 0:
        passes.append(("prune", PrunePass(config, input_shapes, oracle)))
    passes.append(("tidy", TidyPass()))
    if config.simplify:
        passes.append(("simplify", SimplifyPass(input_shapes)))
    return passes
