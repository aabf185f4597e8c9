"""Shared builders and checks for the rule tests (``*_test.py`` beside each rule family).

``Net`` builds a tiny graph with static shapes (a Conv producer, the op under test, a
consumer); ``Net.analyse`` runs the channel analysis and returns a ``Case``, whose
helpers read exact element ids, roots, slots, blocks and planned widths. ``Case.check_const``
compares a rule's ``const_eval`` with onnxruntime on the zero-mode model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_ir as ir
from onnx import TensorProto, helper, numpy_helper

from onnxcompress._ir_utils import const_array
from onnxcompress.analysis.shapes import Shape, infer_static_shapes
from onnxcompress.channels.analysis import analyse_channels
from onnxcompress.channels.rules import USER_BLOCK_REASON, BlockerRule, entries
from onnxcompress.channels.state import AnalysisResult
from onnxcompress.config import CompressConfig
from onnxcompress.pruning.apply import Applier
from onnxcompress.pruning.plan import Plan, make_plan
from onnxcompress.runtime import Session

OUTPUT_REASON = "channels reach graph output"


def registered_reason(op: str) -> str:
    """The reason text of ``op``'s known-blocker entry (the earliest opset range)."""
    found = sorted((e.since, e.rule.reason) for e in entries() if e.op_type == op and isinstance(e.rule, BlockerRule))
    assert found, f"{op} has no blocker entry"
    assert found[0][1] != USER_BLOCK_REASON
    return found[0][1]


