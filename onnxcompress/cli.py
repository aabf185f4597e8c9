"""Command line: ``onnxcompress MODEL`` compresses; ``inspect``, ``bench`` and ``check`` are subcommands."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

from onnxcompress.options_parser import OptionsParser
from onnxcompress.cli_args import add_attention_arg, add_block_op_arg, add_common, add_shape_arg, parse_class_axes, parse_map_thresholds
from onnxcompress.compress_args import compress_parser
from onnxcompress.cli_env import (Terminated, clear_signals, command_environment, first_line, no_huge_pages,
                                   note_signal, raise_if_signalled, received_signal, say, signal_exit)
from onnxcompress.errors import BudgetError, InputError, OnnxCompressError

# The heavy imports (numpy, onnx, onnx-ir, onnxruntime) happen inside ``main``, so a Ctrl-C
# while they load is still one line and exit 130.

def inspect_parser() -> OptionsParser:
    p = OptionsParser(
        prog="onnxcompress inspect",
        description="Show per-layer params, MACs, output shapes and receptive fields (size, jump on the input).",
        epilog="MACs: Conv = out elements x C_in/group x prod(kernel); ConvTranspose = in elements x C_out/group x "
        "prod(kernel); Gemm/MatMul = out elements x K. Params: every float initializer and Constant, once.",
    )
    p.add_argument("model", help="input .onnx file")
    add_shape_arg(p)
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON ('-' for stdout)")
    p.add_argument("--groups", action="store_true",
                   help="also list the channel groups pruning would work on and what blocks the other channels")
    add_block_op_arg(p)
    add_attention_arg(p)
    add_common(p)
    return p


def _setup_logging(debug: bool, level: int = logging.WARNING) -> None:
    """Our logs at ``level``, held until the command ends; other libraries' only with --debug (``cli_env``)."""
    from onnxcompress.cli_env import setup_logging

    setup_logging(debug, level)


def _console(quiet: bool):
    from onnxcompress.render import make_console

    return make_console(quiet)


def run_inspect(argv: list[str]) -> int:
    from onnxcompress.analysis.shapes import parse_input_shapes
    from onnxcompress.api import inspect
    from onnxcompress.paths import validate_outputs, write_text
    from onnxcompress.render import render_inspect

    args = inspect_parser().parse_args(argv)
    _setup_logging(args.debug)
    validate_outputs([], {"--json": args.json}, models=[args.model])
    report = inspect(args.model, parse_input_shapes(args.input_shape), groups=args.groups, block_ops=args.block_op,
                     attention=args.attention)
    if args.json == "-":
        print(report.to_json())
        return 0
    render_inspect(report, _console(args.quiet))
    if args.json:
        write_text(args.json, report.to_json())
    return 0


def _validate_compress_paths(args: argparse.Namespace) -> Path:
    """The output path, after checking every file the command will write (nothing is written yet)."""
    from onnxcompress.io import data_path, default_output_path
    from onnxcompress.paths import require_regular_file, validate_outputs

    if not Path(args.model).is_dir():
        require_regular_file(args.model, "input model")
    out = Path(args.output) if args.output else default_output_path(args.model)
    validate_outputs(
        [args.calib, getattr(args, "recipe", None), getattr(args, "eval", None), getattr(args, "train_labels", None)],
        {"-o": out, "-o's data file": data_path(out), "--report": args.report, "--markdown": args.markdown},
        models=[args.model],
    )
    return out


def _default_target(args) -> float | None:
    """With real inputs and no size asked for, compress to the default MAC target."""
    from onnxcompress.config import DEFAULT_TARGET_MACS

    if args.target_macs is None and args.ratio is None and args.calib and args.max_drift is None \
            and args.max_accuracy_drop is None and args.target_speedup is None:
        return DEFAULT_TARGET_MACS
    return args.target_macs


