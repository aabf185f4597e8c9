"""A differentiable torch executor for an ONNX graph, the backend of distillation.

The graph is never re-exported: ``GraphModule`` runs the nodes of the proto in order with
torch ops, holds the weights it may train as ``nn.Parameter``s keyed by initializer name,
and ``state_arrays()`` / ``apply_state_arrays()`` write them back into the same graph.
Weights stored as ``Constant`` nodes (paddle2onnx) count as initializers named by the
Constant's output. Anything the executor cannot compute exactly as onnxruntime does is
reported by ``unsupported_ops`` and refused with ``UnsupportedGraph``.
"""
from __future__ import annotations

import copy
import logging
import re
from collections import Counter
from typing import Callable

import numpy as np
import onnx
import onnx_ir as ir
import torch
from onnx import numpy_helper

from . import ops_nn, ops_shape  # noqa: F401  (register their ops)
from .ops import CHECKS, OPS, Node, UnsupportedGraph, to_tensor
from .separate_affines import separate_affines

logger = logging.getLogger(__name__)

Trainable = Callable[[str, onnx.NodeProto, int], bool]

# op type -> input indices that hold trainable weights by default (None: any constant input).
_DEFAULT_TRAINABLE: dict[str, set[int] | None] = {
    "Conv": {1, 2}, "ConvTranspose": {1, 2}, "Gemm": None, "MatMul": None,
    "BatchNormalization": {1, 2}, "LayerNormalization": {1, 2},
    "InstanceNormalization": {1, 2}, "GroupNormalization": {1, 2},
    "LSTM": {1, 2, 3},  # W, R, B: a CNN+LSTM reader's recurrent layers adapt to the pruned features
}
_FLOAT_KINDS = ("f",)
#: layers whose input 2 is a bias with the scale of the layer's output
_BIASED = ("Conv", "ConvTranspose", "Gemm")


def default_trainable(init_name: str, node: onnx.NodeProto, index: int) -> bool:
    """Weights and biases of Conv/ConvTranspose/Gemm, MatMul's constant operand, norm affines, LSTM W/R/B."""
    if node.domain not in ("", "ai.onnx") or node.op_type not in _DEFAULT_TRAINABLE:
        return False
    indices = _DEFAULT_TRAINABLE[node.op_type]
    return indices is None or index in indices


def _opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    return 1


def _op_key(node: onnx.NodeProto) -> str:
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}:{node.op_type}"


def _constant_value(node: Node) -> np.ndarray | None:
    """The value of a Constant node, or None for the forms we do not support (strings, sparse)."""
    for key, value in node.attrs.items():
        if key == "value" and isinstance(value, np.ndarray):
            return value
        if key in ("value_float", "value_int"):
            return np.array(value, dtype=np.float32 if key == "value_float" else np.int64)
        if key in ("value_floats", "value_ints"):
            return np.array(value, dtype=np.float32 if key == "value_floats" else np.int64)
    return None


def _constants(model: onnx.ModelProto, opset: int) -> dict[str, np.ndarray]:
    """Initializers and Constant-node outputs by value name."""
    values = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for proto in model.graph.node:
        if proto.op_type == "Constant" and proto.domain in ("", "ai.onnx"):
            value = _constant_value(Node.from_proto(proto, opset))
            if value is not None:
                values[proto.output[0]] = value
    return values


def _reasons(model: onnx.ModelProto) -> list[tuple[str, str, str]]:
    """(op key, node name, reason) for every node the executor cannot run."""
    opset = _opset(model)
    consts = _constants(model, opset)
    out = []
    for proto in model.graph.node:
        key = _op_key(proto)
        if proto.domain not in ("", "ai.onnx"):
            out.append((key, proto.name, f"custom domain {proto.domain!r}"))
            continue
        node = Node.from_proto(proto, opset)
        if proto.op_type == "Constant":
            if proto.output[0] not in consts:
                out.append((key, proto.name, "Constant of a string or sparse value"))
            continue
        if proto.op_type not in OPS:
            out.append((key, proto.name, "no torch implementation"))
            continue
        check = CHECKS.get(proto.op_type)
        reason = check(node, consts.get) if check else None
        if reason:
            out.append((key, proto.name, reason))
    return out


def unsupported_ops(model: onnx.ModelProto) -> dict[str, int]:
    """op_type (``domain:op_type`` outside ai.onnx) -> count of nodes the executor cannot run.

    Empty means fully supported. A supported op type can still be counted when one node's
    attributes ask for something torch cannot express (e.g. cubic Resize).
    """
    return dict(Counter(key for key, _, _ in _reasons(model)))


def _safe_key(name: str, taken: set[str]) -> str:
    base = "v_" + re.sub(r"\W", "_", name)
    key, i = base, 1
    while key in taken:
        key, i = f"{base}_{i}", i + 1
    taken.add(key)
    return key


