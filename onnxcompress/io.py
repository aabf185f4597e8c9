"""Loading and saving models through onnx_ir.

Loading keeps external data lazy (memory-mapped by the IR) and refuses anything but a
regular file. Saving is atomic: the model and its data file are written into a temporary
folder beside the destination and renamed into place (``paths.Staging``), and neither
may be an input file or a file the model reads its weights from.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np
import onnx
import onnx_ir as ir
from google.protobuf.message import DecodeError

from onnxcompress.errors import InputError
from onnxcompress.paths import OutputError, Staging, require_regular_file, validate_outputs, write_error

if TYPE_CHECKING:
    from onnxcompress.spill import DataSink

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
            return weights_as_constants(ir.serde.deserialize_model(src))
        except Exception as exc:  # noqa: BLE001 - any failure here means a malformed graph
            raise InputError(f"malformed ONNX model: {exc}") from exc
    path = Path(src)
    if path.is_dir():
        raise InputError(f"expected an .onnx file, got a directory: {path}")
    require_regular_file(path, "input model")
    try:
        model = ir.load(path)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise InputError(f"not an ONNX model: {path} ({type(exc).__name__})") from exc
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"cannot load {path}: {exc}") from exc
    if len(model.graph) == 0 and not model.graph.outputs:
        raise InputError(f"not an ONNX model (empty graph): {path}")
    follow_data_links(model)
    weights_as_constants(model)
    return model


def follow_data_links(model: ir.Model) -> None:
    """External data files that are symbolic links are read where they point.

    A Hugging Face cache keeps ``model.onnx`` and its data as links into a ``blobs/`` folder;
    onnxruntime follows them, but onnx_ir refuses to read data that resolves outside the
    model's folder. The user chose this model, so a link named by a plain relative location
    (no ``..``) is followed: the tensor is re-pointed at the real file.
    """
    for v in model.graph.initializers.values():
        t = v.const_value
        if not isinstance(t, ir.ExternalTensor) or not isinstance(t.location, str) or ".." in Path(t.location).parts:
            continue
        p = Path(t.base_dir) / t.location
        try:
            real = p.resolve()
            if real == p.absolute() or not real.is_file():
                continue
        except (OSError, ValueError, RuntimeError):
            continue  # the loader's own checks report an unreadable location
        v.const_value = ir.ExternalTensor(real.name, t.offset, t.length, t.dtype, shape=t.shape, name=t.name,
                                          base_dir=real.parent)


def weights_as_constants(model: ir.Model) -> ir.Model:
    """Initializers listed as graph inputs are constants: nothing here feeds them.

    Old exporters list every weight among the graph inputs; onnxruntime runs such a model
    with the initializers as values whenever no feed names them. Each takes its tensor's
    type and shape (such a file may declare none, which the checker refuses once the graph
    is rewritten), and from IR version 4 on it leaves the inputs, as onnxsim's output does;
    IR version 3 requires the listing, so there it stays. The real inputs are untouched.
    """
    graph = model.graph
    for v in list(graph.inputs):
        t = v.const_value
        if t is None or graph.initializers.get(v.name) is not v:
            continue
        v.type = ir.TensorType(t.dtype)
        v.shape = ir.Shape([int(d) for d in t.shape.numpy()])
        if model.ir_version is None or model.ir_version >= 4:
            graph.inputs.remove(v)
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


def external_files(model: ir.Model) -> set[Path]:
    """The files ``model``'s external tensors are read from (resolved)."""
    out = set()
    for graph in model.graphs():
        for v in graph.initializers.values():
            t = v.const_value
            if isinstance(t, ir.ExternalTensor):
                out.add(Path(os.path.realpath(t.path)))
    return out


def data_path(path: str | os.PathLike) -> Path:
    """Where a model saved at ``path`` keeps its external data: ``path`` + ``.data``."""
    p = Path(path)
    return p.with_name(p.name + ".data")


