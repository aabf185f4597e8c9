"""User-facing configuration. Every default here is one the README defends."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from onnxcompress.analysis.shapes import Shape
from onnxcompress.errors import InputError

#: Fraction of filters removed per group when --ratio is not given. Without fine-tuning,
#: the trained digits CNN keeps 0.989 accuracy (from 0.993) at 0.1 and falls to 0.28 at
#: 0.25 (bench/ACCURACY.md), so the default is the conservative one.
DEFAULT_RATIO = 0.1
#: Channel counts are kept at multiples of this (measured: non-multiples of 8 lose up
#: to half the onnxruntime CPU speedup).
DEFAULT_ROUND_TO = 8


@dataclass
class CompressConfig:
    """What to do to a model. ``ratio=0`` means no pruning (folding/projection only)."""

    ratio: float = DEFAULT_RATIO
    mode: str = "remove"  # remove | zero
    criterion: str = "l1"  # l1 | l2
    scope: str = "local"  # local | global
    max_layer_ratio: float = 0.8
    round_to: int = DEFAULT_ROUND_TO
    exclude: list[str] = field(default_factory=list)
    #: op types whose channel rule is switched off (each blocks "by the user")
    block_ops: list[str] = field(default_factory=list)
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
    # checks
    verify: bool = True
    seed: int = 0

    @property
    def prunes(self) -> bool:
        return self.ratio > 0

    def validate(self) -> None:
        if not 0.0 <= self.ratio < 1.0:
            raise InputError(f"--ratio must be in [0, 1), got {self.ratio}")
        if self.mode not in ("remove", "zero"):
            raise InputError(f"--mode must be remove or zero, got {self.mode!r}")
        if self.criterion not in ("l1", "l2"):
            raise InputError(f"--criterion must be l1 or l2, got {self.criterion!r}")
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
