"""inspect: MACs and params agree with independent counts; receptive fields; JSON shape."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import onnxcompress as oc
from tests.conftest import MODELS, model_shapes
from tests.graphs import G

META = json.loads((MODELS / "MODELS.json").read_text())


@pytest.mark.parametrize("name", sorted(META))
def test_macs_match_independent_torch_count(name):
    rep = oc.inspect(MODELS / name, model_shapes(META, name))
    expected = META[name]["torch_macs"]
    assert abs(rep.macs - expected) <= 0.005 * expected, (rep.macs, expected)
    assert rep.params > 0 and rep.file_bytes > 0


def test_conv_gemm_convtranspose_macs_by_definition():
    g = G(0)
    x = g.input(shape=(1, 4, 10, 10))
    c = g.conv(x, 4, 8, k=3, stride=1, group=2)  # out 8x10x10, C_in/g = 2, k 3x3
    w = g.const(np.ones((8, 6, 2, 2)), "wt")
    t = g.op("ConvTranspose", [c, w], strides=[2, 2], kernel_shape=[2, 2])  # in 8x10x10, C_out/g = 6
    y = g.gemm_head(t, 6, n_out=5)  # K = 6
    rep = oc.inspect(g.model([y]))
    macs = {layer.op: layer.macs for layer in rep.layers if layer.macs}
    assert macs["Conv"] == 8 * 10 * 10 * 2 * 9
    assert macs["ConvTranspose"] == 8 * 10 * 10 * 6 * 4
    assert macs["Gemm"] == 5 * 6
    assert rep.macs == sum(macs.values())
    # params: every float initializer once (conv w+b, convT w, fc w+b)
    assert rep.params == 8 * 2 * 9 + 8 + 8 * 6 * 4 + 5 * 6 + 5


def test_receptive_field_classic_formula():
    g = G(0)
    x = g.input(shape=(1, 3, 32, 32))
    a = g.conv(x, 3, 4, k=3, stride=2)  # r=3, j=2
    b = g.op("MaxPool", [a], kernel_shape=[2, 2], strides=[2, 2])  # r=3+1*2=5, j=4
    c = g.conv(b, 4, 4, k=3, dilation=2)  # k_eff 5: r=5+4*4=21, j=4
    rep = oc.inspect(g.model([g.gemm_head(c, 4)]))
    rf = {layer.op + str(i): layer.receptive_field for i, layer in enumerate(rep.layers)}
    assert rf["Conv0"] == [3, 2]
    assert rf["MaxPool1"] == [5, 4]
    assert rf["Conv2"] == [21, 4]
    assert rep.layers[-1].receptive_field is None  # Gemm: no spatial field


def test_symbolic_dim_needs_input_shape():
    g = G(0)
    x = g.input(shape=("N", 3, "H", "W"))
    m = g.model([g.gemm_head(g.conv(x, 3, 4), 4)])
    with pytest.raises(oc.ShapeError, match=r"input 'x' dim 2 is symbolic \('H'\)"):
        oc.inspect(m)
    rep = oc.inspect(m, {"x": (2, 3, 16, 16)})
    assert rep.layers[0].out_shape == [2, 4, 16, 16]


def test_inspect_cli_json(tmp_path):
    out = tmp_path / "r.json"
    proc = subprocess.run(
        [sys.executable, "-m", "onnxcompress", "inspect", str(MODELS / "resnet_small.onnx"), "--json", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert set(data) >= {"params", "macs", "file_bytes", "layers"}
    assert data["macs"] == META["resnet_small.onnx"]["torch_macs"]
    layer = data["layers"][0]
    assert set(layer) >= {"name", "op", "out_shape", "params", "macs", "receptive_field"}
    assert "MACs" in proc.stdout and "total" in proc.stdout


def test_inspect_groups_lists_coupled_filters_and_blockers():
    rep = oc.inspect(MODELS / "yolo_c2f.onnx", groups=True)
    assert rep.groups and rep.to_dict()["groups"] == rep.groups
    # a C2f bottleneck with a shortcut ties its conv to the split half it adds to
    assert any(len(g["filters"]) >= 2 for g in rep.groups)
    assert all(g["channels"] > 0 for g in rep.groups)
    assert all(g["outcome"] == "exact" for g in rep.groups)
    # ConvNeXt's residual streams run through LayerNorms: groups whose outcome is lossy (pruned with --calib)
    rep2 = oc.inspect(MODELS / "convnext_tiny.onnx", groups=True)
    lossy = [g for g in rep2.groups if g["outcome"] == "lossy"]
    assert [g["channels"] for g in lossy] == [64, 32]
    assert {x["op"] for g in lossy for x in g["lossy_at"]} == {"LayerNormalization"}
    assert sum(len(g["lossy_at"]) for g in lossy) == 7
    assert not any(b["op"] == "LayerNormalization" for b in rep2.blockers)
    # inspect changes nothing
    assert oc.inspect(MODELS / "yolo_c2f.onnx").macs == rep.macs


def _embedding_model(tmp_path, rows: int):
    """token ids (1, 6) int64 and token types (1, 6) -> two Gathers -> Add -> MatMul(8 -> 4)."""
    import onnx
    import onnx.helper as h
    from onnx import TensorProto, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((50, 8)).astype(np.float32), "words"),
             numpy_helper.from_array(rng.standard_normal((rows, 8)).astype(np.float32), "types"),
             numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), "w")]
    nodes = [h.make_node("Gather", ["words", "ids"], ["e1"]), h.make_node("Cast", ["tt"], ["tt64"], to=TensorProto.INT64),
             h.make_node("Gather", ["types", "tt64"], ["e2"]), h.make_node("Add", ["e1", "e2"], ["e"]),
             h.make_node("MatMul", ["e", "w"], ["y"])]
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("ids", TensorProto.INT64, [1, 6]),
                                  h.make_tensor_value_info("tt", TensorProto.INT32, [1, 6])],
                     [h.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 4])], inits)
    path = tmp_path / "emb.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), path)
    return path


def test_random_ints_stay_inside_the_tables_they_index(tmp_path):
    """BERT's token types index a 2-row table: random ints from [0, 4) made onnxruntime refuse the
    model ("input index out of range"). They are drawn below the smallest table they reach,
    through a Cast."""
    from onnxcompress.io import load_model
    from onnxcompress.runtime import Session, model_index_bounds, random_feeds

    model = load_model(str(_embedding_model(tmp_path, rows=2)))
    assert model_index_bounds(model) == {"ids": 50, "tt": 2}
    feeds = random_feeds(model, {"ids": (1, 6), "tt": (1, 6)}, seed=3)
    assert feeds["tt"].max() <= 1 and feeds["tt"].dtype == np.int32 and feeds["ids"].max() <= 3
    out = Session(str(tmp_path / "emb.onnx")).run(feeds)
    assert next(iter(out.values())).shape == (1, 6, 4)


def test_inspect_warns_when_it_cannot_size_a_weight_layer(tmp_path):
    """A Reshape to a run-time shape given as an input leaves the MatMul after it unsized (random
    ints are no valid shape): the MACs total leaves it out, and says so instead of printing 0."""
    import onnx
    import onnx.helper as h
    from onnx import TensorProto, numpy_helper

    w = numpy_helper.from_array(np.ones((12, 4), np.float32), "w")
    g = h.make_graph([h.make_node("Reshape", ["x", "shape"], ["r"]), h.make_node("MatMul", ["r", "w"], ["y"])], "g",
                     [h.make_tensor_value_info("x", TensorProto.FLOAT, [2, 12]),
                      h.make_tensor_value_info("shape", TensorProto.INT64, [2])],
                     [h.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), tmp_path / "m.onnx")
    rep = oc.inspect(tmp_path / "m.onnx", {"x": (2, 12), "shape": (2,)})
    assert rep.macs == 0 and len(rep.warnings) == 1 and "1 weight layer(s)" in rep.warnings[0]
    assert "warnings" in rep.to_dict()
    assert oc.inspect(_embedding_model(tmp_path, rows=2), {"ids": (1, 6), "tt": (1, 6)}).warnings == []