def stage_model(
    staging: Staging,
    model: ir.Model,
    path: str | os.PathLike,
    *,
    input_path: str | os.PathLike | None = None,
    external_data: bool | None = None,
    sink: DataSink | None = None,
) -> Path:
    """Write ``model`` into a temporary folder beside ``path``; ``staging.commit()`` moves it into place.

    Returns the temporary model file (loadable as is: its data file sits beside it under
    its final name). The paths are validated first: neither the model nor its data file may
    be ``input_path``, one of its external data files, or a file ``model`` reads weights
    from. A model with external tensors is always saved with its own data file. With a
    ``sink`` (``spill.DataSink``) whose file already holds the pruned weights, that file
    becomes the output's data file: only the other tensors are appended to it.
    """
    path = Path(path)
    if external_data is None:
        external_data = tensor_bytes(model) > EXTERNAL_DATA_THRESHOLD
    external_data = bool(external_data) or has_external_data(model)
    outputs: dict[str, Path] = {"output": path}
    if external_data:
        outputs["output data"] = data_path(path)
    validate_outputs([], outputs, models=[input_path])
    reads = external_files(model)
    for label, p in outputs.items():
        if Path(os.path.realpath(p)) in reads:
            raise OutputError(f"refusing to overwrite the input: the {label} {p} holds weights the model reads")
    if external_data and sink is not None and sink.name == data_path(path).name:
        tmp = _stage_with_sink(model, path, sink)
        if tmp is not None:
            staging.add(data_path(tmp), data_path(path))
            staging.add(tmp, path)
            return tmp
    tmp_dir = staging.temp_dir(path)
    tmp = tmp_dir / path.name
    try:
        if external_data:
            ir.save(model, tmp, external_data=data_path(path).name)
        else:
            ir.save(model, tmp)
    except OSError as exc:
        raise write_error(path, exc) from exc
    if external_data and data_path(tmp).exists():
        staging.add(data_path(tmp), data_path(path))  # the data first: the graph never points at nothing
    staging.add(tmp, path)
    return tmp


def _stage_with_sink(model: ir.Model, path: Path, sink: DataSink) -> Path | None:
    """Save the graph beside the sink's data file, which already holds the cut weights (None:
    the sink cannot be used as it is, see ``DataSink.complete``)."""
    from onnxcompress.spill import restore

    try:
        swapped = sink.complete(model)
        if swapped is None:
            return None
        try:
            tmp = sink.dir / path.name
            ir.save(model, tmp)
        finally:
            restore(swapped)
    except OSError as exc:
        raise write_error(path, exc) from exc
    return tmp


def save_model(
    model: ir.Model,
    path: str | os.PathLike,
    *,
    input_path: str | os.PathLike | None = None,
    external_data: bool | None = None,
) -> Path:
    """Write ``model`` to ``path`` atomically and return the path.

    ``external_data=None`` chooses for itself: external data when the model has it or
    when the tensors would push the file past 2 GB. Refuses to write over ``input_path``,
    its external data, or the files the model reads weights from; an interrupted save
    leaves no temporary files.
    """
    with Staging() as staging:
        stage_model(staging, model, path, input_path=input_path, external_data=external_data)
        staging.commit()
    logger.info("saved %s", path)
    return Path(path)


def file_bytes(path: str | os.PathLike) -> int:
    """Size of a model on disk, including its external data files."""
    from onnxcompress.paths import external_data_files

    p = Path(path)
    return p.stat().st_size + sum(f.stat().st_size for f in external_data_files(p) if f.is_file())


def _root_cause(exc: BaseException) -> str:
    """The innermost cause of a chain of wrapped errors, in one line."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def proto_without_big_tensors(model: ir.Model, min_elements: int = 0) -> tuple[onnx.ModelProto, dict[str, ir.TensorProtocol]]:
    """Serialise ``model`` with every initializer above ``min_elements`` left out.

    Returns the proto (those initializers removed from it) and the tensors left out, by
    name. The model itself is unchanged: each tensor is swapped for an empty placeholder
    only while serialising, which keeps this cheap for big models.
    """
    names = [n for n, v in model.graph.initializers.items() if v.const_value is not None and v.const_value.size > min_elements]
    return proto_without(model, names)


def proto_without(model: ir.Model, names) -> tuple[onnx.ModelProto, dict[str, ir.TensorProtocol]]:
    """``proto_without_big_tensors`` for the named initializers of the main graph.

    Their data is not read; the initializers kept come inline (external data read in).
    """
    inits = model.graph.initializers
    big = {n: inits[n] for n in names if n in inits and inits[n].const_value is not None}
    saved = {n: v.const_value for n, v in big.items()}
    placeholder = ir.tensor(np.zeros((0,), dtype=np.float32))
    try:
        for v in big.values():
            v.const_value = placeholder
        try:
            proto = ir.to_proto(model)
        except ir.serde.SerdeError as exc:
            raise InputError(f"malformed ONNX model: it cannot be serialised ({_root_cause(exc)})") from exc
    finally:
        for n, t in saved.items():
            big[n].const_value = t
    kept = [t for t in proto.graph.initializer if t.name not in saved]
    for t in kept:
        if t.data_location == onnx.TensorProto.EXTERNAL and t.name in inits:
            # The proto may be read from elsewhere (a temporary folder, onnxsim): kept tensors
            # come inline. One that cannot be read stays a reference, for its reader to report.
            try:
                t.CopyFrom(onnx.numpy_helper.from_array(np.asarray(inits[t.name].const_value.numpy()), t.name))
            except Exception:  # noqa: BLE001 - missing file, bad offset, unknown dtype, ...
                pass
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(kept)
    return proto, saved


def model_bytes(model: ir.Model) -> int:
    """Serialized size of a model held in memory (tensor data included)."""
    proto, _ = proto_without_big_tensors(model)
    return tensor_bytes(model) + proto.ByteSize()
