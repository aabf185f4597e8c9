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
from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx
import onnx_ir as ir

from onnxcompress.context import CompressContext
from onnxcompress.errors import CollapseError, InputError, VerificationError
from onnxcompress.feature_outputs import feature_outputs
from onnxcompress.fidelity import Fidelity, compare_outputs, signal_inputs
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


def _random_ints_hint(feeds: list[dict[str, np.ndarray]]) -> str:
    """Where integer inputs were drawn at random, say so: a model that switches on a value (a
    sample rate, a mode flag) may fail on a random one, where it runs on real inputs."""
    ints = {k: v for k, v in feeds[0].items() if np.issubdtype(v.dtype, np.integer)}
    if not ints:
        return ""
    # --calib stacks samples on axis 0, so it cannot give a scalar input (calibration.py says so)
    fix = "" if any(v.ndim == 0 for v in ints.values()) else "; give --calib"
    return f" (random inputs: integer input(s) {', '.join(map(repr, sorted(ints)))} got small random values{fix})"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass
class Reference:
    """What ``ReferencePass`` measured on the untouched input, handed to ``VerifyPass``."""

    #: the verification feeds (batches), and what they are: "calibration" (held-out real inputs) or "random"
    feeds: list[dict[str, np.ndarray]]
    inputs: str
    #: the input model's outputs on ``feeds``
    outputs: dict[str, np.ndarray]
    #: a second sizing of the symbolic spatial dims, its feeds and the input's outputs there (None: not checked)
    second_sizing: dict | None = None
    second_feeds: dict[str, np.ndarray] | None = None
    second_outputs: dict[str, np.ndarray] | None = None
    #: a copy of the input before any pass, for the zero-mode exactness measurement
    snapshot: ir.Model | None = None
    #: the input's outputs that are features, judged by cosine (``feature_outputs``)
    features: frozenset[str] = frozenset()


class ReferencePass(ReportingPass):
    """Run the untouched input once on the verification inputs; nothing is changed.

    Its finding is ``result`` (a ``Reference``), which the pipeline hands to ``VerifyPass``.
    """

    name = "reference_run"

    def __init__(self, ctx: CompressContext) -> None:
        super().__init__()
        self.ctx = ctx
        self.result: Reference | None = None

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        ctx = self.ctx
        if ctx.held_out is not None:
            feeds, inputs = list(ctx.held_out.batches()), "calibration"
        else:
            feeds, inputs = [random_feeds(model, ctx.input_shapes, ctx.config.seed)], "random"
        try:
            session = Session(ctx.source, optimize=False)
        except Exception as exc:  # noqa: BLE001 - no input was fed yet: a hint about them would mislead
            raise InputError(f"onnxruntime cannot load the input model: {_first_line(exc)}") from exc
        features = feature_outputs(model)
        try:
            ref = Reference(feeds, inputs, session.run_all(feeds), features=features)
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"onnxruntime cannot run the input model: {_first_line(exc)}"
                             f"{_random_ints_hint(feeds) if inputs == 'random' else ''}") from exc
        # Dynamic spatial dims are checked at a second sizing too (batch + 1, the others doubled).
        sizing = second_sizing(model, ctx.input_shapes, spatial_only=True)
        if sizing is not None:
            second = random_feeds(model, sizing, ctx.config.seed + 1)
            try:
                ref.second_outputs = session.run(second)
                ref.second_sizing, ref.second_feeds = sizing, second
            except Exception:  # noqa: BLE001 - the input itself does not take that size; nothing to compare
                self.warnings.append(f"the input model does not run at {sizing}; verified at the analysis shapes only")
        if ctx.config.measure_exactness and ctx.config.mode == "remove":
            ref.snapshot = model.clone()
        self.result = ref
        return ir.passes.PassResult(model, False)


#: a written model whose held-out task figure against the original (sequence or top-1 agreement, map F1,
#: mean cosine; 1.0 is the original itself) is under this is written with a warning: PP-OCRv5 rec at 0.8x
#: with --calib-augment 1 (perturbing the samples in place, as it then did) agreed on 0.77 of its held-out
#: lines and read 0.774 of eval's against 0.980 (bench/OFF_MANIFOLD.md), where the only sign was the
#: figure in the report
DEGRADED_BELOW = 0.9


