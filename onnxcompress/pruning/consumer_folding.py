"""Remove mode's constant folding: what removed channels still contribute, moved into consumers.

A removed channel carries a per-channel constant (see ``Rule.const_eval``). Every consumer
that reads it gets that contribution: its rule's consumer hooks
(``channels.rules.consumer``) compute it and write it into the op's bias, or, for padded
convs with ``--exact-borders``, defer an exact constant map added after it. Mixed into
``Applier``, whose helpers (tensor, const_of, set_input_const, ...) the hooks use.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from typing import TYPE_CHECKING

from onnxcompress._ir_utils import unique_name
from onnxcompress.channels.state import Slot

if TYPE_CHECKING:
    from onnxcompress.channels.state import AnalysisResult


class ConsumerFolding:
    """The consumer side of remove mode."""

    if TYPE_CHECKING:  # what ``Applier``, which mixes this class in, provides
        analysis: AnalysisResult
        model: ir.Model
        graph: ir.Graph
        consts: dict[ir.Value, np.ndarray]
        exact_borders: bool
        input_means: dict[ir.Value, np.ndarray]
        _removed: np.ndarray
        _border_maps: list[tuple[ir.Node, np.ndarray]]
        _ones: dict[tuple, ir.Value]

        def tensor(self, v: ir.Value) -> np.ndarray: ...
        def shape(self, v: ir.Value | None) -> tuple[int, ...] | None: ...
        def const_of(self, v: ir.Value) -> np.ndarray: ...
        def keep_mask(self, v: ir.Value) -> np.ndarray: ...
        def inexact(self, note: str) -> None: ...
        def new_initializer(self, name: str, arr: np.ndarray) -> ir.Value: ...
        def set_input_const(self, node: ir.Node, index: int, arr: np.ndarray) -> None: ...
        def _write(self, value: ir.Value, arr: np.ndarray) -> None: ...

    def _fold_into_consumers(self) -> None:
        from onnxcompress.channels.rules import consumer_of

        for s in self.analysis.slots:
            if s.role != "in":
                continue
            gone = self._removed[s.ids]
            if not gone.any():
                continue
            hooks = consumer_of(s.node)
            if hooks is None:
                self.inexact(f"{s.node.name or s.node.op_type}: its {s.node.op_type} rule has no consumer hooks; "
                             "the removed input channels' constants are dropped")
                continue
            x = s.node.inputs[0]
            # Bias compensation: a removed channel is worth its calibrated mean, where measured.
            means = getattr(self, "input_means", {}).get(x)
            c = means if means is not None and len(means) == len(s.ids) else self.const_of(x).reshape(-1)
            delta = hooks.fold(self, s, c, gone)
            if delta is not None and np.any(delta != 0):
                hooks.add_bias(self, s.node, delta)

    # ----- what consumer hooks use (``channels.rules.consumer.FoldContext``) -----
    def checked(self, node: ir.Node, vals: np.ndarray) -> np.ndarray:
        """The removed channels' constants, NaN (unknown) replaced by 0 with an inexactness note."""
        if np.isnan(vals).any():
            self.inexact(f"{node.name or node.op_type}: a removed input channel is not a known constant; its contribution is dropped")
            vals = np.nan_to_num(vals, nan=0.0)
        return vals

    def write(self, v: ir.Value, arr: np.ndarray) -> None:
        self._write(v, arr)

    def add_after(self, node: ir.Node, const: np.ndarray, label: str) -> ir.Value:
        return self._add_after(node, const, label)

    def track_new_bias(self, node: ir.Node, bias: ir.Value) -> None:
        self._track_new_bias(node, bias)

    def can_map_borders(self, node: ir.Node) -> bool:
        return self._can_map_borders(node)

    def defer_border_map(self, node: ir.Node, taps: np.ndarray) -> None:
        """Correct ``node``'s padded border exactly once the cut is done (``--exact-borders``)."""
        self._border_maps.append((node, taps))

    def border_map(self, node: ir.Node, taps: np.ndarray) -> np.ndarray | None:
        return self._border_map(node, taps)

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
        # Unique names: a graph compressed before (or an earlier prune round) has these already.
        nodes = {n.name for n in self.graph}
        add = ir.Node("", "Add", inputs=[out, bias], name=unique_name(self.graph, f"{base}_{label}_add", nodes))
        new_out = add.outputs[0]
        # The Add takes over the name: graph outputs keep their names.
        original_name = out.name
        out.name = unique_name(self.graph, f"{original_name}_before_{label}")
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
