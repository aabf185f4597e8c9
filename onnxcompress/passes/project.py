"""Project weights onto norm constraints, folded into the initializers (no runtime ops).

``max_norm=C`` rescales every output filter whose L2 norm exceeds C down to C
(W_i <- W_i * min(1, C / ||W_i||)); ``spectral_clip=C`` clips the singular values
of each weight matrix at C (conv weights are viewed as [C_out, fan_in]). Both are
contractions, so applying one after the other keeps the first constraint.

The output axis depends on the layout: Conv W [Cout, Cin/g, k..] has its filters
on axis 0; ConvTranspose W [Cin, Cout/g, k..] on axis 1 within each group; Gemm
with transB=1 on the rows of [N, K], with transB=0 and MatMul on the columns of
[K, N]. A weight no filter of which exceeds C is not rewritten at all, so it stays
byte-identical. Shared or non-constant weights are skipped with the reason.
"""

from __future__ import annotations

import logging
import re

import numpy as np
import onnx_ir as ir

from onnxcompress._ir_utils import const_array, distinct_users, is_std, set_weight
from onnxcompress.passes.base import ReportingPass

logger = logging.getLogger(__name__)

_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


class ProjectWeightsPass(ReportingPass):
    """Apply ``max_norm`` and/or ``spectral_clip`` to Conv/ConvTranspose/Gemm/MatMul weights."""

    name = "project"

    def __init__(
        self, max_norm: float | None = None, spectral_clip: float | None = None, exclude: list[str] | None = None
    ) -> None:
        super().__init__()
        self.max_norm = max_norm
        self.spectral_clip = spectral_clip
        self.exclude = [re.compile(p) for p in (exclude or [])]

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        layers: list[dict] = []
        skipped: list[dict] = []
        for node in model.graph:
            if node.op_type not in _OPS or not is_std(node):
                continue
            if any(p.search(node.name or "") for p in self.exclude):
                skipped.append({"node": node.name, "op": node.op_type, "reason": "excluded"})
                continue
            w_value = node.inputs[1] if len(node.inputs) > 1 else None
            reason = _why_not(node, w_value)
            if reason:
                skipped.append({"node": node.name, "op": node.op_type, "reason": reason})
                continue
            w = const_array(w_value)
            entry = self._project(node, w_value, w)
            if entry is not None:
                layers.append(entry)

        projected = [e for e in layers if e["changed"]]
        self.report = {
            "max_norm": self.max_norm,
            "spectral_clip": self.spectral_clip,
            "layers_checked": len(layers),
            "layers_projected": len(projected),
            "filters_projected": sum(e.get("filters_clipped", 0) for e in projected),
            "layers": projected,
            "skipped": skipped,
        }
        if self.max_norm is not None and layers:
            self.report["max_filter_norm_before"] = max(e["max_norm_before"] for e in layers)
            self.report["max_filter_norm_after"] = max(e["max_norm_after"] for e in layers)
        if self.spectral_clip is not None and layers:
            self.report["max_sigma_before"] = max(e["sigma_before"] for e in layers)
            self.report["max_sigma_after"] = max(e["sigma_after"] for e in layers)
        logger.info("projected %d of %d layers", len(projected), len(layers))
        return ir.passes.PassResult(model, bool(projected))

    def _project(self, node: ir.Node, w_value: ir.Value, w: np.ndarray) -> dict | None:
        """Project one weight; write it back only when something changed."""
        to_rows, from_rows, axis = _filter_view(node, w.shape)
        m0 = to_rows(w.astype(np.float64))
        m = m0
        entry: dict = {"node": node.name, "op": node.op_type, "weight": w_value.name, "filter_axis": axis}
        norms0 = np.linalg.norm(m0, axis=1)
        if self.max_norm is not None:
            c = float(self.max_norm)
            over = norms0 > c
            entry["filters_clipped"] = int(over.sum())
            entry["max_norm_before"] = float(norms0.max(initial=0.0))
            if over.any():
                factor = np.where(over, c / np.where(over, norms0, 1.0), 1.0)
                m = m * factor[:, None]
        if self.spectral_clip is not None:
            c = float(self.spectral_clip)
            u, s, vt = np.linalg.svd(m, full_matrices=False)
            sigma0 = float(np.linalg.norm(m0, 2)) if m is not m0 else float(s.max(initial=0.0))
            entry["sigma_before"] = sigma0
            entry["singular_values_clipped"] = int((s > c).sum())
            if (s > c).any():
                m = (u * np.minimum(s, c)) @ vt
        changed = m is not m0
        entry["changed"] = changed
        if changed:
            new_w = from_rows(m).astype(w.dtype)
            set_weight(w_value, new_w)
            m_out = to_rows(new_w.astype(np.float64))
        else:
            m_out = m0
        norms1 = np.linalg.norm(m_out, axis=1)
        if self.max_norm is not None:
            entry["max_norm_after"] = float(norms1.max(initial=0.0))
        if self.spectral_clip is not None:
            entry["sigma_after"] = float(np.linalg.norm(m_out, 2)) if changed else entry["sigma_before"]
        # Per-filter relative L2 change, the largest one in the layer.
        delta = np.linalg.norm(m_out - m0, axis=1) / np.where(norms0 > 0, norms0, 1.0)
        entry["max_rel_change"] = float(delta.max(initial=0.0))
        return entry


