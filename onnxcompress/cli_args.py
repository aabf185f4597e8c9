"""Command-line options that several subcommands share: shapes, blocked ops, calibration data."""

from __future__ import annotations

import argparse


class PrintVersions(argparse.Action):
    """``--version``: print ``versions.versions_text`` on stdout, as argparse's own version action, and exit 0
    (the versions are looked up only when asked)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from onnxcompress.versions import versions_text

        print(versions_text())
        parser.exit()


def add_shape_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--input-shape",
        action="append",
        default=[],
        metavar="NAME:DIMS",
        help="pin an input's shape, e.g. input:1,3,224,224 (repeatable). The batch dim defaults to 1; "
        "any other symbolic or dynamic (dim_value -1/0) dim must be given. -1 takes the model's own dim "
        "(1 for a free batch), e.g. x:-1,3,48,320. A named dim sized on one input sizes that name on every "
        "input. The saved model keeps its dims as exported",
    )


def add_block_op_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--block-op", action="append", default=[], metavar="OP",
                   help="switch off the channel rule of an op type (repeatable): its channels stay, reported as "
                   "'blocked by the user'. For models that trip a rule; ONNXCOMPRESS_BLOCK_OPS=Op1,Op2 does the same")


def add_attention_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--attention", choices=("heads", "dims"), default="heads",
                   help="what attention loses: 'heads' removes whole heads (their q, k and v filters and their rows "
                   "of the output projection); 'dims' keeps every head and removes the same dims from each: q's with "
                   "k's (exact: the scores only shift by a constant per row, which the softmax drops) and v's with "
                   "the output projection's rows (default heads). Fused ops follow too: com.microsoft Attention and "
                   "MultiHeadAttention and ai.onnx Attention keep their head count and get smaller heads; "
                   "GroupQueryAttention keeps whole heads")


def add_calib_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("calibration data (real, unlabelled inputs)")
    g.add_argument("--calib", metavar="PATH",
                   help="real inputs: an .npz keyed by input name (samples on axis 0), a folder of .npy/.npz files, or a "
                   "folder of images (see --calib-image). With it, every fidelity figure is measured on held-out real "
                   "inputs, and ranking and recovery use the data. Give 128-256 samples drawn like the deployment data for a refit: "
                   "on the PP-OCR classifier 64 lost 5 points and 128-1024 scored within 0.8 of each other. Distillation "
                   "trains on every sample and wants more at 0.6x MACs: PP-OCRv5 rec lost 7.0 points with 128, 1.4 with "
                   "1024 and 0.2 with 2048 (bench/SAMPLE_CURVE.md). "
                   "Past 512 MiB of input the set is thinned evenly before it is read, and the report says so")
    g.add_argument("--calib-image", metavar="SPEC",
                   help="how images become the input: size=HxW,scale=F,mean=A/B/C,std=A/B/C,channels=RGB|BGR|L,"
                   "layout=NCHW|NHWC (default: the model's size, scale 1/255, RGB, NCHW)")
    g.add_argument("--calib-samples", type=int, metavar="N",
                   help="use the first N calibration samples (default: all, thinned evenly past 512 MiB of input)")
    g.add_argument("--held-out", type=float, default=0.25, metavar="F",
                   help="fraction of the calibration samples kept aside to judge decisions fitted on the rest, at most 256 "
                   "samples: memory grows with the held-out part, not with the set (default 0.25)")
    g.add_argument("--class-axis", action="append", default=[], metavar="OUTPUT:AXIS",
                   help="which axis of an output holds classes, for top-1 agreement (default: axis 1, or the last axis of "
                   "a rank-3 output such as a CTC sequence). A YOLO head with boxes and scores in one output, "
                   "(N,4+classes,anchors) or (N,anchors,5+classes), is split instead: its scores judged as a map, its "
                   "boxes at the anchors the original detects; a class axis given for it reads it whole")
    add_map_threshold_arg(g)


def add_map_threshold_arg(g) -> None:
    g.add_argument("--map-threshold", action="append", default=[], metavar="OUTPUT:T",
                   help="binarize this output at T and score it as a probability map (IoU, F1, foreground recall). "
                   "(N,1,H,W) or (N,H,W,1) outputs with values in [0,1] are maps by default, at 0.5, and so are a "
                   "YOLO head's scores (T applies to them)")


def _parse_named(specs: list[str], flag: str, form: str, convert, ok=lambda v: True) -> dict:
    """``NAME:VALUE`` options (the name may itself hold colons) as a dict; one-line errors."""
    from onnxcompress.errors import InputError

    out = {}
    for spec in specs:
        name, _, value = spec.rpartition(":")
        try:
            out[name] = convert(value)
        except ValueError:
            raise InputError(f"{flag}: expected {form}, got {spec!r}") from None
        if not name or not ok(out[name]):
            raise InputError(f"{flag}: expected {form}, got {spec!r}")
    return out


def parse_map_thresholds(specs: list[str]) -> dict[str, float]:
    return _parse_named(specs, "--map-threshold", "OUTPUT:T with T in [0, 1]", float, lambda t: 0.0 <= t <= 1.0)


def parse_class_axes(specs: list[str]) -> dict[str, int]:
    return _parse_named(specs, "--class-axis", "OUTPUT:AXIS", int)


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
