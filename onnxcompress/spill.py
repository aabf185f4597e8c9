"""The output's external-data file, filled while the model is being pruned.

A big weight cut by the prune pass is written once, a block at a time, straight into the data
file the output will keep (in the output's staging folder), and the model refers to it there
as an external tensor. Saving then appends only the other tensors and writes the graph: the
cut weights are not copied again (on the 2.4 GB model with a 1 GB Gemm, writing its 1.2 GB
result from memory was the largest single cost of the run after the passes).

Used by the CLI only, for inputs with external data and a plain compression (no calibration,
remove mode); any other run writes nothing here. When the model no longer refers to every
region exactly once (a later pass replaced or dropped a cut weight), the save falls back to
``onnx_ir.save`` into a fresh file, so no unreferenced bytes are ever written out.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx_ir as ir

#: arrays smaller than this are made in memory as before (alignment would waste file space)
MIN_BYTES = 1 << 20
#: each region starts on a page, so readers (onnxruntime, numpy) can map it directly
ALIGN = 4096
#: tensors up to this size stay inside the .onnx file, as ``onnx_ir.save`` keeps them
INLINE_BYTES = 256


class Region:
    """One array's bytes in the data file, written in order, block by block (``os.pwrite``) or
    copied from another file in the kernel (``os.copy_file_range``): no page of it is mapped or
    held in this process's memory."""

    def __init__(self, sink: DataSink, offset: int, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.sink, self.offset, self.shape, self.dtype = sink, offset, shape, dtype
        self.nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        self._pos = 0
        self._fd: int | None = os.open(sink.path, os.O_WRONLY)

    def write(self, block: np.ndarray) -> None:
        """Append the next block of the array (C order)."""
        view = memoryview(np.ascontiguousarray(block, dtype=self.dtype)).cast("B")
        self._check(len(view))
        while len(view):
            n = os.pwrite(self._fd, view, self.offset + self._pos)
            view, self._pos = view[n:], self._pos + n

    def copy_from(self, path: str, offset: int, nbytes: int) -> None:
        """Append ``nbytes`` of the file ``path`` from ``offset`` (a run of an input tensor's rows)."""
        self._check(nbytes)
        with open(path, "rb") as src:
            end = self._pos + nbytes
            while self._pos < end:
                n = _copy(src.fileno(), self._fd, end - self._pos, offset, self.offset + self._pos)
                if not n:
                    raise OSError(f"{path}: external data ends early")
                offset, self._pos = offset + n, self._pos + n

    def _check(self, n: int) -> None:
        if self._fd is None:
            raise ValueError("the region is sealed")
        if self._pos + n > self.nbytes:
            raise ValueError("more bytes than the region holds")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        self.close()

    def seal(self, name: str) -> ir.ExternalTensor:
        """The filled region as an external tensor of the data file."""
        if self._pos != self.nbytes:
            raise ValueError(f"region of {name} holds {self._pos} of {self.nbytes} bytes")
        self.close()
        return ir.ExternalTensor(self.sink.name, self.offset, self.nbytes, ir.DataType.from_numpy(self.dtype),
                                 shape=ir.Shape(self.shape), name=name, base_dir=str(self.sink.dir))


def _copy(src: int, dst: int, count: int, src_offset: int, dst_offset: int) -> int:
    """``os.copy_file_range`` where the system has it, else a read and a write (at most 16 MB)."""
    if hasattr(os, "copy_file_range"):
        try:
            return os.copy_file_range(src, dst, count, src_offset, dst_offset)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM):
                raise
    data = os.pread(src, min(count, 16 << 20), src_offset)
    done = 0
    while done < len(data):
        done += os.pwrite(dst, data[done:], dst_offset + done)
    return len(data)


