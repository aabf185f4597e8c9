"""Static shapes for analysis, without touching the model's own (maybe symbolic) shapes.

Inputs are pinned to concrete sizes (batch defaults to 1, any other symbolic dim must
come from ``--input-shape``), then ONNX shape inference runs on a structural copy
whose big weights are declared rather than carried. Values that inference cannot
size are measured by one onnxruntime run, so foreign graphs still get full shapes.
"""

from __future__ import annotations

import logging
import re

import numpy as np
import onnx
import onnx_ir as ir

from onnxcompress.errors import InputError, ShapeError
from onnxcompress.runtime import graph_inputs  # re-exported: analysis reads the real inputs too

logger = logging.getLogger(__name__)

Shape = tuple[int, ...]
_SPEC = re.compile(r"^(?P<name>[^:]+):(?P<dims>-?\d+(?:[,x]-?\d+)*)$")

# Initializers up to this many elements stay in the structural copy: shape inference
# needs their values (Reshape targets, Slice bounds, Resize sizes).
_KEEP_ELEMENTS = 4096


def parse_input_shape(spec: str) -> tuple[str, Shape]:
    """Parse ``NAME:D0,D1,...`` (``x`` also separates dims)."""
    m = _SPEC.match(spec.strip())
    if not m:
        raise ShapeError(f"bad --input-shape {spec!r}: expected NAME:D0,D1,... e.g. input:1,3,224,224")
    dims = tuple(int(d) for d in re.split(r"[,x]", m.group("dims")))
    if any(d <= 0 and d != FREE for d in dims):
        raise ShapeError(f"bad --input-shape {spec!r}: dims must be positive, or -1 for the model's own (batch: 1)")
    return m.group("name"), dims


def parse_input_shapes(specs: list[str] | None) -> dict[str, Shape]:
    return dict(parse_input_shape(s) for s in (specs or []))




#: a dim of ``--input-shape`` left to the model: its fixed value, or 1 for a free batch (as exporters write it)
FREE = -1


def _fixed(d) -> bool:
    """A fixed dim. ``dim_value`` -1 or 0 (a PaddlePaddle export habit) is dynamic, as onnxruntime reads it."""
    return isinstance(d, int) and d > 0


def resolve_input_shapes(model: ir.Model, overrides: dict[str, Shape] | None = None) -> dict[str, Shape]:
    """Concrete shape for every real graph input.

    Dim 0, when symbolic, defaults to 1 (the batch). A named symbolic dim takes the value that
    dim's name got elsewhere (ONNX: one name, one value): from an override first, then from a
    dim 0 defaulted to 1, so ``--input-shape input:1,512`` also sizes silero-vad's
    ``state`` (2, batch, 128). Any other symbolic or unknown dim needs an override, and the
    error names the input and the dim.
    """
    overrides = dict(overrides or {})
    names = {v.name for v in graph_inputs(model)}
    unknown = set(overrides) - names
    if unknown:
        raise ShapeError(
            f"--input-shape names no input of this model: {', '.join(sorted(unknown))} "
            f"(inputs: {', '.join(sorted(names))})"
        )
    named = _named_dims(model, overrides)
    shapes: dict[str, Shape] = {}
    for v in graph_inputs(model):
        if v.shape is None:
            if v.name in overrides:
                ov = overrides[v.name]
                if FREE in ov[1:]:
                    raise ShapeError(f"--input-shape {v.name}: dim {ov[1:].index(FREE) + 1} is -1, but the model "
                                     f"declares no shape for {v.name!r} to take it from; give its size")
                shapes[v.name] = tuple(1 if i == 0 and d == FREE else d for i, d in enumerate(ov))
                continue
            raise ShapeError(f"input {v.name!r} has no shape; give --input-shape {v.name}:D0,D1,...")
        if v.name in overrides:
            ov = overrides[v.name]
            if len(ov) != len(v.shape):
                raise ShapeError(
                    f"--input-shape {v.name}: {len(ov)} dims given, the model's input has {len(v.shape)}"
                )
            for i, (d, o) in enumerate(zip(v.shape, ov)):
                if _fixed(d) and o != FREE and d != o:
                    raise ShapeError(f"--input-shape {v.name}: dim {i} is fixed at {d} in the model, not {o}")
            if FREE not in ov:
                shapes[v.name] = tuple(ov)
                continue
        given = overrides.get(v.name, (FREE,) * len(v.shape))
        shapes[v.name] = tuple(o if o != FREE else _default_dim(v, i, d, named)
                               for i, (d, o) in enumerate(zip(v.shape, given)))
    return shapes