class GraphModule(torch.nn.Module):
    """Runs an ONNX graph with torch ops; chosen float weights are trainable Parameters.

    The graph keeps its inference semantics in ``train()`` mode too: BatchNormalization
    uses its stored statistics and Dropout is the identity, so distillation only moves the
    weights. Constants are buffers, so ``.to(device)`` moves the whole graph. A feed named
    like an initializer overrides it (ONNX semantics), cutting that weight's gradient.
    Real-world weights often hold denormal floats, which slow CPU kernels several-fold;
    callers that train on CPU should consider ``torch.set_flush_denormal(True)``.

    Without ``trainable``, the weights trained are ``default_trainable``'s plus the biases and
    LayerNorm affines written as their own Add or Mul (``separate_affines``); ``frozen`` names
    constants never trained either way.
    """

    def __init__(self, model: onnx.ModelProto, trainable: Trainable | None = None,
                 frozen: frozenset[str] = frozenset()):
        super().__init__()
        reasons = _reasons(model)
        if reasons:
            counts = Counter(key for key, _, _ in reasons)
            first = {}
            for key, name, why in reasons:
                first.setdefault(key, f"{why} (node {name!r})" if name else why)
            listing = ", ".join(f"{k} x{c}: {first[k]}" for k, c in sorted(counts.items()))
            raise UnsupportedGraph(f"the torch executor cannot run {len(reasons)} node(s): {listing}")
        affines = separate_affines(ir.from_proto(model)) if trainable is None else {}
        trainable = trainable or default_trainable
        graph = model.graph
        self.opset = _opset(model)
        consts = _constants(model, self.opset)
        protos = [p for p in graph.node if not (p.op_type == "Constant" and p.domain in ("", "ai.onnx"))]
        self._nodes = [Node.from_proto(p, self.opset) for p in protos]
        self._order_nodes()
        consumers = self._consumers(protos)

        self.params = torch.nn.ParameterDict()
        self.consts = torch.nn.Module()
        self._slot: dict[str, tuple[str, str]] = {}  # value name -> ("p"|"c", attribute key)
        self._dtype: dict[str, np.dtype] = {}
        self._param_names: list[str] = []
        taken: set[str] = set()
        for name, array in consts.items():
            key = _safe_key(name, taken)
            tensor = to_tensor(array)
            train = array.dtype.kind in _FLOAT_KINDS and name not in frozen and (name in affines or any(
                trainable(name, proto, idx) for proto, idx in consumers.get(name, [])))
            if train:
                self.params[key] = torch.nn.Parameter(tensor)
                self._slot[name] = ("p", key)
                self._dtype[name] = array.dtype
                self._param_names.append(name)
            else:
                self.consts.register_buffer(key, tensor)
                self._slot[name] = ("c", key)
        self._bias_weight = self._pair_biases(consumers)
        self._affines = [n for n in affines if self._slot.get(n, ("c", ""))[0] == "p"]
        self._bias_weight.update({b: w for b, w in affines.items()
                                  if w is not None and b in self._affines and self._slot.get(w, ("c", ""))[0] == "p"})
        self.input_names = [i.name for i in graph.input if i.name not in consts]
        self.output_names = [o.name for o in graph.output]
        self._producer = {out: i for i, node in enumerate(self._nodes) for out in node.outputs if out}
        self._plans: dict[tuple[str, ...], tuple[list[int], dict[str, int]]] = {}

    def _order_nodes(self) -> None:
        """Keeps the proto order when it is topological (it must be); sorts it otherwise."""
        produced = {out: i for i, n in enumerate(self._nodes) for out in n.outputs if out}
        if all(produced.get(v, -1) < i for i, n in enumerate(self._nodes) for v in n.inputs if v):
            return
        order, done, state = [], set(), {}

        def visit(i: int) -> None:
            if state.get(i) == 1:
                raise UnsupportedGraph("the graph has a cycle")
            if i in done:
                return
            state[i] = 1
            for v in self._nodes[i].inputs:
                if v in produced:
                    visit(produced[v])
            state[i] = 2
            done.add(i)
            order.append(self._nodes[i])

        for i in range(len(self._nodes)):
            visit(i)
        self._nodes = order

    def _pair_biases(self, consumers: dict[str, list[tuple[onnx.NodeProto, int]]]) -> dict[str, str]:
        """Trainable bias -> the trainable weight of the same Conv, ConvTranspose or Gemm."""
        slots: dict[int, dict[int, str]] = {}  # layer -> input index -> trainable name
        for name in self._param_names:
            for proto, idx in consumers.get(name, []):
                if idx in (1, 2) and proto.op_type in _BIASED:
                    slots.setdefault(id(proto), {})[idx] = name
        return {s[2]: s[1] for s in slots.values() if 1 in s and 2 in s}

    def bias_weights(self) -> dict[str, str]:
        """Initializer name of each trainable layer bias -> that layer's trainable weight."""
        return dict(self._bias_weight)

    def affine_names(self) -> list[str]:
        """The trained biases and norm affines that the exporter wrote as their own Add or Mul."""
        return list(self._affines)

    @staticmethod
    def _consumers(protos: list[onnx.NodeProto]) -> dict[str, list[tuple[onnx.NodeProto, int]]]:
        """Consumers of each value, looking through Identity chains (paddle2onnx adds them)."""
        direct: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
        for proto in protos:
            for idx, name in enumerate(proto.input):
                if name:
                    direct.setdefault(name, []).append((proto, idx))
        resolved: dict[str, list[tuple[onnx.NodeProto, int]]] = {}

        def through(name: str, seen: frozenset) -> list[tuple[onnx.NodeProto, int]]:
            out = []
            for proto, idx in direct.get(name, []):
                if proto.op_type == "Identity" and proto.output[0] not in seen:
                    out += through(proto.output[0], seen | {proto.output[0]})
                else:
                    out.append((proto, idx))
            return out

        for name in direct:
            resolved[name] = through(name, frozenset({name}))
        return resolved

    def _tensor(self, name: str) -> torch.Tensor:
        kind, key = self._slot[name]
        return self.params[key] if kind == "p" else getattr(self.consts, key)

    def _plan(self, outputs: tuple[str, ...]) -> tuple[list[int], dict[str, int]]:
        """Nodes needed for `outputs`, in order, and the last step that reads each value."""
        if outputs not in self._plans:
            needed: set[int] = set()
            stack = [v for v in outputs if v in self._producer]
            for v in outputs:
                if v not in self._producer and v not in self._slot and v not in self.input_names:
                    raise KeyError(f"{v!r} is not a value of the graph")
            while stack:
                i = self._producer[stack.pop()]
                if i in needed:
                    continue
                needed.add(i)
                stack += [v for v in self._nodes[i].inputs if v in self._producer]
            steps = sorted(needed)
            last_use: dict[str, int] = {}
            for step, i in enumerate(steps):
                for v in self._nodes[i].inputs:
                    last_use[v] = step
            for v in outputs:
                last_use[v] = len(steps)
            self._plans[outputs] = (steps, last_use)
        return self._plans[outputs]

    def forward(self, feeds: dict[str, torch.Tensor], outputs: list[str] | None = None
                ) -> dict[str, torch.Tensor]:
        """Runs the graph on `feeds` (graph input name -> tensor) and returns `outputs`
        (any value names, intermediate ones too; default: the graph outputs). Only the nodes
        those outputs depend on are computed."""
        wanted = tuple(outputs) if outputs is not None else tuple(self.output_names)
        steps, last_use = self._plan(wanted)
        env: dict[str, torch.Tensor] = dict(feeds)
        for step, i in enumerate(steps):
            node = self._nodes[i]
            args = [self._get(env, v) if v else None for v in node.inputs]
            try:
                result = OPS[node.op_type](node, *args)
            except UnsupportedGraph:
                raise
            except Exception as exc:  # name the node: a bare torch error is useless on a big graph
                raise RuntimeError(f"{node.op_type} node {node.name!r} failed: {exc}") from exc
            results = result if isinstance(result, (tuple, list)) else (result,)
            for name, value in zip(node.outputs, results):
                if name:
                    env[name] = value
            for v in node.inputs:
                if v and last_use.get(v) == step and v not in feeds:
                    env.pop(v, None)
        return {v: self._get(env, v) for v in wanted}

    def _get(self, env: dict[str, torch.Tensor], name: str) -> torch.Tensor:
        if name in env:
            return env[name]
        if name in self._slot:
            return self._tensor(name)
        raise KeyError(f"graph input {name!r} was not fed")

    def parameter_names(self) -> list[str]:
        """Initializer (or Constant output) names of the trainable weights."""
        return list(self._param_names)

    def parameter_for(self, init_name: str) -> torch.nn.Parameter:
        """The Parameter holding a trainable initializer."""
        kind, key = self._slot[init_name]
        if kind != "p":
            raise KeyError(f"{init_name!r} is not trainable")
        return self.params[key]

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Initializer name -> current value of every trainable weight, in its original dtype."""
        return {name: self.parameter_for(name).detach().cpu().numpy().astype(self._dtype[name], copy=False)
                for name in self._param_names}


def apply_state_arrays(model: onnx.ModelProto, arrays: dict[str, np.ndarray]) -> onnx.ModelProto:
    """A copy of `model` whose initializers (or Constant nodes) named in `arrays` hold the new values."""
    out = copy.deepcopy(model)
    left = dict(arrays)
    for init in out.graph.initializer:
        if init.name in left:
            init.CopyFrom(numpy_helper.from_array(np.asarray(left.pop(init.name)), init.name))
    for node in out.graph.node:
        if node.op_type == "Constant" and node.output[0] in left:
            value = numpy_helper.from_array(np.asarray(left.pop(node.output[0])))
            del node.attribute[:]
            node.attribute.append(onnx.helper.make_attribute("value", value))
    if left:
        raise KeyError(f"no initializer or Constant named {sorted(left)[:5]}")
    return out
