"""Calibration inputs that do not share axis 0 as their batch, refused in one line.

``--calib`` feeds samples along axis 0 of every input together. An input whose first axis is
fixed at more than 1 beside another fixed at another size (silero-vad's (2, 1, 128) LSTM state
beside its (1, 576) audio), or whose later axis carries another input's batch symbol
((2, N, 128) beside (N, 576)), has its batch elsewhere: said here, not as onnxruntime's cut-off
error blaming the input model. A batch fixed on one input and free on another is fed as fixed
batches, as before.
"""

from __future__ import annotations

from pathlib import Path

import onnx_ir as ir

from onnxcompress.errors import InputError


def check_shared_batch_axis(inputs: list[ir.Value], src: Path) -> None:
    """Raise ``InputError`` when one of ``inputs`` has its batch on another axis than the first."""
    shaped = [v for v in inputs if v.shape is not None and len(v.shape) > 0]
    fixed = {v.name: v.shape[0] for v in shaped if isinstance(v.shape[0], int) and v.shape[0] > 0}
    # named batch symbols only: every unnamed dim prints as "None", and two of them say nothing about each other
    symbols = {d.value: v.name for v in shaped if isinstance(d := v.shape[0], ir.SymbolicDim) and d.value}
    for v in shaped:
        d0 = fixed.get(v.name)
        if d0 is None or d0 < 2:
            continue
        other = next((k for k, d in fixed.items() if d != d0), None)
        elsewhere = next((symbols[d.value] for d in list(v.shape)[1:] if isinstance(d, ir.SymbolicDim) and d.value in symbols),
                         None)
        if other is None and elsewhere is None:
            continue
        why = f"input {other!r} at {fixed[other]}" if other is not None else f"its later axes carry the batch of {elsewhere!r}"
        raise InputError(f"--calib {src.name}: input {v.name!r} has a first axis fixed at {d0} and {why}: --calib "
                         "stacks samples on axis 0 of every input, and inputs that do not share it as their batch (a "
                         "recurrent state with its batch on another axis) cannot be calibrated (unsupported)")
