"""onnxsim simplification, guarded so it can only help, on the graph without its weights.

onnxsim folds constants and fuses ops well, but it can freeze symbolic dims, fail its
own checks, raise, or choke on custom-domain ops and models over 2 GB. So this pass
never overwrites input shapes, skips the models it cannot handle, restores the
input/output dims the model declared if any came back frozen, and then checks the
result itself with onnxruntime: at the analysis shapes, and again with every
symbolic dim doubled, against the unsimplified graph. Any failure keeps the
unsimplified graph, with the reason in the report and a warning; it never aborts.

By the time it runs, the fold passes have done the rewrites that need the weights'
values, so onnxsim gets the structure only: every big initializer is declared as a
graph input (type and shape, no data), which onnxsim leaves alone, and the tensors are
put back under the simplified graph afterwards, untouched. This costs no copy of the
weights, and works past 2 GB. Where onnxsim could still use the values, or needs a
weight to be a constant to fuse (a constant subgraph over a weight, a BatchNormalization
or a constant Mul/Add next to a layer, MatMul+bias, sibling MatMuls, equal weights;
``--no-fold`` leaves many of those), it gets the whole model, as before, when that
fits in one protobuf; the report says which and why (``weights``).
"""

from __future__ import annotations

import logging
import sys
from types import ModuleType

import numpy as np
import onnx
import onnx_ir as ir

from onnxcompress._ir_utils import is_std
from onnxcompress.analysis.shapes import Shape, weightless_proto
from onnxcompress.io import tensor_bytes
from onnxcompress.passes.base import ReportingPass
from onnxcompress.passes.simplify_guard import SimplifyFailed, annotations_inferred, guard, value_dims

logger = logging.getLogger(__name__)


