"""Remove mode's constant folding: what removed channels still contribute, moved into consumers.

A removed channel carries a per-channel constant (see ``Rule.const_eval``). Every consumer
that reads it (Conv, ConvTranspose, Gemm, MatMul) gets that contribution in its bias, or,
for padded convs with ``--exact-borders``, as an exact constant map added after it. Mixed
into ``Applier``, whose helpers (tensor, const_of, set_input_const, ...) it uses.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxcompress.channels.state import Slot


#: float64 elements of a removed weight slice widened at once when folding its constant
_FOLD_CHUNK_ELEMENTS = 8 << 20

class ConsumerFolding:
    """The consumer side of remove mode."""

    def _fold_into_consumers(self) -> None:
        for s in self.analysis.slots:
            if s.role != "in":
                continue
            gone = self._removed[s.ids]
            if not gone.any():
                continue
            x = s.node.inputs[0]
            # Bias compensation: a removed channel is worth its calibrated mean, where measured.
            means = getattr(self, "input_means", {}).get(x)
            c = means if means is not None and len(means) == len(s.ids) else self.const_of(x).reshape(-1)
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
        flat = w.reshape(w.shape[0], c_in_g, -1)
        for grp in range(g):
            rows = slice(grp * b, (grp + 1) * b)
            # The removed inputs' constants as a full input vector (zeros elsewhere): one batched
            # matrix-vector product over the weight as it lies, with no copy of the removed slice.
            vals = np.zeros(c_in_g, dtype=w.dtype)
            vals[local] = self._checked(node, c[grp * c_in_g + local])
            group_taps = np.matmul(vals, flat[rows])
            if not np.isfinite(group_taps).all():
                # an inf/NaN in a kept channel's weights times 0 must not poison the removed ones' sum
                group_taps = np.tensordot(vals[local], flat[rows][:, local], axes=([0], [1]))
            taps[rows] = group_taps.reshape((b,) + w.shape[2:])
        delta = taps.reshape(taps.shape[0], -1).sum(axis=1)
        if np.any(delta != 0) and _has_padding(node):
            if self._can_map_borders(node):
                self._border_maps.append((node, taps))
                return np.zeros_like(delta)
            estimate = self._border_map(node, taps)
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
        attr = node.attributes
        if self._can_map_borders(node) and ("auto_pad" not in attr or attr["auto_pad"].as_string() in ("NOTSET", "VALID")):
            self._border_maps.append((node, taps))
            return np.zeros(taps.shape[0])
        strides = node.attributes.get("strides")
        delta = taps.reshape(taps.shape[0], -1).sum(axis=1) / float(np.prod(strides.as_ints()) if strides else 1)
        if np.any(delta != 0):
            self.inexact(
                f"{node.name or 'ConvTranspose'}: a constant input is folded as its average per output pixel "
                "(--exact-borders makes it exact for static shapes)"
            )
        return delta

    def _linear_delta(self, s: Slot, c: np.ndarray, gone: np.ndarray) -> np.ndarray:
        node = s.node
        w = self.tensor(s.value)
        vals = self._checked(node, c[gone]).astype(np.float64)
        if not vals.any():  # nothing to fold: the removed slice is not even read
            return np.zeros([d for i, d in enumerate(w.shape) if i != s.axis % w.ndim])
        idx = np.flatnonzero(gone)
        # The removed slice is read a chunk at a time and widened to float64 there: a 1 GB
        # weight must not get a float64 twin (issue 17's 16384 x 16384 Gemm peaked at 2.2x).
        per_row = max(w.size // max(w.shape[s.axis], 1), 1)
        step = max(1, _FOLD_CHUNK_ELEMENTS // per_row)
        delta = None
        for k in range(0, len(idx), step):
            part = np.take(w, idx[k:k + step], axis=s.axis).astype(np.float64)
            contrib = np.tensordot(vals[k:k + step], part, axes=([0], [s.axis]))
            delta = contrib if delta is None else delta + contrib
        return delta

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

    def _add_after(self, node: ir.Node, const: np.ndarray | None, label: str, target: ir.Node | None = None) -> ir.Value:
        """Insert ``y = target_output + addend`` and route every use (and graph output) through it.

        The addend is ``const`` as a new initializer, or, with ``const=None``, ``node``'s output
        (a subgraph that computes it); ``target`` defaults to ``node``.
        """
        target = target or node
        out = target.outputs[0]
        uses = [u for u in out.uses() if u.node is not node]  # before the Add exists
        base = target.name or target.op_type
        bias = node.outputs[0] if const is None else self.new_initializer(f"{base}_{label}", const)
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
        self.graph.insert_after(node, add)  # after ``node``: the addend exists by then
        if info is not None:
            # Downstream rewrites look their inputs up: the Add output carries the same channels.
            self.analysis.info[new_out] = info
            if out in self.consts:
                self.consts[new_out] = self.consts[out]
        return bias

    def _can_map_borders(self, node: ir.Node) -> bool:
        """--exact-borders applies: asked for, and the model fixes every input dim but the batch."""
        return (
            self.exact_borders
            and _static_beyond_batch(self.model)
            and self.shape(node.inputs[0]) is not None
            and self.shape(node.outputs[0]) is not None
        )

    def _insert_border_maps(self) -> None:
        """Add each padded consumer's exact correction: the same conv run on an all-ones image.

        ``taps[o, *k]`` sums the removed channels' constants times their weights. A conv (or
        ConvTranspose) with those taps as a one-channel kernel, the consumer's pads and strides,
        over a ones image of the input's size, gives exactly what the removed channels added at
        every output pixel, borders included. The file holds only the taps and the ones image;
        onnxruntime folds the constant subgraph when it loads the model.
        """
        for node, taps in self._border_maps:
            out = node.outputs[0]
            keep = self.keep_mask(out) if out in self.analysis.info else np.ones(taps.shape[0], bool)
            dtype = self.tensor(node.inputs[1]).dtype
            kept = taps[keep].astype(dtype)
            transposed = node.op_type == "ConvTranspose"
            weight = kept[None] if transposed else kept[:, None]  # [1, C_out, *k] or [C_out, 1, *k]
            spatial = tuple(self.shape(node.inputs[0])[2:])
            base = node.name or node.op_type
            key = (spatial, np.dtype(dtype).str)
            if key not in self._ones:  # one ones image per input size, shared by its consumers
                self._ones[key] = self.new_initializer(f"border_ones_{'x'.join(map(str, spatial))}", np.ones((1, 1) + spatial, dtype=dtype))
            ones = self._ones[key]
            w = self.new_initializer(f"{base}_border_taps", weight)
            attrs = [a for name, a in node.attributes.items() if name != "group"]
            mapper = ir.Node("", node.op_type, inputs=[ones, w], attributes=attrs, name=f"{base}_border_map")
            self.graph.insert_after(node, mapper)
            self._add_after(mapper, None, "border_fold", target=node)

    def _border_map(self, node: ir.Node, taps: np.ndarray) -> np.ndarray | None:
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
