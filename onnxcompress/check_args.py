"""The command line of ``onnxcompress check``, apart from the gate itself.

Kept apart so that ``recipe`` can read check's options (the keys of a recipe's
``[check]`` table) without importing the gate.
"""

from __future__ import annotations

import argparse

from onnxcompress.options_parser import OptionsParser
from onnxcompress.speedgate import DEFAULT_CONFIDENCE, FAIL

DEFAULT_MAX_SECONDS = 60.0


def check_parser() -> OptionsParser:
    p = OptionsParser(
        prog="onnxcompress check",
        description="CI gate: COMPRESSED must load and run; its fidelity against MODEL on the same inputs, and both "
        "models' params, MACs and size, are always reported, and each threshold you give is a gate. "
        "Exit 0 all pass, 1 a gate failed, 2 bad input.",
    )
    p.add_argument("model", help="the original .onnx model")
    p.add_argument("compressed", help="the compressed .onnx model")
    p.add_argument("--recipe", metavar="FILE.toml",
                   help="take options from the [check] table of a TOML recipe (keys = the long options below, dashes "
                   "as underscores; paths relative to the recipe); options given here win")
    g = p.add_argument_group("fidelity gates")
    g.add_argument("--min-cosine", type=float, help="gate: min per-sample cosine of the outputs")
    g.add_argument("--max-abs-diff", type=float, help="gate: max abs difference of the outputs")
    g.add_argument("--min-top1", type=float, help="gate: top-1 agreement in [0, 1] (class-score outputs)")
    g.add_argument("--min-agreement", type=float,
                   help="gate: per-position top-1 agreement along every output's class axis ((N,C) scores, (N,T,C) "
                   "CTC sequences, (N,C,H,W) maps), the lowest over outputs, in [0, 1]")
    g.add_argument("--min-map-f1", type=float,
                   help="gate: F1 of every probability map's binarized foreground ((N,1,H,W) outputs in [0,1], e.g. a "
                   "text detector's), the lowest over such outputs, in [0, 1]")
    g.add_argument("--calib", metavar="PATH",
                   help="real inputs (.npz keyed by input name, or a folder of .npy/.npz): fidelity is measured on them "
                   "instead of random inputs, which do not predict accuracy")
    g.add_argument("--class-axis", action="append", default=[], metavar="OUTPUT:AXIS",
                   help="which axis of an output holds classes (default: axis 1; the last axis of a rank-3 output)")
    from onnxcompress.cli_args import add_map_threshold_arg

    add_map_threshold_arg(g)
    g.add_argument("--inputs", metavar="FILE.npz", help="inputs (keys = input names) instead of random ones")
    g.add_argument("--input-shape", action="append", default=[], metavar="NAME:DIMS",
                   help="pin an input's shape for random inputs (repeatable)")
    g.add_argument("--seed", type=int, default=0, help="seed for random inputs (default 0)")
    g = p.add_argument_group("accuracy gates (labelled data)")
    g.add_argument("--eval", metavar="FILE.npz",
                   help="labelled data for accuracy: inputs under the input names (or --eval-x), labels under --eval-y; "
                   "labels (N,) are classes, labels (N, L) padded with -1 are CTC sequences (greedy decoding, blank "
                   "0 or the file's ctc_blank), scored by exact match")
    g.add_argument("--eval-x", default="x", metavar="KEY", help="key of the inputs in --eval (default: x, or the input names)")
    g.add_argument("--eval-y", default=None, metavar="KEY", help="key of the integer labels in --eval (default: y or labels)")
    g.add_argument("--min-accuracy", type=float, help="gate: top-1 accuracy of COMPRESSED on --eval, in [0, 1]")
    g.add_argument("--max-accuracy-drop", type=float, help="gate: accuracy(MODEL) - accuracy(COMPRESSED) on --eval")
    g = p.add_argument_group("size gates")
    g.add_argument("--max-macs-ratio", type=float, help="gate: compressed MACs / original MACs")
    g.add_argument("--max-params-ratio", type=float, help="gate: compressed params / original params")
    g.add_argument("--max-size-mb", type=float,
                   help="gate: size of the COMPRESSED file with its external data, in MB (10^6 bytes)")
    g = p.add_argument_group("speed gate (paired, interleaved; decided on a confidence interval)")
    g.add_argument("--min-speedup", type=float,
                   help="gate: the median per-pair ratio original/compressed time. PASS when its confidence interval's "
                   "lower bound is >= X, FAIL when the upper bound is < X; otherwise more pairs, up to --max-seconds")
    g.add_argument("--provider", choices=["cpu", "cuda"], default="cpu",
                   help="where to time (default cpu). cuda binds inputs and outputs on the device (IOBinding); "
                   "without the CUDA execution provider it is an error, never a silent CPU run")
    g.add_argument("--batch", type=int, default=None,
                   help="batch size to time at, the one you deploy with (default 1, or the batch of --inputs)")
    g.add_argument("--max-seconds", type=float, default=DEFAULT_MAX_SECONDS,
                   help=f"time budget of the speed gate (default {DEFAULT_MAX_SECONDS:g})")
    g.add_argument("--on-inconclusive", choices=["pass", "fail"], default=FAIL,
                   help="verdict when the interval still contains X after --max-seconds (default fail: a speedup that "
                   "cannot be shown is not granted; set X a margin below the speedup you expect, and an inconclusive "
                   "run means the true speedup is within noise of X)")
    g.add_argument("--confidence", type=float, default=DEFAULT_CONFIDENCE,
                   help=f"confidence of the speed verdict over all looks (Bonferroni; default {DEFAULT_CONFIDENCE})")
    g.add_argument("--iters", type=int, default=30, help="pairs at the first look; each later look doubles them (default 30)")
    g.add_argument("--warmup", type=int, default=5, help="warm-up runs of each model before timing (default 5)")
    g.add_argument("--threads", type=int, default=None, help="intra-op threads (default: onnxruntime's)")
    g = p.add_argument_group("reports")
    g.add_argument("--junit", metavar="FILE.xml", help="write JUnit XML (one testcase per gate)")
    g.add_argument("--json", metavar="FILE", help="write the results as JSON")
    g.add_argument("--markdown", metavar="FILE.md",
                   help="write a Markdown summary (gates, before/after figures, fidelity), e.g. to append to "
                   "$GITHUB_STEP_SUMMARY")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors and failed gates")
    return p