def config_from_args(args: argparse.Namespace):
    """The ``CompressConfig`` a parsed compress command line (recipe merged) asks for."""
    from onnxcompress.analysis.shapes import parse_input_shapes
    from onnxcompress.calibration import ImageSpec
    from onnxcompress.config import CompressConfig

    return CompressConfig(
        ratio=CompressConfig.ratio if args.ratio is None else args.ratio,
        mode=args.mode,
        criterion=args.criterion,
        scope=args.scope,
        max_layer_ratio=args.max_layer_ratio,
        round_to=args.round_to,
        exclude=args.exclude,
        block_ops=args.block_op,
        attention=args.attention,
        input_shapes=parse_input_shapes(args.input_shape),
        prune_outputs=args.prune_outputs,
        zero_bias=args.zero_bias,
        exact_borders=args.exact_borders,
        measure_exactness=args.measure_exactness,
        fold=not args.no_fold,
        max_norm=args.max_norm,
        spectral_clip=args.spectral_clip,
        simplify=not args.no_simplify,
        seed=args.seed,
        calib=args.calib,
        calib_image=ImageSpec.parse(args.calib_image) if args.calib_image else None,
        calib_samples=args.calib_samples,
        held_out=args.held_out,
        class_axes=parse_class_axes(args.class_axis),
        map_thresholds=parse_map_thresholds(args.map_threshold),
        force=args.force,
        recover=args.recover,
        distill_seconds=args.distill_seconds,
        distill_steps=args.distill_steps,
        distill_lr=args.distill_lr,
        distill_augment=args.distill_augment,
        distill_mix=args.distill_mix,
        distill_step_sizes=args.distill_step_sizes,
        distill_schedule=args.distill_schedule,
        distill_feature_weight=args.distill_feature_weight,
        distill_ctc_weight=args.distill_ctc_weight,
        distill_average=args.distill_average,
        distill_train=args.distill_train,
        distill_temperature=args.distill_temperature,
        calib_augment=args.calib_augment,
        refit_augment=args.refit_augment,
        device=args.device,
        train_labels=args.train_labels,
        target_macs=_default_target(args),
        sensitivity_estimate=args.sensitivity_estimate,
        allocation_rounds=args.allocation_rounds,
        distill_every_round=args.distill_every_round,
        max_drift=args.max_drift,
        eval=args.eval,
        max_accuracy_drop=args.max_accuracy_drop,
        target_speedup=args.target_speedup,
        speed_provider=args.provider,
        speed_batch=args.batch,
    )


def run_compress(argv: list[str]) -> int:
    from onnxcompress.recipe import parse_args

    args, recipe = parse_args(compress_parser(), argv, "compress")  # --help and usage errors stop here, before onnx loads
    _setup_logging(args.debug)
    if args.seed < 0:
        raise InputError(f"--seed must be a non-negative integer, got {args.seed}")
    out = _validate_compress_paths(args)
    config = config_from_args(args)
    console = _console(args.quiet)
    # Everything is staged beside its destination and renamed into place at the end, so a
    # failure or an interruption anywhere leaves no output at all. Staging starts before the
    # compression: the pruned weights are written straight into the output's data file.
    try:
        return _compress_staged(args, config, out, console, recipe)
    except BudgetError as exc:
        from onnxcompress.paths import write_text

        if args.report:  # a gate in CI reads why nothing was written, and what was measured
            from onnxcompress.report import refusal_json

            write_text(args.report, refusal_json(args.model, exc))
        if args.markdown:  # and a PR comment or CI summary says it in words
            from onnxcompress.render import refusal_markdown

            write_text(args.markdown, refusal_markdown(args.model, exc))
        raise


def _compress_staged(args, config, out, console, recipe) -> int:
    from onnxcompress.api import compress
    from onnxcompress.io import EXTERNAL_DATA_THRESHOLD, data_path, file_bytes, has_external_data, stage_model, tensor_bytes
    from onnxcompress.paths import Staging
    from onnxcompress.render import compress_markdown, render_compress
    from onnxcompress.spill import DataSink

    with Staging() as staging:
        sink = DataSink(lambda: staging.temp_dir(out), data_path(out).name)
        if args.quiet:
            result = compress(args.model, config, data_sink=sink)
        else:
            with console.status("compressing: load", spinner="dots") as status:
                result = compress(args.model, config, on_stage=lambda name: status.update(f"compressing: {name}"),
                                  data_sink=sink)
        if recipe is not None:
            result.report.config["recipe"] = recipe.record()
        _keep_interrupted_distillation(result.report)
        model = result.model
        external = result.external_data or has_external_data(model) or tensor_bytes(model) > EXTERNAL_DATA_THRESHOLD
        staged = stage_model(staging, model, out, input_path=args.model, external_data=external, sink=sink)
        result.report.output = str(out)
        result.report.after.file_bytes = file_bytes(staged)
        if args.bench:
            from onnxcompress.bench.cli import bench_after_compress

            bench = bench_after_compress(args.model, staged, config.input_shapes, console)
            if isinstance(bench, dict) and bench.get("model_b"):
                bench["model_b"] = str(out)
            result.report.bench = bench
        if args.report:
            staging.text(args.report, result.report.to_json())
        if args.markdown:
            staging.text(args.markdown, compress_markdown(result.report))
        raise_if_signalled()  # a signal a finaliser swallowed still leaves no output
        staging.commit()
    render_compress(result.report, console)
    return 0


