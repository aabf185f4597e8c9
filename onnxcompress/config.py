"""User-facing configuration. Every default here is one the README defends."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from onnxcompress.errors import InputError

if TYPE_CHECKING:  # the CLI reads the defaults here before it loads onnx
    from onnxcompress.analysis.shapes import Shape

#: Fraction of filters removed per group when --ratio is not given and there is no
#: calibration data. Magnitude pruning without data cost the trained digits CNN 72 points at
#: 0.25 (bench/ACCURACY.md) and a real OCR recognizer everything at 0.1
#: (bench/ACCURACY_REAL.md), so the default is the conservative one. Kept counts round up
#: to --round-to, so groups under 80 channels keep every channel at this ratio.
DEFAULT_RATIO = 0.1
#: With --calib and no --ratio, the CLI compresses to this MACs fraction: on every real
#: model measured it cost at most 1 point of accuracy (bench/ACCURACY_REAL.md).
DEFAULT_TARGET_MACS = 0.8
#: Channel counts are kept at multiples of this (measured: non-multiples of 8 lose up
#: to half the onnxruntime CPU speedup).
DEFAULT_ROUND_TO = 8
#: Share of each distillation minibatch blended with another of its samples. Off by default: on
#: the PP-OCR classifier at 0.8x MACs (the default target) blending raised the held-out loss and
#: the refit was kept (0.992 / 0.886, eval / shift) where plain distillation won (0.994 / 0.894);
#: at 0.6x 0.5 scored 0.996 / 0.760 against 0.990 / 0.712 (bench/DISTILL_REAL.md, DISTILL_MIX.md).
DISTILL_MIX = 0.0
#: Share of the refit's calibration samples that it also solves on perturbed (contrast, inversion,
#: noise, blur, rescale; image-like inputs only). Same allocation, so only the refit changes: on
#: five real models at 0.8x and 0.6x MACs, in three draws of the perturbations, accuracy on a
#: differently drawn split rose 5 to 18 points at 0.6x on four of them (ddddocr, both direction
#: classifiers, PP-OCRv6 rec) and moved 3.4 points or less either way elsewhere; eval moved 1.4
#: points or less, except at 0.6x on ddddocr (-1.4 to -2.0) and PP-OCRv6 rec (-1.2 to -3.6)
#: (bench/CALIB_AUGMENT.md). Not on detectors: where an output is a probability map or per-anchor
#: class scores (``fidelity.is_probability_map``) the default is 0, since the perturbed copies cost
#: a PicoDet layout detector 26 points of box hmean on differently drawn pages at 0.6x (3.7 at 0.8x)
#: and gave a DBNet text detector nothing (bench/DISTILL_REAL.md). An explicit share applies to any model.
REFIT_AUGMENT = 1.0
#: Weight of distillation's CTC term on CTC heads: the CTC loss of the pruned model's output against
#: the original's greedy reading of each sample (finetune/ctc_term.py). 150 steps from the same refit,
#: eval / shift: ddddocr at 0.6x MACs 0.906 / 0.434 (KL alone 0.872 / 0.428, refit 0.880 / 0.402: KL
#: alone never read more held-out samples right than the refit), PP-OCRv6 rec at 0.6x after two
#: allocation rounds 0.928 / 0.612 (KL alone 0.888 / 0.560, refit 0.848 / 0.544); PP-OCRv4 rec at
#: 0.8x kept the refit either way (bench/DISTILL_REAL.md). Only CTC heads are touched.
DISTILL_CTC_WEIGHT = 1.0
#: Distillation's defaults off the calibration data: the share of each minibatch perturbed
#: (``finetune.augment``) and the decay of the weight average the held-out judge scores
#: (``finetune.averaging``). With 128 samples, steps pinned, against 0 and 0 (eval / shift / wild,
#: bench/DISTILL_DEFAULTS.md): the PP-OCR classifier at 0.6x 0.994 / 0.824 / 0.904 against
#: 0.994 / 0.754 / 0.834, at 0.8x 0.994 / 0.902 / 0.946 against 0.992 / 0.886 / 0.938; better or
#: equal in eight of ten pairs on five models, worse on PP-OCRv4 rec at 0.6x (0.966 / 0.700 / 0.802
#: against 0.972 / 0.734 / 0.830). Not on detectors and segmenters, where the refit's perturbations
#: are off too (``REFIT_AUGMENT``).
DISTILL_AUGMENT = 1.0
DISTILL_AVERAGE = 0.95
#: which weights distillation may train (``--distill-train``; ``finetune.trained``)
DISTILL_TRAIN = ("all", "changed")


@dataclass
class CompressConfig:
    """What to do to a model. ``ratio=0`` means no pruning (folding/projection only)."""

    ratio: float = DEFAULT_RATIO
    mode: str = "remove"  # remove | zero
    #: l1 | l2 | activation | auto (activation with calibration data, else l1)
    criterion: str = "auto"
    scope: str = "local"  # local | global
    max_layer_ratio: float = 0.8
    round_to: int = DEFAULT_ROUND_TO
    exclude: list[str] = field(default_factory=list)
    #: op types whose channel rule is switched off (each blocks "by the user")
    block_ops: list[str] = field(default_factory=list)
    #: what attention prunes: "heads" (whole heads) or "dims" (the same dims of every head: q with k,
    #: v with the output projection)
    attention: str = "heads"
    input_shapes: dict[str, Shape] = field(default_factory=dict)
    prune_outputs: bool = False
    #: Zero the removed filters' biases too (classic). Off by default: the bias carries the
    #: folded BN shift, and keeping it measured far better fidelity (see bench/RESULTS.md).
    zero_bias: bool = False
    #: Remove mode: correct padded consumers' borders exactly with a constant map (static H/W only).
    exact_borders: bool = False
    #: Remove mode: also run the same plan in zero mode and report the end-to-end deviation.
    measure_exactness: bool = False
    # folding and projection
    fold: bool = True
    max_norm: float | None = None
    spectral_clip: float | None = None
    simplify: bool = True
    # calibration (real, unlabelled inputs)
    calib: str | None = None
    #: how a folder of images becomes the input (an ``ImageSpec``), None for arrays
    calib_image: object | None = None
    #: use at most this many calibration samples
    calib_samples: int | None = None
    #: fraction of the calibration samples held out to judge decisions fitted on the rest
    held_out: float = 0.25
    #: output name -> class axis, overriding the guess for task-aware fidelity
    class_axes: dict[str, int] = field(default_factory=dict)
    #: output name -> binarization threshold of a probability map (default 0.5)
    map_thresholds: dict[str, float] = field(default_factory=dict)
    #: write a model even when its held-out task figure collapsed under the floor
    force: bool = False
    #: none | bias | refit | distill | auto (with calibration data: distill where the finetune
    #: extra is installed, else refit; without: none)
    recover: str = "auto"
    #: distillation: wall-clock budget (s), step limit, learning rate and device
    distill_seconds: float = 300.0
    distill_steps: int = 2000
    distill_lr: float = 1e-4
    #: share of each distillation minibatch perturbed (contrast, inversion, noise, blur; see
    #: ``finetune.augment``), so the pruned model follows the original off the calibration data
    distill_augment: float | None = None
    #: share of each distillation minibatch blended with another of its samples (``augment.mix``)
    distill_mix: float = DISTILL_MIX
    #: distillation's per-tensor step sizes: "relative" to each weight's scale, or "absolute"
    distill_step_sizes: str = "relative"
    #: distillation's learning rate after the warm-up: "constant", or "cosine" to zero over the budget
    distill_schedule: str = "constant"
    #: weight of the boundary-feature term of the distillation loss (0: the outputs only)
    distill_feature_weight: float = 1.0
    #: weight of the CTC loss against the original's greedy reading, on CTC heads (0: off)
    distill_ctc_weight: float = DISTILL_CTC_WEIGHT
    #: decay of the moving average of the distilled weights that the held-out judge scores (0: off;
    #: None for both: ``DISTILL_AUGMENT`` and ``DISTILL_AVERAGE``, or 0 where an output is a probability map)
    distill_average: float | None = None
    #: which weights distillation trains: "all", or "changed" (those pruning or refit changed)
    distill_train: str = "all"
    #: softening of class-axis outputs before distillation's KL (1: none; ``finetune.losses.output_loss``)
    distill_temperature: float = 1.0
    #: share of the calibration fit samples perturbed the same way before statistics, the
    #: sensitivity sweep and the refit (the held-out split stays as given)
    calib_augment: float = 0.0
    #: perturbed copies of this share of the refit's calibration samples join its least squares
    #: (None: ``REFIT_AUGMENT``, or 0 where an output is a probability map or per-anchor scores)
    refit_augment: float | None = None
    device: str = "cpu"
    #: labelled samples (the --eval format) that add a supervised term to distillation
    train_labels: str | None = None
    #: keep at most this fraction of the MACs, allocating per-group ratios by measured ε
    target_macs: float | None = None
    #: how the allocation gets each group's ε curve: "sweep" (forward runs per group and ratio)
    #: or "taylor" (first-order estimate from backward passes; needs the finetune extra)
    sensitivity_estimate: str = "sweep"
    #: reach ``target_macs`` in this many prune rounds, measuring the groups again after each
    #: (``pruning.rounds``); 1 = one allocation from the unpruned model's sensitivity
    allocation_rounds: int | str = 1
    #: with --allocation-rounds and --recover distill: distill after every round, not only the last
    distill_every_round: bool = False
    #: budget: the largest held-out drift (1 - task agreement) a written model may have
    max_drift: float | None = None
    #: labelled data (.npz) and the largest accuracy drop on it a written model may have
    eval: str | None = None
    max_accuracy_drop: float | None = None
    #: pick the MACs target by measured onnxruntime speedup (original time / compressed time)
    #: on ``speed_provider`` at batch ``speed_batch`` (see ``speed_target``)
    target_speedup: float | None = None
    speed_provider: str = "cpu"
    speed_batch: int = 1
    # checks
    verify: bool = True
    seed: int = 0

    @property
    def prunes(self) -> bool:
        return self.ratio > 0 or self.target_macs is not None or self.target_speedup is not None

    def resolved_criterion(self, calibrated: bool) -> str:
        if self.criterion == "auto":
            return "activation" if calibrated else "l1"
        return self.criterion

    def resolved_recover(self, calibrated: bool) -> str:
        if self.recover == "auto":
            if not calibrated:
                return "none"
            from onnxcompress.pruning.distill_step import backend_available

            # ONNXCOMPRESS_AUTO_RECOVER=refit keeps auto off the slow path (the test suite sets it)
            if os.environ.get("ONNXCOMPRESS_AUTO_RECOVER", "") == "refit" or not backend_available():
                return "refit"
            return "distill"
        return self.recover

    def _validate_speed_target(self) -> None:
        """``--target-speedup`` and its options (``speed_target`` does the search)."""
        if self.target_speedup is None:
            return
        if not self.target_speedup > 1.0:
            raise InputError(f"--target-speedup must be above 1 (2 = twice as fast), got {self.target_speedup}")
        clash = [f for f, on in (("--target-macs", self.target_macs is not None),
                                 ("--max-drift", self.max_drift is not None),
                                 ("--max-accuracy-drop", self.max_accuracy_drop is not None)) if on]
        if clash:
            raise InputError(f"--target-speedup picks the MACs target itself: it cannot be combined with {clash[0]}")
        if self.calib is None:
            raise InputError("--target-speedup needs calibration data to allocate the MACs: give --calib PATH")
        if self.mode != "remove":
            raise InputError("--target-speedup needs --mode remove: a zeroed model is no faster")
        if self.speed_provider not in ("cpu", "cuda"):
            raise InputError(f"--provider must be cpu or cuda, got {self.speed_provider!r}")
        if self.speed_batch < 1:
            raise InputError(f"--batch must be at least 1, got {self.speed_batch}")

    def validate(self) -> None:
        if not 0.0 <= self.ratio < 1.0:
            raise InputError(f"--ratio must be in [0, 1), got {self.ratio}")
        if self.mode not in ("remove", "zero"):
            raise InputError(f"--mode must be remove or zero, got {self.mode!r}")
        if self.criterion not in ("l1", "l2", "activation", "auto"):
            raise InputError(f"--criterion must be l1, l2, activation or auto, got {self.criterion!r}")
        if self.recover not in ("none", "bias", "refit", "distill", "auto"):
            raise InputError(f"--recover must be none, bias, refit, distill or auto, got {self.recover!r}")
        if self.recover == "distill":
            from onnxcompress.pruning.distill_step import EXTRA_HINT, backend_available

            if not backend_available():
                raise InputError(f"--recover distill needs the finetune extra (torch): {EXTRA_HINT}")
        if self.train_labels is not None and self.resolved_recover(self.calib is not None) != "distill":
            raise InputError("--train-labels adds a supervised term to distillation: it needs --recover distill (or auto "
                             "with the finetune extra) and --calib")
        if self.allocation_rounds != "auto" and not (isinstance(self.allocation_rounds, int)
                                                     and 1 <= self.allocation_rounds <= 8):
            raise InputError(f"--allocation-rounds must be 1 to 8 or auto, got {self.allocation_rounds}")
        no_target = self.target_macs is None and self.target_speedup is None
        if self.distill_every_round and (self.allocation_rounds == 1 or no_target
                                         or self.resolved_recover(self.calib is not None) != "distill"):
            raise InputError("--distill-every-round distills between allocation rounds: it needs --allocation-rounds 2 "
                             "or more (or auto), --target-macs or --target-speedup, --calib and --recover distill (or auto with "
                             "the finetune extra)")
        if self.sensitivity_estimate not in ("sweep", "taylor"):
            raise InputError(f"--sensitivity-estimate must be sweep or taylor, got {self.sensitivity_estimate!r}")
        if self.sensitivity_estimate == "taylor":
            from onnxcompress.pruning.distill_step import EXTRA_HINT, backend_available

            if not backend_available():
                raise InputError(f"--sensitivity-estimate taylor needs the finetune extra (torch): {EXTRA_HINT}")
        for flag, share in (("--distill-augment", self.distill_augment), ("--distill-mix", self.distill_mix),
                            ("--refit-augment", self.refit_augment), ("--calib-augment", self.calib_augment)):
            if share is not None and not 0.0 <= share <= 1.0:
                raise InputError(f"{flag} must be a share in [0, 1], got {share}")
        if self.distill_average is not None and not 0.0 <= self.distill_average < 1.0:
            raise InputError(f"--distill-average must be a decay in [0, 1), got {self.distill_average}")
        if self.distill_step_sizes not in ("relative", "absolute"):
            raise InputError(f"--distill-step-sizes must be relative or absolute, got {self.distill_step_sizes!r}")
        if self.distill_train not in DISTILL_TRAIN:
            raise InputError(f"--distill-train must be {' or '.join(DISTILL_TRAIN)}, got {self.distill_train!r}")
        if not 0.0 < self.distill_temperature < float("inf"):
            raise InputError(f"--distill-temperature must be a finite number above 0, got {self.distill_temperature}")
        if self.distill_schedule not in ("constant", "cosine"):
            raise InputError(f"--distill-schedule must be constant or cosine, got {self.distill_schedule!r}")
        for flag, weight in (("--distill-feature-weight", self.distill_feature_weight),
                             ("--distill-ctc-weight", self.distill_ctc_weight)):
            if not 0.0 <= weight < float("inf"):
                raise InputError(f"{flag} must be a finite number, at least 0, got {weight}")
        if self.distill_seconds <= 0 or self.distill_steps < 1 or self.distill_lr <= 0:
            raise InputError("--distill-seconds and --distill-lr must be positive and --distill-steps at least 1")
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise InputError(f"--device must be cpu or cuda[:N], got {self.device!r}")
        needs = [f for f, on in (("--criterion activation", self.criterion == "activation"),
                                 ("--recover " + self.recover, self.recover in ("bias", "refit", "distill")),
                                 ("--target-macs", self.target_macs is not None),
                                 ("--max-drift", self.max_drift is not None),
                                 ("--max-accuracy-drop", self.max_accuracy_drop is not None)) if on]
        if needs and self.calib is None:
            raise InputError(f"{needs[0]} needs calibration data: give --calib PATH (a few hundred real inputs)")
        if self.target_macs is not None and not 0.0 < self.target_macs <= 1.0:
            raise InputError(f"--target-macs must be in (0, 1], got {self.target_macs}")
        self._validate_speed_target()
        if (self.max_accuracy_drop is None) != (self.eval is None):
            raise InputError("--eval and --max-accuracy-drop go together: labelled data and the accuracy drop it allows")
        if self.max_accuracy_drop is not None and self.max_drift is not None:
            raise InputError("give one budget: --max-drift (no labels) or --eval with --max-accuracy-drop")
        if self.max_drift is not None and not 0.0 <= self.max_drift <= 1.0:
            raise InputError(f"--max-drift must be in [0, 1], got {self.max_drift}")
        if self.scope not in ("local", "global"):
            raise InputError(f"--scope must be local or global, got {self.scope!r}")
        if not 0.0 < self.max_layer_ratio <= 1.0:
            raise InputError(f"--max-layer-ratio must be in (0, 1], got {self.max_layer_ratio}")
        if not 0.0 < self.held_out < 1.0:
            raise InputError(f"--held-out must be in (0, 1), got {self.held_out}")
        if self.calib_samples is not None and self.calib_samples < 2:
            raise InputError(f"--calib-samples must be >= 2, got {self.calib_samples}")
        if self.round_to < 1:
            raise InputError(f"--round-to must be >= 1, got {self.round_to}")
        for name, c in (("--max-norm", self.max_norm), ("--spectral-clip", self.spectral_clip)):
            if c is not None and not c > 0:
                raise InputError(f"{name} must be positive, got {c}")
        import re

        for pat in self.exclude:
            try:
                re.compile(pat)
            except re.error as exc:
                raise InputError(f"bad --exclude regex {pat!r}: {exc}") from exc

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_shapes"] = {k: list(v) for k, v in self.input_shapes.items()}
        if self.calib_image is not None:
            d["calib_image"] = asdict(self.calib_image)
        return d
