"""``onnxcompress bench``: argument parsing, progress bar and rendering around ``runner``."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from onnxcompress.bench.report import BenchReport
from onnxcompress.bench.runner import DEFAULT_ITERS, DEFAULT_WARMUP, BenchConfig, run_benchmark
from onnxcompress.npz_inputs import load_npz_inputs
from onnxcompress.errors import InputError

logger = logging.getLogger(__name__)


def bench_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="onnxcompress bench",
        description="Time a model in onnxruntime per execution provider and batch size. With OTHER, the two "
        "models run interleaved (both sessions alive) and the speedup is median(MODEL) / median(OTHER), "
        "with the spread of per-pair ratios and fidelity of OTHER against MODEL on the same inputs.",
    )
    p.add_argument("model", help="the .onnx model (A, the baseline)")
    p.add_argument("other", nargs="?", help="a second .onnx model (B, e.g. the compressed one) to pair with A")
    p.add_argument("--providers", default="cpu", help="comma list of cpu, cuda (default cpu); "
                   "cuda falls back to cpu with a warning when unavailable")
    p.add_argument("--batch", default=None, help="comma list of batch sizes (default 1)")
    p.add_argument("--iters", type=int, default=DEFAULT_ITERS, help=f"timed runs per point (default {DEFAULT_ITERS})")
    p.add_argument("--warmup", type=int, default=DEFAULT_WARMUP, help=f"untimed runs first (default {DEFAULT_WARMUP})")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: onnxruntime's, one per core)")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="stop timing a point after this many seconds (at least 5 runs)")
    p.add_argument("--min-seconds", type=float, default=None,
                   help="keep timing past --iters until this many seconds have passed (more pairs for small models)")
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME:DIMS",
                   help="pin an input's shape (repeatable); dim 0 is replaced by each --batch size; "
                   "needed for symbolic dims other than the batch")
    p.add_argument("--inputs", metavar="FILE.npz", help="fixed inputs (keys = input names) instead of random ones")
    p.add_argument("--seed", type=int, default=0, help="seed for random inputs (default 0)")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON ('-' for stdout)")
    p.add_argument("--markdown", metavar="FILE", help="write the results as Markdown")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    return p


def _int_list(text: str, flag: str) -> list[int]:
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise InputError(f"{flag}: expected a comma list of integers, got {text!r}") from exc
    if not vals or any(v < 1 for v in vals):
        raise InputError(f"{flag}: expected positive integers, got {text!r}")
    return vals


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    from onnxcompress.analysis.shapes import parse_input_shapes

    if args.inputs and args.batch:
        raise InputError("--batch and --inputs exclude each other: the .npz fixes the batch")
    if args.seed < 0:
        raise InputError(f"--seed must be a non-negative integer, got {args.seed}")
    inputs = None
    if args.inputs:
        from onnxcompress.io import load_model

        inputs = load_npz_inputs(args.inputs, load_model(args.model))
    config = BenchConfig(
        providers=[p.strip().lower() for p in args.providers.split(",") if p.strip()],
        batches=_int_list(args.batch, "--batch") if args.batch else [1],
        iters=args.iters,
        warmup=args.warmup,
        threads=args.threads,
        input_shapes=parse_input_shapes(args.input_shape),
        inputs=inputs,
        max_seconds=args.max_seconds,
        min_seconds=args.min_seconds,
        seed=args.seed,
    )
    config.validate()
    return config


def run_with_progress(model_a, model_b, config: BenchConfig, console) -> BenchReport:
    """``run_benchmark`` under a rich progress bar (one task per provider and batch)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if console.quiet:
        return run_benchmark(model_a, model_b, config)
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=True,
    ) as bar:
        tasks: dict[str, int] = {}

        def progress(label: str, done: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = bar.add_task(label, total=total)
            bar.update(tasks[label], completed=done)

        return run_benchmark(model_a, model_b, config, progress)


def render_bench(report: BenchReport, console) -> None:
    from rich.table import Table

    from onnxcompress.render import human

    title = "onnxcompress bench: " + Path(report.model_a).name
    if report.paired:
        title += f" (A) vs {Path(report.model_b).name} (B)"
    t = Table(title=title, header_style="bold")
    cols = ["provider", "batch", "", "p50 ms", "p90 ms", "p99 ms", "mean ms", "samples/s"]
    if report.paired:
        cols += ["speedup A/B", "pairs p10-p90"]
    for i, c in enumerate(cols):
        t.add_column(c, justify="left" if i < 3 else "right")
    for r in report.runs:
        prov = r.provider_used.replace("ExecutionProvider", "") + (" (IOBinding)" if r.io_binding else "")
        rows = [("A", r.a)]
        if r.b is not None:
            rows.append(("B", r.b))
        for k, (tag, s) in enumerate(rows):
            cells = [prov if k == 0 else "", str(r.batch) if k == 0 else "", tag,
                     f"{s.p50_ms:.2f}", f"{s.p90_ms:.2f}", f"{s.p99_ms:.2f}", f"{s.mean_ms:.2f}",
                     f"{s.throughput:.1f}"]
            if report.paired:
                p = r.paired
                cells += [f"[bold]{p.speedup:.2f}x[/bold]", f"{p.ratio_lo:.2f}-{p.ratio_hi:.2f}"] if (k == 0 and p) else ["", ""]
            t.add_row(*cells)
    console.print(t)
    sizes = f"A {Path(report.model_a).name} {human(report.file_bytes_a, 'B')}"
    if report.paired:
        sizes += f", B {Path(report.model_b).name} {human(report.file_bytes_b or 0, 'B')}"
    console.print("file size: " + sizes)
    s = report.settings
    iters = f"{s['iters']}" + (f" (at least {s['min_seconds']:g} s)" if s.get("min_seconds") else "")
    console.print(f"warmup {s['warmup']}, iters {iters}, threads {s['threads'] or 'default'}, "
                  f"inputs {s['inputs']}; {report.machine.get('cpu')}, {report.machine.get('cores')} cores, "
                  f"onnxruntime {report.machine.get('onnxruntime')}")
    for r in report.runs:
        f = r.fidelity
        if not f:
            continue
        line = (f"fidelity B vs A ({r.provider_used.replace('ExecutionProvider', '')}, batch {r.batch}): "
                f"min cosine {f['cosine_min']:.6f}, max |diff| {f['max_abs_diff']:.3g}")
        if f.get("top1_agreement") is not None:
            line += f", top-1 agreement {f['top1_agreement']:.1%}"
        if f.get("error"):
            line += f" [red]({f['error']})[/red]"
        console.print(line)
    for w in report.warnings:
        console.print(f"[yellow]warning:[/yellow] {w}")


def _is_onnxruntime_error(exc: BaseException) -> bool:
    return type(exc).__module__.startswith("onnxruntime")


def run_bench(argv: list[str]) -> int:
    from onnxcompress.paths import Staging, validate_outputs
    from onnxcompress.render import make_console

    args = bench_parser().parse_args(argv)
    # Under ``main`` the logging is set up already and this does nothing.
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.ERROR,
                        format="%(levelname)s %(name)s: %(message)s")
    validate_outputs([args.inputs], {"--json": args.json, "--markdown": args.markdown}, models=[args.model, args.other])
    config = config_from_args(args)
    to_stdout = args.json == "-"
    console = make_console(args.quiet or to_stdout)
    try:
        report = run_with_progress(args.model, args.other, config, console)
    except Exception as exc:
        if _is_onnxruntime_error(exc):
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"onnxruntime cannot run the model: {first}") from exc
        raise
    if to_stdout:
        print(report.to_json())
    else:
        render_bench(report, console)
    with Staging() as staging:
        if args.json and not to_stdout:
            staging.text(args.json, report.to_json())
        if args.markdown:
            staging.text(args.markdown, report.to_markdown())
        staging.commit()
    return 0


def bench_after_compress(input_path, output_path, input_shapes: dict, console) -> dict:
    """Paired CPU A/B of the compressed output against its input, batch 1, for ``--bench``.

    Prints the table and returns the JSON-able results. The compressed model is
    already saved, so a benchmark failure is reported, not raised.
    """
    # a -1 batch in --input-shape is a free batch: 1, as for the analysis
    batch = next((int(s[0]) for s in (input_shapes or {}).values() if len(s) and s[0] > 0), 1)
    config = BenchConfig(
        providers=["cpu"], batches=[batch], iters=30, warmup=5, input_shapes=dict(input_shapes or {}),
        max_seconds=30.0, min_seconds=3.0,
    )
    try:
        report = run_with_progress(input_path, output_path, config, console)
    except Exception as exc:  # noqa: BLE001
        msg = f"benchmark failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        logger.warning(msg)
        console.print(f"[yellow]warning:[/yellow] {msg}")
        return {"error": msg}
    render_bench(report, console)
    return report.to_dict()
