"""Small helpers over onnx-ir shared by every pass: domains, opsets, constants, weights, names.

A *constant* is an initializer or the output of a standard ``Constant`` node.
Initializers that are also listed as graph inputs (old exporters list every weight
there) still count as constants: they hold the model's weights.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

#: the default ONNX domain, as exporters spell it
STANDARD_DOMAINS = ("", "ai.onnx")
#: assumed when a model declares no default-domain opset
DEFAULT_OPSET = 13


def default_opset(model: ir.Model) -> int:
    """The default-domain opset version of ``model``."""
    return int(model.opset_imports.get("", model.opset_imports.get("ai.onnx", DEFAULT_OPSET)))


def is_std(node: ir.Node) -> bool:
    """True for an op of the default ONNX domain."""
    return node.domain in STANDARD_DOMAINS


def is_const(value: ir.Value | None) -> bool:
    """Cheap test: ``value`` is an initializer or a Constant output (data not read)."""
    if value is None:
        return False
    if value.const_value is not None:
        return True
    node = value.producer()
    return node is not None and node.op_type == "Constant" and is_std(node)


def const_tensor(value: ir.Value | None) -> ir.TensorProtocol | None:
    """The tensor behind ``value`` when it is an initializer or a Constant output."""
    if value is None:
        return None
    if value.const_value is not None:
        return value.const_value
    node = value.producer()
    if node is None or node.op_type != "Constant" or not is_std(node):
        return None
    try:
        return ir.convenience.get_const_tensor(value)
    except (ValueError, TypeError, NotImplementedError):
        return None


def const_array(value: ir.Value | None) -> np.ndarray | None:
    """``const_tensor`` as a numpy array (None when not a constant or not readable)."""
    t = const_tensor(value)
    if t is None:
        return None
    try:
        return t.numpy()
    except Exception:  # noqa: BLE001 - e.g. a missing external data file
        return None


def used_names(graph: ir.Graph) -> set[str]:
    """Every value name in ``graph``: initializers, inputs and node outputs."""
    used = set(graph.initializers)
    used.update(v.name for v in graph.inputs if v.name)
    for node in graph:
        used.update(o.name for o in node.outputs if o.name)
    return used


def unique_name(graph: ir.Graph, hint: str, taken: set[str] | None = None) -> str:
    """A value name not yet used in ``graph`` (nor in ``taken``), derived from ``hint``.

    Scans the graph; callers that name many values pass ``taken=used_names(graph)`` once
    and add each new name to it, which skips the scan.
    """
    used = taken if taken is not None else used_names(graph)
    name, k = hint, 0
    while name in used:
        k += 1
        name = f"{hint}_{k}"
    return name


def add_initializer(model: ir.Model, name: str, array: np.ndarray) -> ir.Value:
    """Register ``array`` as a new initializer called ``name`` (which must be free).

    Models with IR version < 4 must list every initializer among the graph inputs too.
    """
    tensor = ir.tensor(array, name=name)
    value = ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(tensor.dtype), const_value=tensor)
    model.graph.register_initializer(value)
    if model.ir_version is not None and model.ir_version < 4:
        model.graph.inputs.append(value)
    return value


def set_weight(value: ir.Value, array: np.ndarray) -> None:
    """Replace the data of a constant ``value`` (initializer or Constant output) with ``array``.

    The dtype and shape must stay the same; the name is kept.
    """
    tensor = ir.tensor(array, name=value.name)
    node = value.producer()
    if value.const_value is not None or node is None:
        value.const_value = tensor
        return
    # A Constant node: rewrite its attribute, so no runtime op changes.
    for key in list(node.attributes):
        del node.attributes[key]
    node.attributes["value"] = ir.AttrTensor("value", tensor)


def drop_if_unused(model: ir.Model, value: ir.Value | None) -> bool:
    """Remove an initializer (and its graph-input entry) that nothing uses any more."""
    if value is None or not value.is_initializer() or value.uses() or value.is_graph_output():
        return False
    graph = model.graph
    if value.is_graph_input():
        graph.inputs.remove(value)
    graph.initializers.pop(value.name)
    return True


def private_copy(model: ir.Model, node: ir.Node, index: int, hint: str) -> ir.Value:
    """Give ``node`` its own copy of a shared constant input, so editing it touches no one else."""
    value = node.inputs[index]
    array = const_array(value)
    assert array is not None
    copy = add_initializer(model, unique_name(model.graph, hint), array.copy())
    node.replace_input_with(index, copy)
    return copy


def distinct_users(value: ir.Value) -> int:
    """How many nodes read ``value`` (a node reading it twice counts once)."""
    return len(value.consumers())
