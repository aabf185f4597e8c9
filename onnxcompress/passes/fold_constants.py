"""Fold constant subgraphs into initializers (lossless).

Exports made without constant folding compute their weights at run time:
``weight_norm`` (g * v / ||v||), scale and shift chains, Cast, Reshape, Transpose,
Concat of constants, and weights held in ``Constant`` nodes. Later passes need plain
initializers to see a weight at all, so every standard, deterministic node whose
inputs are all constants is evaluated once and its outputs become initializers.

Nodes that read a graph input (``Shape`` of a runtime tensor), random ops, ops of
custom domains, control flow and nodes whose result would be huge are left alone.
One sweep in topological order reaches the fixed point, because a folded node's
outputs are constants by the time its consumers are visited; the sweep repeats
anyway until nothing changes, in case the node list was not sorted.
"""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import onnx
import onnx_ir as ir

from onnxcompress._ir_utils import add_initializer, const_array, drop_if_unused, is_const, is_std
from onnxcompress.passes.base import ReportingPass

logger = logging.getLogger(__name__)

#: Ops whose result is not a function of their inputs.
NONDETERMINISTIC = frozenset(
    {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}
)
#: Ops never folded: dequantizing a weight would undo its quantization and grow the file.
KEEP = frozenset({"DequantizeLinear", "DynamicQuantizeLinear", "If", "Loop", "Scan", "SequenceConstruct"})
#: A folded result may grow past its inputs' size only up to this many bytes.
MAX_GROWTH_BYTES = 1 << 20
_MAX_SWEEPS = 8
_MAX_SKIPS_REPORTED = 50


class FoldConstantWeightsPass(ReportingPass):
    """Evaluate constant-only nodes and lift ``Constant`` nodes into initializers."""

    name = "fold_constants"

    def __init__(self, max_growth_bytes: int = MAX_GROWTH_BYTES) -> None:
        super().__init__()
        self.max_growth_bytes = max_growth_bytes

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        nodes_before = len(graph)
        inits_before = len(graph.initializers)
        folded: Counter[str] = Counter()
        lifted = 0
        skipped: dict[str, dict] = {}
        for _ in range(_MAX_SWEEPS):
            changed = False
            for node in list(graph):
                if node.graph is None:  # removed earlier in this sweep
                    continue
                if node.op_type == "Constant" and is_std(node):
                    if self._lift_constant(model, node):
                        lifted += 1
                        changed = True
                    continue
                reason = self._why_not(node)
                if reason is None:
                    try:
                        outputs = _evaluate(model, node)
                        reason = self._check_size(node, outputs)
                    except Exception as exc:  # noqa: BLE001 - an op we cannot evaluate stays
                        outputs, reason = None, f"evaluation failed: {str(exc).splitlines()[0][:200]}"
                    if reason is None:
                        self._replace(model, node, outputs)
                        folded[node.op_type] += 1
                        changed = True
                        skipped.pop(node.name or "", None)
                        continue
                if reason != "_":
                    key = node.name or f"<{node.op_type}>"
                    skipped[key] = {"node": node.name, "op": node.op_type, "reason": reason}
            if not changed:
                break
        self.report = {
            "nodes_before": nodes_before,
            "nodes_after": len(graph),
            "nodes_folded": sum(folded.values()),
            "folded_by_op": dict(sorted(folded.items())),
            "constants_lifted": lifted,
            "initializers_before": inits_before,
            "initializers_after": len(graph.initializers),
            "not_folded": list(skipped.values())[:_MAX_SKIPS_REPORTED],
        }
        if len(skipped) > _MAX_SKIPS_REPORTED:
            self.report["not_folded_omitted"] = len(skipped) - _MAX_SKIPS_REPORTED
        logger.info("folded %d constant nodes, lifted %d Constant nodes", sum(folded.values()), lifted)
        return ir.passes.PassResult(model, bool(folded) or lifted > 0)

    # -- decisions -----------------------------------------------------------------

    def _why_not(self, node: ir.Node) -> str | None:
        """Why ``node`` cannot be folded; ``"_"`` for the ordinary case (not worth reporting)."""
        inputs = [v for v in node.inputs if v is not None]
        if not inputs:
            # Source ops (ConstantOfShape needs an input; Range does too): nothing to fold.
            return "_" if node.op_type not in NONDETERMINISTIC else "random op"
        if not all(is_const(v) for v in inputs) or any(const_array(v) is None for v in inputs):
            return "_"
        # From here on every input is a constant, so a refusal is worth reporting.
        if not is_std(node):
            return f"custom domain {node.domain!r}"
        if node.op_type in NONDETERMINISTIC:
            return "random op"
        if node.op_type in KEEP:
            return f"{node.op_type} is kept on purpose"
        if any(a.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS) for a in node.attributes.values()):
            return "has a subgraph"
        if any(o.is_graph_output() for o in node.outputs):
            return "its output is a graph output"
        declared = sum(_declared_bytes(o) or 0 for o in node.outputs)
        in_bytes = sum(const_array(v).nbytes for v in inputs)
        if declared > max(2 * in_bytes, self.max_growth_bytes):
            return f"result too large ({declared} bytes from {in_bytes})"
        return None

    def _check_size(self, node: ir.Node, outputs: list[np.ndarray]) -> str | None:
        in_bytes = sum(const_array(v).nbytes for v in node.inputs if v is not None)
        out_bytes = sum(int(o.nbytes) for o in outputs)
        if out_bytes > max(2 * in_bytes, self.max_growth_bytes):
            return f"result too large ({out_bytes} bytes from {in_bytes})"
        if len(outputs) != len(node.outputs):
            return "evaluator returned the wrong number of outputs"
        return None

    # -- rewrites ------------------------------------------------------------------

    def _lift_constant(self, model: ir.Model, node: ir.Node) -> bool:
        out = node.outputs[0]
        if out.is_graph_output():
            return False
        array = const_array(out)
        if array is None or array.dtype == object or array.dtype.kind in "SU":
            return False
        self._replace(model, node, [array])
        return True

    def _replace(self, model: ir.Model, node: ir.Node, outputs: list[np.ndarray]) -> None:
        """Swap ``node`` for initializers that keep its output names."""
        graph = model.graph
        old_inputs = [v for v in node.inputs if v is not None]
        pairs = []
        for out, array in zip(node.outputs, outputs):
            array = np.asarray(array)
            if out.dtype is not None and out.dtype.numpy() != array.dtype:
                array = array.astype(out.dtype.numpy())
            pairs.append((out, array))
        new_values = []
        for out, array in pairs:
            if not out.uses():
                new_values.append(None)
                continue
            dtype = ir.DataType.from_numpy(array.dtype)
            tmp = ir.Value(name=None, shape=ir.Shape(array.shape), type=ir.TensorType(dtype))
            out.replace_all_uses_with(tmp)
            new_values.append((tmp, out.name, array))
        graph.remove(node, safe=True)
        for item in new_values:
            if item is None:
                continue
            tmp, name, array = item
            value = add_initializer(model, name, np.asarray(array, order="C"))  # keeps 0-d arrays 0-d
            tmp.replace_all_uses_with(value)
        for v in old_inputs:
            drop_if_unused(model, v)
            producer = v.producer()
            if producer is not None and producer.op_type == "Constant" and not v.uses() and not v.is_graph_output():
                graph.remove(producer, safe=True)