def _one_line(exc: BaseException) -> str:
    """The first line of ``exc``, and the next too where the first ends in a colon (the onnx
    checker breaks its message before the node it names); a trace below is left out."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    text = lines[0] + (" " + lines[1] if lines[0].endswith(":") and len(lines) > 1 else "")
    return text[:300]

#: Protobuf cannot hold a model past 2 GiB; onnxsim works on one protobuf.
MAX_BYTES = 1_900_000_000
_OK_DOMAINS = ("", "ai.onnx", "ai.onnx.ml")
#: Initializers above this many elements are declared to onnxsim, not carried (the
#: small ones stay: shape arithmetic and folding need their values).
WEIGHT_ELEMENTS = 4096
#: Where a weight is only read: onnxsim's passes do nothing there that depends on its values.
_READ_SLOTS = {
    "Conv": {1, 2}, "ConvTranspose": {1, 2}, "Gemm": {1, 2}, "MatMul": {0, 1}, "Gather": {0}, "PRelu": {1},
    "BatchNormalization": {1, 2, 3, 4}, "InstanceNormalization": {1, 2}, "LayerNormalization": {1, 2},
    "GroupNormalization": {1, 2},
}
#: Ops onnxsim fuses into a layer's weights when their other operand is a constant.
_FUSABLE = {"BatchNormalization", "Mul", "Add", "Sub", "Div"}
#: onnxsim rewrites left out where they undo a fusion of onnxruntime's that is worth more, and when
#: (bench/SIMPLIFY_SPEED.md). ``fuse_preceding_mul_into_conv`` folds the ``* 0.5`` that ends an
#: exported GELU, ``x * 0.5 * (1 + erf(x / sqrt 2))``, into the next Conv's weights: onnxruntime then
#: no longer fuses the GELU and runs Div, Erf, Add and Mul as four kernels, each out of its NCHWc
#: layout. On PP-OCRv6 rec's original, onnxsim made the model 0.91-0.95x as fast with that rewrite
#: and 1.03-1.09x without it (paired, CPU EP; three runs); PP-OCRv4 rec, ddddocr, the direction
#: classifiers and both detectors moved within noise either way.
_SKIPPED_WHERE = {"fuse_preceding_mul_into_conv": "Erf"}
_NONDETERMINISTIC = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}


class SimplifyPass(ReportingPass):
    """Run onnxsim on the model; keep the result only when it checks out."""

    name = "simplify"

    def __init__(self, input_shapes: dict[str, Shape] | None = None) -> None:
        super().__init__()
        self.input_shapes = dict(input_shapes or {})

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        nodes_before = len(model.graph)
        self.report = {"status": "skipped", "nodes_before": nodes_before, "nodes_after": nodes_before}
        reason = _why_skip(model)
        weights = _weights(model)
        needs = _needs_values(model, set(weights)) if weights and not reason else None
        if needs and tensor_bytes(model) > MAX_BYTES:
            reason = f"model over 2 GB, and onnxsim would need its weights ({needs})"
        if reason:
            self.report["reason"] = reason
            self.warnings.append(f"simplify skipped: {reason}")
            logger.info("simplify skipped: %s", reason)
            return ir.passes.PassResult(model, False)
        try:
            if needs:
                proto, declared = _proto_with_data(model), set()
            else:
                proto, declared = weightless_proto(model, WEIGHT_ELEMENTS, keep_value_info=True)
            simplified, restored = self._simplify(proto, declared)
            try:
                onnx.checker.check_model(simplified)
            except Exception as exc:  # noqa: BLE001
                raise SimplifyFailed(f"the onnx checker rejects the simplified model: {exc}") from exc
            same = _same_structure(proto, simplified)
            new = ir.serde.deserialize_model(simplified)
            _put_back(new, model, declared)
            # onnxsim changed nothing but annotations, and ONNX's own inference gives the same ones:
            # nothing can differ or be frozen, so the guard need not run either graph.
            inferred = same and not needs and annotations_inferred(proto, simplified)
            checks = [] if inferred else guard(proto, declared, model, new, self.input_shapes, same_structure=same)
        except Exception as exc:  # noqa: BLE001 - any onnxsim failure keeps the unsimplified graph
            msg = _one_line(exc)
            self.report.update(status="failed", reason=msg)
            # The summary prints the report's warnings; a held log line would print it twice.
            self.warnings.append(f"simplify failed, kept the unsimplified graph: {msg}")
            logger.info("simplify failed, kept the unsimplified graph: %s", msg)
            return ir.passes.PassResult(model, False)
        _transplant(new, model)
        self.report.update(
            status="simplified", nodes_after=len(model.graph), dims_restored=restored, checked_shapes=checks,
            weights="carried" if needs else "declared", structure_changed=not same,
            rewrites_skipped=skipped_rewrites(proto),
            checked_by="shape inference" if inferred else ("onnxruntime" if checks else "nothing to run"),
        )
        if needs:
            self.report["weights_carried_because"] = needs
        self.report.pop("reason", None)
        logger.info("simplified: %d -> %d nodes", nodes_before, len(model.graph))
        return ir.passes.PassResult(model, True)

    def _simplify(self, proto: onnx.ModelProto, declared: set[str]) -> tuple[onnx.ModelProto, list[str]]:
        """onnxsim without touching input shapes; frozen interface dims are put back."""
        onnxsim = load_onnxsim()
        # check_n=0: onnxsim's own check prints to stdout; ``_check`` does it instead.
        out, ok = onnxsim.simplify(proto, check_n=0, certify=False, skipped_optimizers=skipped_rewrites(proto))
        if not ok:
            raise SimplifyFailed("onnxsim reported a failed check")
        for key in [p.key for p in out.metadata_props if p.key.startswith("onnxsim.")]:
            _drop_metadata(out, key)
        restored = _restore_interface(proto, out, declared)
        return out, restored

def skipped_rewrites(proto: onnx.ModelProto) -> list[str]:
    """The onnxsim rewrites this graph must not get (``_SKIPPED_WHERE``): those whose op is in it."""
    ops = {n.op_type for n in proto.graph.node if n.domain in ("", "ai.onnx")}
    return sorted(rewrite for rewrite, op in _SKIPPED_WHERE.items() if op in ops)


def load_onnxsim() -> ModuleType:
    """The module with onnxsim's ``simplify``: the package itself when already imported, else its
    ``onnx_simplifier`` module alone, imported without the package's ``__init__`` (which imports
    every onnxsim tool, 0.2-0.4 s per run for the one function used here) and with ``import torch``
    failing as if torch were absent (which onnxsim supports: when installed, torch costs 3 to 5 s).
    Torch and the whole package import normally afterwards. Failing that, the ordinary import."""
    loaded = sys.modules.get("onnxsim")
    if loaded is not None and hasattr(loaded, "simplify"):
        return loaded
    blocked = "torch" not in sys.modules
    if blocked:
        sys.modules["torch"] = None  # type: ignore[assignment]  # makes ``import torch`` raise ImportError
    try:
        return _simplifier_alone()
    except Exception:  # noqa: BLE001 - an onnxsim laid out otherwise, or one that needs torch
        for name in [m for m in sys.modules if m == "onnxsim" or m.startswith("onnxsim.")]:
            del sys.modules[name]
    finally:
        if blocked and sys.modules.get("torch", 0) is None:
            del sys.modules["torch"]
    import onnxsim

    return onnxsim


def _simplifier_alone() -> ModuleType:
    """``onnxsim.onnx_simplifier`` under a package whose ``__init__`` was not run. The stand-in
    package leaves ``sys.modules`` afterwards, so a later ``import onnxsim`` runs the real one
    (reusing the submodules loaded here)."""
    import importlib
    import importlib.util

    spec = importlib.util.find_spec("onnxsim")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("onnxsim is not installed")
    package = importlib.util.module_from_spec(spec)
    sys.modules["onnxsim"] = package
    try:
        module = importlib.import_module("onnxsim.onnx_simplifier")
    finally:
        if sys.modules.get("onnxsim") is package:
            del sys.modules["onnxsim"]
    return module


def _why_skip(model: ir.Model) -> str | None:
    try:
        load_onnxsim()
    except ImportError:
        return "onnxsim is not installed"
    custom = sorted({n.domain for n in model.graph.all_nodes() if n.domain not in _OK_DOMAINS})
    if custom:
        return f"custom-domain ops ({', '.join(custom)}) that onnxsim cannot evaluate"
    return None


def _weights(model: ir.Model) -> dict[str, ir.Value]:
    """The initializers ``weightless_proto`` declares instead of carrying."""
    return {
        n: v for n, v in model.graph.initializers.items() if v.const_value is not None and v.const_value.size > WEIGHT_ELEMENTS
    }


def _needs_values(model: ir.Model, weights: set[str]) -> str | None:
    """Why onnxsim would need the values of ``weights`` (None: the structure is enough).

    onnxsim reads a weight's values, or at least needs it to be a constant, where it folds
    a node whose inputs are all constants, fuses a BatchNormalization or a constant
    Mul/Add/Sub/Div into the layer before or after it (``fuse_bn_into_conv``,
    ``fuse_mul_into_conv``, ``fuse_preceding_mul_into_conv``, the MatMul+Add -> Gemm
    rewrites), fuses sibling MatMuls (``fuse_qkv``, attention), merges equal
    initializers, or rewrites any other op on a constant. So anything but a plain read
    of a weight, by a layer with no constant neighbour to fuse, counts: the rule errs
    towards carrying the weights.
    """
    graph = model.graph
    const = set(graph.initializers)
    for node in graph:
        if node.op_type == "Constant" and is_std(node):
            const.update(o.name for o in node.outputs)
    readers: dict[ir.Node, str] = {}
    for name in weights:
        for node, idx in graph.initializers[name].uses():
            if node.graph is not graph:
                return f"weight {name!r} is read inside a subgraph"
            if not is_std(node) or idx not in _READ_SLOTS.get(node.op_type, ()):
                return f"weight {name!r} feeds {node.op_type} input {idx}"
            readers[node] = name
    derived = set(weights)
    siblings: dict[str, int] = {}
    for node in graph:
        ins = [v for v in node.inputs if v is not None]
        if ins and all(v.name in const for v in ins) and node.op_type not in _NONDETERMINISTIC:
            const.update(o.name for o in node.outputs)
            if any(v.name in derived for v in ins):
                return f"{node.op_type} {node.name!r} computes on constant weights"
        if node not in readers:
            continue
        neighbours = [use for out in node.outputs for use, _ in out.uses()]
        data = node.inputs[0] if node.inputs and node.inputs[0] is not None and node.inputs[0].name not in const else None
        if data is not None and data.producer() is not None:
            neighbours.append(data.producer())
        for other in neighbours:
            if other.op_type in _FUSABLE and any(v is not None and v.name in const for v in other.inputs):
                return f"{other.op_type} {other.name!r} could be fused into {node.op_type} {node.name!r}"
        if node.op_type == "MatMul" and data is not None and node.inputs[1] is not None and node.inputs[1].name in derived:
            siblings[data.name] = siblings.get(data.name, 0) + 1
            if siblings[data.name] > 1:
                return f"MatMuls with constant weights share their input {data.name!r}"
    return _duplicates(graph, weights)


def _duplicates(graph: ir.Graph, weights: set[str]) -> str | None:
    """Two weights with equal type, shape and values (a few elements compared first, all on a match)."""
    groups: dict[tuple, list[str]] = {}
    for name in weights:
        t = graph.initializers[name].const_value
        groups.setdefault((t.dtype, tuple(t.shape.numpy())), []).append(name)
    for names in groups.values():
        if len(names) < 2:
            continue
        seen: dict[bytes, list[str]] = {}
        for name in names:
            flat = graph.initializers[name].const_value.numpy().reshape(-1)
            key = flat[:16].tobytes() + flat[-16:].tobytes()
            for other in seen.get(key, []):
                if np.array_equal(flat, graph.initializers[other].const_value.numpy().reshape(-1)):
                    return f"weights {other!r} and {name!r} are equal"
            seen.setdefault(key, []).append(name)
    return None


def _proto_with_data(model: ir.Model) -> onnx.ModelProto:
    """``model`` as one self-contained proto: external tensors are read in.

    onnxsim and a session built from bytes cannot resolve external data paths.
    """
    proto = ir.to_proto(model)
    external = {
        name: v.const_value
        for name, v in model.graph.initializers.items()
        if isinstance(v.const_value, ir.ExternalTensor)
    }
    if external:
        for t in proto.graph.initializer:
            if t.name in external:
                t.CopyFrom(onnx.numpy_helper.from_array(external[t.name].numpy(), t.name))
    return proto


def _same_structure(before: onnx.ModelProto, after: onnx.ModelProto) -> bool:
    """The same nodes, in the same order, and the same initializers: onnxsim only annotated shapes."""
    def node_key(n: onnx.NodeProto) -> tuple:
        return n.op_type, n.domain, tuple(n.input), tuple(n.output), tuple(a.SerializeToString() for a in n.attribute)

    if len(before.graph.node) != len(after.graph.node) or len(before.graph.initializer) != len(after.graph.initializer):
        return False
    if any(node_key(a) != node_key(b) for a, b in zip(before.graph.node, after.graph.node)):
        return False
    inits = {t.name: t for t in before.graph.initializer}
    return all(t.name in inits and inits[t.name] == t for t in after.graph.initializer) and not before.functions


def _drop_metadata(proto: onnx.ModelProto, key: str) -> None:
    for i, p in enumerate(proto.metadata_props):
        if p.key == key:
            del proto.metadata_props[i]
            return


def _restore_interface(before: onnx.ModelProto, after: onnx.ModelProto, declared: set[str] = frozenset()) -> list[str]:
    """Put back the declared input/output types where onnxsim changed them; name what was fixed.

    ``declared`` are the weights given to onnxsim as inputs: they are not the model's inputs.
    """
    def real_inputs(p: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
        inits = {t.name for t in p.graph.initializer} | declared
        return [i for i in p.graph.input if i.name not in inits]

    old = {vi.name: vi for vi in real_inputs(before)}
    old_out = [vi.name for vi in before.graph.output]
    if [vi.name for vi in real_inputs(after)] != list(old) or [vi.name for vi in after.graph.output] != old_out:
        raise SimplifyFailed("onnxsim changed the model's inputs or outputs")
    old.update({vi.name: vi for vi in before.graph.output})
    restored = []
    for vi in list(real_inputs(after)) + list(after.graph.output):
        orig = old[vi.name]
        if value_dims(vi) != value_dims(orig) or vi.type.tensor_type.elem_type != orig.type.tensor_type.elem_type:
            restored.append(f"{vi.name}: {value_dims(vi)} -> {value_dims(orig)}")
            vi.type.CopyFrom(orig.type)
    if restored:
        # Intermediate shapes were inferred from the frozen dims; drop them all.
        del after.graph.value_info[:]
        logger.info("restored symbolic dims onnxsim froze: %s", restored)
    return restored


def _put_back(new: ir.Model, model: ir.Model, declared: set[str]) -> None:
    """Make the weights ``new`` took as inputs its initializers again, holding ``model``'s tensors.

    As onnxsim does with the initializers it carries, a weight that was also a graph
    input (old opsets list them) stops being one, and one left unused is dropped.
    """
    if not declared:
        return
    graph = new.graph
    for v in [v for v in graph.inputs if v.name in declared]:
        graph.inputs.remove(v)
        if not v.uses() and not v.is_graph_output():
            continue
        v.const_value = model.graph.initializers[v.name].const_value
        graph.register_initializer(v)
    # The model's order, as onnxsim keeps it when it carries them (it sets the data file's layout).
    inits = graph.initializers
    order = [n for n in model.graph.initializers if n in inits] + [n for n in inits if n not in model.graph.initializers]
    values = [inits[n] for n in order]
    inits.clear()
    for v in values:
        graph.register_initializer(v)


def _transplant(src: ir.Model, dst: ir.Model) -> None:
    """Make ``dst`` hold ``src``'s graph: the pass is in place, so the model object stays."""
    dst.graph = src.graph
    dst.ir_version = src.ir_version
    dst.functions.clear()
    dst.functions.update(src.functions)
    dst.metadata_props.clear()
    dst.metadata_props.update(src.metadata_props)
