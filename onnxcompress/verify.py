"""Built-in verification: ONNX checker, an onnxruntime session, a run, and fidelity.

Nothing is saved unless the compressed model passes all three checks. Fidelity is
measured on the same random inputs for both models.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_ir as ir

from onnxcompress.analysis.shapes import Shape, graph_inputs
from onnxcompress.errors import VerificationError

logger = logging.getLogger(__name__)

_NP_DTYPES = {
    ir.DataType.FLOAT: np.float32,
    ir.DataType.FLOAT16: np.float16,
    ir.DataType.DOUBLE: np.float64,
    ir.DataType.INT64: np.int64,
    ir.DataType.INT32: np.int32,
    ir.DataType.UINT8: np.uint8,
    ir.DataType.INT8: np.int8,
    ir.DataType.BOOL: np.bool_,
}


def random_array(rng: np.random.Generator, shape, dtype) -> np.ndarray:
    """Standard normal floats, 0/1 booleans, small non-negative ints."""
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(shape).astype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(bool)
    return rng.integers(0, 4, shape).astype(dtype)


def random_inputs(model: ir.Model, input_shapes: dict[str, Shape], seed: int = 0) -> dict[str, np.ndarray]:
    """Feeds for every real input of ``model``."""
    rng = np.random.default_rng(seed)
    return {
        v.name: random_array(rng, input_shapes[v.name], _NP_DTYPES.get(v.dtype, np.float32)) for v in graph_inputs(model)
    }


class Serialized:
    """A model as onnxruntime and the checker take it: bytes, or a file for external/big data.

    A model loaded from a file and left unchanged is used from that file directly.
    """

    def __init__(self, model: ir.Model | str | os.PathLike):
        self._tmp = None
        self.data: bytes | str
        if isinstance(model, (str, os.PathLike)):
            self.data = os.fspath(model)
            return
        from onnxcompress.io import has_external_data

        proto = None if has_external_data(model) else ir.to_proto(model)
        if proto is not None and proto.ByteSize() < 1_900_000_000:
            self.data = proto.SerializeToString()
        else:
            # External or big weights: onnxruntime reads them from files next to the graph.
            self._tmp = tempfile.TemporaryDirectory(prefix="onnxcompress-")
            path = os.path.join(self._tmp.name, "model.onnx")
            ir.save(model, path, external_data="model.onnx.data")
            self.data = path


class SessionHolder:
    """An onnxruntime CPU session over an ``ir.Model``, a ``Serialized`` model or a path."""

    def __init__(self, model: ir.Model | Serialized | str | os.PathLike, *, optimize: bool = True, threads: int | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
        if not optimize:
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        self._serialized = model if isinstance(model, Serialized) else Serialized(model)
        self.session = ort.InferenceSession(self._serialized.data, opts, providers=["CPUExecutionProvider"])

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.session.run(names, feeds)))


@dataclass
class Fidelity:
    """Agreement of two models' outputs on the same inputs."""

    cosine_min: float
    max_abs_diff: float
    top1_agreement: float | None = None
    #: the compared model's outputs, kept for further comparisons (not reported)
    outputs: dict | None = None

    def to_dict(self) -> dict:
        return {"cosine_min": self.cosine_min, "max_abs_diff": self.max_abs_diff, "top1_agreement": self.top1_agreement}


def looks_like_class_scores(a: np.ndarray) -> bool:
    return a.ndim == 2 and a.shape[1] >= 2 and np.issubdtype(a.dtype, np.floating)


def compare_outputs(ref: dict[str, np.ndarray], got: dict[str, np.ndarray], allow_shape_change: bool = False) -> Fidelity:
    """Min cosine over outputs (per sample for batched outputs), max abs diff, top-1 agreement.

    With ``allow_shape_change`` (pruned graph outputs) outputs that changed shape are skipped.
    """
    cos_min, max_abs = 1.0, 0.0
    agree = []
    for name, a in ref.items():
        b = got[name]
        if a.shape != b.shape and allow_shape_change:
            continue
        if a.shape != b.shape:
            raise VerificationError(f"output {name!r} changed shape: {a.shape} -> {b.shape}")
        if not np.issubdtype(a.dtype, np.floating):
            if not np.array_equal(a, b):
                cos_min = min(cos_min, 0.0)
            continue
        a64 = a.astype(np.float64).reshape(a.shape[0] if a.ndim > 1 else 1, -1)
        b64 = b.astype(np.float64).reshape(a64.shape)
        max_abs = max(max_abs, float(np.max(np.abs(a64 - b64))) if a64.size else 0.0)
        for x, y in zip(a64, b64):
            nx, ny = np.linalg.norm(x), np.linalg.norm(y)
            if nx == 0 and ny == 0:
                c = 1.0
            elif nx == 0 or ny == 0:
                c = 0.0
            else:
                c = float(np.dot(x, y) / (nx * ny))
            cos_min = min(cos_min, c)
        if looks_like_class_scores(a):
            agree.append(np.mean(np.argmax(a, 1) == np.argmax(b, 1)))
    top1 = float(np.mean(agree)) if agree else None
    return Fidelity(cosine_min=cos_min, max_abs_diff=max_abs, top1_agreement=top1)


def check_model(model: ir.Model | Serialized) -> None:
    """Full ONNX checker on ``model``; raises VerificationError."""
    ser = model if isinstance(model, Serialized) else Serialized(model)
    try:
        onnx.checker.check_model(ser.data, full_check=True)
    except Exception as exc:  # noqa: BLE001
        raise VerificationError(f"onnx checker rejected the output: {str(exc).splitlines()[0]}") from exc


def verify_against(
    original: ir.Model,
    compressed: ir.Model,
    input_shapes: dict[str, Shape],
    *,
    seed: int = 0,
    reference_outputs: dict[str, np.ndarray] | None = None,
    allow_shape_change: bool = False,
) -> Fidelity:
    """Checker, session and run for ``compressed``; fidelity against ``original``.

    Raises VerificationError if the compressed model fails any check.
    """
    ser = Serialized(compressed)
    check_model(ser)
    feeds = random_inputs(original, input_shapes, seed)
    try:
        got = SessionHolder(ser).run(feeds)
    except Exception as exc:  # noqa: BLE001
        raise VerificationError(f"onnxruntime cannot run the output: {str(exc).splitlines()[0]}") from exc
    ref = reference_outputs if reference_outputs is not None else SessionHolder(original).run(feeds)
    fid = compare_outputs(ref, got, allow_shape_change)
    fid.outputs = got
    return fid
