"""Python API: ``inspect`` and ``compress``. Both accept a path, an ``onnx.ModelProto`` or an ``ir.Model``."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import onnx_ir as ir

from onnxcompress.analysis.cost import analyse_costs
from onnxcompress.analysis.shapes import Shape, infer_static_shapes, resolve_input_shapes
from onnxcompress.config import CompressConfig
from onnxcompress.io import ModelLike, file_bytes, load_model, model_bytes, save_model
from onnxcompress.report import CompressReport, InspectReport, ModelStats

logger = logging.getLogger(__name__)


def _source_path(src: ModelLike) -> Path | None:
    return Path(src) if isinstance(src, (str, os.PathLike)) else None


def inspect(
    model_or_path: ModelLike, input_shapes: dict[str, Shape] | None = None, groups: bool = False, block_ops: list[str] | None = None,
    attention: str = "heads"
) -> InspectReport:
    """Per-layer params, MACs and receptive fields, with totals.

    With ``groups`` it also lists the channel groups pruning would work on, and the
    blockers that keep the other channels, without changing anything.
    """
    path = _source_path(model_or_path)
    model = load_model(model_or_path)
    shapes_in = resolve_input_shapes(model, input_shapes)
    shapes = infer_static_shapes(model, shapes_in)
    cost = analyse_costs(model, shapes)
    size = file_bytes(path) if path is not None else model_bytes(model)
    report = InspectReport(
        params=cost.params,
        macs=cost.macs,
        file_bytes=size,
        layers=cost.layers,
        input_shapes={k: list(v) for k, v in shapes_in.items()},
    )
    unsized = [layer.name for layer in cost.layers if layer.params and layer.out_shape is None and not layer.macs
               and layer.op not in ("Add", "Sub", "Mul", "Div", "Gather")]
    if unsized:
        report.warnings.append(
            f"MACs not counted for {len(unsized)} weight layer(s) ({', '.join(unsized[:3])}{', ...' if len(unsized) > 3 else ''}): "
            "their shapes could not be inferred, nor measured by running the model on random inputs; the MACs total "
            "leaves them out (pin the input sizes with --input-shape)")
    if groups:
        from onnxcompress.pruning.plan import describe_groups

        # Groups as compress sees them: after its folding passes (Identity-fed weights,
        # shape arithmetic, BatchNorm), which would otherwise show up as blockers here.
        folded = _folded(model, shapes_in)
        report.groups, report.blockers = describe_groups(folded, infer_static_shapes(folded, shapes_in), block_ops or (),
                                                         attention=attention)
    if not cost.params or (groups and not report.groups and not report.blockers):
        from onnxcompress.pruning.nothing_to_prune import nothing_to_prune

        report.warnings.append(nothing_to_prune(model))
    return report


def _folded(model: ir.Model, input_shapes: dict[str, Shape]) -> ir.Model:
    """``model`` after compress's folding passes (in place; the layer table is computed before)."""
    from onnxcompress.passes.fold_batchnorm import FoldBatchNormPass
    from onnxcompress.passes.fold_constants import FoldConstantWeightsPass
    from onnxcompress.passes.fold_shapes import FoldShapeComputationsPass

    for p in (FoldConstantWeightsPass(), FoldShapeComputationsPass(input_shapes), FoldBatchNormPass()):
        model = p(model).model
    return model


@dataclass
class Result:
    """The compressed model (not yet saved) and what was done to it."""

    model: ir.Model
    report: CompressReport
    #: the input kept its weights in external data, so the output does too
    external_data: bool = False

    def save(self, path: str | os.PathLike) -> Path:
        from onnxcompress.io import EXTERNAL_DATA_THRESHOLD, has_external_data, tensor_bytes

        external = self.external_data or has_external_data(self.model) or tensor_bytes(self.model) > EXTERNAL_DATA_THRESHOLD
        out = save_model(self.model, path, input_path=self.report.input, external_data=external)
        self.report.output = str(out)
        self.report.after.file_bytes = file_bytes(out)
        return out


