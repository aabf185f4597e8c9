"""The op-rule registry. Adding an op means one rule here (in its family's module) and one test.

A rule has:
- ``propagate(node, ctx)``: set the channel info of the outputs from the inputs, union
  coupled elements, register weight slots, or block (``ctx.block``) what it cannot track;
- ``const_eval(node, app)`` (optional): in remove mode, map the constant values that removed
  channels carry (they are spatially uniform) from inputs to outputs, so the constant can
  be folded into the consumers' bias. Without it the removed channels' value is unknown and
  the report marks the fold inexact;
- ``rewrite(node, app)`` (optional): fix attributes or constant inputs that spell out
  channel counts (Split sizes, Slice bounds, Reshape targets, depthwise ``group``).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import onnx_ir as ir

_RULES: dict[str, "Rule"] = {}


class Rule:
    """Base rule: subclasses implement ``propagate``."""

    #: run even when no input carries tracked channels (ops that create channels: Conv, ...)
    always = False
    rewrite: Callable | None = None

    def propagate(self, node: ir.Node, ctx) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def const_eval(self, node: ir.Node, app) -> None:
        """Default: the removed channels' values after this op are unknown."""
        for o in node.outputs:
            info = app.analysis.info.get(o)
            if info is not None:
                app.set_const(o, np.full(info.ids.shape, np.nan))


def channels_on_axis1(node: ir.Node, ctx, info) -> bool:
    """Per-channel ops (BN, pools, ...) read channels at axis 1; elsewhere they block."""
    if info.axes != (1,):
        ctx.block(node, f"{node.op_type} on channels not at axis 1")
        return False
    return True


def register(*ops: str) -> Callable[[type[Rule]], type[Rule]]:
    def deco(cls: type[Rule]) -> type[Rule]:
        inst = cls()
        for op in ops:
            if op in _RULES:
                raise ValueError(f"two rules for {op}")
            _RULES[op] = inst
        cls.ops = ops
        return cls

    return deco


def get_rule(op_type: str) -> Rule | None:
    return _RULES.get(op_type)


def registered_ops() -> list[str]:
    return sorted(_RULES)


# Importing the families fills the registry.
from onnxcompress.channels.rules import blockers, conv, elementwise, layout, linear, norm, spatial  # noqa: E402,F401
