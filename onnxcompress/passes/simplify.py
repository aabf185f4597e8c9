"""onnxsim simplification, guarded so it can only help.

onnxsim folds constants and fuses ops well, but it can freeze symbolic dims, fail its
own checks, raise, or choke on custom-domain ops and models over 2 GB. So this pass
never overwrites input shapes, skips the models it cannot handle, restores the
input/output dims the model declared if any came back frozen, and then checks the
result itself with onnxruntime: at the analysis shapes, and again with every
symbolic dim doubled, against the unsimplified graph. Any failure keeps the
unsimplified graph, with the reason in the report and a warning; it never aborts.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnx_ir as ir

from onnxcompress.analysis.shapes import Shape
from onnxcompress.io import tensor_bytes
from onnxcompress.runtime import open_session, proto_random_feeds
from onnxcompress.passes.base import ReportingPass

logger = logging.getLogger(__name__)

#: Protobuf cannot hold a model past 2 GiB; onnxsim works on one protobuf.
MAX_BYTES = 1_900_000_000
_OK_DOMAINS = ("", "ai.onnx", "ai.onnx.ml")
_RTOL, _ATOL = 1e-3, 1e-4


class SimplifyFailed(Exception):
    """Why the simplified graph was not kept."""


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
        if reason:
            self.report["reason"] = reason
            self.warnings.append(f"simplify skipped: {reason}")
            logger.info("simplify skipped: %s", reason)
            return ir.passes.PassResult(model, False)
        try:
            proto = _proto_with_data(model)
            simplified, restored = self._simplify(proto)
            checks = self._check(proto, simplified)
            new = ir.serde.deserialize_model(simplified)
        except Exception as exc:  # noqa: BLE001 - any onnxsim failure keeps the unsimplified graph
            msg = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            self.report.update(status="failed", reason=msg)
            self.warnings.append(f"simplify failed, kept the unsimplified graph: {msg}")
            logger.warning("simplify failed, kept the unsimplified graph: %s", msg)
            return ir.passes.PassResult(model, False)
        _transplant(new, model)
        self.report.update(
            status="simplified", nodes_after=len(model.graph), dims_restored=restored, checked_shapes=checks
        )
        self.report.pop("reason", None)
        logger.info("simplified: %d -> %d nodes", nodes_before, len(model.graph))
        return ir.passes.PassResult(model, True)

    def _simplify(self, proto: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
        """onnxsim without touching input shapes; frozen interface dims are put back."""
        import onnxsim

        # check_n=0: onnxsim's own check prints to stdout; ``_check`` does it instead.
        out, ok = onnxsim.simplify(proto, check_n=0, certify=False)
        if not ok:
            raise SimplifyFailed("onnxsim reported a failed check")
        for key in [p.key for p in out.metadata_props if p.key.startswith("onnxsim.")]:
            _drop_metadata(out, key)
        restored = _restore_interface(proto, out)
        return out, restored

    def _check(self, original: onnx.ModelProto, simplified: onnx.ModelProto) -> list[dict]:
        """Checker plus onnxruntime runs at the analysis shapes and with symbolic dims doubled."""
        try:
            onnx.checker.check_model(simplified)
        except Exception as exc:  # noqa: BLE001
            raise SimplifyFailed(f"the onnx checker rejects the simplified model: {exc}") from exc
        base = _concrete_shapes(original, self.input_shapes)
        if base is None:
            raise SimplifyFailed("no concrete input shapes to check the result with")
        runs = [base]
        doubled = _doubled_shapes(original, base)
        if doubled != base:
            runs.append(doubled)
        ref_sess, new_sess = open_session(original), open_session(simplified)
        done = []
        for k, shapes in enumerate(runs):
            feeds = proto_random_feeds(original, shapes, seed=k)
            try:
                ref = ref_sess.run(None, feeds)
            except Exception:  # noqa: BLE001 - the original itself does not take these sizes
                if k == 0:
                    raise
                continue
            try:
                got = new_sess.run(None, feeds)
            except Exception as exc:  # noqa: BLE001
                raise SimplifyFailed(f"the simplified model fails at input shapes {shapes}: {exc}") from exc
            for a, b in zip(ref, got):
                a, b = np.asarray(a), np.asarray(b)
                if a.shape != b.shape:
                    raise SimplifyFailed(f"an output changed shape at {shapes}: {a.shape} -> {b.shape}")
                if np.issubdtype(a.dtype, np.floating):
                    scale = max(1.0, float(np.max(np.abs(a), initial=0.0)))
                    if not np.allclose(a, b, rtol=_RTOL, atol=_ATOL * scale):
                        raise SimplifyFailed(f"outputs differ at input shapes {shapes}")
                elif not np.array_equal(a, b):
                    raise SimplifyFailed(f"outputs differ at input shapes {shapes}")
            done.append({k2: list(v) for k2, v in shapes.items()})
        return done


def _why_skip(model: ir.Model) -> str | None:
    try:
        import onnxsim  # noqa: F401
    except ImportError:
        return "onnxsim is not installed"
    custom = sorted({n.domain for n in model.graph.all_nodes() if n.domain not in _OK_DOMAINS})
    if custom:
        return f"custom-domain ops ({', '.join(custom)}) that onnxsim cannot evaluate"
    if tensor_bytes(model) > MAX_BYTES:
        return "model over 2 GB"
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


def _drop_metadata(proto: onnx.ModelProto, key: str) -> None:
    for i, p in enumerate(proto.metadata_props):
        if p.key == key:
            del proto.metadata_props[i]
            return


def _dims(vi: onnx.ValueInfoProto) -> list | None:
    tt = vi.type.tensor_type
    if not tt.HasField("shape"):
        return None
    return [
        d.dim_param if d.HasField("dim_param") else (d.dim_value if d.HasField("dim_value") else None)
        for d in tt.shape.dim
    ]


def _restore_interface(before: onnx.ModelProto, after: onnx.ModelProto) -> list[str]:
    """Put back the declared input/output types where onnxsim changed them; name what was fixed."""
    def real_inputs(p: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
        inits = {t.name for t in p.graph.initializer}
        return [i for i in p.graph.input if i.name not in inits]

    old = {vi.name: vi for vi in real_inputs(before)}
    old_out = [vi.name for vi in before.graph.output]
    if [vi.name for vi in real_inputs(after)] != list(old) or [vi.name for vi in after.graph.output] != old_out:
        raise SimplifyFailed("onnxsim changed the model's inputs or outputs")
    old.update({vi.name: vi for vi in before.graph.output})
    restored = []
    for vi in list(real_inputs(after)) + list(after.graph.output):
        orig = old[vi.name]
        if _dims(vi) != _dims(orig) or vi.type.tensor_type.elem_type != orig.type.tensor_type.elem_type:
            restored.append(f"{vi.name}: {_dims(vi)} -> {_dims(orig)}")
            vi.type.CopyFrom(orig.type)
    if restored:
        # Intermediate shapes were inferred from the frozen dims; drop them all.
        del after.graph.value_info[:]
        logger.info("restored symbolic dims onnxsim froze: %s", restored)
    return restored


def _concrete_shapes(proto: onnx.ModelProto, given: dict[str, Shape]) -> dict[str, Shape] | None:
    inits = {t.name for t in proto.graph.initializer}
    shapes: dict[str, Shape] = {}
    for vi in proto.graph.input:
        if vi.name in inits:
            continue
        if vi.name in given:
            shapes[vi.name] = tuple(given[vi.name])
            continue
        dims = _dims(vi)
        if dims is None or any(not isinstance(d, int) for d in dims[1:]):
            return None
        shapes[vi.name] = tuple(d if isinstance(d, int) else 1 for d in dims)
    return shapes


def _doubled_shapes(proto: onnx.ModelProto, base: dict[str, Shape]) -> dict[str, Shape]:
    """``base`` with every dim the model leaves symbolic doubled, to catch frozen shapes."""
    out = {}
    for vi in proto.graph.input:
        if vi.name not in base:
            continue
        dims = _dims(vi) or []
        out[vi.name] = tuple(
            2 * b if (i >= len(dims) or not isinstance(dims[i], int) or dims[i] <= 0) else b
            for i, b in enumerate(base[vi.name])
        )
    return out


def _transplant(src: ir.Model, dst: ir.Model) -> None:
    """Make ``dst`` hold ``src``'s graph: the pass is in place, so the model object stays."""
    dst.graph = src.graph
    dst.ir_version = src.ir_version
    dst.functions.clear()
    dst.functions.update(src.functions)
    dst.metadata_props.clear()
    dst.metadata_props.update(src.metadata_props)