def _declared_bytes(value: ir.Value) -> int | None:
    """Bytes of ``value`` from its declared static shape, when it has one."""
    if value.shape is None or value.dtype is None or not all(isinstance(d, int) for d in value.shape):
        return None
    return int(int(np.prod(value.shape.numpy(), dtype=np.int64)) * value.dtype.itemsize)


def _evaluate(model: ir.Model, node: ir.Node) -> list[np.ndarray]:
    """Run one node on its constant inputs."""
    return evaluate_node(model, node, [None if v is None else const_array(v) for v in node.inputs])


def evaluate_node(model: ir.Model, node: ir.Node, arrays: list[np.ndarray | None]) -> list[np.ndarray]:
    """Run one node on the given input arrays: the ONNX reference evaluator, else onnxruntime.

    The reference evaluator comes first because it is pure numpy and needs no session
    per node; both compute in the tensor's own dtype, as the unfolded graph would.
    """
    from onnx.reference import ReferenceEvaluator

    feeds: dict[str, np.ndarray] = {}
    in_names: list[str] = []
    inputs = []
    for i, (v, array) in enumerate(zip(node.inputs, arrays)):
        if v is None:
            in_names.append("")
            continue
        name = f"in{i}"
        feeds[name] = array
        in_names.append(name)
        elem = onnx.helper.np_dtype_to_tensor_dtype(array.dtype)
        inputs.append(onnx.helper.make_tensor_value_info(name, elem, array.shape))
    proto = ir.serde.serialize_node(node)
    del proto.input[:]
    proto.input.extend(in_names)
    # Every output gets a name, so the results line up with ``node.outputs``.
    out_names = [f"out{i}" for i in range(len(node.outputs))]
    del proto.output[:]
    proto.output.extend(out_names)
    outputs = [onnx.helper.make_empty_tensor_value_info(n) for n in out_names]
    g = onnx.helper.make_graph([proto], "fold", inputs, outputs)
    opsets = [onnx.helper.make_opsetid(d, int(v)) for d, v in model.opset_imports.items()]
    one = onnx.helper.make_model(g, opset_imports=opsets, ir_version=max(int(model.ir_version or 8), 4))
    try:
        results = ReferenceEvaluator(one).run(None, feeds)
    except Exception:  # noqa: BLE001 - the reference lacks some ops; onnxruntime has them
        from onnxcompress.runtime import run_single_node

        return run_single_node(one, feeds)
    return [np.asarray(r) for r in results]
