"""Loading and saving models through onnx_ir.

Loading keeps external data lazy (memory-mapped by the IR). Saving is atomic: the
model is written to a temp file in the destination folder and renamed into place,
and the input file is never overwritten.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Union

import numpy as np
import onnx
import onnx_ir as ir
from google.protobuf.message import DecodeError

from onnxcompress.errors import InputError

logger = logging.getLogger(__name__)

ModelLike = Union[str, os.PathLike, onnx.ModelProto, ir.Model]

#: Above this many bytes of tensor data the output is saved with external data.
EXTERNAL_DATA_THRESHOLD = 2_000_000_000


def load_model(src: ModelLike) -> ir.Model:
    """Return an ``ir.Model`` from a path, an ``onnx.ModelProto`` or an ``ir.Model``.

    An ``ir.Model`` is returned as is (callers that mutate must clone first).
    """
    if isinstance(src, ir.Model):
        return src
    if isinstance(src, onnx.ModelProto):
        try:
            return ir.serde.deserialize_model(src)
        except Exception as exc:  # noqa: BLE001 - any failure here means a malformed graph
            raise InputError(f"malformed ONNX model: {exc}") from exc
    path = Path(src)
    if not path.exists():
        raise InputError(f"no such file: {path}")
    if path.is_dir():
        raise InputError(f"expected an .onnx file, got a directory: {path}")
    try:
        model = ir.load(path)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise InputError(f"not an ONNX model: {path} ({type(exc).__name__})") from exc
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"cannot load {path}: {exc}") from exc
    if len(model.graph) == 0 and not model.graph.outputs:
        raise InputError(f"not an ONNX model (empty graph): {path}")
    return model


def has_external_data(model: ir.Model) -> bool:
    """True when any initializer lives in an external data file."""
    return any(
        isinstance(v.const_value, ir.ExternalTensor) for v in model.graph.initializers.values()
    )


def tensor_bytes(model: ir.Model) -> int:
    """Total bytes of initializer data."""
    total = 0
    for v in model.graph.initializers.values():
        if v.const_value is not None:
            total += v.const_value.nbytes
    return total


def default_output_path(input_path: str | os.PathLike) -> Path:
    """``model.onnx`` -> ``model.compressed.onnx`` beside it."""
    p = Path(input_path)
    return p.with_name(p.stem + ".compressed.onnx")


def save_model(
    model: ir.Model,
    path: str | os.PathLike,
    *,
    input_path: str | os.PathLike | None = None,
    external_data: bool | None = None,
) -> Path:
    """Write ``model`` to ``path`` atomically and return the path.

    ``external_data=None`` chooses for itself: external data when the input had it or
    when the tensors would push the file past 2 GB. Refuses to overwrite ``input_path``.
    """
    path = Path(path)
    if input_path is not None and path.exists() and path.resolve() == Path(input_path).resolve():
        raise InputError(f"refusing to overwrite the input model: {path}")
    if external_data is None:
        external_data = has_external_data(model) or tensor_bytes(model) > EXTERNAL_DATA_THRESHOLD
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        if external_data:
            # The data file gets its final name at once (the IR writes it atomically);
            # only the small graph file goes through the temp-and-rename.
            data_name = path.name + ".data"
            ir.save(model, tmp, external_data=data_name)
        else:
            ir.save(model, tmp)
        os.replace(tmp, path)
    except Exception:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    logger.info("saved %s (external data: %s)", path, external_data)
    return path


def file_bytes(path: str | os.PathLike) -> int:
    """Size of a model on disk, including its external data files."""
    p = Path(path)
    total = p.stat().st_size
    try:
        proto = onnx.load(p, load_external_data=False)
    except Exception:  # noqa: BLE001
        return total
    locations = set()
    for t in proto.graph.initializer:
        for kv in t.external_data:
            if kv.key == "location":
                locations.add(kv.value)
    for loc in locations:
        f = p.parent / loc
        if f.exists():
            total += f.stat().st_size
    return total


def proto_without_big_tensors(model: ir.Model, min_elements: int = 0) -> tuple[onnx.ModelProto, dict[str, ir.TensorProtocol]]:
    """Serialise ``model`` with every initializer above ``min_elements`` left out.

    Returns the proto (those initializers removed from it) and the tensors left out, by
    name. The model itself is unchanged: each tensor is swapped for an empty placeholder
    only while serialising, which keeps this cheap for big models.
    """
    big = {n: v for n, v in model.graph.initializers.items() if v.const_value is not None and v.const_value.size > min_elements}
    saved = {n: v.const_value for n, v in big.items()}
    placeholder = ir.tensor(np.zeros((0,), dtype=np.float32))
    try:
        for v in big.values():
            v.const_value = placeholder
        proto = ir.to_proto(model)
    finally:
        for n, t in saved.items():
            big[n].const_value = t
    kept = [t for t in proto.graph.initializer if t.name not in saved]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(kept)
    return proto, saved


def model_bytes(model: ir.Model) -> int:
    """Serialized size of a model held in memory (tensor data included)."""
    proto, _ = proto_without_big_tensors(model)
    return tensor_bytes(model) + proto.ByteSize()
