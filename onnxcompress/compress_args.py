"""The compress command's options, apart from the command, so a recipe's ``[compress]`` table can be
checked by any command (``check --recipe`` included) without importing the pipeline."""

from __future__ import annotations

import argparse

from onnxcompress.options_parser import OptionsParser
from onnxcompress.cli_args import PrintVersions, add_attention_arg, add_block_op_arg, add_calib_args, add_common, add_shape_arg

TOUR = """\
subcommands:
  onnxcompress MODEL [options]        compress (this page)
  onnxcompress inspect MODEL          per-layer params, MACs, receptive fields; --groups: channel groups
  onnxcompress bench MODEL [OTHER]    onnxruntime latency (CPU/CUDA), paired A/B with fidelity
  onnxcompress check MODEL OTHER      CI gate: fail when the compressed model got worse
  onnxcompress sensitivity MODEL --calib DATA   per-group output drift on real inputs, ranked

examples:
  onnxcompress models/resnet_small.onnx --ratio 0.5
  onnxcompress model.onnx --calib calib.npz --target-macs 0.8     # data-aware, refit, MAC target
  onnxcompress model.onnx --calib calib.npz --max-drift 0.01      # smallest model within the budget
  onnxcompress model.onnx --calib calib.npz --target-speedup 1.5  # pruned until 1.5x faster, measured
  onnxcompress model.onnx --mode zero --criterion l2 --scope global --max-layer-ratio 0.7
  onnxcompress model.onnx --ratio 0 --max-norm 3.0          # projection only, no pruning
  onnxcompress inspect model.onnx --input-shape images:1,3,640,640 --json layers.json
  onnxcompress check model.onnx model.compressed.onnx --eval data.npz --max-accuracy-drop 0.01 --junit gate.xml
"""


