"""How a model reaches onnxruntime and the checker: ``Serialized``, without a copy of its weights.

A session over an in-memory model used to cost ``ir.to_proto`` and ``SerializeToString``
of the whole model, and onnxruntime's own parse of it: three transient copies of the
weights per session, and a detour through a file past 2 GB. Here the graph is written
alone, and the weights go to onnxruntime by reference (``runtime.open_session`` hands
them over; only ``runtime`` talks to onnxruntime).
"""

from __future__ import annotations

import os
import tempfile
from typing import Sequence

import numpy as np
import onnx
import onnx_ir as ir

#: protos up to this size are handed over as bytes; bigger ones go through a file
_BYTES_LIMIT = 1_900_000_000
#: initializers with more elements than this reach onnxruntime by reference, not serialised
_SHARED_MIN_ELEMENTS = 4096
#: the (empty) file the graph of a ``Serialized`` model names as its big initializers' data
_SHARED_FILE = "weights.shared"
#: element types onnxruntime takes straight from a numpy array
_SHAREABLE = frozenset(
    np.dtype(t) for t in (np.float32, np.float64, np.float16, np.int8, np.int16, np.int32, np.int64,
                          np.uint8, np.uint16, np.uint32, np.uint64, np.bool_)
)


class Serialized:
    """A model as onnxruntime and the checker take it, without a second copy of its weights.

    A path or bytes are used as they are. An ``ir.Model`` becomes its graph alone: a small
    file in a temporary folder in which every big initializer is declared as external data
    (of an empty file), while the tensors themselves go to each session by reference
    (``SessionOptions.add_initializer`` reads the caller's memory, or the input's memory
    map, and copies nothing). So a session, the checker or onnxsim's guard costs no
    serialisation and no copy of the weights, whatever the model's size. ``data``, the
    self-contained model (bytes, or a path with its data file), is only built when asked.
    ``extra_outputs`` names values to add as graph outputs (for exposing intermediates).
    """

    def __init__(self, model: ir.Model | onnx.ModelProto | bytes | str | os.PathLike, extra_outputs: Sequence[str] = ()):
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._data: bytes | str | None = None
        self._model: ir.Model | None = None
        #: what ``runtime.open_session`` made of ``shared`` (OrtValues aliasing the arrays), made once
        self.ortvalues: dict | None = None
        self._extra_outputs = [n for n in extra_outputs if n]
        #: the file onnxruntime and the checker read (None: use ``data``)
        self.path: str | None = None
        #: the tensors a session receives by reference, by initializer name
        self.shared: dict[str, np.ndarray] = {}
        if isinstance(model, (str, os.PathLike)) and not extra_outputs:
            self._data = os.fspath(model)
        elif isinstance(model, bytes) and not extra_outputs:
            self._data = model
        elif isinstance(model, ir.Model):
            self._model = model
            self._write_graph(model, extra_outputs)
        else:
            proto = model if isinstance(model, onnx.ModelProto) else _load_proto(model)
            if extra_outputs:
                proto = _with_extra_outputs(proto, extra_outputs)
            self._data = proto.SerializeToString()

    @property
    def data(self) -> bytes | str:
        """The self-contained model: bytes, or the path of a file saved with its data file."""
        if self._data is None:
            self._data = self._self_contained()
        return self._data

    @property
    def source(self) -> bytes | str:
        """What to hand onnxruntime and the checker: the graph file when there is one."""
        return self.path if self.path is not None else self.data

    def _write_graph(self, model: ir.Model, extra_outputs: Sequence[str]) -> None:
        from onnxcompress.io import proto_without

        arrays = {}
        for name, v in model.graph.initializers.items():
            t = v.const_value
            if t is None or t.size <= _SHARED_MIN_ELEMENTS:
                continue
            array = _shareable_array(t)
            if array is not None:
                arrays[name] = array
        proto, saved = proto_without(model, list(arrays))
        for name, t in saved.items():
            tp = onnx.TensorProto(name=name, data_type=int(t.dtype), dims=[int(d) for d in t.shape.numpy()])
            tp.data_location = onnx.TensorProto.EXTERNAL
            for key, value in (("location", _SHARED_FILE), ("offset", "0"), ("length", str(arrays[name].nbytes))):
                tp.external_data.add(key=key, value=value)
            proto.graph.initializer.append(tp)
        if extra_outputs:
            proto = _with_extra_outputs(proto, extra_outputs, copy=False)
        if _other_external_refs(proto, set(saved)) or proto.ByteSize() >= _BYTES_LIMIT:
            # Weights in a subgraph read from files next to the input, or big tensors of a type
            # onnxruntime cannot alias: the whole model is serialised (``data``), as it comes.
            return
        if not saved:
            self._data = proto.SerializeToString()  # nothing big: the graph is the whole model
            return
        self.shared = arrays
        self._tmp = tempfile.TemporaryDirectory(prefix="onnxcompress-")
        self.path = os.path.join(self._tmp.name, "model.onnx")
        try:
            with open(os.path.join(self._tmp.name, _SHARED_FILE), "wb"):
                pass
            with open(self.path, "wb") as f:
                f.write(proto.SerializeToString())
        except OSError as exc:  # a full disk or a file size limit: one line, as for the output itself
            from onnxcompress.paths import write_error

            raise write_error(f"onnxruntime's temporary graph {self.path}", exc) from None

    def _self_contained(self) -> bytes | str:
        """The old way: the whole model serialised (bytes), or saved with its data when big or external."""
        from onnxcompress.io import has_external_data

        model = self._model
        assert model is not None
        proto = None if has_external_data(model) else ir.to_proto(model)
        if proto is not None and proto.ByteSize() < _BYTES_LIMIT:
            if self._extra_outputs:
                proto = _with_extra_outputs(proto, self._extra_outputs, copy=False)
            return proto.SerializeToString()
        # External or big weights: onnxruntime reads them from files next to the graph.
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="onnxcompress-")
        path = os.path.join(self._tmp.name, "full.onnx")
        ir.save(model, path, external_data="full.onnx.data")
        if self._extra_outputs:
            proto = _with_extra_outputs(onnx.load(path, load_external_data=False), self._extra_outputs, copy=False)
            onnx.save(proto, path)
        return path


