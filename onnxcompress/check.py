"""``onnxcompress check``: a CI gate that fails when a compressed model got worse.

The compressed model must load, pass the ONNX checker and run; fidelity against the
original on the same inputs is always measured. Only the thresholds the user gives
are gated. Exit codes: 0 all gates pass, 1 a gate failed, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from onnxcompress.errors import InputError

logger = logging.getLogger(__name__)


@dataclass
class Criterion:
    """One measured quantity; ``passed`` is None when the user set no threshold for it."""

    name: str
    label: str
    value: float | None
    threshold: float | None = None
    op: str = ""  # ">=" or "<=" when gated
    passed: bool | None = None
    message: str = ""

    @property
    def gated(self) -> bool:
        return self.passed is not None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class CheckConfig:
    """Thresholds (None = not gated) and how to measure."""

    min_cosine: float | None = None
    max_abs_diff: float | None = None
    min_top1: float | None = None
    #: per-position top-1 agreement along class axes (classes, CTC sequences, dense maps)
    min_agreement: float | None = None
    #: real inputs (a path, see ``calibration``): fidelity is measured on them
    calib: str | None = None
    class_axes: dict[str, int] = field(default_factory=dict)
    min_speedup: float | None = None
    max_macs_ratio: float | None = None
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    inputs: dict[str, Any] | None = None
    iters: int = 30
    warmup: int = 5
    threads: int | None = None
    seed: int = 0
    #: labelled evaluation set (an ``accuracy.LabelledSet``) for accuracy gates
    eval_data: Any = None
    min_accuracy: float | None = None
    max_accuracy_drop: float | None = None


@dataclass
class CheckReport:
    model: str
    compressed: str
    criteria: list[Criterion] = field(default_factory=list)
    fidelity: dict | None = None
    speedup: dict | None = None
    macs: dict | None = None
    accuracy: dict | None = None
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.criteria if c.gated)

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "compressed": self.compressed,
            "passed": self.passed,
            "criteria": [c.to_dict() for c in self.criteria],
            "fidelity": self.fidelity,
            "speedup": self.speedup,
            "macs": self.macs,
            "accuracy": self.accuracy,
            "seconds": self.seconds,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_junit(self) -> str:
        """JUnit XML: one testcase per gated criterion; ungated measurements as properties."""
        gated = [c for c in self.criteria if c.gated]
        suites = ET.Element("testsuites")
        suite = ET.SubElement(
            suites, "testsuite", name="onnxcompress.check", tests=str(len(gated)),
            failures=str(sum(not c.passed for c in gated)), errors="0", skipped="0", time=f"{self.seconds:.3f}",
        )
        props = ET.SubElement(suite, "properties")
        ET.SubElement(props, "property", name="model", value=self.model)
        ET.SubElement(props, "property", name="compressed", value=self.compressed)
        for c in self.criteria:
            if not c.gated and c.value is not None:
                ET.SubElement(props, "property", name=_MEASURE.get(c.name, c.name), value=_fmt(c.value))
        for c in gated:
            case = ET.SubElement(suite, "testcase", classname="onnxcompress.check", name=c.name, time="0")
            text = _describe(c)
            if not c.passed:
                ET.SubElement(case, "failure", message=text, type="GateFailed").text = c.message or text
            else:
                ET.SubElement(case, "system-out").text = text
        ET.indent(suites)
        return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


_MEASURE = {"min_cosine": "cosine_min", "max_abs_diff": "max_abs_diff", "min_top1": "top1_agreement",
            "min_agreement": "agreement",
            "min_speedup": "speedup", "max_macs_ratio": "macs_ratio"}


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.6g}"


def _describe(c: Criterion) -> str:
    s = f"{c.label} = {_fmt(c.value)}"
    if c.gated:
        s += f" (required {c.op} {_fmt(c.threshold)})"
    if c.message:
        s += f": {c.message}"
    return s


def _gate(name: str, label: str, value: float | None, threshold: float | None, op: str, message: str = "") -> Criterion:
    c = Criterion(name=name, label=label, value=value, threshold=threshold, op=op if threshold is not None else "")
    c.message = message
    if threshold is not None:
        c.passed = value is not None and (value >= threshold if op == ">=" else value <= threshold)
    return c


def check(model_path: str, compressed_path: str, config: CheckConfig) -> CheckReport:
    """Measure ``compressed_path`` against ``model_path`` and gate it on ``config``."""
    from onnxcompress.analysis.shapes import graph_inputs, resolve_input_shapes
    from onnxcompress.io import load_model
    from onnxcompress.runtime import Session, random_feeds
    from onnxcompress.verify import check_model, compare_outputs

    t0 = time.perf_counter()
    report = CheckReport(model=str(model_path), compressed=str(compressed_path))
    ref_model = load_model(model_path)
    if not Path(compressed_path).exists():
        raise InputError(f"no such file: {compressed_path}")
    names = [v.name for v in graph_inputs(ref_model)]
    if config.calib is not None:
        from onnxcompress.calibration import load_calibration

        cal = load_calibration(config.calib, ref_model)
        batches, inputs_kind = list(cal.batches()), "calibration"
        feeds = batches[0]
        shapes = {k: tuple(v.shape) for k, v in feeds.items()}
    elif config.inputs is not None:
        feeds = dict(config.inputs)
        if set(feeds) != set(names):
            raise InputError(f"--inputs: keys {sorted(feeds)} do not match the model's inputs {sorted(names)}")
        shapes = {k: tuple(v.shape) for k, v in feeds.items()}
    else:
        shapes = resolve_input_shapes(ref_model, config.input_shapes)
        feeds = random_feeds(ref_model, shapes, config.seed)
    if config.calib is None:
        batches, inputs_kind = [feeds], ("given" if config.inputs is not None else "random")
    from onnxcompress.verify import run_all

    try:
        # The files are read by onnxruntime as given, external data included.
        ref_out = run_all(Session(model_path), batches)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"onnxruntime cannot run the reference model: {str(exc).splitlines()[0]}") from exc

    got = None
    try:
        comp = load_model(compressed_path)
        check_model(comp)
        got = run_all(Session(compressed_path), batches)
        runs = _gate("loads_and_runs", "loads, passes the checker, runs", 1.0, 1.0, ">=")
    except Exception as exc:  # noqa: BLE001 - any failure here is the gate's verdict
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        runs = _gate("loads_and_runs", "loads, passes the checker, runs", 0.0, 1.0, ">=", msg)
    report.criteria.append(runs)

    fid = None
    fid_error = "" if got is not None else "not measured: the compressed model did not run"
    if got is not None:
        try:
            if set(got) != set(ref_out):
                raise ValueError(f"outputs differ: {sorted(ref_out)} vs {sorted(got)}")
            fid = compare_outputs(ref_out, got, class_axes=config.class_axes,
                                  inputs="calibration" if inputs_kind == "calibration" else "random")
            report.fidelity = fid.to_dict()
            if inputs_kind == "given":
                report.fidelity["inputs"] = "given (--inputs)"
                report.fidelity.pop("note", None)
        except Exception as exc:  # noqa: BLE001
            fid_error = str(exc).splitlines()[0]
    if config.min_top1 is not None and fid is not None and fid.top1_agreement is None:
        raise InputError("--min-top1: the outputs do not look like class scores (N x classes), top-1 is not measurable")
    report.criteria += [
        _gate("min_cosine", "min cosine", fid.cosine_min if fid else None, config.min_cosine, ">=", fid_error),
        _gate("max_abs_diff", "max abs diff", fid.max_abs_diff if fid else None, config.max_abs_diff, "<=", fid_error),
    ]
    if config.min_top1 is not None or (fid is not None and fid.top1_agreement is not None):
        report.criteria.append(
            _gate("min_top1", "top-1 agreement", fid.top1_agreement if fid else None, config.min_top1, ">=", fid_error)
        )

    if config.min_agreement is not None or (fid is not None and fid.agreement is not None):
        report.criteria.append(_gate("min_agreement", "top-1 agreement per position (class axes)",
                                     fid.agreement if fid else None, config.min_agreement, ">=", fid_error))
    if config.eval_data is not None:
        report.criteria += _accuracy_criteria(ref_model, compressed_path, config, report, got is not None)
    if config.max_macs_ratio is not None:
        report.criteria.append(_macs_criterion(model_path, compressed_path, shapes, config, report, got is not None))
    if config.min_speedup is not None:
        report.criteria.append(_speedup_criterion(model_path, compressed_path, feeds, config, report, got is not None))
    report.seconds = time.perf_counter() - t0
    return report


def _accuracy_criteria(ref_model, compressed_path, config, report, ok: bool) -> list[Criterion]:
    from onnxcompress.io import load_model

    if not ok:
        msg = "not measured: the compressed model did not run"
        return [_gate("min_accuracy", "accuracy", None, config.min_accuracy, ">=", msg),
                _gate("max_accuracy_drop", "accuracy drop", None, config.max_accuracy_drop, "<=", msg)]
    from onnxcompress.accuracy import accuracy

    data = config.eval_data
    a = accuracy(ref_model, data)
    b = accuracy(load_model(compressed_path), data)
    report.accuracy = {"original": a, "compressed": b, "drop": a - b, "samples": len(data), "task": data.task}
    return [
        _gate("min_accuracy", "accuracy (compressed)", b, config.min_accuracy, ">="),
        _gate("max_accuracy_drop", "accuracy drop", a - b, config.max_accuracy_drop, "<="),
    ]


def _macs_criterion(model_path, compressed_path, shapes, config, report, ok: bool) -> Criterion:
    from onnxcompress.api import inspect

    label = "MACs ratio (kept)"
    if not ok:
        return _gate("max_macs_ratio", label, None, config.max_macs_ratio, "<=", "not measured: the compressed model did not run")
    shapes = {k: tuple(v) for k, v in shapes.items()}
    try:
        a, b = inspect(model_path, shapes).macs, inspect(compressed_path, shapes).macs
    except Exception as exc:  # noqa: BLE001
        return _gate("max_macs_ratio", label, None, config.max_macs_ratio, "<=", f"not measured: {exc}")
    ratio = b / a if a else None
    report.macs = {"original": a, "compressed": b, "ratio": ratio}
    return _gate("max_macs_ratio", label, ratio, config.max_macs_ratio, "<=", "" if a else "the original has 0 MACs")


def _speedup_criterion(model_path, compressed_path, feeds, config, report, ok: bool) -> Criterion:
    from onnxcompress.bench.runner import BenchConfig, run_benchmark

    label = "CPU speedup (median ratio)"
    if not ok:
        return _gate("min_speedup", label, None, config.min_speedup, ">=", "not measured: the compressed model did not run")
    bc = BenchConfig(providers=["cpu"], iters=config.iters, warmup=config.warmup, threads=config.threads,
                     inputs=feeds, fidelity=False)
    run = run_benchmark(model_path, compressed_path, bc).runs[0]
    report.speedup = {"batch": run.batch, **run.paired.to_dict(), "a_p50_ms": run.a.p50_ms, "b_p50_ms": run.b.p50_ms}
    return _gate("min_speedup", label, run.paired.speedup, config.min_speedup, ">=")


def check_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="onnxcompress check",
        description="CI gate: COMPRESSED must load and run; its fidelity against MODEL on the same inputs is "
        "always reported, and each threshold you give is a gate. Exit 0 all pass, 1 a gate failed, 2 bad input.",
    )
    p.add_argument("model", help="the original .onnx model")
    p.add_argument("compressed", help="the compressed .onnx model")
    p.add_argument("--min-cosine", type=float, help="gate: min per-sample cosine of the outputs")
    p.add_argument("--max-abs-diff", type=float, help="gate: max abs difference of the outputs")
    p.add_argument("--min-top1", type=float, help="gate: top-1 agreement in [0, 1] (class-score outputs)")
    p.add_argument("--min-agreement", type=float,
                   help="gate: per-position top-1 agreement along every output's class axis ((N,C) scores, (N,T,C) "
                   "CTC sequences, (N,C,H,W) maps), the lowest over outputs, in [0, 1]")
    p.add_argument("--calib", metavar="PATH",
                   help="real inputs (.npz keyed by input name, or a folder of .npy/.npz): fidelity is measured on them "
                   "instead of random inputs, which do not predict accuracy")
    p.add_argument("--class-axis", action="append", default=[], metavar="OUTPUT:AXIS",
                   help="which axis of an output holds classes (default: axis 1; the last axis of a rank-3 output)")
    p.add_argument("--min-speedup", type=float, help="gate: CPU speedup, paired and interleaved, ratio of medians")
    p.add_argument("--max-macs-ratio", type=float, help="gate: compressed MACs / original MACs")
    p.add_argument("--inputs", metavar="FILE.npz", help="inputs (keys = input names) instead of random ones")
    p.add_argument("--eval", metavar="FILE.npz",
                   help="labelled data for accuracy: inputs under the input names (or --eval-x), labels under --eval-y; "
                   "labels (N,) are classes, labels (N, L) padded with -1 are CTC sequences (greedy decoding, blank "
                   "0 or the file's ctc_blank), scored by exact match")
    p.add_argument("--eval-x", default="x", metavar="KEY", help="key of the inputs in --eval (default: x, or the input names)")
    p.add_argument("--eval-y", default=None, metavar="KEY", help="key of the integer labels in --eval (default: y or labels)")
    p.add_argument("--min-accuracy", type=float, help="gate: top-1 accuracy of COMPRESSED on --eval, in [0, 1]")
    p.add_argument("--max-accuracy-drop", type=float, help="gate: accuracy(MODEL) - accuracy(COMPRESSED) on --eval")
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME:DIMS",
                   help="pin an input's shape for random inputs (repeatable)")
    p.add_argument("--iters", type=int, default=30, help="timed runs for --min-speedup (default 30)")
    p.add_argument("--warmup", type=int, default=5, help="warm-up runs for --min-speedup (default 5)")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads for --min-speedup")
    p.add_argument("--seed", type=int, default=0, help="seed for random inputs (default 0)")
    p.add_argument("--junit", metavar="FILE.xml", help="write JUnit XML (one testcase per gate)")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    return p


def render_check(report: CheckReport, console) -> None:
    from rich.table import Table

    t = Table(title=f"onnxcompress check: {Path(report.compressed).name} vs {Path(report.model).name}",
              header_style="bold")
    for col, just in (("criterion", "left"), ("value", "right"), ("required", "right"), ("result", "left")):
        t.add_column(col, justify=just)
    for c in report.criteria:
        if not c.gated:
            result = "[dim]info[/dim]"
        else:
            result = "[green]PASS[/green]" if c.passed else "[red]FAIL[/red]"
        if c.message:
            result += f" {c.message}"
        req = f"{c.op} {_fmt(c.threshold)}" if c.gated and c.name != "loads_and_runs" else ""
        value = ("yes" if c.value else "no") if c.name == "loads_and_runs" else _fmt(c.value)
        t.add_row(c.label, value, req, result)
    console.print(t)
    n = sum(c.gated for c in report.criteria)
    bad = sum(c.gated and not c.passed for c in report.criteria)
    console.print("[green]all gates passed[/green]" if not bad else f"[red]{bad} of {n} gate(s) failed[/red]")


def run_check(argv: list[str]) -> int:
    from onnxcompress.analysis.shapes import parse_input_shapes
    from onnxcompress.bench.runner import load_npz_inputs
    from onnxcompress.render import make_console

    args = check_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.ERROR,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.iters < 1 or args.warmup < 0:
        raise InputError("--iters must be >= 1 and --warmup >= 0")
    if (args.min_accuracy is not None or args.max_accuracy_drop is not None) and not args.eval:
        raise InputError("--min-accuracy/--max-accuracy-drop need labelled data: --eval FILE.npz")
    from onnxcompress.accuracy import load_labelled
    from onnxcompress.cli_args import parse_class_axes
    from onnxcompress.io import load_model

    if not Path(args.model).is_file():
        raise InputError(f"no such file: {args.model}")
    config = CheckConfig(
        eval_data=load_labelled(args.eval, load_model(args.model), args.eval_x, args.eval_y) if args.eval else None,
        min_agreement=args.min_agreement,
        calib=args.calib,
        class_axes=parse_class_axes(args.class_axis),
        min_accuracy=args.min_accuracy,
        max_accuracy_drop=args.max_accuracy_drop,
        min_cosine=args.min_cosine,
        max_abs_diff=args.max_abs_diff,
        min_top1=args.min_top1,
        min_speedup=args.min_speedup,
        max_macs_ratio=args.max_macs_ratio,
        input_shapes=parse_input_shapes(args.input_shape),
        inputs=load_npz_inputs(args.inputs) if args.inputs else None,
        iters=args.iters,
        warmup=args.warmup,
        threads=args.threads,
        seed=args.seed,
    )
    console = make_console(args.quiet)
    with console.status("checking...", spinner="dots") if not args.quiet else _Null():
        report = check(args.model, args.compressed, config)
    render_check(report, console)
    if args.junit:
        Path(args.junit).write_text(report.to_junit())
    if args.json:
        Path(args.json).write_text(report.to_json())
    return 0 if report.passed else 1


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False
