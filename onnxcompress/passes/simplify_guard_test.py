"""The simplify guard: how many graphs it runs, and what it rejects."""

from __future__ import annotations

import onnx
import onnx_ir as ir
import onnxsim
import pytest

from onnxcompress.passes import simplify_guard
from onnxcompress.passes.simplify import SimplifyPass
from onnxcompress.passes.simplify_guard import annotations_inferred
from onnxcompress.passes.simplify_test import _dynamic_model


class _Broken:
    def run(self, *args, **kwargs):
        raise RuntimeError("a frozen shape")


class _Opened:
    """Wraps ``open_session``: records which graph each session holds, and can break either."""

    def __init__(self, monkeypatch, original: ir.Model, fail_simplified: bool = False, fail_original: bool = False):
        self.original, self.opened = original, []
        self.fail = {"simplified": fail_simplified, "original": fail_original}
        real = simplify_guard.open_session

        def opener(model, **kw):
            which = "original" if model is self.original else "simplified"
            self.opened.append(which)
            return _Broken() if self.fail[which] else real(model, **kw)

        monkeypatch.setattr(simplify_guard, "open_session", opener)


def _annotating(frozen: bool):
    """A stand-in for onnxsim that changes no node: it annotates every value as ONNX's shape
    inference does, or with the Conv output's batch dim frozen at 1."""

    def simplify(m, **kw):
        out = onnx.shape_inference.infer_shapes(m, data_prop=True)
        if frozen:
            vi = next(v for v in out.graph.value_info if v.name == "c")
            vi.type.tensor_type.shape.dim[0].dim_value = 1
        return out, True

    return simplify


def _simplified(monkeypatch, frozen: bool | None, **fail) -> tuple[SimplifyPass, list[str], int]:
    """The pass run on the dynamic model, onnxsim replaced by ``_annotating(frozen)`` (None: the
    real one); returns it, the sessions the guard opened, and the node count before."""
    if frozen is not None:
        monkeypatch.setattr(onnxsim, "simplify", _annotating(frozen))
    model = ir.serde.deserialize_model(_dynamic_model())
    n = len(model.graph)
    opened = _Opened(monkeypatch, model, **fail)
    p = SimplifyPass({"x": (1, 3, 16, 16)})
    p(model)
    return p, opened.opened, n if len(model.graph) == n else -1


def test_inferred_annotations_need_no_run(monkeypatch):
    """onnxsim changed no node and its annotations are ONNX's own inference: no session at all."""
    p, opened, _ = _simplified(monkeypatch, frozen=False)
    assert p.report["status"] == "simplified" and p.report["structure_changed"] is False
    assert p.report["checked_by"] == "shape inference" and p.report["checked_shapes"] == []
    assert opened == []


def test_a_frozen_annotation_runs_only_the_simplified_graph(monkeypatch):
    """onnxsim changed no node but froze a dim: one session, at the doubled sizes."""
    p, opened, _ = _simplified(monkeypatch, frozen=True)
    assert p.report["structure_changed"] is False and p.report["checked_by"] == "onnxruntime"
    assert opened == ["simplified"]
    assert p.report["checked_shapes"] == [{"x": [2, 3, 32, 32]}]


@pytest.mark.parametrize("original_fails", [False, True])
def test_an_unchanged_structure_that_fails_is_judged_by_the_original(monkeypatch, original_fails):
    """The simplified graph fails at the doubled sizes: rejected (the graph kept as it was), unless
    the original fails there too."""
    p, opened, kept = _simplified(monkeypatch, frozen=True, fail_simplified=True, fail_original=original_fails)
    assert opened == ["simplified", "original"]
    if original_fails:
        assert p.report["status"] == "simplified" and p.report["checked_shapes"] == []
    else:
        assert p.report["status"] == "failed" and "[2, 3, 32, 32]" in p.report["reason"].replace("(", "[").replace(")", "]")
        assert kept > 0


def test_a_changed_structure_runs_both_graphs_at_both_sizes(monkeypatch):
    p, opened, _ = _simplified(monkeypatch, frozen=None)
    assert p.report["structure_changed"] is True and p.report["checked_by"] == "onnxruntime"
    assert sorted(opened) == ["original", "simplified"]
    assert p.report["checked_shapes"] == [{"x": [1, 3, 16, 16]}, {"x": [2, 3, 32, 32]}]


@pytest.mark.parametrize("frozen", [False, True])
def test_annotations_inferred_compares_every_annotation(frozen):
    before = _dynamic_model()
    after, _ = _annotating(frozen)(before)
    assert len(after.graph.value_info) > 5
    assert annotations_inferred(before, after) is not frozen
    del after.graph.value_info[1:]  # fewer annotations than inference makes: still all inferred ones
    assert annotations_inferred(before, after) is not frozen
