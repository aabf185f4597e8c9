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
            a.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS) for n in model.graph for a in n.attributes.values()
        )
        #: runs that started from the cut (the rest started from the graph inputs)
        self.resumed = 0

    def inputs(self, node: ir.Node) -> list[np.ndarray]:
        order = list(self.model.graph)
        pos = {id(n): i for i, n in enumerate(order)}
        end = pos[id(node)]
        start = pos.get(id(self._at), -1) if self._at is not None else -1
        resume = self.enabled and bool(self._cut) and 0 <= start <= end
        proto = ir.to_proto(self.model)  # its nodes are the graph's, in the same order
        x_name = node.inputs[0].name
        live = live_at(proto.graph, end) if self.enabled else []
        want = list(dict.fromkeys([x_name, *live]))
        if resume:
            self.resumed += 1
            available = sorted(self._cut[0])
            outs = run_between(proto, start, end, available, want, self._cut)
        else:
            outs = run_between(proto, 0, end, [v.name for v in proto.graph.input], want, self.batches)
        xs = [o[x_name] for o in outs]
        size = sum(a.nbytes for o in outs for n, a in o.items() if n in live)
        if self.enabled and live and size <= CUT_BYTES and all(isinstance(o.get(n), np.ndarray) for o in outs for n in live):
            self._at, self._cut = node, [{n: o[n] for n in live} for o in outs]
        else:
            self._at, self._cut = None, []
        return xs


def has_subgraphs(graph: onnx.GraphProto) -> bool:
    """Nodes with subgraphs (If, Loop, Scan) read outer values implicitly: no cut can be taken."""
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in graph.node for a in n.attribute)


def live_at(graph: onnx.GraphProto, end: int, keep_outputs: bool = False) -> list[str]:
    """Names of the tensors a node at index >= ``end`` reads that were produced before it, by a
    node or as a graph input: everything a run from there needs. ``keep_outputs`` adds the graph
    outputs produced before it (a run from there would not compute them)."""
    consts = {t.name for t in graph.initializer}
    before = {v.name for v in graph.input} - consts
    for n in graph.node[:end]:
        before.update(o for o in n.output if o)
    live: dict[str, None] = {}
    for n in graph.node[end:]:
        for name in n.input:
            if name in before:
                live[name] = None
    if keep_outputs:
        live.update((o.name, None) for o in graph.output if o.name in before)
    return list(live)


def needed(graph: onnx.GraphProto, start: int, end: int, want: list[str], available: set[str]) -> list[int]:
    """Indices in [start, end) of the nodes that ``want`` depends on, stopping at ``available``."""
    producer = {o: i for i in range(start, end) for o in graph.node[i].output if o}
    keep: set[int] = set()
    stack = [w for w in want if w not in available]
    while stack:
        i = producer.get(stack.pop())
        if i is None or i in keep:
            continue
        keep.add(i)
        stack.extend(name for name in graph.node[i].input if name and name not in available)
    return sorted(keep)


def run_between(proto: onnx.ModelProto, start: int, end: int, inputs: list[str], want: list[str],
                feeds: list[dict[str, np.ndarray]], optimize: bool = True) -> list[dict[str, np.ndarray]]:
    """Per batch, ``want``: taken from its feeds where given, else computed by the nodes in
    [start, end) from ``inputs`` (the feeds' names)."""
    available = set(inputs)
    computed = [n for n in want if n not in available]
    session = None
    if computed:
        nodes = needed(proto.graph, start, end, computed, available)
        session = Session(submodel(proto, nodes, inputs, computed, feeds[0]), optimize=optimize)
    outs = []
    for f in feeds:
        got = session.run(f, computed) if session is not None else {}
        outs.append({n: (got[n] if n in got else f[n]) for n in want})
    return outs


def submodel(proto: onnx.ModelProto, nodes: list[int], inputs: list[str], outputs: list[str],
             sample: dict[str, np.ndarray]) -> onnx.ModelProto:
    """A model of ``proto``'s ``nodes`` alone: ``inputs`` (typed as in ``sample``) in, ``outputs`` out."""
    picked = [proto.graph.node[i] for i in nodes]
    read = {name for p in picked for name in p.input}
    inits = [t for t in proto.graph.initializer if t.name in read]
    declared = {v.name: v for v in proto.graph.input}
    ins = []
    for name in inputs:
        if name not in read:
            continue
        if name in declared:
            ins.append(declared[name])
        else:
            arr = np.asarray(sample[name])
            ins.append(onnx.helper.make_tensor_value_info(
                name, onnx.helper.np_dtype_to_tensor_dtype(arr.dtype), [None] * arr.ndim))
    graph = onnx.helper.make_graph(picked, "cut", ins, [onnx.ValueInfoProto(name=n) for n in outputs], inits)
    out = onnx.helper.make_model(graph, opset_imports=list(proto.opset_import), ir_version=proto.ir_version)
    out.functions.extend(proto.functions)
    return out
