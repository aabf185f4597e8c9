"""Loading and saving: symbolic dims survive, writes are atomic, inputs are never overwritten."""

from __future__ import annotations

import os
import shutil

import onnx
import onnx_ir as ir
import pytest

from onnxcompress.errors import InputError
from onnxcompress.io import default_output_path, file_bytes, has_external_data, load_model, save_model
from tests.conftest import MODELS


def _dims(proto: onnx.ModelProto):
    return [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in list(proto.graph.input) + list(proto.graph.output)]


@pytest.mark.parametrize("name", ["paddle_style_mbv3.onnx", "dynamo_ext.onnx", "resnet_small.onnx"])
def test_symbolic_dims_round_trip_untouched(tmp_path, name):
    model = load_model(MODELS / name)
    out = save_model(model, tmp_path / "rt.onnx")
    assert _dims(onnx.load(out, load_external_data=False)) == _dims(onnx.load(MODELS / name, load_external_data=False))


def test_external_data_loads_lazily_and_saves_external(tmp_path):
    model = load_model(MODELS / "dynamo_ext.onnx")
    assert has_external_data(model)
    assert any(isinstance(v.const_value, ir.ExternalTensor) for v in model.graph.initializers.values())
    out = save_model(model, tmp_path / "copy.onnx")
    assert (tmp_path / "copy.onnx.data").exists()
    onnx.checker.check_model(str(out), full_check=True)
    assert file_bytes(out) > out.stat().st_size


def test_save_is_atomic_and_leaves_no_temp_on_failure(tmp_path, monkeypatch):
    model = load_model(MODELS / "resnet_small.onnx")
    target = tmp_path / "out.onnx"
    target.write_bytes(b"previous")

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(ir, "save", boom)
    with pytest.raises(RuntimeError):
        save_model(model, target)
    assert target.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["out.onnx"]


def test_refuses_to_overwrite_input(tmp_path):
    src = tmp_path / "m.onnx"
    shutil.copy(MODELS / "resnet_small.onnx", src)
    with pytest.raises(InputError, match="refusing to overwrite"):
        save_model(load_model(src), src, input_path=src)


def test_default_output_path():
    assert default_output_path("a/b/model.onnx").as_posix() == "a/b/model.compressed.onnx"


@pytest.mark.parametrize("content,needle", [(None, "no such file"), (b"\x00garbage" * 50, "not an ONNX model")])
def test_bad_files_raise_input_error(tmp_path, content, needle):
    p = tmp_path / "x.onnx"
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(InputError, match=needle):
        load_model(p)


def test_data_behind_symbolic_links_is_read_where_it_points(tmp_path):
    """A Hugging Face cache links model.onnx and its data into blobs/: onnxruntime follows the
    links, so compressing must too (onnx_ir alone refuses data outside the model's folder)."""
    import numpy as np

    from onnxcompress.cli import main

    src = onnx.load(MODELS / "dynamo_ext.onnx", load_external_data=False)
    locations = {e.value for t in src.graph.initializer for e in t.external_data if e.key == "location"}
    blobs, snap = tmp_path / "blobs", tmp_path / "snapshot"
    blobs.mkdir()
    snap.mkdir()
    for name in ["dynamo_ext.onnx", *locations]:
        shutil.copy(MODELS / name, blobs / name)
        os.symlink(blobs / name, snap / name)
    model = load_model(snap / "dynamo_ext.onnx")
    first = next(v for v in model.graph.initializers.values() if isinstance(v.const_value, ir.ExternalTensor))
    reference = load_model(MODELS / "dynamo_ext.onnx").graph.initializers[first.name].const_value.numpy()
    np.testing.assert_array_equal(first.const_value.numpy(), reference)
    out = tmp_path / "out" / "o.onnx"
    out.parent.mkdir()
    assert main([str(snap / "dynamo_ext.onnx"), "--ratio", "0.5", "-o", str(out), "-q"]) == 0
    assert sorted(p.name for p in blobs.iterdir()) == sorted(["dynamo_ext.onnx", *locations])  # untouched
