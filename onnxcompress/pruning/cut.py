"""Cutting a weight down to its kept channels: in memory, or into the output's data file.

Every cut is a fresh array (or a ``spill.Region``), made without a temporary the size of the
weight: rows of an untouched external tensor are read (or copied in the kernel) straight from
its file, and a tensor that loses channels on several axes is cut a few kept rows at a time.
"""

from __future__ import annotations

import sys

import numpy as np
import onnx_ir as ir

from onnxcompress.importance import l1_kept
from onnxcompress.spill import Region


def file_rows(value: ir.Value, masks: list[tuple[int, np.ndarray]]) -> tuple[str, int] | None:
    """(data file, offset) when ``value``'s rows can be read straight from its external data file:
    an untouched external tensor cut on axis 0 only, in native little-endian layout."""
    t = value.const_value
    if (not isinstance(t, ir.ExternalTensor) or len(masks) != 1 or masks[0][0] != 0 or sys.byteorder != "little"
            or len(t.shape) < 2):
        return None
    try:
        if np.dtype(t.dtype.numpy()).kind not in "fiub":
            return None
    except Exception:  # noqa: BLE001 - a dtype numpy has no native form for
        return None
    return (str(t.path), int(t.offset or 0))


def _runs(idx: np.ndarray):
    """(first, count) of each run of consecutive indices."""
    j = 0
    while j < len(idx):
        k = j
        while k + 1 < len(idx) and idx[k + 1] == idx[k] + 1:
            k += 1
        yield j, k + 1 - j
        j = k + 1


def read_rows(arr: np.ndarray, keep: np.ndarray, path: str, offset: int) -> np.ndarray:
    """The kept rows of an external tensor, read from its file into the result: the source is never
    mapped whole (a 1.5 GB weight cut in half peaked at source + result, 1.6x the model)."""
    idx = np.flatnonzero(keep)
    out = np.empty((len(idx),) + arr.shape[1:], arr.dtype)
    flat = out.reshape(len(idx), -1).view(np.uint8)
    row = flat.shape[1]
    with open(path, "rb") as f:
        for j, count in _runs(idx):  # a run of consecutive rows: one read
            f.seek(offset + int(idx[j]) * row)
            view = memoryview(flat[j:j + count]).cast("B")  # type: ignore[arg-type]  # numpy arrays are buffers
            got = 0
            while got < len(view):
                n = f.readinto(view[got:])
                if not n:
                    raise OSError(f"{path}: external data ends early")
                got += n
    return out


#: source bytes cut per block when a tensor loses channels on several axes (rows of the first axis)
CUT_BLOCK_BYTES = 4 << 20


def cut_and_sum(job: tuple) -> tuple[np.ndarray | Region, float | None]:
    """``cut`` of (source, masks, rows file, sink), and with ``job[4]`` the sum of the kept |w| in
    float64, block by block as they are cut (None where the data never passed through here)."""
    arr, masks, source, sink, want = job
    sums: list[float] | None = [] if want else None
    out = cut((arr, masks, source, sink), sums)
    if not want:
        return out, None
    if isinstance(out, Region):
        return out, (sum(sums) if source is None else None)
    return out, l1_kept(out, {})[0]


def cut(job: tuple, sums: list[float] | None = None) -> np.ndarray | Region:
    """The array kept by every (axis, mask) of one tensor (a fresh array: ``np.compress`` copies),
    or, given a sink (``spill.DataSink``) and a big result, its region of the output's data file.

    ``job`` is (source array, [(axis, keep mask)], (file, offset) to read rows from or None[, sink]).
    """
    arr, masks, source, *rest = job
    sink = rest[0] if rest else None
    shape = list(arr.shape)
    for axis, keep in masks:
        shape[axis] = int(np.count_nonzero(keep))
    region = sink.region(tuple(shape), arr.dtype) if sink is not None else None
    if region is not None:
        cut_into(region, arr, masks, source, sums)
        return region
    if source is not None:
        return read_rows(arr, masks[0][1], *source)
    if len(masks) == 1:
        axis, keep = masks[0]
        return np.compress(keep, arr, axis=axis)
    if all(axis != 0 for axis, _ in masks):
        index = [np.arange(n) for n in arr.shape]
        for axis, keep in masks:
            index[axis] = np.flatnonzero(keep)
        return arr[np.ix_(*index)]
    # Several axes at once. Cutting them one after another over the whole tensor would hold the
    # source, an intermediate and the result together (a 1 GB Gemm cut on both axes peaked at
    # 2.9x): a few kept rows at a time are cut on the other axes straight into the result.
    out = np.empty(shape, arr.dtype)
    _cut_blocks(_Rows(out), arr, masks)
    return out


class _Rows:
    """An array in memory filled as ``cut_into`` fills a ``Region``: blocks of rows, in order."""

    def __init__(self, out: np.ndarray) -> None:
        self.out, self.pos = out, 0

    def write(self, block: np.ndarray) -> None:
        self.out[self.pos:self.pos + len(block)] = block
        self.pos += len(block)


def cut_into(region: Region, arr: np.ndarray, masks: list[tuple[int, np.ndarray]], source: tuple[str, int] | None,
             sums: list[float] | None = None) -> None:
    """Write the cut of ``arr`` into ``region`` in C order: runs of kept rows copied from the input's
    file in the kernel, or blocks of a few kept rows cut on the other axes (the same values as ``cut``;
    with ``sums``, each block's sum of |w| is appended to it while the block is in cache)."""
    if source is not None:
        idx = np.flatnonzero(dict(masks)[0])
        row = arr[:1].nbytes
        for j, count in _runs(idx):
            region.copy_from(source[0], source[1] + int(idx[j]) * row, count * row)
        return
    _cut_blocks(region, arr, masks, sums)


def _cut_blocks(out: Region | _Rows, arr: np.ndarray, masks: list[tuple[int, np.ndarray]],
                sums: list[float] | None = None) -> None:
    """Blocks of a few kept rows of ``arr``, cut on the other axes, written to ``out`` in order."""
    keep_by_axis = dict(masks)
    rows = np.flatnonzero(keep_by_axis.pop(0)) if 0 in keep_by_axis else None
    n = arr.shape[0] if rows is None else len(rows)
    step = max(1, CUT_BLOCK_BYTES // max(arr[:1].nbytes, 1))
    for j in range(0, n, step):
        block = arr[j:j + step] if rows is None else arr.take(rows[j:j + step], axis=0)
        for axis, keep in sorted(keep_by_axis.items()):
            block = np.compress(keep, block, axis=axis)
        out.write(block)
        if sums is not None:
            sums.append(float(np.abs(block).sum(dtype=np.float64)))
