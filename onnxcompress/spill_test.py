from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from onnxcompress import spill
from onnxcompress.io import data_path, stage_model
from onnxcompress.paths import Staging
from onnxcompress.spill import DataSink


def _model(arrays: dict[str, np.ndarray]) -> ir.Model:
    """A graph that adds every array to its input (all the same shape)."""
    x = ir.Value(name="x", shape=ir.Shape([4, 256]), type=ir.TensorType(ir.DataType.FLOAT))
    graph = ir.Graph([x], [], nodes=[], opset_imports={"": 17}, name="g")
    y = x
    for name, arr in arrays.items():
        v = ir.Value(name=name, shape=ir.Shape(arr.shape), type=ir.TensorType(ir.DataType.from_numpy(arr.dtype)),
                     const_value=ir.tensor(arr, name=name))
        graph.register_initializer(v)
        node = ir.Node("", "Add", [y, v], num_outputs=1)
        graph.append(node)
        y = node.outputs[0]
        y.name, y.type, y.shape = f"{name}_out", ir.TensorType(ir.DataType.FLOAT), ir.Shape([4, 256])
    graph.outputs.append(y)
    return ir.Model(graph, ir_version=8)


def _values(path) -> dict[str, bytes]:
    m = ir.load(path)
    return {n: v.const_value.tobytes() for n, v in m.graph.initializers.items()}


def test_small_arrays_and_packed_types_get_no_region(tmp_path, monkeypatch):
    import ml_dtypes

    made = []
    sink = DataSink(lambda: made.append(1) or tmp_path, "out.onnx.data")
    assert sink.region((16, 16), np.float32) is None
    monkeypatch.setattr(spill, "MIN_BYTES", 16)
    # int4 is one value per numpy byte but two per byte in a data file; big-endian is not the file's order
    assert sink.region((64, 64), ml_dtypes.int4) is None and sink.region((64, 64), np.dtype(">f4")) is None
    assert made == [] and sink.path is None
    assert sink.region((64, 64), ml_dtypes.bfloat16) is not None


def test_a_region_holds_exactly_what_was_written(tmp_path, monkeypatch):
    monkeypatch.setattr(spill, "MIN_BYTES", 1024)
    sink = DataSink(lambda: tmp_path, "out.onnx.data")
    a = np.arange(600, dtype=np.float32).reshape(2, 300)
    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * 10 + a.tobytes())
    first, second = sink.region((2, 300), np.float32), sink.region((3, 300), np.float32)
    assert second.offset % spill.ALIGN == 0 and second.offset >= first.nbytes
    first.copy_from(str(src), 10, a.nbytes)  # in the kernel, from another file
    second.write(a[:1] * 2)
    with pytest.raises(ValueError, match="holds"):
        second.seal("early")  # not filled yet
    second.write(a * 3)
    with pytest.raises(ValueError, match="more bytes"):
        second.write(a)
    t1, t2 = first.seal("a"), second.seal("b")
    np.testing.assert_array_equal(t1.numpy(), a)
    np.testing.assert_array_equal(t2.numpy(), np.concatenate([a[:1] * 2, a * 3]))


def test_cut_weights_become_the_output_data_file(tmp_path, monkeypatch):
    monkeypatch.setattr(spill, "MIN_BYTES", 1024)
    rng = np.random.default_rng(0)
    big = rng.standard_normal((4, 256)).astype(np.float32)
    other = rng.standard_normal((4, 256)).astype(np.float32)
    tiny = np.float32(rng.standard_normal((1, 1)))
    model = _model({"big": np.zeros_like(big), "other": other, "tiny": tiny * np.ones((1, 1), np.float32)})
    out = tmp_path / "o" / "m.onnx"
    with Staging() as staging:
        sink = DataSink(lambda: staging.temp_dir(out), data_path(out).name)
        region = sink.region(big.shape, big.dtype)
        region.write(big)
        model.graph.initializers["big"].const_value = region.seal("big")
        staged = stage_model(staging, model, out, external_data=True, sink=sink)
        assert staged.parent == sink.dir  # the sink's folder: its file is the data file, not a copy
        staging.commit()
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.onnx", "m.onnx.data"]
    got = _values(out)
    assert got["big"] == big.tobytes() and got["other"] == other.tobytes()
    assert np.frombuffer(got["tiny"], np.float32)[0] == np.float32(tiny)
    # the cut weight is where it was written (first, on a page), the others appended after it
    assert out.with_name("m.onnx.data").stat().st_size == big.nbytes + other.nbytes
    assert isinstance(model.graph.initializers["other"].const_value, ir.Tensor)  # put back after the save


@pytest.mark.parametrize("how", ["replaced", "shared", "unsealed"])
def test_a_region_not_used_exactly_once_falls_back_to_a_fresh_file(tmp_path, monkeypatch, how):
    monkeypatch.setattr(spill, "MIN_BYTES", 1024)
    w = np.arange(1024, dtype=np.float32).reshape(4, 256)
    model = _model({"w": w, "u": w + 1})
    out = tmp_path / "m.onnx"
    with Staging() as staging:
        sink = DataSink(lambda: staging.temp_dir(out), data_path(out).name)
        region = sink.region(w.shape, w.dtype)
        region.write(w * 2)
        inits = model.graph.initializers
        inits["w"].const_value = region.seal("w")
        if how == "replaced":  # a later pass rewrote the cut weight
            inits["w"].const_value = ir.tensor(w * 3, name="w")
        elif how == "shared":  # one region behind two initializers
            inits["u"].const_value = region.seal("u")
        else:  # a region handed out and never used
            sink.region(w.shape, w.dtype).close()
        assert sink.complete(model) is None
        assert all(not isinstance(v.const_value, ir.ExternalTensor) or v.const_value.offset in sink.regions
                   for v in inits.values())  # nothing was swapped
        stage_model(staging, model, out, external_data=True, sink=sink)
        staging.commit()
    got = _values(out)
    expected = {"replaced": (w * 3, w + 1), "shared": (w * 2, w * 2), "unsealed": (w * 2, w + 1)}[how]
    assert (got["w"], got["u"]) == tuple(e.tobytes() for e in expected)
    assert out.with_name("m.onnx.data").stat().st_size == 2 * w.nbytes  # no unreferenced bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.data"]
