"""Which values distillation matches: each graph output, or the float tensor behind a non-float one.

Torch-free, so the Taylor estimate and the distiller share it.
"""

from __future__ import annotations

import onnx_ir as ir

#: ops an output is followed back through to a differentiable (float) tensor
_PASS_BACK = ("ArgMax", "ArgMin", "TopK", "Cast", "Squeeze", "Unsqueeze", "Reshape", "Transpose", "Identity", "Flatten")


def differentiable_targets(model: ir.Model) -> tuple[list[str], dict[str, str]]:
    """The values to distill on: each graph output, or, where it is not a float (an ArgMax or
    TopK inside the graph), the last float tensor before it. Returns them and the substitutions made."""
    targets, swapped = [], {}
    for out in model.graph.outputs:
        v = out
        while v.dtype not in (ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.DOUBLE, ir.DataType.BFLOAT16):
            node = v.producer()
            if node is None or node.op_type not in _PASS_BACK or not node.inputs or node.inputs[0] is None:
                v = None
                break
            v = node.inputs[0]
        if v is None:
            swapped[out.name] = ""
            continue
        if v is not out:
            swapped[out.name] = v.name
        if v.name not in targets:
            targets.append(v.name)
    return targets, swapped