def _raw(dtype: np.dtype) -> bool:
    """Whether an array of ``dtype`` is stored as its own bytes (not 4-bit types, packed two to a byte)."""
    if not dtype.isnative or dtype.hasobject:
        return False
    try:
        return ir.DataType.from_numpy(dtype).bitwidth == dtype.itemsize * 8
    except Exception:  # noqa: BLE001 - a dtype ONNX has no type for
        return False


class DataSink:
    """Regions of one data file, handed out to be written and sealed as external tensors."""

    def __init__(self, make_dir: Callable[[], Path], name: str) -> None:
        self._make_dir = make_dir
        self.name = name
        self.dir: Path | None = None
        self._end = 0
        self._lock = threading.Lock()
        #: offset -> length of every region handed out
        self.regions: dict[int, int] = {}

    @property
    def path(self) -> Path | None:
        return None if self.dir is None else self.dir / self.name

    def region(self, shape: tuple[int, ...], dtype: np.dtype) -> Region | None:
        """A region of the data file for an array of ``shape`` (None when it is small: make it in memory)."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if nbytes < MIN_BYTES or not _raw(dtype) or not hasattr(os, "pwrite"):
            return None  # (no os.pwrite/pread: Windows)
        with self._lock:
            if self.dir is None:
                self.dir = self._make_dir()
                self.path.touch()
            offset = -(-self._end // ALIGN) * ALIGN
            self._end = offset + nbytes
            os.truncate(self.path, self._end)
            self.regions[offset] = nbytes
        return Region(self, offset, tuple(shape), dtype)

    def _own_tensors(self, model: ir.Model) -> dict[int, int] | None:
        """Region offset -> times the model's initializers refer to it; None when no region is used."""
        if self.path is None:
            return None
        own = os.path.realpath(self.path)
        used: dict[int, int] = {}
        for graph in model.graphs():
            for v in graph.initializers.values():
                t = v.const_value
                if isinstance(t, ir.ExternalTensor) and os.path.realpath(t.path) == own:
                    used[int(t.offset or 0)] = used.get(int(t.offset or 0), 0) + 1
        return used or None

    def complete(self, model: ir.Model) -> dict[ir.Value, ir.TensorProtocol] | None:
        """Append every other tensor to the file and point the model at it, ready for ``onnx_ir.save``.

        Returns the values whose tensors were swapped (their original tensors, to put back
        with ``restore``), or None when the regions are not each used exactly once: then
        nothing was changed and the model must be saved the ordinary way.
        """
        if self.dir is None or self._own_tensors(model) != {off: 1 for off in self.regions}:
            return None
        swapped: dict[ir.Value, ir.TensorProtocol] = {}
        own = os.path.realpath(self.path)
        try:
            with open(self.path, "r+b") as f:
                f.seek(self._end)
                for graph in model.graphs():
                    for v in graph.initializers.values():
                        t = v.const_value
                        if t is None or (isinstance(t, ir.ExternalTensor) and os.path.realpath(t.path) == own):
                            continue
                        if t.nbytes <= INLINE_BYTES or t.dtype == ir.DataType.STRING:
                            if isinstance(t, ir.ExternalTensor):  # its file is not the output's: inline it
                                swapped[v] = t
                                v.const_value = ir.Tensor(t.numpy(), dtype=t.dtype, name=t.name)
                            continue
                        offset = f.tell()
                        t.tofile(f)
                        if f.tell() != offset + t.nbytes:
                            raise OSError(f"{self.path}: {t.name} wrote {f.tell() - offset} of {t.nbytes} bytes")
                        swapped[v] = t
                        v.const_value = ir.ExternalTensor(self.name, offset, t.nbytes, t.dtype, shape=t.shape,
                                                          name=t.name, base_dir=str(self.dir))
        except BaseException:
            restore(swapped)
            raise
        return swapped


def restore(swapped: dict[ir.Value, ir.TensorProtocol]) -> None:
    """Put back the tensors ``DataSink.complete`` replaced."""
    for v, t in swapped.items():
        v.const_value = t
