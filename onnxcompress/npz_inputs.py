"""Inputs from an ``.npz`` file (``--inputs``): read, and checked against the model before any session sees them."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from onnxcompress.analysis.shapes import graph_inputs
from onnxcompress.errors import InputError


def read_npz(path: str | os.PathLike, what: str) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` (no pickles); one-line errors that start with ``what`` (the option)."""
    from onnxcompress.paths import require_regular_file

    p = Path(path)
    if not p.exists():
        raise InputError(f"{what}: no such file: {p}")
    require_regular_file(p, what)
    try:
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as exc:  # noqa: BLE001 - a zip, pickle or format error: all the same to the user
        raise InputError(f"{what}: cannot read {p} as .npz: {exc}") from exc


def load_npz_inputs(path: str | os.PathLike, model=None) -> dict[str, np.ndarray]:
    """Feeds from an .npz whose keys are input names, checked before any session sees them.

    Every array must be numeric and non-empty. With ``model`` (an ``ir.Model``) the keys
    must be its inputs, and each array must have the input's element type, rank and
    fixed dims; the error names the input and the dim.
    """
    p = Path(path)
    feeds = read_npz(p, "--inputs")
    if not feeds:
        raise InputError(f"--inputs: {p} holds no arrays")
    for k, a in feeds.items():
        if a.dtype.kind not in "biuf":
            raise InputError(f"--inputs: {k!r} holds {a.dtype} data, not numbers")
        if a.size == 0:
            raise InputError(f"--inputs: {k!r} is empty (shape {tuple(a.shape)})")
    if model is not None:
        check_feeds_fit(model, feeds)
    return feeds


def check_feeds_fit(model, feeds: dict[str, np.ndarray], what: str = "--inputs") -> None:
    """Each feed has its input's name, element type, rank and fixed dims; the error names the dim."""
    from onnxcompress.runtime import np_dtype

    inputs = graph_inputs(model)
    check_feed_names([v.name for v in inputs], feeds, what)
    for v in inputs:
        a = feeds[v.name]
        if v.dtype is not None and a.dtype != np.dtype(np_dtype(v.dtype)):
            raise InputError(f"{what}: {v.name!r} is {a.dtype}; the model's input takes {np.dtype(np_dtype(v.dtype))}")
        if v.shape is None:
            continue
        if a.ndim != len(v.shape):
            raise InputError(f"{what}: {v.name!r} has rank {a.ndim} (shape {tuple(a.shape)}); "
                             f"the model's input has rank {len(v.shape)}")
        for i, (d, got) in enumerate(zip(v.shape, a.shape)):
            if isinstance(d, int) and d > 0 and d != got:
                raise InputError(f"{what}: {v.name!r} dim {i} is {got}; the model fixes it at {d}")


def check_feed_names(names: list[str], feeds: dict[str, np.ndarray], what: str) -> None:
    missing = sorted(set(names) - set(feeds))
    extra = sorted(set(feeds) - set(names))
    if missing or extra:
        raise InputError(
            f"{what}: inputs do not match the model (missing: {', '.join(missing) or '-'}; "
            f"unknown: {', '.join(extra) or '-'})"
        )
