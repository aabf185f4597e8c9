"""Tiny ONNX models for the bench and check tests (built with onnx.helper)."""

from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def tiny_classifier(
    path: str | os.PathLike,
    *,
    seed: int = 0,
    perturb: float = 0.0,
    batch: int | str = "N",
    width: int = 16,
    size: int = 16,
    input_name: str = "x",
    head: bool = True,
) -> str:
    """Conv-Relu-GAP-Gemm over a 3x``size``x``size`` image to 10 class scores.

    ``perturb`` adds that much Gaussian noise (relative) to the weights, for a model
    that differs from the ``perturb=0`` one by a known amount. ``head=False`` stops
    at the Relu, so the output is a feature map rather than class scores.
    """
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((width, 3, 3, 3)).astype(np.float32)
    w2 = rng.standard_normal((10, width)).astype(np.float32)
    if perturb:
        noise = np.random.default_rng(seed + 1000)
        w = w + perturb * noise.standard_normal(w.shape).astype(np.float32) * np.abs(w).mean()
        w2 = w2 + perturb * noise.standard_normal(w2.shape).astype(np.float32) * np.abs(w2).mean()
    nodes = [
        helper.make_node("Conv", [input_name, "W"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "W2"], ["y"], transB=1),
    ]
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(w2, "W2")]
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 10])
    if not head:
        nodes = [*nodes[:1], helper.make_node("Relu", ["c"], ["y"])]
        inits = inits[:1]
        out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, width, size, size])
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [batch, 3, size, size])],
        [out],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)