def compress(model_or_path: ModelLike, config: CompressConfig | None = None, on_stage=None, *,
             search_cache=None, data_sink=None) -> Result:
    """Fold, project, prune, tidy and simplify a model, then verify it against the input.

    The input is never modified (an ``ir.Model`` argument is cloned). Raises
    ``VerificationError`` when the result fails the checker, a session or a run.
    ``on_stage(name)`` is called as each stage starts (the CLI shows it as progress).
    With ``config.calib`` the decisions and the fidelity figures use real inputs.
    ``search_cache`` (a ``pruning.search_cache.SearchCache``) lets several compressions of one
    model share the calibration data and the sensitivity sweep (budget and speed searches).
    ``data_sink`` (a ``spill.DataSink`` for the output's data file, used only when the input
    has external data) receives the weights the prune pass cuts; ``io.stage_model`` then keeps
    that file as the output's.
    """
    from onnxcompress.context import CompressContext
    from onnxcompress.io import has_external_data
    from onnxcompress.passes.base import Progress
    from onnxcompress.pipeline import model_stats, run_pipeline

    config = config or CompressConfig()
    config.validate()
    if config.target_speedup is not None:
        from onnxcompress.speed_target import search_speedup

        return search_speedup(model_or_path, config, on_stage, compress)
    if config.max_drift is not None or config.max_accuracy_drop is not None:
        from onnxcompress.search import search_under_budget

        return search_under_budget(model_or_path, config, on_stage, compress)
    from onnxcompress import auto_rounds

    if auto_rounds.applies(config):
        return auto_rounds.choose_rounds(model_or_path, config, on_stage, compress)
    if config.allocation_rounds == "auto":
        config = replace(config, allocation_rounds=1)  # nothing to choose without a calibrated target
    progress = Progress(on_stage)
    t0 = time.perf_counter()
    path = _source_path(model_or_path)
    model = load_model(model_or_path)
    if isinstance(model_or_path, ir.Model):
        model = model.clone()
    progress.timings["load_s"] = time.perf_counter() - t0

    input_shapes = resolve_input_shapes(model, config.input_shapes)
    size_before = file_bytes(path) if path is not None else model_bytes(model)
    ctx = CompressContext(
        config=config,
        input_shapes=input_shapes,
        report=CompressReport(input=str(path) if path is not None else None, output=None, config=config.to_dict(),
                              before=ModelStats(0, 0, 0), after=ModelStats(0, 0, 0)),
        # An unchanged file is read by onnxruntime directly (no re-serialising); an
        # in-memory model is read by the reference run, which comes before any change.
        source=path if path is not None else model,
        progress=progress,
    )
    ctx.report.before = ctx.report.after = model_stats(model, input_shapes, size_before, ctx.oracle)
    if config.calib is not None:
        if search_cache is not None:
            ctx.search_cache = search_cache
        _load_calibration(ctx, model)
    input_external = has_external_data(model)
    if input_external:
        ctx.data_sink = data_sink
    model = run_pipeline(model, ctx)
    ctx.report.after = model_stats(model, input_shapes, model_bytes(model), ctx.oracle)
    progress.timings["total_s"] = time.perf_counter() - t0
    ctx.report.timings = progress.timings
    return Result(model=model, report=ctx.report, external_data=input_external)


def _load_calibration(ctx, model: ir.Model) -> None:
    """Read --calib and split it: the fit part drives decisions, the held-out part judges them."""
    from onnxcompress.calibration import load_calibration

    cfg = ctx.config
    cache = ctx.search_cache
    key = (str(cfg.calib), repr(cfg.calib_image), cfg.calib_samples)
    if cache.calibration is not None and cache.calibration[0] == key:
        cal = cache.calibration[1]  # a search's later probes: the same data, read once
    else:
        cal = load_calibration(cfg.calib, model, cfg.calib_image, limit=cfg.calib_samples)
        cache.calibration = (key, cal)
    ctx.calib, ctx.held_out = cal.split(cfg.held_out, seed=cfg.seed)
    ctx.report.calibration = {
        "source": cal.source,
        "samples": cal.samples,
        "fit_samples": ctx.calib.samples,
        "held_out_samples": ctx.held_out.samples,
        "fixed_batch": cal.fixed_batch,
        **({"notes": cal.notes} if cal.notes else {}),
    }