def _why_not(node: ir.Node, w_value: ir.Value | None) -> str | None:
    """Why ``node``'s weight cannot be projected, or None."""
    if w_value is None:
        return "no weight input"
    if const_array(w_value) is None:
        if node.op_type == "MatMul" and const_array(node.inputs[0]) is not None:
            return "the constant is the first MatMul input"
        return "weight is not a constant"
    if distinct_users(w_value) > 1 or node.inputs.count(w_value) > 1:
        return f"weight {w_value.name!r} is shared by {distinct_users(w_value)} nodes"
    if w_value.is_graph_output():
        return "weight is a graph output"
    w = const_array(w_value)
    if not np.issubdtype(w.dtype, np.floating):
        return f"weight dtype {w.dtype} is not float"
    if node.op_type in ("Gemm", "MatMul") and w.ndim != 2:
        return f"weight has rank {w.ndim}, expected 2"
    if node.op_type in ("Conv", "ConvTranspose") and w.ndim < 3:
        return f"weight has rank {w.ndim}"
    if node.op_type == "Gemm" and const_array(node.inputs[0]) is not None:
        return "the first Gemm input is constant too"
    return None


def _filter_view(node: ir.Node, shape: tuple[int, ...]):
    """Functions mapping the weight to [filters, fan_in] and back, and the filter axis."""
    op = node.op_type
    if op == "Conv":
        return (lambda w: w.reshape(shape[0], -1)), (lambda m: m.reshape(shape)), 0
    if op == "ConvTranspose":
        g = node.attributes.get_int("group", 1)
        cin, per_group, k = shape[0], shape[1], tuple(shape[2:])
        blocked = (g, cin // g, per_group) + k
        order = (0, 2, 1) + tuple(range(3, 3 + len(k)))
        inverse = tuple(np.argsort(order))

        def to_rows(w: np.ndarray) -> np.ndarray:
            # [g, Cin/g, Cout/g, k..] -> [g, Cout/g, Cin/g, k..] -> [Cout, Cin/g * k..]
            return w.reshape(blocked).transpose(order).reshape(g * per_group, -1)

        def from_rows(m: np.ndarray) -> np.ndarray:
            return m.reshape((g, per_group, cin // g) + k).transpose(inverse).reshape(shape)

        return to_rows, from_rows, 1
    if op == "Gemm" and node.attributes.get_int("transB", 0):
        return (lambda w: w), (lambda m: m), 0
    # Gemm with transB=0 and MatMul: W is [K, N], a filter is a column.
    return (lambda w: w.T), (lambda m: m.T), 1
