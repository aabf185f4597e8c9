"""Property-based tests over random conv architectures (see tests/arch_gen.py).

For every generated graph and pruning config:

- both the zero-mode and the remove-mode result pass the full ONNX checker and run in
  onnxruntime, with the input model's output shapes;
- remove mode equals zero mode wherever the README promises it (report.exactness["exact"],
  and always with exact_borders), at rtol 1e-4 / atol 1e-4 x output magnitude;
- no group grows: every layer keeps 1..channels_before channels, a pruned group keeps a
  multiple of round_to channels, MACs do not increase, nor do params (except with
  exact_borders, whose correction maps README says cost file size);
- zero mode keeps every shape (params unchanged without fold/simplify), and the widths
  in the report are the widths of the saved weights.

tests/arch_gen.py explains the architectures. A failing spec can be replayed with
``check_spec(spec, cfg)``, the printed falsifying example's two dicts.

ONNXCOMPRESS_PROPERTY_EXAMPLES sets the number of examples (default 25, CI-sized);
runs are derandomized (reproducible) unless ONNXCOMPRESS_PROPERTY_RANDOM=1.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis.control import current_build_context  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import onnxcompress as oc  # noqa: E402
from tests import arch_gen  # noqa: E402

EXAMPLES = int(os.environ.get("ONNXCOMPRESS_PROPERTY_EXAMPLES", "25"))
RANDOM = os.environ.get("ONNXCOMPRESS_PROPERTY_RANDOM") == "1"

SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not RANDOM,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


@st.composite
def configs(draw) -> dict:
    return {
        "ratio": draw(st.floats(0.0, 0.8, exclude_min=True, exclude_max=True)),
        "scope": draw(st.sampled_from(["local", "global"])),
        "round_to": draw(st.sampled_from([1, 4, 8])),
        "exact_borders": draw(st.booleans()),
        "zero_bias": draw(st.booleans()),
        "criterion": draw(st.sampled_from(["l1", "l2"])),
        "fold": draw(st.booleans()),
        # onnxsim is the slowest step; it is exercised in a quarter of the examples
        "simplify": draw(st.sampled_from([False, False, False, True])),
        "max_layer_ratio": draw(st.sampled_from([0.8, 0.5, 1.0])),
        # leaves every conv whose number ends in an even digit alone
        "exclude": draw(st.sampled_from([[], [], [r"conv_\d*[02468]$"]])),
        "prune_outputs": draw(st.sampled_from([False, False, False, True])),
        "measure_exactness": draw(st.booleans()),
    }


#: Notes for which exact_borders does NOT make remove equal zero, although the README says
#: "--exact-borders ... makes remove equal zero everywhere". The engine reports them
#: honestly (exact False); the property skips the comparison for them and the minimal
#: reproducers below are strict xfails.
KNOWN_EXACT_BORDERS_GAPS = (
    "pads removed channels' constants with its pad value",  # Pad(mode=constant) op
    "averages zero padding into removed channels' constants",  # AveragePool(count_include_pad=1, pads>0)
)


def _session_outputs(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})


def _compress(model: onnx.ModelProto, mode: str, cfg: dict):
    kw = dict(cfg)
    if mode == "zero":
        kw.pop("exact_borders")
        kw.pop("measure_exactness")
    res = oc.compress(model, oc.CompressConfig(mode=mode, **kw))
    proto = ir.to_proto(res.model)
    onnx.checker.check_model(proto, full_check=True)
    return proto, res.report


def _assert_no_growth(rep, cfg: dict, mode: str) -> None:
    for layer in rep.layers:
        assert 1 <= layer.after <= layer.before, f"{layer.name} ({layer.op}): {layer.before} -> {layer.after}"
    assert rep.after.macs <= rep.before.macs, (rep.before.macs, rep.after.macs)
    if mode == "remove" and cfg.get("exact_borders"):
        # The border correction adds a constant map per padded consumer (onnxsim folds it
        # into an initializer); README documents that the file can grow, so params may too.
        return
    assert rep.after.params <= rep.before.params, (rep.before.params, rep.after.params)


def _note(msg: str) -> None:
    try:
        current_build_context()
    except Exception:  # noqa: BLE001 - called outside hypothesis
        return
    hypothesis.note(msg)


def _assert_round_to(rep, cfg: dict) -> None:
    """Each pruned group keeps a multiple of round_to channels, never zero, never more."""
    for g in rep.passes["prune"]["group_details"]:
        assert 1 <= g["kept"] <= g["atoms"], g
        if g["kept"] < g["atoms"]:
            assert g["kept"] * g["channels_per_atom"] % cfg["round_to"] == 0, (cfg["round_to"], g)


def _assert_widths_applied(removed: onnx.ModelProto, rep) -> None:
    """The reported widths are the ones in the saved graph (when names survive: no simplify)."""
    inits = {t.name: t for t in removed.graph.initializer}
    by_name = {n.name: n for n in removed.graph.node}
    for layer in rep.layers:
        node = by_name.get(layer.name)
        if node is not None and node.op_type == "Conv" and node.input[1] in inits:
            assert inits[node.input[1]].dims[0] == layer.after, (layer, list(inits[node.input[1]].dims))


def check_spec(spec: dict, cfg: dict) -> None:
    """All properties for one architecture and config (also usable outside hypothesis)."""
    model = arch_gen.build(spec)
    x = arch_gen.input_for(model)
    ref = _session_outputs(model, x)

    zero, zrep = _compress(model, "zero", cfg)
    removed, rrep = _compress(model, "remove", cfg)
    z, r = _session_outputs(zero, x), _session_outputs(removed, x)
    assert [o.shape for o in z] == [o.shape for o in ref]
    for a, b in zip(ref, r):
        if cfg["prune_outputs"]:  # only the channel axis may shrink
            assert b.shape[0] == a.shape[0] and b.shape[2:] == a.shape[2:] and b.shape[1] <= a.shape[1]
        else:
            assert b.shape == a.shape
    for out in (z, r):
        assert all(np.isfinite(o).all() for o in out)
    _assert_no_growth(zrep, cfg, "zero")
    _assert_no_growth(rrep, cfg, "remove")
    if not cfg["fold"] and not cfg["simplify"]:
        assert zrep.after.params == zrep.before.params, "zero mode changed a shape"
    if rrep.layers:
        _assert_round_to(rrep, cfg)
    if not cfg["simplify"]:
        _assert_widths_applied(removed, rrep)
    # both modes plan the same groups and widths
    assert [(l.name, l.before, l.after) for l in zrep.layers] == [(l.name, l.before, l.after) for l in rrep.layers]

    exact = rrep.exactness.get("exact", True)
    notes = rrep.exactness.get("notes", [])
    _note(f"exactness: {rrep.exactness.get('note')}; notes: {notes}; groups: {rrep.groups}")
    if cfg["exact_borders"] and notes and all(any(k in n for k in KNOWN_EXACT_BORDERS_GAPS) for n in notes):
        return  # known gap, reported by the engine itself: see test_exact_borders_known_gaps
    if exact or cfg["exact_borders"]:
        for a, b in zip(z, r):
            if a.shape == b.shape:
                np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(a).max())))


@SETTINGS
@given(spec=arch_gen.spec_strategy(), cfg=configs())
def test_random_architectures(spec, cfg):
    check_spec(spec, cfg)


def _minimal(blocks: list[dict]) -> dict:
    """stem Conv(3->8)+BN -> blocks -> GlobalAveragePool -> Flatten -> Gemm, on (1, 3, 8, 8)."""
    return {"opset": 17, "batch": 1, "c_in": 3, "h": 8, "w": 8, "seed": 0, "stem": True, "stem_width": 8,
            "stem_act": None, "blocks": blocks, "head": {"kind": "gap_gemm"}}


_MINIMAL_CFG = dict(ratio=0.5, scope="local", round_to=1, exact_borders=True, zero_bias=False, criterion="l1",
                    fold=False, simplify=False, max_layer_ratio=0.8, exclude=[], prune_outputs=False,
                    measure_exactness=False)


@pytest.mark.parametrize("block", [
    pytest.param({"kind": "pad", "mode": 1}, id="pad_reflect"),
    pytest.param({"kind": "pad", "mode": 2}, id="pad_edge"),
    pytest.param({"kind": "avgpool", "include_pad": False}, id="avgpool_exclude_pad"),
    pytest.param({"kind": "pad", "mode": 0, "value": 0.0}, id="pad_constant_0", marks=pytest.mark.xfail(
        strict=True, reason="engine gap: exact_borders does not correct a Pad(mode=constant) op; remove != zero at the "
        "padded border (report says exact False: 'pads removed channels' constants with its pad value')")),
    pytest.param({"kind": "pad", "mode": 0, "value": 0.5}, id="pad_constant_0.5", marks=pytest.mark.xfail(
        strict=True, reason="engine gap: exact_borders does not correct a Pad(mode=constant) op")),
    pytest.param({"kind": "avgpool", "include_pad": True}, id="avgpool_count_include_pad", marks=pytest.mark.xfail(
        strict=True, reason="engine gap: exact_borders does not correct AveragePool(count_include_pad=1) with pads; "
        "report says 'averages zero padding into removed channels' constants'")),
])
def test_exact_borders_known_gaps(block):
    """Minimal reproducers: Conv+BN (8 ch) -> BLOCK -> GAP -> Gemm, ratio 0.5, exact_borders."""
    model = arch_gen.build(_minimal([block]))
    x = arch_gen.input_for(model)
    zero, _ = _compress(model, "zero", _MINIMAL_CFG)
    removed, rep = _compress(model, "remove", _MINIMAL_CFG)
    for a, b in zip(_session_outputs(zero, x), _session_outputs(removed, x)):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(a).max())))
    assert rep.exactness["exact"], rep.exactness["notes"]