def _shareable_array(t: ir.TensorProtocol) -> np.ndarray | None:
    """``t`` as a C-contiguous native array onnxruntime can alias, or None (it is then serialised)."""
    try:
        want = np.dtype(t.dtype.numpy())
    except Exception:  # noqa: BLE001 - an element type numpy does not know
        return None
    if want not in _SHAREABLE:
        return None
    try:
        array = t.numpy()
    except Exception:  # noqa: BLE001 - unreadable external data: serialised, so its reader reports it
        return None
    if array.dtype != want or tuple(array.shape) != tuple(int(d) for d in t.shape.numpy()):
        return None
    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)
    return array


def _other_external_refs(proto: onnx.ModelProto, shared: set[str]) -> bool:
    """Whether a tensor other than the shared ones (in a subgraph, an attribute) refers to external data."""
    from onnx.external_data_helper import _get_all_tensors

    return any(
        t.data_location == onnx.TensorProto.EXTERNAL and t.name not in shared for t in _get_all_tensors(proto)
    )


def _load_proto(src: str | os.PathLike | bytes) -> onnx.ModelProto:
    return onnx.load_from_string(src) if isinstance(src, bytes) else onnx.load(os.fspath(src))


def _with_extra_outputs(proto: onnx.ModelProto, names: Sequence[str], copy: bool = True) -> onnx.ModelProto:
    """``proto`` whose graph also outputs the named values (in that order)."""
    if copy:
        new = onnx.ModelProto()
        new.CopyFrom(proto)
        proto = new
    known = {o.name for o in proto.graph.output}
    for n in names:
        if n and n not in known:
            proto.graph.output.append(onnx.ValueInfoProto(name=n))
            known.add(n)
    return proto
