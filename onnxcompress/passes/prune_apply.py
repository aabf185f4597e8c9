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

from onnxcompress.channels.rules import get_rule
from onnxcompress.channels.state import AnalysisResult, Slot
from onnxcompress.constants import const_array, is_const

logger = logging.getLogger(__name__)


class Applier:
    """Holds the plan's removed mask and gives rules what they need to evaluate and rewrite."""

    def __init__(self, model: ir.Model, analysis: AnalysisResult, removed: np.ndarray, shapes: dict):
        self.model = model
        self.graph = model.graph
        self.analysis = analysis
        self._removed = removed
        self.shapes = shapes
        self.opset = model.opset_imports.get("", model.opset_imports.get("ai.onnx", 13))
        self.consts: dict[ir.Value, np.ndarray] = {}
        self.notes: list[str] = []
        self._tensors: dict[ir.Value, np.ndarray] = {}
        self._counter = 0
        self.zero_bias = False
        self.exact_borders = False
        self._border_maps: list[tuple[ir.Node, np.ndarray]] = []

    # ----- what rules use -----
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

    def const_of(self, v: ir.Value) -> np.ndarray:
        if v in self.consts:
            return self.consts[v]
        return np.full(self.analysis.info[v].ids.shape, np.nan)

    def set_const(self, v: ir.Value, arr: np.ndarray) -> None:
        self.consts[v] = np.asarray(arr, dtype=np.float64)

    def channel_vector(self, v: ir.Value | None, ref: ir.Value) -> np.ndarray | float:
        """A non-tracked operand's value per channel of ``ref`` (NaN when it is not uniform)."""
        info = self.analysis.info[ref]
        if v is None or not self.is_const(v) or len(info.axes) != 1:
            return np.nan
        c = self.tensor(v).astype(np.float64)
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
            idx = [slice(None)] * arr.ndim
            idx[axis] = ~mask
            arr[tuple(idx)] = 0
            self._write(value, arr)

    def remove(self, zero_bias: bool = False) -> None:
        self.zero_bias = zero_bias
        self._propagate_constants()
        self._fold_into_consumers()
        for (value, axis), keep in self._slot_masks().items():
            arr = self.tensor(value)
            self._write(value, np.compress(keep, arr, axis=axis))
        for node in self.analysis.rewrites:
            rule = get_rule(node.op_type)
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
        value.const_value = ir.tensor(np.array(arr, order="C", copy=True), name=old.name)
        value.shape = ir.Shape(arr.shape)
        self._tensors[value] = arr

    def _propagate_constants(self) -> None:
        info = self.analysis.info
        for node in self.analysis.order:
            if not any(o in info for o in node.outputs):
                continue
            rule = get_rule(node.op_type)
            if rule is None:
                continue
            try:
                rule.const_eval(node, self)
            except Exception as exc:  # noqa: BLE001 - an unknown constant only costs exactness
                logger.debug("const_eval failed on %s: %s", node.name, exc, exc_info=True)
                for o in node.outputs:
                    if o in info:
                        self.set_const(o, np.full(info[o].ids.shape, np.nan))

    def _fold_into_consumers(self) -> None:
        for s in self.analysis.slots:
            if s.role != "in":
                continue
            gone = self._removed[s.ids]
            if not gone.any():
                continue
            x = s.node.inputs[0]
            c = self.const_of(x).reshape(-1)
            op = s.node.op_type
            if op == "Conv":
                delta = self._conv_delta(s, c, gone)
            elif op == "ConvTranspose":
                delta = self._convtranspose_delta(s, c, gone)
            else:
                delta = self._linear_delta(s, c, gone)
            if delta is not None and np.any(delta != 0):
                self._add_bias(s.node, delta)

    def _checked(self, node: ir.Node, vals: np.ndarray) -> np.ndarray:
        if np.isnan(vals).any():
            self.inexact(f"{node.name or node.op_type}: a removed input channel is not a known constant; its contribution is dropped")
            vals = np.nan_to_num(vals, nan=0.0)
        return vals

    def _conv_delta(self, s: Slot, c: np.ndarray, gone: np.ndarray) -> np.ndarray:
        node = s.node
        w = self.tensor(s.value)
        g_attr = node.attributes.get("group")
        g = g_attr.as_int() if g_attr is not None else 1
        c_in_g = w.shape[1]
        b = w.shape[0] // g
        local = np.where(gone)[0]
        taps = np.zeros((w.shape[0],) + w.shape[2:])
        for grp in range(g):
            rows = slice(grp * b, (grp + 1) * b)
            vals = self._checked(node, c[grp * c_in_g + local])
            taps[rows] = np.tensordot(vals.astype(w.dtype), w[rows][:, local], axes=([0], [1]))
        delta = taps.reshape(taps.shape[0], -1).sum(axis=1)
        if np.any(delta != 0) and _has_padding(node):
            border = self._border_map(node, taps)
            if border is not None:
                self._border_maps.append((node, border))
                return np.zeros_like(delta)
            estimate = self._border_map(node, taps, estimate=True)
            dev = ""
            if estimate is not None:
                worst = float(np.abs(estimate - delta.reshape((-1,) + (1,) * (estimate.ndim - 1))).max())
                dev = f" by up to {worst:.3g} at its border pixels (analysis shapes)"
            self.inexact(
                f"{node.name or 'Conv'} pads its input: the removed channels' constant is folded into the bias, "
                f"so its output deviates from zero mode{dev}; --exact-borders corrects this for static shapes"
            )
        return delta

    def _convtranspose_delta(self, s: Slot, c: np.ndarray, gone: np.ndarray) -> np.ndarray:
        node = s.node
        w = self.tensor(s.value)  # [C_in, C_out, *k]
        vals = self._checked(node, c[gone])
        taps = np.tensordot(vals, w[gone].astype(np.float64), axes=([0], [0]))  # [C_out, *k]
        border = self._transposed_map(node, taps)
        if border is not None:
            self._border_maps.append((node, border))
            return np.zeros(taps.shape[0])
        strides = node.attributes.get("strides")
        delta = taps.reshape(taps.shape[0], -1).sum(axis=1) / float(np.prod(strides.as_ints()) if strides else 1)
        if np.any(delta != 0):
            self.inexact(
                f"{node.name or 'ConvTranspose'}: a constant input is folded as its average per output pixel "
                "(--exact-borders makes it exact for static shapes)"
            )
        return delta

    def _transposed_map(self, node: ir.Node, taps: np.ndarray) -> np.ndarray | None:
        """Exact output of a ConvTranspose fed constant channels: tap t reaches output ``o`` when
        ``o + pad_begin - t*dilation`` is ``i*stride`` for an input position ``i``."""
        xs, ys = self.shape(node.inputs[0]), self.shape(node.outputs[0])
        attr = node.attributes
        if xs is None or ys is None or not self.exact_borders or not _static_beyond_batch(self.model):
            return None
        if "auto_pad" in attr and attr["auto_pad"].as_string() not in ("NOTSET", "VALID"):
            return None
        n = len(xs) - 2
        strides = list(attr["strides"].as_ints()) if "strides" in attr else [1] * n
        dil = list(attr["dilations"].as_ints()) if "dilations" in attr else [1] * n
        pads = list(attr["pads"].as_ints()) if "pads" in attr else [0] * (2 * n)
        indicators = []
        for d in range(n):
            src = np.arange(ys[2 + d])[None, :] + pads[d] - np.arange(taps.shape[1 + d])[:, None] * dil[d]
            ok = (src >= 0) & (src % strides[d] == 0) & (src // strides[d] < xs[2 + d])
            indicators.append(ok.astype(np.float64))
        letters = "abcdef"[:n]
        spec = "o" + letters + "," + ",".join(f"{a}{a.upper()}" for a in letters) + "->o" + "".join(a.upper() for a in letters)
        return np.einsum(spec, taps, *indicators)

    def _linear_delta(self, s: Slot, c: np.ndarray, gone: np.ndarray) -> np.ndarray:
        node = s.node
        w = self.tensor(s.value).astype(np.float64)
        vals = self._checked(node, c[gone])
        sub = np.compress(gone, w, axis=s.axis)
        return vals @ sub if s.axis == 0 else sub @ vals

    def _add_bias(self, node: ir.Node, delta: np.ndarray) -> None:
        op = node.op_type
        if op in ("Conv", "ConvTranspose"):
            dtype = self.tensor(node.inputs[1]).dtype
            if len(node.inputs) > 2 and node.inputs[2] is not None:
                bias_v = node.inputs[2]
                self._write(bias_v, (self.tensor(bias_v).astype(np.float64) + delta).astype(dtype))
            else:
                self.set_input_const(node, 2, delta.astype(dtype))
                self._track_new_bias(node, node.inputs[2])
            return
        if op == "Gemm":
            dtype = self.tensor(node.inputs[1]).dtype
            alpha = node.attributes["alpha"].as_float() if "alpha" in node.attributes else 1.0
            beta = node.attributes["beta"].as_float() if "beta" in node.attributes else 1.0
            c_val = node.inputs[2] if len(node.inputs) > 2 else None
            c = self.tensor(c_val) if c_val is not None else None
            if c is not None and beta != 0 and c.size == delta.size:
                # A per-feature C is a bias slot: update it in place so slicing still finds it.
                self._write(c_val, (c.astype(np.float64) + (alpha / beta) * delta.reshape(c.shape)).astype(dtype))
                return
            full = alpha * delta
            if c is not None and beta != 0:
                full = full + beta * np.broadcast_to(c.astype(np.float64).reshape(-1), delta.shape)
            node.attributes["beta"] = ir.AttrFloat32("beta", 1.0)
            self.set_input_const(node, 2, full.astype(dtype))
            self._track_new_bias(node, node.inputs[2])
            return
        # MatMul: add the constant after it.
        bias = self._add_after(node, delta.astype(self.tensor(node.inputs[1]).dtype), "folded_bias")
        self._track_new_bias(node, bias)

    def _track_new_bias(self, node: ir.Node, bias: ir.Value) -> None:
        """A bias created here must shrink with the node's own pruned outputs."""
        out = [s for s in self.analysis.slots if s.node is node and s.role == "out"]
        if out:
            self.analysis.slots.append(Slot(node=node, value=bias, axis=0, ids=out[0].ids, role="param"))

    def _add_after(self, node: ir.Node, const: np.ndarray, label: str) -> ir.Value:
        """Insert ``y = node_output + const`` and route every use (and graph output) through it."""
        out = node.outputs[0]
        uses = list(out.uses())  # before the Add exists, so it is not rewired to itself
        base = node.name or node.op_type
        bias = self.new_initializer(f"{base}_{label}", const)
        add = ir.Node("", "Add", inputs=[out, bias], name=f"{base}_{label}_add")
        new_out = add.outputs[0]
        # The Add takes over the name: graph outputs keep their names.
        original_name = out.name
        out.name = f"{original_name}_before_{label}"
        new_out.name = original_name
        info = self.analysis.info.get(out)
        shrinks = info is not None and bool(self._removed[info.ids].any())
        new_out.type, new_out.shape = out.type, (None if shrinks else out.shape)
        for u in uses:
            u.node.replace_input_with(u.idx, new_out)
        if out.is_graph_output():
            idx = list(self.graph.outputs).index(out)
            self.graph.outputs[idx] = new_out
        self.graph.insert_after(node, add)
        if info is not None:
            # Downstream rewrites look their inputs up: the Add output carries the same channels.
            self.analysis.info[new_out] = info
            if out in self.consts:
                self.consts[new_out] = self.consts[out]
        return bias

    def _insert_border_maps(self) -> None:
        """Add each padded consumer's exact border correction, sliced to its kept outputs."""
        for node, full_map in self._border_maps:
            out = node.outputs[0]
            keep = self.keep_mask(out) if out in self.analysis.info else np.ones(full_map.shape[0], bool)
            dtype = self.tensor(node.inputs[1]).dtype
            self._add_after(node, full_map[keep][None].astype(dtype), "border_fold")

    def _border_map(self, node: ir.Node, taps: np.ndarray, estimate: bool = False) -> np.ndarray | None:
        """Exact contribution of constant input channels to every output pixel of a padded conv.

        ``taps[o, *k]`` is the summed weight (times constants) per kernel tap. A tap reaches
        output position ``i`` only if ``i*stride - pad_begin + tap*dilation`` lies inside the
        input, so each spatial axis gets a tap x position indicator and einsum combines them.
        Needs static spatial sizes; returns None otherwise.
        """
        x, y = node.inputs[0], node.outputs[0]
        xs, ys = self.shape(x), self.shape(y)
        if xs is None or ys is None:
            return None
        if not estimate and (not self.exact_borders or not _static_beyond_batch(self.model)):
            return None
        n = len(xs) - 2
        attr = node.attributes
        strides = list(attr["strides"].as_ints()) if "strides" in attr else [1] * n
        dil = list(attr["dilations"].as_ints()) if "dilations" in attr else [1] * n
        kernel = list(taps.shape[1:])
        pads = list(attr["pads"].as_ints()) if "pads" in attr else [0] * (2 * n)
        auto = attr["auto_pad"].as_string() if "auto_pad" in attr else "NOTSET"
        indicators = []
        for d in range(n):
            if auto in ("SAME_UPPER", "SAME_LOWER"):
                total = max(0, (ys[2 + d] - 1) * strides[d] + (kernel[d] - 1) * dil[d] + 1 - xs[2 + d])
                begin = total // 2 if auto == "SAME_UPPER" else total - total // 2
            else:
                begin = pads[d]
            pos = np.arange(ys[2 + d])[None, :] * strides[d] - begin + np.arange(kernel[d])[:, None] * dil[d]
            indicators.append(((pos >= 0) & (pos < xs[2 + d])).astype(np.float64))
        letters = "abcdef"[:n]
        spec = "o" + letters + "," + ",".join(f"{a}{a.upper()}" for a in letters) + "->o" + "".join(a.upper() for a in letters)
        return np.einsum(spec, taps, *indicators)

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


def _static_beyond_batch(model: ir.Model) -> bool:
    """True when the model fixes every input dim but the batch, so pinned sizes are the real ones."""
    from onnxcompress.analysis.shapes import graph_inputs

    return all(v.shape is not None and all(isinstance(d, int) for d in list(v.shape)[1:]) for v in graph_inputs(model))


def _has_padding(node: ir.Node) -> bool:
    pads = node.attributes.get("pads")
    auto = node.attributes.get("auto_pad")
    if auto is not None and auto.as_string() not in ("NOTSET", "VALID"):
        return True
    return pads is not None and any(p != 0 for p in pads.as_ints())