class Net:
    """A tiny ONNX graph builder: every value gets a readable name, every shape is static."""

    def __init__(self, opset: int = 17, seed: int = 0) -> None:
        self.opset = opset
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.extra_opsets: dict[str, int] = {}
        self._n = 0

    def _name(self, base: str) -> str:
        self._n += 1
        return f"{base}_{self._n}"

    def input(self, shape: Shape = (1, 3, 6, 6), name: str = "x", dtype: int = TensorProto.FLOAT) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, dtype, list(shape)))
        return name

    def const(self, arr, dtype=np.float32, name: str | None = None) -> str:
        name = name or self._name("k")
        self.inits.append(numpy_helper.from_array(np.asarray(arr, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: list[str], *, n_out: int = 1, name: str | None = None, domain: str = "", **attrs):
        """Add a node named ``name`` (default: the op type, lower case, numbered); outputs are ``name``, ``name:1``, ..."""
        name = name or self._name(op_type.lower())
        outs = [name if i == 0 else f"{name}:{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=name, domain=domain, **attrs))
        return outs[0] if n_out == 1 else outs

    def conv(self, x: str, cin: int, cout: int, *, k: int = 1, group: int = 1, bias=True, name: str | None = None,
             dims: int = 2) -> str:
        """A Conv with random weights and a mixed-sign bias (``bias`` may be an array, or False)."""
        w = self.const(self.rng.standard_normal((cout, cin // group) + (k,) * dims) * 0.4)
        ins = [x, w]
        if bias is not False:
            b = self.rng.uniform(-1.5, 1.5, cout) if bias is True else np.asarray(bias)
            ins.append(self.const(b))
        return self.op("Conv", ins, name=name, kernel_shape=[k] * dims, group=group)

    def proto(self, outputs: list[str], *, check: bool = True) -> onnx.ModelProto:
        # Checked graphs get their output types from inference; unchecked ones are float.
        elem = TensorProto.UNDEFINED if check else TensorProto.FLOAT
        outs = [helper.make_tensor_value_info(o, elem, None) for o in outputs]
        graph = helper.make_graph(self.nodes, "rule_test", self.inputs, outs, self.inits)
        opsets = [helper.make_opsetid("", self.opset)] + [helper.make_opsetid(d, v) for d, v in self.extra_opsets.items()]
        model = helper.make_model(graph, opset_imports=opsets)
        model.ir_version = min(model.ir_version, 10)
        if check:
            model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
            onnx.checker.check_model(model)
        return model

    def analyse(self, outputs: list[str], *, check: bool = True, block_ops: tuple[str, ...] = (),
                allow_lossy: bool = False, attention: str = "heads") -> Case:
        return Case.of(self.proto(outputs, check=check), block_ops=block_ops, allow_lossy=allow_lossy, attention=attention)


@dataclass
class Case:
    """A model and its channel analysis, with exact accessors by value and node name."""

    proto: onnx.ModelProto
    model: ir.Model
    shapes: dict[str, Shape]
    analysis: AnalysisResult
    #: the inexactness notes of the last ``rule_consts`` run
    notes: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, proto: onnx.ModelProto, block_ops: tuple[str, ...] = (), allow_lossy: bool = False,
           attention: str = "heads") -> Case:
        model = ir.serde.deserialize_model(proto)
        sizes = {i.name: tuple(d.dim_value for d in i.type.tensor_type.shape.dim) for i in proto.graph.input}
        shapes = infer_static_shapes(model, sizes)
        return cls(proto, model, shapes, analyse_channels(model, shapes, block_ops=block_ops, allow_lossy=allow_lossy,
                                                          attention=attention))

    # ----- lookups -----
    def value(self, name: str) -> ir.Value:
        for node in self.model.graph:
            for v in list(node.inputs) + list(node.outputs):
                if v is not None and v.name == name:
                    return v
        raise KeyError(name)

    def node(self, name: str) -> ir.Node:
        return next(n for n in self.model.graph if n.name == name)

    @property
    def roots(self) -> np.ndarray:
        return self.analysis.uf.all_roots()

    def tracked(self, name: str) -> bool:
        return self.value(name) in self.analysis.info

    def info(self, name: str):
        v = self.value(name)
        assert v in self.analysis.info, f"no channel info on {name!r} (blocks: {self.block_list()})"
        return self.analysis.info[v]

    def ids(self, name: str) -> np.ndarray:
        return self.info(name).ids

    def axes(self, name: str) -> tuple[int, ...]:
        return self.info(name).axes

    def slots(self, node: str, role: str | None = None) -> list[tuple[str, int, np.ndarray]]:
        """(tensor name, axis, ids) of every slot ``node`` registered (with ``role``)."""
        return [(s.value.name, s.axis, s.ids) for s in self.analysis.slots
                if s.node.name == node and (role is None or s.role == role)]

    def slot(self, node: str, role: str) -> tuple[str, int, np.ndarray]:
        """The one slot of ``role`` that ``node`` registered."""
        found = self.slots(node, role)
        assert len(found) == 1, f"{node}: {role} slots {found} (blocks: {self.block_list()})"
        return found[0]

    def out_ids(self, node: str) -> np.ndarray:
        return self.slot(node, "out")[2]

    def in_ids(self, node: str) -> np.ndarray:
        return self.slot(node, "in")[2]

    def block_list(self) -> list[tuple[str, str, str]]:
        return [(b.node, b.op, b.reason) for b in self.analysis.blocks]

    def blocks_at(self, node: str) -> list[tuple[str, str]]:
        return [(op, reason) for n, op, reason in self.block_list() if n == node]

    def same_atoms(self, a: np.ndarray, b: np.ndarray) -> bool:
        r = self.roots
        return np.array_equal(r[np.asarray(a)], r[np.asarray(b)])

    def assert_only_output_blocks(self) -> None:
        """Nothing blocked but the channels that reach a graph output."""
        others = [b for b in self.block_list() if not b[2].startswith(OUTPUT_REASON)]
        assert not others, others

    def assert_free(self, ids: np.ndarray) -> None:
        """Every element is prunable: not fixed, and its atoms are distinct."""
        ids = np.asarray(ids).ravel()
        assert not self.analysis.fixed[self.roots[ids]].any()
        assert not self.analysis.fixed[ids].any()
        assert len(np.unique(self.roots[ids])) == ids.size

    # ----- planning -----
    def plan(self, ratio: float = 0.5, round_to: int = 1) -> Plan:
        tensors = {s.value: const_array(s.value) for s in self.analysis.slots if s.role == "out"}
        return make_plan(self.analysis, tensors, CompressConfig(ratio=ratio, round_to=round_to, scope="local"))

    def widths(self, ratio: float = 0.5, round_to: int = 1) -> list[tuple[str, int, int]]:
        """Planned (filters, channels before, channels kept) per group, sorted; filters are node names joined by +."""
        return sorted(("+".join(g.names), len(g.atoms) * g.channels_per_atom, g.keep * g.channels_per_atom)
                      for g in self.plan(ratio, round_to).groups)

    # ----- constants -----
    def removed_mask(self, remove: dict[str, list[int]]) -> np.ndarray:
        """Removed mask over elements: the atoms of ``node``'s filters at the given positions."""
        roots = self.roots
        chosen = np.concatenate([roots[self.out_ids(n)[pos]] for n, pos in remove.items()])
        return np.isin(roots, chosen)

    def rule_consts(self, removed: np.ndarray, zero_bias: bool = False) -> dict[str, np.ndarray]:
        """Each tracked value's removed-channel constant, by running the rules' ``const_eval`` (errors raise)."""
        app = Applier(self.model, self.analysis, removed, self.shapes)
        app.zero_bias = zero_bias
        info = self.analysis.info
        for node in self.analysis.order:
            rule = self.analysis.rules.get(node)
            if rule is not None and any(o in info for o in node.outputs):
                rule.const_eval(node, app)
        self.notes[:] = app.notes
        return {v.name: c for v, c in app.consts.items()}

    def zeroed_outputs(self, removed: np.ndarray, names: list[str], zero_bias: bool = False, seed: int = 0):
        """onnxruntime's values of ``names`` in the zero-mode model (removed filters zeroed, biases too with ``zero_bias``)."""
        proto = onnx.ModelProto()
        proto.CopyFrom(self.proto)
        inits = {t.name: t for t in proto.graph.initializer}
        roles = ("out", "bias") if zero_bias else ("out",)
        for s in self.analysis.slots:
            gone = removed[s.ids]
            if s.role in roles and gone.any():
                arr = numpy_helper.to_array(inits[s.value.name]).copy()
                idx: list[slice | np.ndarray] = [slice(None)] * arr.ndim
                idx[s.axis] = np.flatnonzero(gone)
                arr[tuple(idx)] = 0
                inits[s.value.name].CopyFrom(numpy_helper.from_array(arr, s.value.name))
        rng = np.random.default_rng(seed)
        feeds = {}
        for i in proto.graph.input:
            shape = tuple(d.dim_value for d in i.type.tensor_type.shape.dim)
            feeds[i.name] = rng.standard_normal(shape).astype(np.float32)
        return Session(proto, expose=names).run(feeds, names)

    def check_const(self, remove: dict[str, list[int]], value: str, *, zero_bias: bool = False,
                    rtol: float = 1e-4, kept_nan: bool = True) -> np.ndarray:
        """The rule's constant on ``value`` equals what onnxruntime computes there in zero mode.

        Removed channels must be spatially uniform in onnxruntime, equal to the rule's value,
        and (``kept_nan``) every kept channel's constant must be NaN (unknown). Returns the
        constants of the removed channels, in channel order.
        """
        removed = self.removed_mask(remove)
        got = self.rule_consts(removed, zero_bias)[value]
        info = self.info(value)
        gone = removed[info.ids]
        assert gone.any(), "nothing removed reaches the value"
        assert got.shape == info.ids.shape
        if kept_nan:
            assert np.isnan(got[~gone]).all(), got
        ref = np.asarray(self.zeroed_outputs(removed, [value], zero_bias)[value], dtype=np.float64)
        ref = np.moveaxis(ref, info.axes, tuple(range(len(info.axes)))).reshape(info.ids.shape + (-1,))
        per = ref[gone]
        np.testing.assert_allclose(per, np.repeat(per[:, :1], per.shape[1], axis=1), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got[gone], per[:, 0], rtol=rtol, atol=1e-5)
        return got[gone]


def remove_and_zero(model: onnx.ModelProto, tmp_path, feeds: dict[str, np.ndarray], **cfg) -> dict[str, np.ndarray]:
    """Compress ``model`` in remove mode and in zero mode (``cfg``: ratio 0.5 and round_to 1
    unless given) and run both on ``feeds``: the first output of each, by mode. The written
    models stay as ``tmp_path / "remove.onnx"`` and ``tmp_path / "zero.onnx"``."""
    from onnxcompress.api import compress

    src = tmp_path / "model.onnx"
    onnx.save(model, src)
    settings = {"ratio": 0.5, "round_to": 1, **cfg}
    outs = {}
    for mode in ("remove", "zero"):
        path = compress(str(src), CompressConfig(mode=mode, **settings)).save(tmp_path / f"{mode}.onnx")
        outs[mode] = next(iter(Session(path).run(feeds).values()))
    return outs