def _dim_name(d) -> str | None:
    return d.value if isinstance(d, ir.SymbolicDim) and d.value else None


def _named_dims(model: ir.Model, overrides: dict[str, Shape]) -> dict[str, int]:
    """The value of each named symbolic dim: given in an override, else 1 where it is an input's dim 0."""
    named: dict[str, int] = {}
    inputs = [v for v in graph_inputs(model) if v.shape is not None]
    for v in inputs:
        for d, o in zip(v.shape, overrides.get(v.name, ())):
            if _dim_name(d) and o != FREE:
                named.setdefault(_dim_name(d), o)
    for v in inputs:
        if len(v.shape) and _dim_name(v.shape[0]):
            named.setdefault(_dim_name(v.shape[0]), 1)
    return named


def _default_dim(v: ir.Value, i: int, d, named: dict[str, int]) -> int:
    """Dim ``i`` of input ``v`` when the user gives none: the model's fixed value, the value its name
    has elsewhere (``_named_dims``), or 1 for the batch."""
    if _fixed(d):
        return d
    if _dim_name(d) in named:
        return named[_dim_name(d)]
    if i == 0:
        return 1
    if isinstance(d, int):
        what = f"dynamic (dim_value {d})"
    else:
        what = f"symbolic ({d.value if isinstance(d, ir.SymbolicDim) and d.value else '?'!r})"
    raise ShapeError(
        f"input {v.name!r} dim {i} is {what}; "
        f"give --input-shape {v.name}:" + ",".join("D" + str(k) for k in range(len(v.shape)))
    )


def weightless_proto(model: ir.Model, min_elements: int = _KEEP_ELEMENTS, *, keep_value_info: bool = False) -> tuple[onnx.ModelProto, set[str]]:
    """A proto of ``model`` whose initializers above ``min_elements`` are graph inputs (type and shape, no data).

    Returns it and the names so declared. No tensor data is read or copied. Value infos
    are dropped (inference starts afresh), or with ``keep_value_info`` only those of the
    declared weights.
    """
    from onnxcompress.io import proto_without_big_tensors

    proto, saved = proto_without_big_tensors(model, min_elements)
    existing = {i.name for i in proto.graph.input}
    for name, t in saved.items():
        if name not in existing:
            proto.graph.input.append(
                onnx.helper.make_tensor_value_info(name, int(t.dtype), [int(d) for d in t.shape.numpy()])
            )
    kept = [vi for vi in proto.graph.value_info if keep_value_info and vi.name not in saved]
    del proto.graph.value_info[:]
    proto.graph.value_info.extend(kept)
    return proto, set(saved)


def structural_proto(model: ir.Model, input_shapes: dict[str, Shape] | None = None) -> onnx.ModelProto:
    """A proto of ``model`` whose big initializers are declared (type+shape) but carry no data.

    With ``input_shapes`` the real inputs are pinned to those sizes.
    """
    proto, _ = weightless_proto(model, _KEEP_ELEMENTS)
    # Initializers that are also inputs must match the declared shape.
    if input_shapes:
        for inp in proto.graph.input:
            if inp.name in input_shapes:
                dims = inp.type.tensor_type.shape.dim
                shape = input_shapes[inp.name]
                del dims[:]
                for d in shape:
                    dims.add().dim_value = int(d)
    return proto


