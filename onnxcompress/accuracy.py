"""Accuracy on labelled data: classification and CTC sequences, read from one ``.npz``.

The ``.npz`` holds the inputs (under the model's input names, or one array under any
other key such as ``x``) and integer labels (``y`` or ``labels``):

- labels of shape (N,): top-1 classification on the first output's class axis;
- labels of shape (N, L), padded with -1: a CTC sequence per sample; the first output is
  read batch-first with classes on the last axis, decoded greedily (argmax per step,
  repeats collapsed, the blank dropped; ``blank`` 0 unless the file has ``ctc_blank``),
  and a sample counts only when the whole sequence matches.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx_ir as ir

from onnxcompress.calibration import LABEL_KEYS, CalibrationSet
from onnxcompress.errors import InputError
from onnxcompress.fidelity import ctc_decode, guess_class_axis
from onnxcompress.runtime import Session, graph_inputs


@dataclass
class LabelledSet:
    inputs: dict[str, np.ndarray]
    labels: np.ndarray
    blank: int = 0
    source: str = ""

    @property
    def task(self) -> str:
        return "ctc" if self.labels.ndim == 2 else "classification"

    def __len__(self) -> int:
        return len(self.labels)


def load_labelled(path: str | Path, model: ir.Model, xkey: str | None = None, ykey: str | None = None) -> LabelledSet:
    """Read labelled data for ``model`` (see the module docstring); one-line errors."""
    from onnxcompress.npz_inputs import read_npz

    p = Path(path)
    arrays = read_npz(p, "--eval")
    ykey = ykey or next((k for k in ("y", "labels", "label", "targets") if k in arrays), None)
    if ykey is None or ykey not in arrays:
        raise InputError(f"--eval {p.name}: no labels (keys: {', '.join(sorted(arrays))}; expected y or labels)")
    labels = arrays[ykey]
    names = [v.name for v in graph_inputs(model)]
    if all(n in arrays for n in names):
        inputs = {n: arrays[n] for n in names}
    elif len(names) == 1:
        key = xkey if xkey in arrays else next((k for k in arrays if k not in LABEL_KEYS and k != "ctc_blank"), None)
        if key is None:
            raise InputError(f"--eval {p.name}: no input array (keys: {', '.join(sorted(arrays))})")
        inputs = {names[0]: arrays[key]}
    else:
        raise InputError(f"--eval {p.name}: needs arrays named after the inputs {names}")
    for n, a in inputs.items():
        if len(a) != len(labels):
            raise InputError(f"--eval {p.name}: {len(a)} samples of {n!r} but {len(labels)} labels")
    if len(labels) == 0:
        raise InputError(f"--eval {p.name}: holds no samples (labels of shape {tuple(labels.shape)})")
    if not np.issubdtype(labels.dtype, np.integer) or labels.ndim not in (1, 2):
        raise InputError(f"--eval {p.name}: labels must be integers of shape (N,) or (N, L), found {labels.shape} {labels.dtype}")
    blank = int(arrays["ctc_blank"]) if "ctc_blank" in arrays else 0
    return LabelledSet(inputs, labels, blank, str(p))


def ctc_greedy(scores: np.ndarray, blank: int) -> list[list[int]]:
    """Greedy CTC decoding of (N, T, C) scores (``fidelity.ctc_decode`` of each sample's argmax)."""
    return [list(ctc_decode(row, blank)) for row in scores.argmax(axis=-1)]


def predictions(model, data: LabelledSet, batch: int = 32) -> np.ndarray:
    """The first output of ``model`` over ``data``, batch-first."""
    session = Session(model)
    d0 = session.session.get_inputs()[0].shape[0]
    fixed = d0 if isinstance(d0, int) and d0 > 0 else None
    cal = CalibrationSet([data.inputs], data.source, fixed)
    first = session.output_names[0]
    return session.run_all(list(cal.batches(batch)), [first])[first]


def accuracy(model, data: LabelledSet, batch: int = 32) -> float:
    """Exact-match accuracy of ``model`` on ``data`` (top-1, or whole CTC sequences)."""
    out = predictions(model, data, batch)
    if data.task == "classification":
        axis = guess_class_axis(out)
        if axis is None or out.ndim != 2:
            raise InputError(f"--eval: labels are one class per sample, but the first output has shape {out.shape}")
        return float(np.mean(out.argmax(axis=axis) == data.labels))
    if out.ndim != 3:
        raise InputError(f"--eval: sequence labels need a (N, T, C) first output, found shape {out.shape}")
    decoded = ctc_greedy(out, data.blank)
    truth = [[int(c) for c in row if c >= 0] for row in data.labels]
    return float(np.mean([d == t for d, t in zip(decoded, truth)]))
