"""Apply a plan: zero filters in place, or remove them and fold their constant output.

Remove mode keeps what zero mode computes. A zeroed filter still outputs a constant per
channel after its BN and activation (act(BN(0)), an SE gate's 0.5, ...). The op rules'
``const_eval`` carry that constant to every consumer (Conv, Gemm, MatMul), whose bias
absorbs it. This is exact where the consumer sees no padding; elsewhere the report
says where it deviates.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

from onnxcompress.channels.state import AnalysisResult, ChannelInfo
from onnxcompress._ir_utils import const_array, default_opset, is_const
from onnxcompress._parallel import parallel_map, windows
from onnxcompress.pruning.consumer_folding import ConsumerFolding
from onnxcompress.pruning.cut import cut_and_sum, file_rows
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
        #: the tensors whose kept |w| the cut sums as it goes (``kept_l1``), for the report's L1 mass
        self.sum_l1: set[ir.Value] = set()
        self.kept_l1: dict[ir.Value, float] = {}

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
        # A window's results are held beside every source tensor until written: bound them by bytes.
        for window in windows(self.cuts().items(), weight=lambda item: self.tensor(item[0]).nbytes, max_weight=WINDOW_BYTES):
            jobs = [(self.tensor(value), masks, file_rows(value, masks), self.sink, value in self.sum_l1)
                    for value, masks in window]
            for (value, _), (arr, kept) in zip(window, parallel_map(cut_and_sum, jobs)):
                if kept is not None:
                    self.kept_l1[value] = kept
                self._write(value, arr)
        for node in self.analysis.rewrites:
            rule = self.analysis.rules.get(node)
            if rule is not None and rule.rewrite is not None:
                rule.rewrite(node, self)
        self._insert_border_maps()
        self._clear_stale_shapes()

    def cuts(self) -> dict[ir.Value, list[tuple[int, np.ndarray]]]:
        """The (axis, keep mask) pairs each tensor loses channels along in remove mode."""
        cuts: dict[ir.Value, list[tuple[int, np.ndarray]]] = {}
        for (value, axis), keep in self._slot_masks().items():
            cuts.setdefault(value, []).append((axis, keep))
        return cuts

    def sums_kept_l1(self, value: ir.Value, masks: list[tuple[int, np.ndarray]]) -> bool:
        """Whether the cut of ``value`` can sum its kept |w| (not when its rows are copied in the kernel)."""
        return self.sink is None or file_rows(value, masks) is None

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

    def _write(self, value: ir.Value, arr: np.ndarray | Region) -> None:
        if value.const_value is None:
            # A Constant node's output: lift it to an initializer first (the save then finds the
            # region unused and writes a fresh data file: rare, Constants are lifted before this).
            if isinstance(arr, Region):
                arr = np.array(arr.seal(value.name or "const").numpy())
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
