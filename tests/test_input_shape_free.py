"""-1 in --input-shape: two bugs a review of the change found (both fixed)."""

from __future__ import annotations

import io

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import helper as h
from onnx import numpy_helper as nh


def _conv_model(path, in_shape):
    r = np.random.default_rng(0)
    inits = [nh.from_array(r.standard_normal((8, 3, 3, 3)).astype(np.float32), "w1")]
    nodes = [h.make_node("Conv", ["x", "w1"], ["y"], pads=[1, 1, 1, 1])]
    if in_shape is None:
        xin = h.make_value_info("x", h.make_tensor_type_proto(onnx.TensorProto.FLOAT, None))
    else:
        xin = h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, in_shape)
    y = h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", 8, 16, 16])
    g = h.make_graph(nodes, "g", [xin], [y], inits)
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), path)
    return str(path)


def test_bench_after_compress_with_free_batch_dim(tmp_path):
    from onnxcompress.bench.cli import bench_after_compress
    from onnxcompress.render import SafeConsole

    path = _conv_model(tmp_path / "m.onnx", ["n", 3, 16, 16])
    console = SafeConsole(file=io.StringIO(), width=120)
    # what `onnxcompress m.onnx --input-shape x:-1,3,16,16 --bench` passes (cli.py: config.input_shapes)
    out = bench_after_compress(path, path, {"x": (-1, 3, 16, 16)}, console)
    # it was {'error': 'benchmark failed: InputError: --batch: sizes must be positive integers, got [-1]'}
    assert "error" not in out, out
    assert [r["batch"] for r in out["runs"]] == [1]


def test_free_dim_on_input_without_shape(tmp_path):
    from onnxcompress.analysis.shapes import ShapeError, resolve_input_shapes

    model = ir.load(_conv_model(tmp_path / "m.onnx", None))
    # it was {'x': (-1, 3, 16, 16)}, and `onnxcompress inspect` printed MACs -55.30k
    assert resolve_input_shapes(model, {"x": (-1, 3, 16, 16)}) == {"x": (1, 3, 16, 16)}
    with pytest.raises(ShapeError, match="dim 2 is -1, but the model declares no shape"):
        resolve_input_shapes(model, {"x": (1, 3, -1, 16)})


def test_a_named_dim_takes_its_value_from_every_input_that_names_it():
    """silero-vad: ``input`` (batch, sequence) and ``state`` (2, batch, 128). Pinning ``input`` sized
    the batch, but ``state``'s dim 1 still asked for its own --input-shape."""
    from onnxcompress.analysis.shapes import ShapeError, resolve_input_shapes

    xs = [h.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["batch", "sequence"]),
          h.make_tensor_value_info("state", onnx.TensorProto.FLOAT, [2, "batch", 128]),
          h.make_tensor_value_info("mask", onnx.TensorProto.FLOAT, ["batch", "sequence"]),
          h.make_tensor_value_info("other", onnx.TensorProto.FLOAT, [1, "width"])]
    nodes = [h.make_node("Identity", [x.name], [x.name + "_out"]) for x in xs]
    outs = [h.make_value_info(x.name + "_out", h.make_tensor_type_proto(onnx.TensorProto.FLOAT, None)) for x in xs]
    model = ir.serde.deserialize_model(h.make_model(h.make_graph(nodes, "g", xs, outs),
                                                    opset_imports=[h.make_opsetid("", 17)]))
    shapes = resolve_input_shapes(model, {"input": (1, 512), "other": (1, 7)})
    assert shapes == {"input": (1, 512), "state": (2, 1, 128), "mask": (1, 512), "other": (1, 7)}
    # a batch pinned on one input sizes it everywhere; without it dim 0 defaults to 1, and that binds too
    assert resolve_input_shapes(model, {"input": (4, 512), "other": (1, 7)})["state"] == (2, 4, 128)
    assert resolve_input_shapes(model, {"mask": (-1, 16), "other": (1, 7)})["state"] == (2, 1, 128)
    assert resolve_input_shapes(model, {"mask": (-1, 16), "other": (1, 7)})["input"] == (1, 16)
    # a name no override gives and no dim 0 holds still needs its own
    with pytest.raises(ShapeError, match=r"input 'other' dim 1 is symbolic \('width'\)"):
        resolve_input_shapes(model, {"input": (1, 512)})
    with pytest.raises(ShapeError, match=r"input 'input' dim 1 is symbolic \('sequence'\)"):
        resolve_input_shapes(model, {"other": (1, 7)})
