"""The simplify pass's guard: onnxruntime runs of the simplified graph against the one before.

At the analysis shapes and with every symbolic dim doubled (where a shape onnxsim froze
would show); a failure is a ``SimplifyFailed``, and the pass keeps the unsimplified graph.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir

from onnxcompress.analysis.shapes import Shape
from onnxcompress.runtime import open_session, proto_random_feeds

_RTOL, _ATOL = 1e-3, 1e-4


class SimplifyFailed(Exception):
    """Why the simplified graph was not kept."""


def guard(
    proto: onnx.ModelProto, declared: set[str], original: ir.Model, simplified: ir.Model,
    input_shapes: dict[str, Shape], same_structure: bool = False,
) -> list[dict]:
    """onnxruntime runs of both graphs at the analysis shapes and with symbolic dims doubled.

    Both sessions read the weights where they are (``runtime.Serialized``): nothing is
    copied. When onnxsim changed no node and no initializer (it only annotated shapes),
    the graphs compute the same thing from the same feeds, so only the simplified one runs,
    at the doubled sizes, where a frozen shape annotation would show; the original runs
    there only if it fails, to tell a frozen annotation from a size the input never took.
    (The pass skips even that run when ``annotations_inferred`` holds.)
    """
    base = _concrete_shapes(proto, input_shapes, declared)
    if base is None:
        raise SimplifyFailed("no concrete input shapes to check the result with")
    doubled = _doubled_shapes(proto, base)
    if same_structure:
        return _run_alone(proto, original, simplified, doubled) if doubled != base else []
    runs = [base] if doubled == base else [base, doubled]
    ref_sess, new_sess = open_session(original, optimize=False), open_session(simplified, optimize=False)
    done = []
    for shapes in runs:
        feeds = proto_random_feeds(proto, shapes, seed=0 if shapes is base else 1)
        try:
            ref = ref_sess.run(None, feeds)
        except Exception:  # noqa: BLE001 - the original itself does not take these sizes
            if shapes is base:
                raise
            continue
        try:
            got = new_sess.run(None, feeds)
        except Exception as exc:  # noqa: BLE001
            raise SimplifyFailed(f"the simplified model fails at input shapes {shapes}: {exc}") from exc
        _compare(ref, got, shapes)
        done.append({k2: list(v) for k2, v in shapes.items()})
    return done


def _run_alone(proto: onnx.ModelProto, original: ir.Model, simplified: ir.Model, shapes: dict[str, Shape]) -> list[dict]:
    """The same graph with new annotations: one run of it at ``shapes`` (the original only if that fails)."""
    feeds = proto_random_feeds(proto, shapes, seed=1)
    try:
        open_session(simplified, optimize=False).run(None, feeds)
    except Exception as exc:  # noqa: BLE001
        try:
            open_session(original, optimize=False).run(None, feeds)
        except Exception:  # noqa: BLE001 - the original itself does not take these sizes
            return []
        raise SimplifyFailed(f"the simplified model fails at input shapes {shapes}: {exc}") from exc
    return [{k: list(v) for k, v in shapes.items()}]


def annotations_inferred(before: onnx.ModelProto, after: onnx.ModelProto) -> bool:
    """Every shape annotation of ``after`` (value infos and outputs) is what ONNX's shape inference
    gives ``before`` with its own intermediate annotations dropped: derived from the nodes and the
    declared interface, so valid at every size the interface admits."""
    fresh = onnx.ModelProto()
    fresh.CopyFrom(before)  # ``before`` holds no big weight (they are declared inputs): a small copy
    del fresh.graph.value_info[:]
    try:
        inferred = onnx.shape_inference.infer_shapes(fresh, data_prop=True)
    except Exception:  # noqa: BLE001 - inference itself failed: the runs decide
        return False
    known = {vi.name: vi.type for vi in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output)}
    for t in before.graph.initializer:  # an initializer's annotation is its own type and dims
        known.setdefault(t.name, onnx.helper.make_tensor_type_proto(t.data_type, list(t.dims)))
    return all(known.get(vi.name) == vi.type for vi in (*after.graph.value_info, *after.graph.output))


def _compare(ref: list, got: list, shapes: dict[str, Shape]) -> None:
    """Outputs of the two graphs at ``shapes``: same shapes, and close (floats) or equal."""
    for a, b in zip(ref, got):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            raise SimplifyFailed(f"an output changed shape at {shapes}: {a.shape} -> {b.shape}")
        if np.issubdtype(a.dtype, np.floating):
            scale = max(1.0, float(np.max(np.abs(a), initial=0.0)))
            if not np.allclose(a, b, rtol=_RTOL, atol=_ATOL * scale):
                raise SimplifyFailed(f"outputs differ at input shapes {shapes}")
        elif not np.array_equal(a, b):
            raise SimplifyFailed(f"outputs differ at input shapes {shapes}")


def value_dims(vi: onnx.ValueInfoProto) -> list | None:
    tt = vi.type.tensor_type
    if not tt.HasField("shape"):
        return None
    return [
        d.dim_param if d.HasField("dim_param") else (d.dim_value if d.HasField("dim_value") else None)
        for d in tt.shape.dim
    ]


def _concrete_shapes(proto: onnx.ModelProto, given: dict[str, Shape], declared: set[str] = frozenset()) -> dict[str, Shape] | None:
    inits = {t.name for t in proto.graph.initializer} | declared
    shapes: dict[str, Shape] = {}
    for vi in proto.graph.input:
        if vi.name in inits:
            continue
        if vi.name in given:
            shapes[vi.name] = tuple(given[vi.name])
            continue
        dims = value_dims(vi)
        if dims is None or any(not isinstance(d, int) for d in dims[1:]):
            return None
        shapes[vi.name] = tuple(d if isinstance(d, int) else 1 for d in dims)
    return shapes


def _doubled_shapes(proto: onnx.ModelProto, base: dict[str, Shape]) -> dict[str, Shape]:
    """``base`` with every dim the model leaves symbolic doubled, to catch frozen shapes."""
    out = {}
    for vi in proto.graph.input:
        if vi.name not in base:
            continue
        dims = value_dims(vi) or []
        out[vi.name] = tuple(
            2 * b if (i >= len(dims) or not isinstance(dims[i], int) or dims[i] <= 0) else b
            for i, b in enumerate(base[vi.name])
        )
    return out
