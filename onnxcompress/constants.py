"""Reading constants: initializers and Constant-node outputs look the same to every caller."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

_STD_DOMAINS = ("", "ai.onnx")


def is_std(node: ir.Node) -> bool:
    """True for an op of the default ONNX domain."""
    return node.domain in _STD_DOMAINS


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