def _keep_interrupted_distillation(report) -> None:
    """After a Ctrl-C that only stopped distillation (its best weights so far are in the model and
    verified), ask on a terminal whether to write them; anywhere else, or on no, nothing is written."""
    d = (report.recovery or {}).get("distill") or {}
    if received_signal() != signal.SIGINT or not d.get("interrupted"):
        return
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        return  # not interactive: the interruption stands, exit 130 and nothing written
    kept = "distilled" if d.get("kept") == "distill" else "refit"
    try:
        answer = input(f"distillation interrupted at step {d.get('steps')}; write the model with its best weights so far "
                       f"({kept}, held-out drift {d.get('held_out_drift_distill', float('nan')):.4f})? [y/N] ")
    except (EOFError, KeyboardInterrupt):
        return
    if answer.strip().lower() in ("y", "yes"):
        clear_signals()
        report.warnings.append(f"distillation was interrupted at step {d.get('steps')}; written on request with the "
                               "best weights so far")


def _dispatch(argv: list[str]) -> int:
    if argv and argv[0] == "inspect":
        return run_inspect(argv[1:])
    if argv and argv[0] == "bench":
        from onnxcompress.bench.cli import run_bench

        return run_bench(argv[1:])
    if argv and argv[0] == "sensitivity":
        from onnxcompress.sensitivity_cmd import run_sensitivity

        return run_sensitivity(argv[1:])
    if argv and argv[0] == "check":
        from onnxcompress.check import run_check

        return run_check(argv[1:])
    return run_compress(argv)


def _on_sigint(signum, frame) -> None:
    # Only the first stops the command: a second Ctrl-C must not cut its cleanup short.
    if note_signal(signum):
        raise KeyboardInterrupt


def _interrupted(exc: BaseException) -> bool:
    """True when Ctrl-C caused ``exc``: a library wrapped the KeyboardInterrupt (numpy turns one
    during its own import into an ImportError that no longer carries it)."""
    if received_signal() is not None:
        return True
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def main(argv: list[str] | None = None) -> int:
    """Run one command; every failure is one line on stderr (exit 2 bad input, 1 gate or budget, 3 a bug).

    A signal at any stage is one line and exit 130 (SIGINT) or 143 (SIGTERM), whatever
    error it caused on its way (a read it cut short, a worker it failed) and wherever it
    landed (in a finaliser, or while another error was being reported).
    """
    as_program = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    clear_signals()
    previous = None
    with contextlib.suppress(ValueError):  # not the main thread: keep Python's handler
        previous = signal.signal(signal.SIGINT, _on_sigint)
    try:
        try:
            code, message = _main(argv, debug)
        except KeyboardInterrupt:
            code, message = signal_exit(signal.SIGINT)
        except Terminated:
            code, message = signal_exit(signal.SIGTERM)
        sig = received_signal()
        if sig is not None:
            code, message = signal_exit(sig)
        if message:
            say(message)
        return code
    finally:
        if previous is not None and as_program:
            # The command is over and its line printed: a signal now, while Python shuts
            # down, must not add a traceback or turn the exit code into a kill.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        elif previous is not None:
            signal.signal(signal.SIGINT, previous)


def _main(argv: list[str], debug: bool) -> tuple[int, str]:
    """The exit code and the one line to print (empty: none); ``main`` prints it, once."""
    command = argv[0] if argv and argv[0] in ("inspect", "bench", "check", "sensitivity") else "compress"
    level = logging.ERROR if command in ("bench", "check") else logging.WARNING
    try:
        with no_huge_pages(), command_environment(debug, level):
            return _dispatch(argv), ""
    except BudgetError as exc:
        return 1, f"over budget, nothing written: {exc}"
    except OnnxCompressError as exc:
        if debug:
            raise
        return 2, f"error: {exc}"
    except KeyboardInterrupt:
        return signal_exit(signal.SIGINT)
    except Terminated:
        return signal_exit(signal.SIGTERM)
    except MemoryError as exc:
        if debug:
            raise
        return 2, f"error: out of memory ({first_line(exc) or 'MemoryError'})"
    except BrokenPipeError:
        # stdout went away (``... --json - | head``): stop quietly, as a SIGPIPE would.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + int(signal.SIGPIPE), ""
    except OSError as exc:
        if debug:
            raise
        return 2, f"error: {exc.strerror or first_line(exc)}" + (f": {exc.filename}" if exc.filename else "")
    except Exception as exc:  # noqa: BLE001 - never a traceback without --debug
        if _interrupted(exc):
            # numpy turns a Ctrl-C during its own import into an ImportError
            return signal_exit(signal.SIGINT)
        if debug:
            raise
        if command in ("bench", "check") and type(exc).__module__.startswith("onnxruntime"):
            return 2, f"error: onnxruntime cannot run the model: {first_line(exc)}"
        return 3, f"internal error: {type(exc).__name__}: {first_line(exc)} (rerun with --debug)"


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