def _rounds(text: str) -> int | str:
    """``--allocation-rounds``: a count, or auto."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of rounds or auto, got {text!r}") from None


def compress_parser() -> OptionsParser:
    from onnxcompress.config import DEFAULT_RATIO, DEFAULT_ROUND_TO, DEFAULT_TARGET_MACS, DISTILL_AUGMENT, DISTILL_AVERAGE, DISTILL_CTC_WEIGHT, DISTILL_MIX, DISTILL_TRAIN, REFIT_AUGMENT

    p = OptionsParser(
        prog="onnxcompress",
        description="Prune conv filters of any ONNX model structurally, fold weights, verify, and save. "
        "The input file is never modified.",
        epilog=TOUR,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action=PrintVersions,
                   help="print the versions of onnxcompress and of the libraries it runs on, and exit")
    p.add_argument("model", help="input .onnx file")
    p.add_argument("-o", "--output", help="output path (default: MODEL's stem + .compressed.onnx)")
    p.add_argument("--ratio", type=float, default=None,
                   help=f"fraction of filters removed per group (local) or overall (global), at most: kept counts round up "
                   f"to --round-to; 0 = no pruning. Default without --calib: {DEFAULT_RATIO} (magnitude pruning without data "
                   f"costs a trained model accuracy fast; see bench/ACCURACY.md). With --calib and no --ratio or "
                   f"--target-macs, the default is --target-macs {DEFAULT_TARGET_MACS} (bench/ACCURACY_REAL.md)")
    p.add_argument("--mode", choices=["remove", "zero"], default="remove",
                   help="remove: slice filters out, the graph gets smaller; zero: write zeros, shapes stay (default remove)")
    p.add_argument("--criterion", choices=["auto", "l1", "l2", "activation"], default="auto",
                   help="how filters are ranked: l1/l2 weight norms, or activation (needs --calib): the consumer "
                   "output energy each channel carries on real inputs. auto = activation with --calib, else l1")
    p.add_argument("--scope", choices=["local", "global"], default="local",
                   help="local: same ratio in every group; global: rank normalised importances across groups (default local)")
    p.add_argument("--max-layer-ratio", type=float, default=0.8,
                   help="global scope: at most this fraction of any group is removed (default 0.8)")
    p.add_argument("--round-to", type=int, default=DEFAULT_ROUND_TO,
                   help=f"keep channel counts at multiples of N, rounding the kept count up (never removing more than the "
                   f"ratio from a group; never above its width, never zero; a group of N channels or fewer stays whole, and the "
                   f"warnings say when that is what stops pruning); on ResNet-50, odd widths ran 1.44x faster "
                   f"where multiples of 8 ran 1.98x, same MACs (bench/ROUND_TO.md) (default {DEFAULT_ROUND_TO})")
    p.add_argument("--exclude", action="append", default=[], metavar="REGEX",
                   help="leave nodes whose name matches untouched (repeatable; applies to pruning and projection)")
    add_shape_arg(p)
    add_block_op_arg(p)
    add_attention_arg(p)
    p.add_argument("--zero-bias", action="store_true",
                   help="zero the removed filters' biases too (classic magnitude pruning); by default the bias, which "
                   "carries any folded BatchNorm shift, is kept and its constant output folded into the consumers")
    p.add_argument("--exact-borders", action="store_true",
                   help="remove mode: make padded consumers match zero mode exactly at the image borders too, with a "
                   "small correction subgraph after each (static spatial sizes only; one more Add per such conv)")
    p.add_argument("--measure-exactness", action="store_true",
                   help="remove mode: also build the zero-mode model and report how far remove mode's outputs are "
                   "from it (one more pipeline run and session)")
    p.add_argument("--prune-outputs", action="store_true", help="allow pruning channels that reach a graph output")
    p.add_argument("--max-norm", type=float, metavar="C", help="clip every filter's L2 norm at C (folded into the weights)")
    p.add_argument("--spectral-clip", type=float, metavar="C", help="clip singular values of weight matrices at C")
    p.add_argument("--no-fold", action="store_true", help="skip lossless weight folding (BN into Conv, constant weight subgraphs)")
    p.add_argument("--no-simplify", action="store_true", help="skip onnxsim simplification")
    p.add_argument("--report", metavar="FILE.json", help="write the full report as JSON; also when the model is refused "
                   "(exit 1, no model written): why, what was measured, and the refused model's report where there is one")
    p.add_argument("--markdown", metavar="FILE.md", help="write the report as Markdown (tables of sizes, blockers, layers); "
                   "also when the model is refused: why, and a table of what was measured")
    p.add_argument("--bench", action="store_true", help="after compressing, benchmark output against input in onnxruntime")
    add_calib_args(p)
    g = p.add_argument_group("recovery and targets (need --calib)")
    g.add_argument("--recover", choices=["auto", "none", "bias", "refit", "distill"], default="auto",
                   help="after pruning: bias folds removed channels' calibrated means into the consumers' biases; refit "
                   "also solves each consumer's weights by ridge least squares (kept only where held-out error drops); "
                   "distill then fine-tunes every weight of the pruned graph against the original on the calibration "
                   "inputs, no labels (needs pip install 'onnxcompress[finetune]'), and keeps it only if the held-out "
                   "drift improves. auto = distill with --calib where the extra is installed, else refit; none without --calib")
    g.add_argument("--distill-seconds", type=float, default=300.0, metavar="S",
                   help="distillation's time budget in seconds (default 300); it also stops, after step 250, when the held-out "
                   "drift has not improved for 6 evaluations (25 steps apart)")
    g.add_argument("--distill-steps", type=int, default=2000, metavar="N", help="distillation's step limit (default 2000)")
    g.add_argument("--distill-lr", type=float, default=1e-4, metavar="LR",
                   help="distillation's Adam learning rate, reached after a 10-step linear warm-up (default 1e-4, "
                   "which won on the PP-OCR classifier; on PP-OCRv4 rec at 0.6x MACs, 60 blended steps at 3e-4, 1e-4 "
                   "and 3e-5 scored 0.820, 0.896 and 0.946 against the refit's 0.958: try 3e-5 on large recognizers; "
                   "bench/DISTILL_MIX.md)")
    g.add_argument("--distill-augment", type=float, default=None, metavar="SHARE",
                   help="perturb this share of each distillation minibatch (contrast, inverted colours, noise, blur, "
                   "kept in the calibration data's range) before the original and the pruned model see it, so the "
                   "pruned model follows the original off the calibration data; a perturbed copy of each held-out sample "
                   "joins the held-out loss and its drift is reported, but the choice between refit and distillation "
                   "is made on the given held-out samples, which the verify step reads too (default "
                   f"{DISTILL_AUGMENT:g}, with --distill-average {DISTILL_AVERAGE:g}; both 0 on detectors and segmenters, as "
                   "--refit-augment; 0: off. 128 samples, steps pinned: the PP-OCR classifier at 0.6x MACs read two "
                   "differently drawn splits at 0.824 and 0.904 with them, 0.754 and 0.834 without, eval 0.994 both; "
                   "bench/DISTILL_DEFAULTS.md)")
    g.add_argument("--distill-step-sizes", choices=("relative", "absolute"), default="relative",
                   help="relative: each weight tensor's learning rate is scaled by its RMS over the median tensor's "
                   "(at most 1; a bias follows its layer's weight), so a step changes every layer by a similar share; "
                   "absolute: the same rate for every tensor. Exported, BN-folded graphs hold weights 1000x smaller "
                   "than their median: on the DBNet detector at 0.8x MACs absolute steps raised the held-out loss "
                   "100-fold in 10 steps and relative ones lowered it (default relative; bench/DISTILL_STEPS.md)")
    g.add_argument("--distill-schedule", choices=("constant", "cosine"), default="constant",
                   help="the learning rate after its 10-step warm-up: constant, or cosine, falling along half a cosine "
                   "to zero at the end of the budget (--distill-steps or --distill-seconds, whichever is further "
                   "along), so the last steps settle what the run found (default constant; measured in "
                   "bench/DISTILL_SCHEDULE.md)")
    g.add_argument("--distill-train", choices=DISTILL_TRAIN, default="all",
                   help="which weights distillation trains: all (every Conv, Gemm, MatMul, norm and LSTM weight of "
                   "the pruned graph), or changed: only those pruning sliced or the refit solved, so every layer "
                   "pruning left alone keeps the original's weights exactly and backward stops at the first "
                   "trained layer (default all; at 0.8x MACs changed ran the same steps 14-27%% faster with no "
                   "accuracy gain on PP-OCRv4 rec, PP-OCRv6 rec and the PP-OCR classifier; bench/OFF_MANIFOLD.md)")
    g.add_argument("--distill-feature-weight", type=float, default=1.0, metavar="W",
                   help="weight of the boundary-feature term of the distillation loss: the outputs of the layers "
                   "that lost input channels, matched to the original's kept channels (default 1; 0 distills the "
                   "outputs alone)")
    g.add_argument("--distill-temperature", type=float, default=1.0, metavar="T",
                   help="soften the original's and the pruned model's class-axis outputs (classes, CTC positions) by T "
                   "before their KL, scaled by T squared, so distillation also matches how the original ranks the "
                   "classes it did not choose (default 1: as they are; maps, boxes and features ignore it). At 0.8x MACs "
                   "T = 2 read data drawn unlike the calibration set a third of a point better on average, within a "
                   "seed's spread, on two direction classifiers and three PP-OCR recognizers (bench/OFF_MANIFOLD.md)")
    g.add_argument("--distill-ctc-weight", type=float, default=DISTILL_CTC_WEIGHT, metavar="W",
                   help="weight of a CTC term on CTC heads (a recognizer's per-position classes with a dominant "
                   "blank): the CTC loss of the pruned model's output against the original's greedy reading of each "
                   "sample, so distillation learns the reading, not only each position's distribution (default "
                   f"{DISTILL_CTC_WEIGHT:g}; 0: KL alone). At 0.6x MACs ddddocr 0.906 with it, 0.872 without "
                   "(original 0.940; bench/DISTILL_REAL.md)")
    g.add_argument("--distill-average", type=float, default=None, metavar="DECAY",
                   help="score and keep a moving average of the distilled weights (avg = DECAY * avg + (1 - DECAY) * "
                   "weights after each step) instead of the weights themselves, which smooths the step-to-step "
                   "noise of training on a few hundred samples; e.g. 0.95 averages about the last 20 steps "
                   f"(default {DISTILL_AVERAGE:g}, and 0 on detectors and segmenters; 0: off)")
    g.add_argument("--distill-mix", type=float, default=DISTILL_MIX, metavar="SHARE",
                   help="blend this share of each distillation minibatch with another of its samples (weight uniform "
                   "in [0, 1]) before the original and the pruned model see it: those steps train on new inputs the "
                   "original labels, so a few hundred calibration samples are memorised more slowly (default "
                   f"{DISTILL_MIX:g}: on the PP-OCR classifier at 0.8x MACs it raised the held-out loss and the refit "
                   "was kept where plain distillation won; at 0.6x its effect was within run-to-run variation; "
                   "bench/DISTILL_MIX.md)")
    g.add_argument("--calib-augment", type=float, default=0.0, metavar="SHARE",
                   help="add perturbed copies (contrast, inversion, noise, blur, rescale) of this share of the "
                   "calibration fit samples to them before statistics, sensitivity and refit, so filters that matter a "
                   "little off the calibration data are not the ones removed; the given samples and the held-out split "
                   "stay as they are (default 0: off; measured in bench/OFF_MANIFOLD.md)")
    g.add_argument("--refit-augment", type=float, default=None, metavar="SHARE",
                   help="the refit also solves on perturbed copies (contrast, inversion, noise, blur, rescale) of this "
                   "share of its calibration samples, so the refit layers match the original off the calibration data "
                   "too; image-like float inputs only, the held-out split stays as given (default "
                   f"{REFIT_AUGMENT:g}, and 0 on detectors and segmenters: models with an output that is a probability map "
                   "or per-anchor class scores; 0: off. Five real recognizers and classifiers at 0.8x and 0.6x MACs: on "
                   "differently drawn data +5 to +18 points at 0.6x on four, within 3.4 elsewhere; eval within 1.4, but "
                   "-1.2 to -3.6 on two at 0.6x; bench/CALIB_AUGMENT.md. A PicoDet layout detector lost 26 points on "
                   "differently drawn pages at 0.6x with it, a DBNet text detector gained nothing; bench/DISTILL_REAL.md)")
    g.add_argument("--train-labels", metavar="FILE.npz",
                   help="labelled samples in the --eval format: distillation adds cross-entropy (or CTC) on them to the "
                   "label-free loss. Optional; keep them apart from --eval")
    g.add_argument("--device", default="cpu", metavar="cpu|cuda",
                   help="where distillation trains (default cpu; cuda needs a CUDA build of torch)")
    g.add_argument("--target-macs", type=float, metavar="F",
                   help="keep at most this fraction of the MACs; each group's ratio is chosen by its measured output "
                   "drift per MAC saved (replaces --ratio)")
    g.add_argument("--sensitivity-estimate", choices=["sweep", "taylor"], default="sweep",
                   help="how --target-macs (and the searches) get each group's drift curve: sweep runs the model once "
                   "per group and ratio; taylor estimates every curve to first order from one forward and 8 backward "
                   "passes per sample (needs the finetune extra; bench/TAYLOR.md compares them). Default sweep")
    g.add_argument("--allocation-rounds", type=_rounds, default=1, metavar="N|auto",
                   help="with --calib: reach --target-macs in N prune-and-refit rounds (targets T^(1/N), T^(2/N) .. T), "
                   "measuring every group again on the model the earlier rounds pruned, since groups pruned together "
                   "hurt more than each alone; refit and distillation still match the original. Costs N sweeps. "
                   "auto compresses with 1 and with 2 (one sweep shared) and keeps the one with the lower held-out "
                   "drift, 1 on a tie (bench/ALLOCATION_ROUNDS.md). Default 1")
    g.add_argument("--distill-every-round", action="store_true",
                   help="with --allocation-rounds N and --recover distill: distill after every round, each with the "
                   "--distill-seconds and --distill-steps budget, so each later round measures and prunes a model that "
                   "distillation recovered (gradual pruning with fine-tuning between the steps); by default only the "
                   "last round distills and the earlier ones refit. Still against the original")
    g.add_argument("--target-speedup", type=float, metavar="S",
                   help="prune until the model runs S times as fast as the original, measured: candidate MACs targets "
                   "are allocated like --target-macs and timed in onnxruntime against the original (paired, "
                   "interleaved), and the least-pruned one that reaches S is recovered and written. The report shows "
                   "each probe and the written model's measured speedup. Over reach: nothing is written, exit 1")
    g.add_argument("--provider", choices=["cpu", "cuda"], default="cpu",
                   help="--target-speedup: the execution provider to time on (default cpu)")
    g.add_argument("--batch", type=int, default=1, metavar="N",
                   help="--target-speedup: the batch size to time at, the one you deploy with (default 1)")
    g.add_argument("--max-drift", type=float, metavar="D",
                   help="budget: the written model's held-out drift (1 - sequence/top-1 agreement with the original, "
                   "1 - F1 of a probability map's foreground, or relative L2 otherwise) must be at most D; with --target-macs the target is relaxed until it "
                   "fits, alone it finds the smallest MACs that fit. Over budget: nothing is written, exit 1")
    g.add_argument("--eval", metavar="FILE.npz",
                   help="labelled data for an accuracy budget: inputs under the input names (or one array), labels under "
                   "y or labels; (N,) classes or (N, L) CTC sequences padded with -1")
    g.add_argument("--max-accuracy-drop", type=float, metavar="X",
                   help="budget on --eval: the written model may lose at most X accuracy (0.01 = one point); searched "
                   "like --max-drift")
    g.add_argument("--force", action="store_true",
                   help="write the model even when it collapsed on the held-out calibration data (a task figure against "
                   "the original under 0.5: map F1, sequence or top-1 agreement, else mean cosine). Without it such a "
                   "model is refused with exit 1; one written with such a figure under 0.9 carries a warning)")
    p.add_argument("--seed", type=int, default=0, help="seed for the random verification inputs (default 0)")
    p.add_argument("--recipe", metavar="FILE.toml",
                   help="take options from the [compress] table of a TOML recipe (keys = the long options, dashes as "
                   "underscores; paths relative to the recipe); options given here win. Its sha256 goes in the report")
    add_common(p)
    return p
