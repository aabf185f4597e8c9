"""The pruned model's activations at each refit consumer's input, one consumer after another,
each run starting where the previous one stopped.

The refit changes one consumer's weights at a time, in graph order, and then needs the next
consumer's actual input. Running the model from its inputs up to every consumer costs one
pass per consumer over the whole prefix: on a detector with 80 consumers that is 40 full
passes per sample, and it was most of a `--target-macs` run's time.

A tensor produced before a consumer in graph order does not depend on that consumer's
weights, nor on any consumer after it. So each run also returns the *cut* at the next
consumer: every tensor produced before it (or fed to the graph) that a node at or after it
reads. The next run starts from that cut and executes only the nodes in between, the
refit consumer among them. Every node runs about once per sample in all.

The cut is held for every calibration batch, so its size is bounded by ``CUT_BYTES``: past
it, the next run starts from the graph's inputs again, as before. Graphs whose nodes carry
subgraphs (If, Loop, Scan read outer values implicitly) always start from the inputs.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir

from onnxcompress.runtime import Session

#: bytes of cut tensors held over all batches; past it a run starts from the graph inputs
CUT_BYTES = 768 << 20


class PrefixRunner:
    """``inputs(node)``: per batch, the value of ``node.inputs[0]`` in the current ``model``."""

    def __init__(self, model: ir.Model, batches: list[dict[str, np.ndarray]]) -> None:
        self.model = model
        self.batches = batches
        #: the consumer node the cached cut was taken at, and the cut per batch
        self._at: ir.Node | None = None
        self._cut: list[dict[str, np.ndarray]] = []
        self.enabled = not any(
            isinstance(a.value, (ir.Graph, list)) and a.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS)
            for n in model.graph for a in n.attributes.values()
        )
        #: runs that started from the cut (the rest started from the graph inputs)
        self.resumed = 0

    def inputs(self, node: ir.Node) -> list[np.ndarray]:
        order = list(self.model.graph)
        pos = {id(n): i for i, n in enumerate(order)}
        end = pos[id(node)]
        start = pos.get(id(self._at), -1) if self._at is not None else -1
        resume = self.enabled and bool(self._cut) and 0 <= start <= end
        x_name = node.inputs[0].name
        live = _live_at(self.model, order, end) if self.enabled else []
        want = [n for n in dict.fromkeys([x_name, *live])]
        if resume:
            self.resumed += 1
            available = set(self._cut[0])
            nodes = _needed(order[start:end], want, available)
            outs = self._run(nodes, sorted(available), want, self._cut)
        else:
            feeds_names = [v.name for v in self.model.graph.inputs]
            nodes = _needed(order[:end], want, set(feeds_names))
            outs = self._run(nodes, feeds_names, want, self.batches)
        xs = [o[x_name] for o in outs]
        size = sum(a.nbytes for o in outs for n, a in o.items() if n in live)
        if self.enabled and live and size <= CUT_BYTES and all(isinstance(o.get(n), np.ndarray) for o in outs for n in live):
            self._at, self._cut = node, [{n: o[n] for n in live} for o in outs]
        else:
            self._at, self._cut = None, []
        return xs

    def _run(self, nodes: list[ir.Node], inputs: list[str], want: list[str],
             feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        """Each batch's ``want`` values: taken straight from its feeds, or computed by ``nodes``."""
        computed = [n for n in want if n not in inputs]
        session = Session(_submodel(self.model, nodes, inputs, computed, feeds[0])) if computed else None
        outs = []
        for f in feeds:
            got = session.run(f, computed) if session is not None else {}
            outs.append({n: (got[n] if n in got else f[n]) for n in want})
        return outs


def _live_at(model: ir.Model, order: list[ir.Node], end: int) -> list[str]:
    """Names of the tensors a node at index >= ``end`` reads that were produced before it
    (by a node, or fed as a graph input): everything a run from there needs."""
    before = {v.name for v in model.graph.inputs}
    for n in order[:end]:
        before.update(o.name for o in n.outputs if o.name)
    live: dict[str, None] = {}
    for n in order[end:]:
        for v in n.inputs:
            if v is not None and v.name in before and not v.is_initializer():
                live[v.name] = None
    return list(live)


def _needed(nodes: list[ir.Node], want: list[str], available: set[str]) -> list[ir.Node]:
    """The nodes of ``nodes`` (in order) that ``want`` depends on, stopping at ``available``."""
    producer = {o.name: n for n in nodes for o in n.outputs if o.name}
    keep: set[int] = set()
    stack = [w for w in want if w not in available]
    while stack:
        name = stack.pop()
        n = producer.get(name)
        if n is None or id(n) in keep:
            continue
        keep.add(id(n))
        stack.extend(v.name for v in n.inputs if v is not None and v.name and v.name not in available)
    return [n for n in nodes if id(n) in keep]


def _submodel(model: ir.Model, nodes: list[ir.Node], inputs: list[str], outputs: list[str],
              sample: dict[str, np.ndarray]) -> onnx.ModelProto:
    """A model of ``nodes`` alone: ``inputs`` (typed from ``sample``) in, ``outputs`` out."""
    proto = ir.to_proto(model)
    by_name = {id(n): i for i, n in enumerate(model.graph)}
    picked = [proto.graph.node[by_name[id(n)]] for n in nodes]
    read = {name for p in picked for name in p.input}
    inits = [t for t in proto.graph.initializer if t.name in read]
    graph_inputs = {v.name: v for v in proto.graph.input}
    ins = []
    for name in inputs:
        if name not in read:
            continue
        if name in graph_inputs:
            ins.append(graph_inputs[name])
        else:
            arr = np.asarray(sample[name])
            ins.append(onnx.helper.make_tensor_value_info(
                name, onnx.helper.np_dtype_to_tensor_dtype(arr.dtype), [None] * arr.ndim))
    graph = onnx.helper.make_graph(picked, "prefix", ins, [onnx.ValueInfoProto(name=n) for n in outputs], inits)
    out = onnx.helper.make_model(graph, opset_imports=list(proto.opset_import), ir_version=proto.ir_version)
    out.functions.extend(proto.functions)
    return out
