"""Apply a plan: zero filters in place, or remove them and fold their constant output.

Remove mode keeps what zero mode computes. A zeroed filter still outputs a constant per
channel after its BN and activation (act(BN(0)), an SE gate's 0.5, ...). The op rules'
``const_eval`` carry that constant to every consumer (Conv, Gemm, MatMul), whose bias
absorbs it. This is exact where the consumer sees no padding; elsewhere the report
says where it deviates.
"""

from __future__ import annotations

import logging

import sys

import numpy as np
import onnx_ir as ir

from onnxcompress.channels.state import AnalysisResult, ChannelInfo
from onnxcompress._ir_utils import const_array, default_opset, is_const
from onnxcompress._parallel import parallel_map, windows
from onnxcompress.pruning.consumer_folding import ConsumerFolding
from onnxcompress.spill import Region

logger = logging.getLogger(__name__)


#: source bytes cut in one parallel window (their results wait beside the whole model until written)
WINDOW_BYTES = 256 << 20

class Applier(ConsumerFolding):
    """Holds the plan's removed mask and gives rules what they need to evaluate and rewrite."""

    def __init__(self, model: ir.Model, analysis: AnalysisResult, removed: np.ndarray, shapes: dict):
        self.model = model
        self.graph = model.graph
        self.analysis = analysis
        self._removed = removed
        self.shapes = shapes
        self.opset = default_opset(model)
        self.consts: dict[ir.Value, np.ndarray] = {}
        self.notes: list[str] = []
        self._tensors: dict[ir.Value, np.ndarray] = {}
        self._counter = 0
        self.zero_bias = False
        #: consumer input value -> calibrated per-channel means (bias compensation)
        self.input_means: dict[ir.Value, np.ndarray] = {}
        self.exact_borders = False
        self._border_maps: list[tuple[ir.Node, np.ndarray]] = []
        self._ones: dict[tuple, ir.Value] = {}
        #: where cut weights are written (``spill.DataSink``: the output's data file), or None: memory
        self.sink = None

    # ----- what rules use -----
    def channels(self, v: ir.Value | None) -> ChannelInfo | None:
        """The channels ``v`` carries (None: not tracked)."""
        return None if v is None else self.analysis.info.get(v)

    def recipe(self, node: ir.Node):
        """How ``node`` moves per-channel arrays, as its rule recorded it (None: no recipe)."""
        return self.analysis.recipes.get(node)

    def removed(self, ids: np.ndarray) -> np.ndarray:
        return self._removed[ids]

    def keep_mask(self, v: ir.Value) -> np.ndarray:
        return ~self._removed[self.analysis.info[v].ids]

    def kept_count(self, v: ir.Value) -> int:
        return int(self.keep_mask(v).sum())

    def kept_counts(self, v: ir.Value) -> list[int]:
        mask = self.keep_mask(v)
        if mask.ndim == 1:
            return [int(mask.sum())]
        return [int(mask.any(axis=tuple(j for j in range(mask.ndim) if j != k)).sum()) for k in range(mask.ndim)]

    def shape(self, v: ir.Value):
        return self.shapes.get(v.name)

    def is_const(self, v: ir.Value | None) -> bool:
        return is_const(v)

    def tensor(self, v: ir.Value) -> np.ndarray | None:
        """A constant's data as numpy (cached; updated as weights are rewritten)."""
        if v not in self._tensors:
            arr = const_array(v)
            if arr is None:
                return None
            self._tensors[v] = arr
        return self._tensors[v]

    const = tensor  # rules written against the analysis context call ``const``

    def release_external(self) -> int:
        """Unmap the external-data weights read so far; they map again, lazily, when next read.

        Scoring reads every weight through its memory map, and the pages it touched stay in
        this process's RSS: a 1.5 GB weight then sat beside its cut copy. Returns how many
        tensors were released (one still referenced elsewhere stays mapped).
        """
        import gc

        for v in [v for v in self._tensors if isinstance(v.const_value, ir.ExternalTensor)]:
            del self._tensors[v]
        gc.collect()
        released = 0
        for v in self.graph.initializers.values():
            t = v.const_value
            if isinstance(t, ir.ExternalTensor) and getattr(t, "raw", None) is not None:
                try:
                    t.release()
                    released += 1
                except BufferError:  # a view of it is still alive somewhere: leave it mapped
                    pass
        return released

    def const_of(self, v: ir.Value) -> np.ndarray:
        if v in self.consts:
            return self.consts[v]
        return np.full(self.analysis.info[v].ids.shape, np.nan)

    def set_const(self, v: ir.Value, arr: np.ndarray) -> None:
        self.consts[v] = np.asarray(arr, dtype=np.float64)

    def channel_vector(self, v: ir.Value | None, ref: ir.Value) -> np.ndarray | float:
        """A non-tracked operand's value per channel of ``ref`` (NaN when it is not uniform)."""
        info = self.analysis.info[ref]
        if v is None or not self.is_const(v):
            return np.nan
        c = self.tensor(v).astype(np.float64)
        if c.size == 1:
            return float(c.ravel()[0])
        if len(info.axes) != 1:
            return np.nan
        out_rank = len(self.shape(ref) or ())
        caxis = c.ndim - (out_rank - info.axes[0])
        if c.size == 1:
            return float(c.ravel()[0])
        if caxis < 0 or c.shape[caxis] == 1:
            return np.nan if c.size > 1 else float(c.ravel()[0])
        if c.size != c.shape[caxis]:
            return np.nan
        return c.ravel()

    def inexact(self, note: str) -> None:
        if note not in self.notes:
            self.notes.append(note)

    def new_initializer(self, base: str, arr: np.ndarray) -> ir.Value:
        self._counter += 1
        name = f"{base}__oc{self._counter}"
        while name in self.graph.initializers:
            self._counter += 1
            name = f"{base}__oc{self._counter}"
        t = ir.tensor(arr, name=name)
        v = ir.Value(name=name, shape=ir.Shape(arr.shape), type=ir.TensorType(t.dtype), const_value=t)
        self.graph.register_initializer(v)
        if self.model.ir_version is not None and self.model.ir_version < 4:
            self.graph.inputs.append(v)
        return v

    def set_input_const(self, node: ir.Node, index: int, arr: np.ndarray) -> None:
        if len(node.inputs) <= index:
            node.resize_inputs(index + 1)
        old = node.inputs[index]
        base = (old.name if old is not None else None) or f"{node.name or node.op_type}_in{index}"
        node.replace_input_with(index, self.new_initializer(base, arr))

    # ----- the two modes -----
    def zero(self, zero_bias: bool = False) -> None:
        """Zero the removed filters' weights (and biases with ``zero_bias``); every shape stays."""
        roles = ("out", "bias") if zero_bias else ("out",)
        for (value, axis), mask in self._slot_masks(roles=roles).items():
            arr = np.array(self.tensor(value), copy=True)
            idx: list[slice | np.ndarray] = [slice(None)] * arr.ndim
            idx[axis] = ~mask
            arr[tuple(idx)] = 0
            self._write(value, arr)

    def remove(self, zero_bias: bool = False) -> None:
        self.zero_bias = zero_bias
        self._propagate_constants()
        self._fold_into_consumers()
        # Each tensor is cut along all its masked axes on a thread, a window at a time, then written.
        cuts: dict[ir.Value, list[tuple[int, np.ndarray]]] = {}
        for (value, axis), keep in self._slot_masks().items():
            cuts.setdefault(value, []).append((axis, keep))
        # A window's results are held beside every source tensor until written: bound them by bytes.
        for window in windows(cuts.items(), weight=lambda item: self.tensor(item[0]).nbytes, max_weight=WINDOW_BYTES):
            jobs = [(self.tensor(value), masks, _file_rows(value, masks), self.sink) for value, masks in window]
            for (value, _), arr in zip(window, parallel_map(_cut, jobs)):
                self._write(value, arr)
        for node in self.analysis.rewrites:
            rule = self.analysis.rules.get(node)
            if rule is not None and rule.rewrite is not None:
                rule.rewrite(node, self)
        self._insert_border_maps()
        self._clear_stale_shapes()

    # ----- internals -----
    def _slot_masks(self, roles: tuple[str, ...] | None = None) -> dict[tuple[ir.Value, int], np.ndarray]:
        """Keep mask per (tensor, axis); several slots on one axis were unioned, so they agree."""
        masks: dict[tuple[ir.Value, int], np.ndarray] = {}
        for s in self.analysis.slots:
            if roles is not None and s.role not in roles:
                continue
            keep = ~self._removed[s.ids]
            key = (s.value, s.axis)
            if key in masks and not np.array_equal(masks[key], keep):
                raise AssertionError(f"inconsistent slots on {s.value.name} axis {s.axis}")
            masks[key] = keep
        return {k: m for k, m in masks.items() if not m.all()}

    def _write(self, value: ir.Value, arr: np.ndarray) -> None:
        if value.const_value is None:
            # A Constant node's output: lift it to an initializer first.
            prod = value.producer()
            new = self.new_initializer(value.name or "const", np.array(arr, order="C", copy=True))
            value.replace_all_uses_with(new)
            self._tensors[new] = arr
            for s in self.analysis.slots:
                if s.value is value:
                    s.value = new
            if prod is not None and not any(o.uses() for o in prod.outputs):
                self.graph.remove(prod, safe=True)
            return
        old = value.const_value
        value.shape = ir.Shape(arr.shape)
        if isinstance(arr, Region):
            # Written into the output's data file: the model refers to it there (read back by map).
            value.const_value = arr.seal(old.name)
            self._tensors[value] = value.const_value.numpy()
            return
        # Every caller hands over a fresh array (a slice by np.compress, a new bias): no copy needed.
        value.const_value = ir.tensor(np.ascontiguousarray(arr), name=old.name)
        self._tensors[value] = arr

    def _propagate_constants(self) -> None:
        info = self.analysis.info
        for node in self.analysis.order:
            if not any(o in info for o in node.outputs):
                continue
            rule = self.analysis.rules.get(node)
            if rule is None:
                continue
            try:
                rule.const_eval(node, self)
            except Exception as exc:  # noqa: BLE001 - an unknown constant only costs exactness
                logger.debug("const_eval failed on %s: %s", node.name, exc, exc_info=True)
                for o in node.outputs:
                    if o in info:
                        self.set_const(o, np.full(info[o].ids.shape, np.nan))

    def _clear_stale_shapes(self) -> None:
        for v, info in self.analysis.info.items():
            if v.is_graph_input() or v.is_initializer():
                continue
            if self._removed[info.ids].any():
                if v.is_graph_output():
                    if v.shape is not None:
                        dims = list(v.shape)
                        for ax, n in zip(info.axes, self.kept_counts(v)):
                            dims[ax] = n
                        v.shape = ir.Shape(dims)
                else:
                    v.shape = None


