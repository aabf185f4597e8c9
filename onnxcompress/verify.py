"""Verification, as two steps of the pipeline: a reference run first, a verify step last.

``ReferencePass`` runs the untouched input on the verification inputs (the held-out
calibration samples when ``--calib`` is given, seeded random inputs otherwise), and at
a second sizing when a dim other than the batch is symbolic. ``VerifyPass`` then holds
the result to the full ONNX checker, an onnxruntime session and a run, and measures
task-aware fidelity against the reference. Nothing is saved unless it passes.

Both runs execute the graphs as written (onnxruntime's graph optimisations off): they
compare two graphs, each run once or twice, and on a 2 GB model the optimisations
(layout changes, BatchNorm fusion, prepacking) cost more time and memory than
everything else here, by holding a second, reordered copy of the weights.
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import onnx
import onnx_ir as ir

from onnxcompress.context import CompressContext
from onnxcompress.errors import CollapseError, InputError, VerificationError
from onnxcompress.fidelity import Fidelity, compare_outputs
from onnxcompress.passes.base import ReportingPass
from onnxcompress.runtime import Serialized, Session, random_feeds, second_sizing

logger = logging.getLogger(__name__)


def check_model(model: ir.Model | Serialized) -> None:
    """Full ONNX checker on ``model``; raises VerificationError.

    An in-memory model is checked as ``Serialized`` writes it: the graph, with its big
    initializers declared as external data, which the checker validates by type and
    shape as it does any external tensor (their bytes come from numpy arrays of that
    shape), so the weights are never serialised for it.
    """
    ser = model if isinstance(model, Serialized) else Serialized(model)
    try:
        onnx.checker.check_model(ser.source, full_check=True)
    except Exception as exc:  # noqa: BLE001
        raise VerificationError(f"onnx checker rejected the output: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class ReferencePass(ReportingPass):
    """Run the untouched input once on the verification inputs; nothing is changed."""

    name = "reference_run"

    def __init__(self, ctx: CompressContext) -> None:
        super().__init__()
        self.ctx = ctx

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        ctx = self.ctx
        if ctx.held_out is not None:
            ctx.verify_feeds, ctx.report_inputs = list(ctx.held_out.batches()), "calibration"
        else:
            ctx.verify_feeds, ctx.report_inputs = [random_feeds(model, ctx.input_shapes, ctx.config.seed)], "random"
        try:
            session = Session(ctx.source, optimize=False)
            ctx.reference = session.run_all(ctx.verify_feeds)
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"onnxruntime cannot run the input model: {_first_line(exc)}") from exc
        # Dynamic spatial dims are checked at a second sizing too (batch + 1, the others doubled).
        ctx.second_sizing = second_sizing(model, ctx.input_shapes, spatial_only=True)
        if ctx.second_sizing is not None:
            ctx.second_feeds = random_feeds(model, ctx.second_sizing, ctx.config.seed + 1)
            try:
                ctx.second_reference = session.run(ctx.second_feeds)
            except Exception:  # noqa: BLE001 - the input itself does not take that size; nothing to compare
                self.warnings.append(f"the input model does not run at {ctx.second_sizing}; verified at the analysis shapes only")
                ctx.second_sizing = None
        if ctx.config.measure_exactness and ctx.config.mode == "remove":
            ctx.snapshot = model.clone()
        return ir.passes.PassResult(model, False)


class VerifyPass(ReportingPass):
    """Checker, session, run and fidelity of the result against the reference run.

    ``zero_mode_pipeline`` (given when ``--measure-exactness`` is on) builds the same
    pipeline in zero mode; it is injected so this module does not import the pipeline.
    """

    name = "verify"

    def __init__(self, ctx: CompressContext, zero_mode_pipeline: Callable[[], ir.passes.PassBase] | None = None) -> None:
        super().__init__()
        self.ctx = ctx
        self.zero_mode_pipeline = zero_mode_pipeline

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        ctx, cfg = self.ctx, self.ctx.config
        ser = Serialized(model)
        check_model(ser)
        try:
            session = Session(ser, optimize=False)
            got = session.run_all(ctx.verify_feeds)
        except Exception as exc:  # noqa: BLE001
            raise VerificationError(f"onnxruntime cannot run the output: {_first_line(exc)}") from exc
        fid = compare_outputs(
            ctx.reference, got, allow_shape_change=cfg.prune_outputs, class_axes=cfg.class_axes, inputs=ctx.report_inputs,
            map_thresholds=cfg.map_thresholds,
        )
        ctx.report.fidelity = fid.to_dict()
        self._floor(fid)
        if ctx.second_sizing is not None:
            ctx.report.fidelity["second_sizing"] = self._second_sizing(session)
        exact = ctx.report.exactness
        if self.zero_mode_pipeline is not None and ctx.snapshot is not None and exact and not exact.get("exact", True):
            exact["measured_vs_zero_mode"] = self._against_zero_mode(got)
        return ir.passes.PassResult(model, False)

    def _floor(self, fid: Fidelity) -> None:
        """Refuse a model that collapsed on real held-out inputs (a dead DBNet map once passed silently)."""
        if fid.inputs != "calibration":
            return
        why = fid.collapsed()
        if why is None:
            return
        if self.ctx.config.force:
            self.warnings.append(f"the model collapsed on held-out calibration data ({why}); written because of --force")
            return
        raise CollapseError(
            f"the compressed model collapsed on {fid.samples} held-out calibration samples: {why}; nothing was "
            "written (a smaller --ratio or a larger --target-macs keeps more; --force writes it anyway)"
        )

    def _second_sizing(self, session: Session) -> dict:
        """The output must also run at the second sizing, with the input's output shapes."""
        ctx = self.ctx
        try:
            got = session.run(ctx.second_feeds)
        except Exception as exc:  # noqa: BLE001
            raise VerificationError(
                f"the output runs at the analysis shapes but not at {ctx.second_sizing}: {_first_line(exc)}"
            ) from exc
        fid = compare_outputs(ctx.second_reference, got, allow_shape_change=ctx.config.prune_outputs,
                              map_thresholds=ctx.config.map_thresholds)
        return {"input_shapes": {k: list(v) for k, v in ctx.second_sizing.items()}, **fid.to_dict()}

    def _against_zero_mode(self, removed_outputs: dict[str, np.ndarray]) -> dict:
        """Run the same plan in zero mode and compare: how far remove mode is from it, in numbers."""
        zero = self.zero_mode_pipeline()(self.ctx.snapshot).model
        fid: Fidelity = compare_outputs(Session(zero, optimize=False).run_all(self.ctx.verify_feeds), removed_outputs)
        return {"cosine_min": fid.cosine_min, "max_abs_diff": fid.max_abs_diff}
