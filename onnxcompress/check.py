"""``onnxcompress check``: a CI gate that fails when a compressed model got worse.

The compressed model must load, pass the ONNX checker and run; fidelity against the
original on the same inputs, and both models' params, MACs and file size, are always
reported. Only the thresholds the user gives (on the command line or in a ``--recipe``)
are gated. Exit codes: 0 all gates pass, 1 a gate failed, 2 bad input.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxcompress.check_args import DEFAULT_MAX_SECONDS, check_parser
from onnxcompress.check_report import CheckReport, render_check
from onnxcompress.errors import InputError
from onnxcompress.gates import NOT_RUN, Criterion, describe, gate, model_figures, size_criteria
from onnxcompress.speedgate import DEFAULT_CONFIDENCE, FAIL

__all__ = ["CheckConfig", "CheckReport", "Criterion", "check", "check_parser", "render_check", "run_check"]

logger = logging.getLogger(__name__)


@dataclass
class CheckConfig:
    """Thresholds (None = not gated) and how to measure."""

    min_cosine: float | None = None
    max_abs_diff: float | None = None
    min_top1: float | None = None
    #: per-position top-1 agreement along class axes (classes, CTC sequences, dense maps)
    min_agreement: float | None = None
    #: F1 of a probability map's binarized foreground (the lowest over map outputs)
    min_map_f1: float | None = None
    map_thresholds: dict[str, float] = field(default_factory=dict)
    #: real inputs (a path, see ``calibration``): fidelity is measured on them
    calib: str | None = None
    class_axes: dict[str, int] = field(default_factory=dict)
    max_macs_ratio: float | None = None
    max_params_ratio: float | None = None
    #: the compressed file with its external data, in MB (10^6 bytes)
    max_size_mb: float | None = None
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    inputs: dict[str, Any] | None = None
    seed: int = 0
    #: labelled evaluation set (an ``accuracy.LabelledSet``) for accuracy gates
    eval_data: Any = None
    min_accuracy: float | None = None
    max_accuracy_drop: float | None = None
    #: speed gate (see ``speedgate``): provider, batch (None: 1, or the batch of ``inputs``)
    min_speedup: float | None = None
    provider: str = "cpu"
    batch: int | None = None
    #: pairs at the first look; each later look doubles them
    iters: int = 30
    warmup: int = 5
    threads: int | None = None
    max_seconds: float = DEFAULT_MAX_SECONDS
    confidence: float = DEFAULT_CONFIDENCE
    on_inconclusive: str = FAIL
    #: {"path", "sha256"} of the recipe, recorded in the report
    recipe: dict | None = None

    def validate(self) -> None:
        if self.iters < 1 or self.warmup < 0:
            raise InputError("--iters must be >= 1 and --warmup >= 0")
        if self.min_speedup is not None and self.min_speedup <= 0:
            raise InputError(f"--min-speedup must be positive, got {self.min_speedup}")
        if self.max_seconds <= 0:
            raise InputError(f"--max-seconds must be positive, got {self.max_seconds}")
        if not 0.5 <= self.confidence < 1:
            raise InputError(f"--confidence must be in [0.5, 1), got {self.confidence}")
        if self.batch is not None and self.batch < 1:
            raise InputError(f"--batch must be >= 1, got {self.batch}")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"--threads must be >= 1, got {self.threads}")
        if self.on_inconclusive not in ("pass", "fail"):
            raise InputError(f"--on-inconclusive: expected pass or fail, got {self.on_inconclusive!r}")


def check(model_path: str, compressed_path: str, config: CheckConfig) -> CheckReport:
    """Measure ``compressed_path`` against ``model_path`` and gate it on ``config``."""
    from onnxcompress.feature_outputs import feature_outputs
    from onnxcompress.fidelity import signal_inputs
    from onnxcompress.io import load_model

    config.validate()
    t0 = time.perf_counter()
    report = CheckReport(model=str(model_path), compressed=str(compressed_path), recipe=config.recipe)
    ref_model = load_model(model_path)
    if not Path(compressed_path).exists():
        raise InputError(f"no such file: {compressed_path}")
    batches, shapes, inputs_kind = _check_inputs(ref_model, config)
    ref_out, got = _run_both(model_path, compressed_path, batches, report)
    report.criteria += _fidelity_criteria(ref_out, got, inputs_kind, config, report, feature_outputs(ref_model),
                                          signal_inputs(batches))
    if config.eval_data is not None:
        report.criteria += _accuracy_criteria(ref_model, compressed_path, config, report, got is not None)
    report.criteria += _size_criteria(model_path, compressed_path, ref_model, shapes, config, report)
    if config.min_speedup is not None:
        report.criteria.append(_speed_criterion(model_path, compressed_path, ref_model, config, report, got is not None))
    report.seconds = time.perf_counter() - t0
    return report


def _check_inputs(ref_model, config: CheckConfig):
    """(feeds in batches, analysis shapes, what they are): calibration data, given inputs, or random."""
    from onnxcompress.analysis.shapes import resolve_input_shapes
    from onnxcompress.runtime import random_feeds

    if config.calib is not None:
        from onnxcompress.calibration import load_calibration

        batches = list(load_calibration(config.calib, ref_model).batches())
        return batches, {k: tuple(v.shape) for k, v in batches[0].items()}, "calibration"
    if config.inputs is not None:
        from onnxcompress.npz_inputs import check_feeds_fit

        feeds = dict(config.inputs)
        check_feeds_fit(ref_model, feeds)
        return [feeds], {k: tuple(v.shape) for k, v in feeds.items()}, "given"
    shapes = resolve_input_shapes(ref_model, config.input_shapes)
    return [random_feeds(ref_model, shapes, config.seed)], shapes, "random"


def _run_both(model_path, compressed_path, batches, report: CheckReport):
    """The reference's outputs, and the candidate's (None when it fails to load, check or run)."""
    from onnxcompress.io import load_model
    from onnxcompress.runtime import Session
    from onnxcompress.verify import check_model

    try:
        # The files are read by onnxruntime as given, external data included.
        ref_out = Session(model_path).run_all(batches)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"onnxruntime cannot run the reference model: {str(exc).splitlines()[0]}") from exc
    got = None
    try:
        check_model(load_model(compressed_path))
        got = Session(compressed_path).run_all(batches)
        runs = gate("loads_and_runs", "loads, passes the checker, runs", 1.0, 1.0, ">=")
    except Exception as exc:  # noqa: BLE001 - any failure here is the gate's verdict
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        runs = gate("loads_and_runs", "loads, passes the checker, runs", 0.0, 1.0, ">=", msg)
    report.criteria.append(runs)
    return ref_out, got


def _fidelity_criteria(ref_out, got, inputs_kind: str, config: CheckConfig, report: CheckReport,
                       features: frozenset[str] = frozenset(), signals: bool = False) -> list[Criterion]:
    from onnxcompress.fidelity import compare_outputs

    fid = None
    fid_error = "" if got is not None else NOT_RUN
    if got is not None:
        try:
            if set(got) != set(ref_out):
                raise ValueError(f"outputs differ: {sorted(ref_out)} vs {sorted(got)}")
            fid = compare_outputs(ref_out, got, class_axes=config.class_axes, map_thresholds=config.map_thresholds,
                                  inputs="calibration" if inputs_kind == "calibration" else "random", features=features,
                                  signals=signals)
            report.fidelity = fid.to_dict()
            if inputs_kind == "given":
                report.fidelity["inputs"] = "given (--inputs)"
                report.fidelity.pop("note", None)
        except Exception as exc:  # noqa: BLE001
            fid_error = str(exc).splitlines()[0]
    if config.min_top1 is not None and fid is not None and fid.top1_agreement is None:
        raise InputError("--min-top1: the outputs do not look like class scores (N x classes), top-1 is not measurable")
    out = [
        gate("min_cosine", "min cosine", fid.cosine_min if fid else None, config.min_cosine, ">=", fid_error),
        gate("max_abs_diff", "max abs diff", fid.max_abs_diff if fid else None, config.max_abs_diff, "<=", fid_error),
    ]
    if config.min_top1 is not None or (fid is not None and fid.top1_agreement is not None):
        out.append(gate("min_top1", "top-1 agreement", fid.top1_agreement if fid else None, config.min_top1, ">=", fid_error))
    if config.min_agreement is not None or (fid is not None and fid.agreement is not None):
        out.append(gate("min_agreement", "top-1 agreement per position (class axes)",
                        fid.agreement if fid else None, config.min_agreement, ">=", fid_error))
    if config.min_map_f1 is not None or (fid is not None and fid.map_f1 is not None):
        out.append(gate("min_map_f1", "probability map F1 (binarized foreground)",
                        fid.map_f1 if fid else None, config.min_map_f1, ">=", fid_error))
    fidelity_gates = (config.min_cosine, config.min_top1, config.min_agreement, config.min_map_f1, config.max_abs_diff)
    why = fid.collapsed() if fid is not None else None
    if why is not None and all(g is None for g in fidelity_gates):
        report.warnings.append(f"no fidelity gate was set, and the compressed model collapsed against the original "
                               f"({why}): gate it with --min-cosine, --min-agreement or --min-map-f1")
    return out


def _accuracy_criteria(ref_model, compressed_path, config: CheckConfig, report: CheckReport, ok: bool) -> list[Criterion]:
    from onnxcompress.io import load_model

    if not ok:
        return [gate("min_accuracy", "accuracy", None, config.min_accuracy, ">=", NOT_RUN),
                gate("max_accuracy_drop", "accuracy drop", None, config.max_accuracy_drop, "<=", NOT_RUN)]
    from onnxcompress.accuracy import accuracy

    data = config.eval_data
    a = accuracy(ref_model, data)
    b = accuracy(load_model(compressed_path), data)
    report.accuracy = {"original": a, "compressed": b, "drop": a - b, "samples": len(data), "task": data.task}
    return [
        gate("min_accuracy", "accuracy (compressed)", b, config.min_accuracy, ">="),
        gate("max_accuracy_drop", "accuracy drop", a - b, config.max_accuracy_drop, "<="),
    ]


def _size_criteria(model_path, compressed_path, ref_model, shapes, config: CheckConfig,
                   report: CheckReport) -> list[Criterion]:
    """Params, MACs (per sample: batch 1 where it is free) and bytes of both files, gated where asked."""
    from onnxcompress.bench.runner import batched_shapes

    try:
        shapes = batched_shapes(ref_model, shapes, 1)
    except InputError:
        pass  # a fixed batch: MACs at that batch
    before, why_a = model_figures(model_path, shapes)
    after, why_b = model_figures(compressed_path, shapes)
    report.figures = {"original": before.to_dict(), "compressed": after.to_dict()}
    if before.macs is not None and after.macs is not None:
        report.macs = {"original": before.macs, "compressed": after.macs,
                       "ratio": after.macs / before.macs if before.macs else None}
    return size_criteria(before, after, why_b or why_a, config.max_macs_ratio, config.max_params_ratio,
                         config.max_size_mb)


def _speed_criterion(model_path, compressed_path, ref_model, config: CheckConfig, report: CheckReport,
                     ok: bool) -> Criterion:
    from onnxcompress.bench.runner import batched_shapes
    from onnxcompress.runtime import random_feeds
    from onnxcompress.speedgate import interleaved_sampler, open_pair, sequential_gate

    if config.inputs is not None:
        feeds = dict(config.inputs)
        batch = next((int(v.shape[0]) for v in feeds.values() if getattr(v, "ndim", 0) >= 1), 1)
        if config.batch is not None and config.batch != batch:
            raise InputError(f"--batch {config.batch}: the --inputs file holds batch {batch}; give one of them")
    else:
        batch = config.batch or 1
        feeds = random_feeds(ref_model, batched_shapes(ref_model, config.input_shapes, batch), config.seed)
    label = f"speedup, {config.provider} batch {batch} (median pair ratio)"
    if not ok:
        return gate("min_speedup", label, None, config.min_speedup, ">=", NOT_RUN)
    sa, sb = open_pair(model_path, compressed_path, config.provider, config.threads, feeds)
    result = sequential_gate(
        interleaved_sampler(sa, sb, config.warmup), config.min_speedup, first_pairs=config.iters,
        max_seconds=config.max_seconds, confidence=config.confidence, on_inconclusive=config.on_inconclusive,
    )
    result.setup = {"provider": config.provider, "provider_used": sa.provider_used, "batch": batch,
                    "io_binding": sa.binding is not None, "threads": config.threads}
    report.speedup = result.to_dict()
    details = {k: report.speedup[k] for k in ("verdict", "ci_low", "ci_high", "confidence", "pairs")}
    return Criterion("min_speedup", label, result.final.median, config.min_speedup, ">=", passed=result.passed,
                     message=result.summary(), details=details)


def run_check(argv: list[str]) -> int:
    from onnxcompress.accuracy import load_labelled
    from onnxcompress.analysis.shapes import parse_input_shapes
    from onnxcompress.npz_inputs import load_npz_inputs
    from onnxcompress.cli_args import parse_class_axes, parse_map_thresholds
    from onnxcompress.io import load_model
    from onnxcompress.paths import Staging, require_regular_file, validate_outputs
    from onnxcompress.recipe import parse_args
    from onnxcompress.render import make_console

    args, recipe = parse_args(check_parser(), argv, "check")
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.ERROR,
                        format="%(levelname)s %(name)s: %(message)s")
    if (args.min_accuracy is not None or args.max_accuracy_drop is not None) and not args.eval:
        raise InputError("--min-accuracy/--max-accuracy-drop need labelled data: --eval FILE.npz")
    require_regular_file(args.model, "reference model")
    validate_outputs([args.calib, args.eval, args.inputs, args.recipe],
                     {"--junit": args.junit, "--json": args.json, "--markdown": args.markdown},
                     models=[args.model, args.compressed])
    config = CheckConfig(
        min_cosine=args.min_cosine,
        max_abs_diff=args.max_abs_diff,
        min_top1=args.min_top1,
        min_agreement=args.min_agreement,
        min_map_f1=args.min_map_f1,
        map_thresholds=parse_map_thresholds(args.map_threshold),
        calib=args.calib,
        class_axes=parse_class_axes(args.class_axis),
        max_macs_ratio=args.max_macs_ratio,
        max_params_ratio=args.max_params_ratio,
        max_size_mb=args.max_size_mb,
        input_shapes=parse_input_shapes(args.input_shape),
        inputs=load_npz_inputs(args.inputs) if args.inputs else None,
        seed=args.seed,
        eval_data=load_labelled(args.eval, load_model(args.model), args.eval_x, args.eval_y) if args.eval else None,
        min_accuracy=args.min_accuracy,
        max_accuracy_drop=args.max_accuracy_drop,
        min_speedup=args.min_speedup,
        provider=args.provider,
        batch=args.batch,
        iters=args.iters,
        warmup=args.warmup,
        threads=args.threads,
        max_seconds=args.max_seconds,
        confidence=args.confidence,
        on_inconclusive=args.on_inconclusive,
        recipe=recipe.record() if recipe else None,
    )
    config.validate()
    console = make_console(args.quiet)
    with console.status("checking...", spinner="dots") if not args.quiet else _Null():
        report = check(args.model, args.compressed, config)
    render_check(report, console)
    with Staging() as staging:  # all reports or none
        for path, text in ((args.junit, report.to_junit), (args.json, report.to_json),
                           (args.markdown, report.to_markdown)):
            if path:
                staging.text(path, text())
        staging.commit()
    for c in report.failed:  # CI logs show why, even with -q
        print(f"onnxcompress check: gate {c.name} failed: {describe(c)}", file=sys.stderr)
    return 0 if report.passed else 1


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False
