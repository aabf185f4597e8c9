"""The order of passes, kept in one place, run by ``onnx_ir.passes.PassManager``.

reference run (the untouched input on the verification inputs)
-> fold (lossless: constant weight subgraphs, size-independent shape arithmetic, BN into
Conv/Gemm) -> project (norm constraints into weights)
-> prune (channel groups; with calibration data: data-aware scores, per-group ratios,
recovery) -> tidy (dead nodes, shapes) -> simplify (onnxsim, guarded)
-> verify (checker, onnxruntime run, task-aware fidelity, second sizing).
Loading and saving happen in ``api``.
"""

from __future__ import annotations

from dataclasses import replace

import onnx_ir as ir

from onnxcompress.analysis.cost import analyse_costs
from onnxcompress.analysis.shapes import Shape, ShapeOracle, infer_static_shapes
from onnxcompress.context import CompressContext
from onnxcompress.errors import BudgetError
from onnxcompress.io import model_bytes
from onnxcompress.passes.base import ReportingPass


def build_passes(ctx: CompressContext, *, verify: bool | None = None) -> list[ReportingPass]:
    """The passes ``ctx.config`` asks for, in pipeline order, each reporting to ``ctx.progress``."""
    from onnxcompress.passes.fold_batchnorm import FoldBatchNormPass
    from onnxcompress.passes.fold_constants import FoldConstantWeightsPass
    from onnxcompress.passes.fold_shapes import FoldShapeComputationsPass
    from onnxcompress.passes.project import ProjectWeightsPass
    from onnxcompress.passes.prune import PrunePass
    from onnxcompress.passes.simplify import SimplifyPass
    from onnxcompress.passes.tidy import TidyPass
    from onnxcompress.verify import ReferencePass, VerifyPass

    config = ctx.config
    verify = config.verify if verify is None else verify
    passes: list[ReportingPass] = []
    reference = ReferencePass(ctx) if verify else None
    if reference is not None:
        passes.append(reference)
    if config.fold:
        passes += [FoldConstantWeightsPass(), FoldShapeComputationsPass(ctx.input_shapes, ctx.oracle), FoldBatchNormPass()]
    if config.max_norm is not None or config.spectral_clip is not None:
        passes.append(ProjectWeightsPass(max_norm=config.max_norm, spectral_clip=config.spectral_clip, exclude=config.exclude))
    if config.prunes:
        passes.append(PrunePass(config, ctx.input_shapes, ctx.oracle, ctx=ctx))
    passes.append(TidyPass())
    if config.simplify:
        passes.append(SimplifyPass(ctx.input_shapes))
    if reference is not None:
        zero = (lambda: _zero_mode(ctx)) if config.measure_exactness and config.mode == "remove" else None
        passes.append(VerifyPass(ctx, reference, zero_mode_pipeline=zero))
    for p in passes:
        p.progress = ctx.progress
    return passes


def _zero_mode(ctx: CompressContext) -> ir.passes.PassManager:
    """The same plan in zero mode, unsimplified and unverified (for the exactness measurement)."""
    from onnxcompress.report import CompressReport, ModelStats

    scratch = CompressReport(input=None, output=None, config={}, before=ModelStats(0, 0, 0), after=ModelStats(0, 0, 0))
    zctx = replace(ctx, config=replace(ctx.config, mode="zero", simplify=False), report=scratch, progress=type(ctx.progress)(), oracle=type(ctx.oracle)())
    return ir.passes.PassManager(build_passes(zctx, verify=False))


def run_pipeline(model: ir.Model, ctx: CompressContext) -> ir.Model:
    """Run every pass on ``model`` (in place), each publishing its findings to ``ctx.report`` as
    soon as it has run, so the passes after it see them (verify reads prune's exactness)."""
    for p in build_passes(ctx):
        try:
            model = ir.passes.PassManager([p])(model).model
        except ir.passes.PassError as exc:
            # PassManager wraps what a pass raises; our own errors keep their one-line message.
            cause: BaseException | None = exc
            while isinstance(cause, ir.passes.PassError):
                cause = cause.__cause__
            if isinstance(cause, BudgetError) and cause.report is ctx.report:
                # a refused model's --report gives its own size, not the input's
                try:
                    ctx.report.after = model_stats(model, ctx.input_shapes, model_bytes(model), ctx.oracle)
                except Exception:  # noqa: BLE001 - the refusal is the message; its report keeps the input's size
                    pass
            if cause is not None:
                raise cause from None  # the pass's own error, not PassManager's wrapping
            raise
        p.publish(ctx.report)
    return model


def model_stats(model: ir.Model, input_shapes: dict[str, Shape], size: int, oracle: ShapeOracle | None = None):
    """The parameters, MACs and ``size`` of ``model`` as a report's ``ModelStats``."""
    from onnxcompress.report import ModelStats

    shapes = oracle.shapes(model, input_shapes) if oracle is not None else infer_static_shapes(model, input_shapes)
    cost = analyse_costs(model, shapes)
    return ModelStats(params=cost.params, macs=cost.macs, file_bytes=size)