class VerifyPass(ReportingPass):
    """Checker, session, run and fidelity of the result against the reference run.

    ``zero_mode_pipeline`` (given when ``--measure-exactness`` is on) builds the same
    pipeline in zero mode; it is injected so this module does not import the pipeline.
    """

    name = "verify"

    def __init__(self, ctx: CompressContext, reference: ReferencePass,
                 zero_mode_pipeline: Callable[[], ir.passes.PassBase] | None = None) -> None:
        super().__init__()
        self.ctx = ctx
        self.reference_pass = reference
        self.zero_mode_pipeline = zero_mode_pipeline

    @property
    def reference(self) -> Reference:
        ref = self.reference_pass.result
        if ref is None:
            raise RuntimeError("VerifyPass ran before its ReferencePass")
        return ref

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        ctx, cfg, ref = self.ctx, self.ctx.config, self.reference
        ser = Serialized(model)
        check_model(ser)
        try:
            session = Session(ser, optimize=False)
            got = session.run_all(ref.feeds)
        except Exception as exc:  # noqa: BLE001
            raise VerificationError(f"onnxruntime cannot run the output: {_first_line(exc)}") from exc
        signals = signal_inputs(ref.feeds)
        fid = compare_outputs(
            ref.outputs, got, allow_shape_change=cfg.prune_outputs, class_axes=cfg.class_axes, inputs=ref.inputs,
            map_thresholds=cfg.map_thresholds, features=ref.features, signals=signals,
        )
        ctx.report.fidelity = fid.to_dict()
        self._floor(fid)
        if ref.second_sizing is not None:
            ctx.report.fidelity["second_sizing"] = self._second_sizing(session, signals)
        exact = ctx.report.exactness
        if self.zero_mode_pipeline is not None and ref.snapshot is not None and exact and not exact.get("exact", True):
            exact["measured_vs_zero_mode"] = self._against_zero_mode(got)
        return ir.passes.PassResult(model, False)

    def _floor(self, fid: Fidelity) -> None:
        """Refuse a model that collapsed on real held-out inputs (a dead DBNet map once passed silently),
        and warn about one that is alive but far from the original (a figure under ``DEGRADED_BELOW``)."""
        if fid.inputs != "calibration":
            return
        why = fid.collapsed()
        if why is None:
            cfg = self.ctx.config
            far = fid.first_under(DEGRADED_BELOW) if cfg.max_drift is None and cfg.max_accuracy_drop is None else None
            if far is not None:
                self.warnings.append(
                    f"the compressed model is far from the original on {fid.samples} held-out calibration samples "
                    f"({far}, under {DEGRADED_BELOW}); expect a loss of accuracy of that order (a smaller --ratio or a "
                    "larger --target-macs, or --recover distill with more --calib samples, keeps more; --max-drift "
                    "refuses such a model)")
            return
        if self.ctx.config.force:
            self.warnings.append(f"the model collapsed on held-out calibration data ({why}); written because of --force")
            return
        # An unreachable --target-macs is usually why: its warning (and how to reach more) goes with the error.
        reach = next((w for w in self.ctx.report.warnings if " is out of reach: " in w), None)
        raise CollapseError(
            f"the compressed model collapsed on {fid.samples} held-out calibration samples: {why}; nothing was "
            "written (a smaller --ratio or a larger --target-macs keeps more; --force writes it anyway)"
            + (f"; {reach}" if reach else ""),
            report=self.ctx.report,
        )

    def _second_sizing(self, session: Session, signals: bool) -> dict:
        """The output must also run at the second sizing, with the input's output shapes."""
        ref, cfg = self.reference, self.ctx.config
        try:
            got = session.run(ref.second_feeds)
        except Exception as exc:  # noqa: BLE001
            raise VerificationError(
                f"the output runs at the analysis shapes but not at {ref.second_sizing}: {_first_line(exc)}"
            ) from exc
        fid = compare_outputs(ref.second_outputs, got, allow_shape_change=cfg.prune_outputs,
                              map_thresholds=cfg.map_thresholds, features=ref.features, signals=signals)
        return {"input_shapes": {k: list(v) for k, v in ref.second_sizing.items()}, **fid.to_dict()}

    def _against_zero_mode(self, removed_outputs: dict[str, np.ndarray]) -> dict:
        """Run the same plan in zero mode and compare: how far remove mode is from it, in numbers."""
        zero = self.zero_mode_pipeline()(self.reference.snapshot).model
        fid: Fidelity = compare_outputs(Session(zero, optimize=False).run_all(self.reference.feeds), removed_outputs)
        return {"cosine_min": fid.cosine_min, "max_abs_diff": fid.max_abs_diff}
