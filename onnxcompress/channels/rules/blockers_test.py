"""Known blockers: every entry blocks the channels flowing into it, with its registered reason.

Also the cheap mutation check: blocking one op per family by the user (``ONNXCOMPRESS_BLOCK_OPS``)
makes that family's test fail (``bench/rule_mutation_check.py`` does it for every op).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pytest
from onnx import TensorProto, helper

from onnxcompress.channels.rules import BLOCK_OPS_ENV, registered_ops
from onnxcompress.channels.rules._testing import Net, registered_reason

I64 = np.int64
C = 8  # channels of the producer conv; inputs are (1, 3, 4, 4), or (1, 3, 5) for 1-d convs


def _conv(n: Net, dims: int = 2, cout: int = C, k: int = 1) -> str:
    shape = (1, 3, 4, 4) if dims == 2 else (1, 3, 5)
    return n.conv(n.input(shape), 3, cout, k=k, dims=dims, name="c1")


def _identity_body(name: str, ins: list[tuple[str, int, list | None]], outs: list[tuple[str, str]]):
    """A subgraph whose outputs are Identity copies of its inputs."""
    nodes = [helper.make_node("Identity", [i], [o]) for i, o in outs]
    return helper.make_graph(
        nodes, name, [helper.make_tensor_value_info(n, t, s) for n, t, s in ins],
        [helper.make_tensor_value_info(o, *{n: (t, s) for n, t, s in ins}[i]) for i, o in outs])


def _if(n: Net) -> list[str]:
    cond = n.op("Cast", [_conv(n, cout=1, k=4)], to=TensorProto.BOOL)  # (1, 1, 1, 1): one channel
    branch = [helper.make_graph([helper.make_node("Constant", [], [f"v{b}"], value_floats=[float(b)])],
                                f"b{b}", [], [helper.make_tensor_value_info(f"v{b}", TensorProto.FLOAT, [1])]) for b in (0, 1)]
    return [n.op("If", [cond], name="op", then_branch=branch[1], else_branch=branch[0])]


def _loop(n: Net) -> list[str]:
    body = _identity_body("body", [("i", TensorProto.INT64, []), ("cond", TensorProto.BOOL, []),
                                   ("v", TensorProto.FLOAT, [1, C, 4, 4])], [("cond", "cond_out"), ("v", "v_out")])
    return [n.op("Loop", [n.const(2, I64), "", _conv(n)], name="op", body=body)]


def _scan(n: Net) -> list[str]:
    body = _identity_body("body", [("s", TensorProto.FLOAT, [C, 4, 4])], [("s", "s_out")])
    return [n.op("Scan", [_conv(n)], name="op", body=body, num_scan_inputs=1)]


def _rnn(op: str, gates: int) -> Callable[[Net], list[str]]:
    def build(n: Net) -> list[str]:
        x = _conv(n, dims=1)  # (1, C, 5) read as X [seq 1, batch C, features 5]
        w, r = n.const(np.ones((1, gates * 3, 5))), n.const(np.ones((1, gates * 3, 3)))
        return [n.op(op, [x, w, r], name="op", n_out=2, hidden_size=3)[0]]
    return build


def _one(op: str, extra: Callable[[Net], list[str]] = lambda n: [], **attrs) -> Callable[[Net], list[str]]:
    def build(n: Net) -> list[str]:
        a = _conv(n)
        return [n.op(op, [a] + extra(n), name="op", **attrs)]
    return build


def _quantized(op: str, inputs: Callable[[Net, str], list[str]], domain: str = "") -> Callable[[Net], list[str]]:
    """``op`` reading the conv's channels as uint8 (Cast keeps them per channel)."""
    def build(n: Net) -> list[str]:
        if domain:
            n.extra_opsets[domain] = 1
        q = n.op("Cast", [_conv(n)], to=TensorProto.UINT8)
        return [n.op(op, inputs(n, q), name="op", domain=domain)]
    return build


def _u8(n: Net, shape) -> str:
    return n.const(np.ones(shape), np.uint8)


def _scale(n: Net) -> str:
    return n.const(np.float32(0.1))


_QUANTIZED: dict[str, Callable[[Net], list[str]]] = {
    "ConvInteger": _quantized("ConvInteger", lambda n, q: [q, _u8(n, (2, C, 1, 1))]),
    "QLinearConv": _quantized("QLinearConv", lambda n, q: [q, _scale(n), _u8(n, ()), _u8(n, (2, C, 1, 1)), _scale(n),
                                                            _u8(n, ()), _scale(n), _u8(n, ())]),
    # the conv's (1, C, 4, 4) read as a batch of (4, 4) matrices: its channels sit on a batch axis
    "MatMulInteger": _quantized("MatMulInteger", lambda n, q: [q, _u8(n, (4, 2))]),
    "QLinearMatMul": _quantized("QLinearMatMul", lambda n, q: [q, _scale(n), _u8(n, ()), _u8(n, (4, 2)), _scale(n),
                                                                _u8(n, ()), _scale(n), _u8(n, ())]),
    "QGemm": _quantized("QGemm", lambda n, q: [q, _scale(n), _u8(n, ()), _u8(n, (4, 2)), _scale(n), _u8(n, ())],
                        "com.microsoft"),
    "DynamicQuantizeMatMul": _quantized("DynamicQuantizeMatMul", lambda n, q: [q, _u8(n, (4, 2)), _scale(n)],
                                        "com.microsoft"),
    "MatMulIntegerToFloat": _quantized("MatMulIntegerToFloat", lambda n, q: [q, _u8(n, (4, 2)), _scale(n), _scale(n)],
                                       "com.microsoft"),
    "DynamicQuantizeLSTM": _quantized("DynamicQuantizeLSTM", lambda n, q: [q, _u8(n, (1, 4, 12))], "com.microsoft"),
}

