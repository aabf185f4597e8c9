"""How far a compressed model's outputs are from the original's, in terms that predict the task.

Cosine and max-abs alone hid a recognizer at 0% accuracy behind "min cosine 0.925".
So, per output:

- ``rel_l2``: ||got - ref|| / ||ref|| over the whole output;
- ``agreement``: per-position top-1 agreement along the output's class axis, for
  (N, C) scores, (N, T, C) sequences such as CTC, and (N, C, H, W) dense maps;
- ``sequence_agreement``: for outputs with positions besides the batch, the fraction of
  samples whose argmax agrees at *every* position: a sequence decoded from such an
  output (CTC) or a mask reads the same only then.

The class axis is guessed from the rank (2: axis 1; 3: the last axis, as CTC heads are
(N, T, C) or (T, N, C); 4 and up: axis 1) unless ``class_axes`` names it; the report
says which axis was taken. Integer and boolean outputs are compared exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from onnxcompress.errors import VerificationError


def guess_class_axis(a: np.ndarray) -> int | None:
    """The axis of class scores in a float output, or None when it has none."""
    if not np.issubdtype(a.dtype, np.floating) or a.ndim < 2:
        return None
    axis = a.ndim - 1 if a.ndim == 3 else 1
    return axis if a.shape[axis] >= 2 else None


@dataclass
class OutputFidelity:
    cosine_min: float
    max_abs_diff: float
    rel_l2: float
    class_axis: int | None = None
    agreement: float | None = None
    sequence_agreement: float | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Fidelity:
    """Agreement of two models' outputs on the same inputs."""

    cosine_min: float
    max_abs_diff: float
    #: top-1 agreement of (N, C) class scores (the lowest over such outputs)
    top1_agreement: float | None = None
    #: the lowest per-position top-1 agreement over every output with a class axis
    agreement: float | None = None
    rel_l2_max: float = 0.0
    per_output: dict[str, OutputFidelity] = field(default_factory=dict)
    #: "calibration" (real inputs) or "random" (does not predict accuracy)
    inputs: str = "random"
    samples: int = 0
    #: the compared model's outputs, kept for further comparisons (not reported)
    outputs: dict | None = None

    @property
    def sequence_agreement(self) -> float | None:
        vals = [o.sequence_agreement for o in self.per_output.values() if o.sequence_agreement is not None]
        return min(vals) if vals else None

    def to_dict(self) -> dict:
        d = {
            "inputs": self.inputs,
            "samples": self.samples,
            "cosine_min": self.cosine_min,
            "max_abs_diff": self.max_abs_diff,
            "top1_agreement": self.top1_agreement,
            "agreement": self.agreement,
            "sequence_agreement": self.sequence_agreement,
            "rel_l2_max": self.rel_l2_max,
            "per_output": {k: v.to_dict() for k, v in self.per_output.items()},
        }
        if self.inputs == "random":
            d["note"] = "measured on random inputs: this does not predict accuracy on real data (give --calib)"
        return d


def _cosines(a64: np.ndarray, b64: np.ndarray) -> float:
    na, nb = np.linalg.norm(a64, axis=1), np.linalg.norm(b64, axis=1)
    dots = np.einsum("ij,ij->i", a64, b64)
    both0 = (na == 0) & (nb == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.where(both0, 1.0, np.where((na == 0) | (nb == 0), 0.0, dots / (na * nb)))
    return float(c.min()) if c.size else 1.0


def compare_output(a: np.ndarray, b: np.ndarray, class_axis: int | None = None) -> OutputFidelity:
    """Fidelity of one output ``b`` against the reference ``a`` (same shape)."""
    if not np.issubdtype(a.dtype, np.floating):
        same = bool(np.array_equal(a, b))
        return OutputFidelity(cosine_min=1.0 if same else 0.0, max_abs_diff=0.0 if same else float("inf"), rel_l2=0.0 if same else 1.0)
    a64 = a.astype(np.float64).reshape(a.shape[0] if a.ndim > 1 else 1, -1)
    b64 = b.astype(np.float64).reshape(a64.shape)
    diff = a64 - b64
    ref_norm = float(np.linalg.norm(a64))
    out = OutputFidelity(
        cosine_min=_cosines(a64, b64),
        max_abs_diff=float(np.max(np.abs(diff))) if diff.size else 0.0,
        rel_l2=float(np.linalg.norm(diff) / ref_norm) if ref_norm > 0 else float(np.linalg.norm(diff) > 0),
    )
    axis = guess_class_axis(a) if class_axis is None else class_axis % a.ndim
    if axis is not None and a.shape[axis] >= 2:
        same = np.argmax(a, axis=axis) == np.argmax(b, axis=axis)
        out.class_axis = axis
        out.agreement = float(same.mean()) if same.size else 1.0
        if same.ndim >= 2:
            # Sequences and maps: a sample reads the same only if every position agrees.
            out.sequence_agreement = float(same.reshape(same.shape[0], -1).all(axis=1).mean())
    return out


def compare_outputs(
    ref: dict[str, np.ndarray],
    got: dict[str, np.ndarray],
    allow_shape_change: bool = False,
    class_axes: dict[str, int] | None = None,
    inputs: str = "random",
) -> Fidelity:
    """Per-output and overall fidelity of ``got`` against ``ref``.

    With ``allow_shape_change`` (pruned graph outputs) outputs that changed shape are skipped.
    """
    class_axes = class_axes or {}
    per: dict[str, OutputFidelity] = {}
    samples = 0
    for name, a in ref.items():
        b = got[name]
        if a.shape != b.shape:
            if allow_shape_change:
                continue
            raise VerificationError(f"output {name!r} changed shape: {a.shape} -> {b.shape}")
        per[name] = compare_output(a, b, class_axes.get(name))
        samples = max(samples, a.shape[0] if a.ndim else 1)
    agreements = [o.agreement for o in per.values() if o.agreement is not None]
    top1 = [o.agreement for n, o in per.items() if o.agreement is not None and ref[n].ndim == 2]
    return Fidelity(
        cosine_min=min((o.cosine_min for o in per.values()), default=1.0),
        max_abs_diff=max((o.max_abs_diff for o in per.values()), default=0.0),
        top1_agreement=min(top1) if top1 else None,
        agreement=min(agreements) if agreements else None,
        rel_l2_max=max((o.rel_l2 for o in per.values()), default=0.0),
        per_output=per,
        inputs=inputs,
        samples=samples,
    )
