"""Outputs of several batches joined batch-first, and the same join done one batch at a time.

A data set runs batch by batch (``runtime.Session.run_all``, distillation's held-out
evaluation, the sensitivity sweep's suffix runs), and each output's batches are joined along
its batch axis, found by its size (so a time-major (T, N, C) CTC head becomes (N, T, C)).

``concat_outputs`` joins a list of every batch's outputs. ``OutputJoin`` gives the same arrays,
value for value and stride for stride, while holding (in the common case: C-contiguous batches
that agree on the batch axis) only the joined copy and the first batch: it makes each output's
array when the first batch shows its batch axis and copies every later batch into it as it
comes. Joining a list holds every batch beside the joined copy, twice the outputs at the peak;
on PP-OCRv6 rec (40 x 18710 probabilities a sample) distillation's evaluation of
512 held-out samples held 2 x 1.5 GB that way.
"""

from __future__ import annotations

from itertools import accumulate

import numpy as np


def batch_axis(shapes: list[tuple[int, ...]], batches: list[int]) -> int | None:
    """The first axis whose size is the batch in every chunk (time-major heads: axis 1)."""
    for ax in range(len(shapes[0])):
        if all(len(s) > ax and s[ax] == b for s, b in zip(shapes, batches)):
            return ax
    return None


def concat_outputs(chunks: list[dict[str, np.ndarray]], batches: list[int]) -> dict[str, np.ndarray]:
    """Outputs of several batches joined batch-first.

    Each output's batch axis is found by its size; an output without one keeps its first chunk.
    """
    out = {}
    for k in chunks[0]:
        arrs = [np.asarray(c[k]) for c in chunks]
        ax = batch_axis([a.shape for a in arrs], batches) if arrs[0].ndim else None
        out[k] = arrs[0] if ax is None else np.moveaxis(np.concatenate(arrs, axis=ax), ax, 0)
    return out


class OutputJoin:
    """``concat_outputs(chunks, batches)``, given the chunks one at a time (``add``), then ``result()``.

    Each output's joined array is laid out as ``np.concatenate`` makes it (the batch at the axis
    where the first chunk has it) and returned batch-first the same way, so values and strides
    are those of ``concat_outputs``. The axis is taken from the first chunk (its first axis of
    the batch's size); a later chunk that does not fit it (another axis was the batch, a dim or
    dtype differs, or it is not C-contiguous, so ``np.concatenate`` might lay it out otherwise)
    turns that output back into a list of chunks, joined by ``concat_outputs``; so does an output
    of a single batch or whose first chunk is not C-contiguous.
    """

    def __init__(self, batches: list[int]) -> None:
        self.batches = [int(b) for b in batches]
        self.starts = [0, *accumulate(self.batches)][:-1]  # each batch's first row in the joined arrays
        self.added = 0
        self.first: dict[str, np.ndarray] = {}  # kept whole for outputs without a batch axis
        self.joined: dict[str, tuple[np.ndarray, int]] = {}  # output -> (array, batch axis)
        self.listed: dict[str, list[np.ndarray]] = {}  # outputs joined at the end

    def add(self, chunk: dict[str, np.ndarray]) -> None:
        i = self.added
        if i >= len(self.batches):
            raise ValueError(f"OutputJoin was given {i + 1} chunks for {len(self.batches)} batches")
        b, start = self.batches[i], self.starts[i]
        missing = [k for k in self.first if k not in chunk] if i else []
        if missing:  # as concat_outputs fails; a joined array would keep uninitialised rows
            raise KeyError(f"batch {i} lacks the output(s) {missing} of the first")
        for k, a in chunk.items():
            a = np.asarray(a)
            if i == 0:
                self._start(k, a, b)
            elif k in self.listed:
                self.listed[k].append(a)
            elif k in self.joined:
                whole, ax = self.joined[k]
                rows = _at(whole, ax, start, b)
                if a.flags.c_contiguous and a.dtype == whole.dtype and a.shape == rows.shape:
                    rows[...] = a
                else:  # the first chunk as given, the later ones as views of the joined array, then this one
                    later = [_at(whole, ax, s, n) for s, n in zip(self.starts[1:i], self.batches[1:i])]
                    self.listed[k] = [self.first[k], *later, a]
                    del self.joined[k]
        self.added += 1

    def result(self) -> dict[str, np.ndarray]:
        if self.added != len(self.batches):
            raise ValueError(f"OutputJoin has {self.added} of {len(self.batches)} chunks")
        out = {}
        for k, a in self.first.items():
            if k in self.joined:
                whole, ax = self.joined[k]
                out[k] = np.moveaxis(whole, ax, 0)
            elif k in self.listed:
                out[k] = concat_outputs([{k: c} for c in self.listed[k]], self.batches)[k]
            else:
                out[k] = a
        return out

    def _start(self, k: str, a: np.ndarray, b: int) -> None:
        self.first[k] = a
        ax = batch_axis([a.shape], [b])
        if ax is None:  # no batch axis: concat_outputs keeps the first chunk, whatever follows
            return
        if len(self.batches) == 1 or not a.flags.c_contiguous:  # np.concatenate's copy and layout
            self.listed[k] = [a]
            return
        shape = list(a.shape)
        shape[ax] = sum(self.batches)
        whole = np.empty(shape, dtype=a.dtype)
        _at(whole, ax, 0, b)[...] = a
        self.joined[k] = (whole, ax)


def _at(whole: np.ndarray, ax: int, start: int, n: int) -> np.ndarray:
    """The view of ``whole`` holding rows ``start`` .. ``start + n`` of axis ``ax``."""
    idx = [slice(None)] * whole.ndim
    idx[ax] = slice(start, start + n)
    return whole[tuple(idx)]
