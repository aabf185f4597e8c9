"""The engine acts on what a rule returns: Exact, Lossy(reason) or Blocked(reason).

A toy op in a test domain, registered for the test only, returns each outcome; the engine
must keep, track or record its channels accordingly. Also: the consumer hooks are where the
engines learn which ops read channels through a weight.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from onnxcompress.channels import rules
from onnxcompress.channels.protocols import Blocked, Exact, Lossy
from onnxcompress.channels.rules import Entry, Rule, consumer_of, rule_of
from onnxcompress.channels.rules._testing import Case, Net
from onnxcompress.channels.state import ChannelInfo

DOMAIN = "test.outcome"
LOSSY_REASON = "toy statistics over the kept channels"


class _Toy(Rule):
    """Per channel on axis 1, like an activation, with the outcome under test."""

    def __init__(self, outcome) -> None:
        self.outcome = outcome

    def propagate(self, node: ir.Node, ctx):
        info = ctx.get(node.inputs[0])
        ctx.set(node.outputs[0], ChannelInfo(info.axes, info.ids))
        return self.outcome


def _case(monkeypatch, outcome, allow_lossy: bool) -> Case:
    monkeypatch.setitem(rules._ENTRIES, (DOMAIN, "Toy"), [Entry(DOMAIN, "Toy", 1, None, _Toy(outcome))])
    n = Net(17)
    n.extra_opsets[DOMAIN] = 1
    t = n.op("Toy", [n.conv(n.input((1, 3, 4, 4)), 3, 8, name="c1")], name="toy", domain=DOMAIN)
    y = n.conv(t, 8, 2, name="c2")
    proto = n.proto([y], check=False)
    case = Case.of(proto)
    if allow_lossy:
        from onnxcompress.channels.analysis import analyse_channels

        case.analysis = analyse_channels(case.model, case.shapes, allow_lossy=True)
    return case


def test_exact_and_none_leave_the_channels_free(monkeypatch):
    for outcome in (None, Exact()):
        c = _case(monkeypatch, outcome, allow_lossy=False)
        assert c.blocks_at("toy") == [] and c.analysis.lossy == []
        assert not c.analysis.fixed[c.out_ids("c1")].any()


def test_lossy_without_calibration_blocks_with_the_rule_s_reason(monkeypatch):
    c = _case(monkeypatch, Lossy(LOSSY_REASON), allow_lossy=False)
    assert c.blocks_at("toy") == [("Toy", f"{LOSSY_REASON} (lossy: needs calibration data, --calib)")]
    assert c.analysis.fixed[c.out_ids("c1")].all()
    assert c.analysis.lossy == []


def test_lossy_with_calibration_is_tracked_and_recorded(monkeypatch):
    from onnxcompress.passes.prune import lossy_removals

    c = _case(monkeypatch, Lossy(LOSSY_REASON), allow_lossy=True)
    src = c.out_ids("c1")
    assert not c.analysis.fixed[src].any() and c.blocks_at("toy") == []
    [rec] = c.analysis.lossy
    assert (rec.node, rec.op, rec.reason) == ("toy", "Toy", LOSSY_REASON)
    assert sorted(rec.ids.tolist()) == sorted(src.tolist())
    removed = np.zeros(len(c.analysis.fixed), bool)
    assert lossy_removals(c.analysis, removed) == []  # nothing removed there: not reported
    removed[src[:3]] = True
    assert lossy_removals(c.analysis, removed) == [{"node": "toy", "op": "Toy", "reason": LOSSY_REASON}]


def test_a_returned_blocked_is_recorded_by_the_engine(monkeypatch):
    c = _case(monkeypatch, Blocked("toy mixes channels"), allow_lossy=False)
    assert c.blocks_at("toy") == [("Toy", "toy mixes channels")]
    assert c.analysis.fixed[c.out_ids("c1")].all()


def test_an_unknown_outcome_is_a_rule_bug(monkeypatch):
    with pytest.raises(TypeError, match="expected Exact, Lossy, Blocked or None"):
        _case(monkeypatch, "tracked", allow_lossy=False)


@pytest.mark.parametrize(("op", "channels_first", "refit"), [
    ("Conv", True, True), ("ConvTranspose", True, False), ("Gemm", False, True), ("MatMul", False, True)])
def test_consumers_are_the_ops_whose_rule_has_consumer_hooks(op, channels_first, refit):
    node = ir.Node("", op, [ir.Value(name="x"), ir.Value(name="w", shape=ir.Shape([4, 2, 3, 3]))])
    hooks = consumer_of(node)
    assert hooks is not None and hooks.channels_first is channels_first
    assert (hooks.refit_reason(node) is None) is refit


@pytest.mark.parametrize("op", ["Relu", "Add", "BatchNormalization", "Concat", "LRN"])
def test_other_ops_have_no_consumer_hooks(op):
    node = ir.Node("", op, [ir.Value(name="x")])
    assert rule_of(node) is not None and consumer_of(node) is None