BUILD: dict[str, Callable[[Net], list[str]]] = {
    **_QUANTIZED,
    "LRN": _one("LRN", size=3),
    "MeanVarianceNormalization": _one("MeanVarianceNormalization"),
    "LpNormalization": _one("LpNormalization", axis=1),
    "Hardmax": _one("Hardmax", axis=-1),
    "DepthToSpace": _one("DepthToSpace", blocksize=2),
    "SpaceToDepth": _one("SpaceToDepth", blocksize=2),
    "GatherElements": _one("GatherElements", lambda n: [n.const(np.zeros((1, C, 4, 4)), I64)], axis=1),
    "GatherND": _one("GatherND", lambda n: [n.const([[0]], I64)]),
    "ScatterND": _one("ScatterND", lambda n: [n.const([[0]], I64), n.const(np.zeros((1, C, 4, 4))[0])]),
    "ScatterElements": _one("ScatterElements", lambda n: [n.const(np.zeros((1, 1, 1, 1)), I64), n.const(np.zeros((1, 1, 1, 1)))], axis=1),
    "Expand": _one("Expand", lambda n: [n.const([2, C, 4, 4], I64)]),
    "Tile": _one("Tile", lambda n: [n.const([1, 2, 1, 1], I64)]),
    "TopK": lambda n: [n.op("TopK", [_conv(n), n.const([2], I64)], name="op", n_out=2)[0]],
    "ArgMax": _one("ArgMax", axis=1),
    "ArgMin": _one("ArgMin", axis=1),
    "CumSum": _one("CumSum", lambda n: [n.const(1, I64)]),
    "Where": lambda n: [n.op("Where", [n.const(np.array(True), np.bool_), _conv(n), n.const(0.0)], name="op")],
    "If": _if,
    "Loop": _loop,
    "Scan": _scan,
    "NonMaxSuppression": lambda n: [n.op("NonMaxSuppression", [n.op("Transpose", [_conv(n, dims=1, cout=4)], perm=[0, 2, 1]),
                                                               n.const(np.ones((1, 1, 5)))], name="op")],
    "RoiAlign": _one("RoiAlign", lambda n: [n.const([[0, 0, 3, 3]]), n.const([0], I64)]),
    "LSTM": _rnn("LSTM", 4),
    "GRU": _rnn("GRU", 3),
    "RNN": _rnn("RNN", 1),
}
OPSET = {"MeanVarianceNormalization": 17}
#: graphs onnx's checker rejects though analysis reads them (a tensor as If's condition, a function op's body)
UNCHECKED = {"If", "Loop", "MeanVarianceNormalization", *_QUANTIZED}


def check_blocker(op: str) -> None:
    n = Net(OPSET.get(op, 21))
    outputs = BUILD[op](n)
    c = n.analyse(outputs, check=op not in UNCHECKED)
    assert set(c.blocks_at("op")) == {(op, registered_reason(op))}, c.block_list()
    src = c.out_ids("c1")
    assert c.analysis.fixed[src].all()  # the producer keeps every filter
    assert not any(c.tracked(o) for o in outputs)
    assert c.widths() == []


@pytest.mark.parametrize("op", sorted(BUILD))
def test_blocker(op: str) -> None:
    check_blocker(op)


def test_every_registry_entry_has_a_test() -> None:
    from onnxcompress.channels.rules import (attention_test, conv_test, einsum_test, elementwise_test, fused_norm_test,
                                             layout_test, linear_test, norm_test, spatial_test)

    assert sorted(BUILD) == registered_ops(blockers=True)
    families = (attention_test, conv_test, einsum_test, elementwise_test, fused_norm_test, layout_test, linear_test,
                norm_test, spatial_test)
    covered = set().union(*(m.COVERED for m in families))
    assert sorted(covered) == registered_ops()


def _sample():
    from onnxcompress.channels.rules import conv_test, elementwise_test, layout_test, linear_test, norm_test, spatial_test

    return {
        "Conv": conv_test.check_conv,
        "Relu": lambda: elementwise_test.check_unary("Relu"),
        "Concat": layout_test.check_concat,
        "Gemm": lambda: linear_test.check_gemm(1),
        "BatchNormalization": norm_test.check_batchnorm,
        "GlobalLpPool": lambda: spatial_test.check_pool("GlobalLpPool"),
        "LRN": lambda: check_blocker("LRN"),
    }


@pytest.mark.parametrize("op", ["Conv", "Relu", "Concat", "Gemm", "BatchNormalization", "GlobalLpPool", "LRN"])
def test_a_rule_switched_off_fails_its_test(op: str, monkeypatch) -> None:
    check = _sample()[op]
    check()  # passes with the rule on
    monkeypatch.setenv(BLOCK_OPS_ENV, op)
    with pytest.raises(AssertionError):
        check()