def _file_rows(value: ir.Value, masks: list[tuple[int, np.ndarray]]) -> tuple[str, int] | None:
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


def _read_rows(arr: np.ndarray, keep: np.ndarray, path: str, offset: int) -> np.ndarray:
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


def _cut(job: tuple) -> np.ndarray | Region:
    """The array kept by every (axis, mask) of one tensor (a fresh array: ``np.compress`` copies),
    or, given a sink (``spill.DataSink``) and a big result, its region of the output's data file.

    ``job`` is (source array, [(axis, keep mask)], (file, offset) to read rows from or None[, sink]).
    """
    arr, masks, source, *rest = job
    sink = rest[0] if rest else None
    if sink is not None:
        shape = list(arr.shape)
        for axis, keep in masks:
            shape[axis] = int(np.count_nonzero(keep))
        region = sink.region(tuple(shape), arr.dtype)
        if region is not None:
            _cut_into(region, arr, masks, source)
            return region
    if source is not None:
        return _read_rows(arr, masks[0][1], *source)
    if len(masks) == 1:
        axis, keep = masks[0]
        return np.compress(keep, arr, axis=axis)
    # Several axes at once. Cutting them one after another over the whole tensor would hold the
    # source, an intermediate and the result together (a 1 GB Gemm cut on both axes peaked at
    # 2.9x): a few kept rows at a time are cut on the other axes straight into the result.
    keep_by_axis = dict(masks)
    if 0 not in keep_by_axis:
        index = [np.arange(n) for n in arr.shape]
        for axis, keep in masks:
            index[axis] = np.flatnonzero(keep)
        return arr[np.ix_(*index)]
    rows = np.flatnonzero(keep_by_axis.pop(0))
    shape = [len(rows), *arr.shape[1:]]
    for axis, keep in keep_by_axis.items():
        shape[axis] = int(np.count_nonzero(keep))
    out = np.empty(shape, arr.dtype)
    step = max(1, CUT_BLOCK_BYTES // max(arr[:1].nbytes, 1))
    for j in range(0, len(rows), step):
        block = arr.take(rows[j:j + step], axis=0)
        for axis, keep in sorted(keep_by_axis.items()):
            block = np.compress(keep, block, axis=axis)
        out[j:j + len(block)] = block
    return out


def _cut_into(region: Region, arr: np.ndarray, masks: list[tuple[int, np.ndarray]], source: tuple[str, int] | None) -> None:
    """Write the cut of ``arr`` into ``region`` in C order: runs of kept rows copied from the input's
    file in the kernel, or blocks of a few kept rows cut on the other axes (the same values as ``_cut``)."""
    keep_by_axis = dict(masks)
    if source is not None:
        idx = np.flatnonzero(keep_by_axis[0])
        row = arr[:1].nbytes
        for j, count in _runs(idx):
            region.copy_from(source[0], source[1] + int(idx[j]) * row, count * row)
        return
    rows = np.flatnonzero(keep_by_axis.pop(0)) if 0 in keep_by_axis else None
    n = arr.shape[0] if rows is None else len(rows)
    step = max(1, CUT_BLOCK_BYTES // max(arr[:1].nbytes, 1))
    for j in range(0, n, step):
        block = arr[j:j + step] if rows is None else arr.take(rows[j:j + step], axis=0)
        for axis, keep in sorted(keep_by_axis.items()):
            block = np.compress(keep, block, axis=axis)
        region.write(block)