def _static(vi: onnx.ValueInfoProto) -> Shape | None:
    tt = vi.type.tensor_type
    if not tt.HasField("shape"):
        return None
    dims = []
    for d in tt.shape.dim:
        if not d.HasField("dim_value"):
            return None
        dims.append(d.dim_value)
    return tuple(dims)


def infer_static_shapes(model: ir.Model, input_shapes: dict[str, Shape]) -> dict[str, Shape]:
    """Map every value name to a concrete shape, for the given input sizes.

    Values that ONNX inference leaves unsized are measured with one onnxruntime run
    on zeros (only those values are fetched).
    """
    proto = structural_proto(model, input_shapes)
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=False, data_prop=True)
    except Exception as exc:  # noqa: BLE001 - inference is best effort; the fallback measures
        logger.info("onnx shape inference failed (%s); measuring shapes instead", exc)
        inferred = proto
    shapes: dict[str, Shape] = {}
    for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        s = _static(vi)
        if s is not None:
            shapes[vi.name] = s
    for name, v in model.graph.initializers.items():
        if v.const_value is not None:
            shapes[name] = tuple(v.const_value.shape.numpy())
    for node in model.graph.all_nodes() if hasattr(model.graph, "all_nodes") else model.graph:
        if node.op_type == "Constant" and node.outputs[0].const_value is not None:
            shapes[node.outputs[0].name] = tuple(node.outputs[0].const_value.shape.numpy())
    missing = [
        out.name
        for node in model.graph
        for out in node.outputs
        if out.name and out.name not in shapes
    ]
    if missing:
        shapes.update(_measure_shapes(model, input_shapes, missing))
    return shapes


def _measure_shapes(model: ir.Model, input_shapes: dict[str, Shape], names: list[str]) -> dict[str, Shape]:
    from onnxcompress.runtime import Serialized, open_session, random_feeds

    try:
        feeds = random_feeds(model, input_shapes, seed=0)
        # The graph with the unsized values as outputs; the weights go by reference. Run as
        # written: fusions would swallow the exposed values.
        session = open_session(Serialized(model, extra_outputs=names), optimize=False)
        outs = dict(zip(names, session.run(names, feeds)))
    except InputError:
        raise  # inputs too big to draw: the user's to fix, not a shape we can do without
    except Exception as exc:  # noqa: BLE001
        # Probing runs at a second sizing fail on purpose for size-specific graphs; the
        # analysis then reports what it could not size.
        logger.info("could not measure shapes with onnxruntime: %s", exc)
        return {}
    return {n: tuple(np.asarray(o).shape) for n, o in outs.items()}


class ShapeOracle:
    """Static shapes per sizing, computed once per compression and shared by the passes.

    Inference, and the onnxruntime measurement it falls back to, is the costly part of
    analysing big or dynamic graphs. The passes before pruning keep every value's shape
    (they fold constants and remove nodes), so one result serves them all; pruning
    changes channel counts, and the caller clears the oracle after it.
    """

    def __init__(self) -> None:
        self._memo: dict[tuple, tuple[dict[str, Shape], set[str]]] = {}

    def shapes(self, model: ir.Model, sizing: dict[str, Shape]) -> dict[str, Shape]:
        key = tuple(sorted((k, tuple(v)) for k, v in sizing.items()))
        names = {o.name for n in model.graph for o in n.outputs if o.name}
        hit = self._memo.get(key)
        if hit is not None and names <= hit[1]:
            shapes = hit[0]
            for name, v in model.graph.initializers.items():
                if v.const_value is not None and name not in shapes:
                    shapes[name] = tuple(v.const_value.shape.numpy())
            return shapes
        shapes = infer_static_shapes(model, sizing)
        self._memo[key] = (shapes, names | set(shapes))
        return shapes

    def clear(self) -> None:
        self._memo.clear()
