"""Python API: ``inspect`` and ``compress``. Both accept a path, an ``onnx.ModelProto`` or an ``ir.Model``."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import onnx_ir as ir

from onnxcompress.analysis.cost import analyse_costs
from onnxcompress.analysis.shapes import Shape, ShapeOracle, infer_static_shapes, resolve_input_shapes
from onnxcompress.config import CompressConfig
from onnxcompress.errors import InputError
from onnxcompress.io import ModelLike, file_bytes, load_model, model_bytes, save_model
from onnxcompress.report import Blocker, CompressReport, InspectReport, LayerChange, ModelStats

logger = logging.getLogger(__name__)


def _source_path(src: ModelLike) -> Path | None:
    return Path(src) if isinstance(src, (str, os.PathLike)) else None


def inspect(model_or_path: ModelLike, input_shapes: dict[str, Shape] | None = None, groups: bool = False) -> InspectReport:
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
    if groups:
        from onnxcompress.passes.prune_plan import describe_groups

        report.groups, report.blockers = describe_groups(model, shapes)
    return report


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


def _stats(model: ir.Model, input_shapes: dict[str, Shape], size: int, oracle: ShapeOracle | None = None) -> ModelStats:
    shapes = oracle.shapes(model, input_shapes) if oracle is not None else infer_static_shapes(model, input_shapes)
    cost = analyse_costs(model, shapes)
    return ModelStats(params=cost.params, macs=cost.macs, file_bytes=size)


def compress(model_or_path: ModelLike, config: CompressConfig | None = None, on_stage=None) -> Result:
    """Fold, project, prune, tidy and simplify a model, then verify it against the input.

    The input is never modified (an ``ir.Model`` argument is cloned). Raises
    ``VerificationError`` when the result fails the checker, a session or a run.
    ``on_stage(name)`` is called as each stage starts (the CLI shows it as progress).
    """
    stage = on_stage or (lambda name: None)
    from onnxcompress.verify import SessionHolder, random_inputs, verify_against

    config = config or CompressConfig()
    config.validate()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    path = _source_path(model_or_path)
    model = load_model(model_or_path)
    if isinstance(model_or_path, ir.Model):
        model = model.clone()
    timings["load_s"] = time.perf_counter() - t0
    from onnxcompress.io import has_external_data

    input_external = has_external_data(model)

    input_shapes = resolve_input_shapes(model, config.input_shapes)
    size_before = file_bytes(path) if path is not None else model_bytes(model)
    oracle = ShapeOracle()
    before = _stats(model, input_shapes, size_before, oracle)

    reference = None
    # Dynamic spatial dims are checked at a second sizing too (batch + 1, the others doubled).
    second = _second_sizing(model, input_shapes) if config.verify else None
    second_reference = None
    early_warnings: list[str] = []
    if config.verify:
        stage("reference run")
        t = time.perf_counter()
        feeds = random_inputs(model, input_shapes, config.seed)
        try:
            # An unchanged file is read by onnxruntime directly (no re-serialising).
            ref_session = SessionHolder(path if path is not None else model)
            reference = ref_session.run(feeds)
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"onnxruntime cannot run the input model: {str(exc).splitlines()[0]}") from exc
        if second is not None:
            second_feeds = random_inputs(model, second, config.seed + 1)
            try:
                second_reference = ref_session.run(second_feeds)
            except Exception:  # noqa: BLE001 - the input itself does not take that size; nothing to compare
                early_warnings.append(f"the input model does not run at {second}; verified at the analysis shapes only")
                second = None
        del ref_session
        timings["reference_run_s"] = time.perf_counter() - t

    report = CompressReport(
        input=str(path) if path is not None else None,
        output=None,
        config=config.to_dict(),
        before=before,
        after=before,
        warnings=early_warnings,
    )
    model = _run_passes(model, config, input_shapes, report, timings, oracle, stage)

    if config.verify:
        stage("verify")
        t = time.perf_counter()
        # Inputs are never pruned, so the compressed model shapes the same random feeds.
        fid = verify_against(model, model, input_shapes, seed=config.seed, reference_outputs=reference,
                             allow_shape_change=config.prune_outputs)
        report.fidelity = fid.to_dict()
        if second is not None:
            report.fidelity["second_sizing"] = _verify_second_sizing(model, second, second_feeds, second_reference, config)
        timings["verify_s"] = time.perf_counter() - t
        if config.measure_exactness and config.mode == "remove" and report.exactness and not report.exactness.get("exact", True):
            t = time.perf_counter()
            report.exactness["measured_vs_zero_mode"] = _measure_against_zero_mode(
                model_or_path, config, input_shapes, feeds, fid.outputs
            )
            timings["exactness_check_s"] = time.perf_counter() - t
    report.after = _stats(model, input_shapes, model_bytes(model), oracle)
    timings["total_s"] = time.perf_counter() - t0
    report.timings = timings
    return Result(model=model, report=report, external_data=input_external)


def _second_sizing(model: ir.Model, input_shapes: dict[str, Shape]) -> dict[str, Shape] | None:
    """Another sizing of the inputs when a dim other than the batch is symbolic, else None."""
    from onnxcompress.analysis.shapes import graph_inputs
    from onnxcompress.passes.fold_shapes import alternate_shapes

    spatial = any(
        v.shape is not None and any(not isinstance(d, int) for d in list(v.shape)[1:]) for v in graph_inputs(model)
    )
    return alternate_shapes(model, input_shapes) if spatial else None


def _verify_second_sizing(model, sizing, feeds, reference, config: CompressConfig) -> dict:
    """The output must also run at the second sizing, with the input's output shapes."""
    from onnxcompress.errors import VerificationError
    from onnxcompress.verify import SessionHolder, compare_outputs

    try:
        got = SessionHolder(model).run(feeds)
    except Exception as exc:  # noqa: BLE001
        raise VerificationError(
            f"the output runs at the analysis shapes but not at {sizing}: {str(exc).splitlines()[0]}"
        ) from exc
    fid = compare_outputs(reference, got, allow_shape_change=config.prune_outputs)
    return {"input_shapes": {k: list(v) for k, v in sizing.items()}, **fid.to_dict()}


def _run_passes(model, config: CompressConfig, input_shapes, report: CompressReport, timings: dict, oracle=None, stage=None) -> ir.Model:
    from onnxcompress.pipeline import build_passes

    oracle = oracle or ShapeOracle()
    for name, p in build_passes(config, input_shapes, oracle):
        if stage is not None:
            stage(name.replace("_", " "))
        t = time.perf_counter()
        result = p(model)
        model = result.model
        if name == "prune" and result.modified:
            oracle.clear()  # channel counts changed
        timings[f"{name}_s"] = time.perf_counter() - t
        section = getattr(p, "report", None)
        if section:
            report.passes[name] = section
        _merge_prune_section(report, name, p)
        for w in getattr(p, "warnings", []) or []:
            report.warnings.append(w)
    return model


def _measure_against_zero_mode(model_or_path, config, input_shapes, feeds, removed_outputs) -> dict:
    """Run the same plan in zero mode and compare: how far remove mode is from it, in numbers."""
    from dataclasses import replace

    from onnxcompress.verify import SessionHolder, compare_outputs

    zero_model = load_model(model_or_path)
    if isinstance(model_or_path, ir.Model):
        zero_model = zero_model.clone()
    scratch = CompressReport(input=None, output=None, config={}, before=ModelStats(0, 0, 0), after=ModelStats(0, 0, 0))
    zero_model = _run_passes(zero_model, replace(config, mode="zero", simplify=False), input_shapes, scratch, {})
    fid = compare_outputs(SessionHolder(zero_model).run(feeds), removed_outputs)
    return {"cosine_min": fid.cosine_min, "max_abs_diff": fid.max_abs_diff}


def _merge_prune_section(report: CompressReport, name: str, p: object) -> None:
    """Lift the pruning pass's findings to the report's top level."""
    if name != "prune":
        return
    pr = getattr(p, "result", None)
    if pr is None:
        return
    report.groups = pr.groups
    report.blockers = [Blocker(**b) for b in pr.blockers]
    report.layers = [LayerChange(**c) for c in pr.layers]
    report.pruned_l1_mass = pr.pruned_l1_mass
    report.importance = pr.importance
    report.exactness = pr.exactness
