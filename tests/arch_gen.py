"""Random conv architectures for property-based tests.

An architecture is a *spec*: plain, printable data (dicts, lists, ints, strings), so a
failing example reads as what it is and hypothesis can shrink it. ``build(spec)`` turns
any spec into a valid ONNX model: the spec's numbers are hints (a group count is taken
modulo the divisors of the width, a stride is dropped on a tiny map, and so on), never
a reason to fail. Weights come from ``spec["seed"]`` and are all non-trivial: random
conv/Gemm biases, BatchNormalization with non-zero mean, variance, scale and bias.

``spec_strategy()`` is the hypothesis strategy; ``random_spec(rng)`` draws the same kind
of spec from a ``random.Random`` for use without hypothesis.
"""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSETS = (13, 14, 15, 16, 17)
ACTIVATIONS = ("Relu", "LeakyRelu", "Sigmoid", "HardSwish", "Tanh", "Clip", None)
#: blocks that keep the channel count and the spatial size (usable inside a residual)
SHAPE_KEEPING = ("conv", "dw", "grouped", "se", "act", "bn")
BLOCKS = ("conv", "dw", "grouped", "residual", "concat", "split", "se", "act", "bn", "maxpool", "dense",
          "affine", "prelu", "pad", "avgpool", "convT", "resize", "slice", "instnorm", "mlp")
HEADS = ("gap_gemm", "flatten_gemm", "feature_map", "two_heads", "tap")
WIDTHS = (2, 3, 4, 6, 8, 12, 16, 24)

Spec = dict[str, Any]


# ----------------------------------------------------------------------------- building


class _Builder:
    """Tracks the current tensor's (name, channels, H, W) and emits onnx.helper nodes."""

    def __init__(self, spec: Spec):
        self.spec = spec
        self.opset = spec["opset"]
        self.rng = np.random.default_rng(spec["seed"])
        self.nodes: list[onnx.NodeProto] = []
        #: every block's output, for DenseNet-style reuse and output taps
        self.history: list[tuple] = []
        self.inits: list[onnx.TensorProto] = []
        self.n = 0

    # -- plumbing
    def name(self, base: str) -> str:
        self.n += 1
        return f"{base}_{self.n}"

    def const(self, arr, base="c", dtype=np.float32) -> str:
        name = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(arr, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, **attrs):
        name = self.name(op_type.lower())
        outs = [f"{name}_o{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=name, **attrs))
        return outs[0] if n_out == 1 else outs

    # -- layers; each takes and returns a state tuple (name, c, h, w)
    def conv(self, s, cout: int, k: int = 3, stride: int = 1, group: int = 1, pad: str = "same", bias: bool = True,
             dilation: int = 1):
        x, c, h, w = s
        if h < k or w < k:
            k = 1
        if k == 1 or stride > 1 or pad != "same" or h < 2 * dilation + 1 or w < 2 * dilation + 1:
            dilation = 1
        if stride > 1 and (h < 4 or w < 4):
            stride = 1
        if pad == "same" or k == 1:
            pads = [k // 2 * dilation] * 4
        elif pad == "valid" and h - k + 1 >= 2 and w - k + 1 >= 2:
            pads = [0] * 4
        elif pad == "asym":
            pads = [int(v) for v in self.rng.integers(0, k // 2 + 1, 4)]
        else:
            pads = [k // 2] * 4
        fan_in = c // group * k * k
        wt = self.rng.standard_normal((cout, c // group, k, k)) * (1.2 / math.sqrt(fan_in))
        ins = [x, self.const(wt, "w")]
        if bias:
            ins.append(self.const(self.rng.standard_normal(cout) * 0.5, "b"))
        y = self.op("Conv", ins, kernel_shape=[k, k], strides=[stride, stride], pads=pads, group=group, dilations=[dilation] * 2)
        ke = (k - 1) * dilation + 1
        ho = (h + pads[0] + pads[2] - ke) // stride + 1
        wo = (w + pads[1] + pads[3] - ke) // stride + 1
        return (y, cout, ho, wo)

    def bn(self, s):
        x, c, h, w = s
        r = self.rng
        scale, bias = r.uniform(0.5, 1.5, c), r.standard_normal(c) * 0.5
        mean, var = r.standard_normal(c) * 0.3, r.uniform(0.5, 2.0, c)
        ins = [x] + [self.const(p, "bn") for p in (scale, bias, mean, var)]
        return (self.op("BatchNormalization", ins, epsilon=1e-5), c, h, w)

    def act(self, s, kind: str | None):
        x, c, h, w = s
        if kind is None:
            return s
        if kind == "HardSwish" and self.opset < 14:
            kind = "Relu"  # HardSwish is opset 14
        if kind == "LeakyRelu":
            y = self.op("LeakyRelu", [x], alpha=float(self.rng.uniform(0.01, 0.3)))
        elif kind == "Clip":
            lo = float(self.rng.uniform(-2.0, 0.0))
            hi = float(self.rng.uniform(0.5, 6.0))
            which = int(self.rng.integers(0, 3))  # both, min only, max only
            ins = [x, self.const(lo, "lo") if which in (0, 1) else "", self.const(hi, "hi") if which in (0, 2) else ""]
            while ins[-1] == "":
                ins.pop()
            y = self.op("Clip", ins)
        else:
            y = self.op(kind, [x])
        return (y, c, h, w)

    def se(self, s, reduce: int, gate: str, squeeze: str = "gap"):
        x, c, h, w = s
        r = max(1, c // max(1, reduce))
        if squeeze == "reducemean":  # how exporters write adaptive_avg_pool2d(1) / keras GAP
            p = (self.op("ReduceMean", [x], axes=[2, 3], keepdims=1), c, 1, 1)
        else:
            p = (self.op("GlobalAveragePool", [x]), c, 1, 1)
        e = self.act(self.conv(p, r, k=1), "Relu")
        e = self.conv(e, c, k=1)
        g = self.op("HardSigmoid" if gate == "HardSigmoid" else "Sigmoid", [e[0]])
        return (self.op("Mul", [x, g] if gate != "swap" else [g, x]), c, h, w)

    def cba(self, s, cout, b: dict, group=1):
        y = self.conv(s, cout, k=b.get("k", 3), stride=b.get("stride", 1), group=group, pad=b.get("pad", "same"),
                      bias=b.get("bias", True), dilation=b.get("dilation", 1))
        if b.get("bn", True):
            y = self.bn(y)
        return self.act(y, b.get("act", "Relu"))

    # -- blocks
    def block(self, s, b: dict, keep_shape: bool = False):
        out = self._block(s, b, keep_shape)
        self.history.append(out)
        return out

    def _block(self, s, b: dict, keep_shape: bool = False):
        kind = b["kind"]
        x, c, h, w = s
        if keep_shape:  # inside a residual: stride 1, same padding, same width
            b = {**b, "stride": 1, "pad": "same", "cout": c}
        if kind == "conv":
            return self.cba(s, _width(b.get("cout", c)), b)
        if kind == "dw":
            mult = 1 if keep_shape else b.get("mult", 1)
            return self.cba(s, c * mult, {**b, "k": 3}, group=c)
        if kind == "grouped":
            divs = [d for d in range(2, c) if c % d == 0]
            if not divs:
                return self.cba(s, _width(b.get("cout", c)), b)
            g = divs[b.get("groups", 0) % len(divs)]
            cout = c if keep_shape else max(g, _width(b.get("cout", c)) // g * g)
            return self.cba(s, cout, b, group=g)
        if kind == "se":
            return self.se(s, b.get("reduce", 2), b.get("gate", "Sigmoid"), b.get("squeeze", "gap"))
        if kind == "act":
            return self.act(s, b.get("act", "Relu") or "Relu")
        if kind == "bn":
            return self.bn(s)
        if kind == "dense":  # DenseNet-style: an earlier map of the same size rejoins (one tensor, several consumers)
            same = [t for t in self.history if t[2:] == (h, w) and t[0] != x]
            y = self.cba(s, _width(b.get("cout", c)), {**b, "stride": 1, "pad": "same"})
            if not same:
                return y
            old = same[b.get("pick", 0) % len(same)]
            return (self.op("Concat", [old[0], y[0]] if b.get("old_first", True) else [y[0], old[0]], axis=1), old[1] + y[1], h, w)
        if kind == "affine":  # per-channel Mul/Add constants, in the layouts exporters use
            shape = [(1, c, 1, 1), (c, 1, 1), (1,)][b.get("layout", 0) % 3]
            y = self.op("Mul", [x, self.const(self.rng.uniform(0.5, 2.0, shape), "scale")])
            y = self.op("Add", [y, self.const(self.rng.standard_normal(shape) * 0.5, "shift")])
            return (y, c, h, w)
        if kind == "prelu":
            shape = [(c, 1, 1), (1,)][b.get("layout", 0) % 2]
            return (self.op("PRelu", [x, self.const(self.rng.uniform(0.05, 0.3, shape), "slope")]), c, h, w)
        if kind == "pad":
            mode = ("constant", "reflect", "edge")[b.get("mode", 0) % 3]
            if mode == "reflect" and (h < 2 or w < 2):
                mode = "edge"
            ins = [x, self.const(np.array([0, 0, 1, 1, 0, 0, 1, 1]), "pads", np.int64)]
            if mode == "constant":
                ins.append(self.const(float(b.get("value", 0.0)), "padv"))
            return (self.op("Pad", ins, mode=mode), c, h + 2, w + 2)
        if kind == "avgpool":
            y = self.op("AveragePool", [x], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1],
                        count_include_pad=int(b.get("include_pad", 0)))
            return (y, c, h, w)
        if kind == "convT":
            if h > 16 or w > 16:
                return s
            cout = _width(b.get("cout", c))
            wt = self.const(self.rng.standard_normal((c, cout, 2, 2)) / math.sqrt(c), "wt")
            ins = [x, wt] + ([self.const(self.rng.standard_normal(cout) * 0.5, "bt")] if b.get("bias", True) else [])
            y = self.op("ConvTranspose", ins, kernel_shape=[2, 2], strides=[2, 2])
            return self.act((y, cout, h * 2, w * 2), b.get("act"))
        if kind == "resize":
            if h > 16 or w > 16:
                return s
            y = self.op("Resize", [x, "", self.const([1, 1, 2, 2], "scales")], mode="nearest")
            return (y, c, h * 2, w * 2)
        if kind == "slice":
            if c < 2:
                return s
            lo = b.get("start", 0) % (c - 1)
            hi = lo + 1 + b.get("length", c) % (c - lo - 1 or 1) if c - lo > 1 else c
            y = self.op("Slice", [x, self.const([lo], "st", np.int64), self.const([hi], "en", np.int64),
                                  self.const([1], "ax", np.int64)])
            return (y, hi - lo, h, w)
        if kind == "instnorm":
            y = self.op("InstanceNormalization", [x, self.const(self.rng.uniform(0.5, 1.5, c), "s"),
                                                  self.const(self.rng.standard_normal(c) * 0.5, "b")])
            return (y, c, h, w)
        if kind == "mlp":  # channels-last MLP (ConvNeXt-style) with a residual around it
            hid = _width(b.get("cout", c))
            t = self.op("Transpose", [x], perm=[0, 2, 3, 1])
            m = self.op("MatMul", [t, self.const(self.rng.standard_normal((c, hid)) / math.sqrt(c), "w1")])
            m = self.op("Add", [m, self.const(self.rng.standard_normal(hid) * 0.5, "b1")])
            m = self.act((m, hid, h, w), b.get("act") or "Relu")[0]
            m = self.op("MatMul", [m, self.const(self.rng.standard_normal((hid, c)) / math.sqrt(hid), "w2")])
            back = self.op("Transpose", [m], perm=[0, 3, 1, 2])
            return (self.op("Add", [x, back]), c, h, w)
        if kind == "maxpool":
            if h < 4 or w < 4:
                return s
            y = self.op("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
            return (y, c, h // 2, w // 2)
        if kind == "residual":
            t = s
            for inner in b.get("body", [{"kind": "conv"}]):
                t = self.block(t, inner, keep_shape=True)
            y = self.op("Add", [x, t[0]] if not b.get("swap") else [t[0], x])
            return self.act((y, c, h, w), b.get("post_act"))
        if kind == "concat":
            outs = []
            for br in b.get("branches", [{"kind": "conv"}, {"kind": "identity"}]):
                if br["kind"] == "identity":
                    outs.append(s)
                elif br["kind"] == "maxpool":
                    outs.append((self.op("MaxPool", [x], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]), c, h, w))
                else:
                    outs.append(self.cba(s, _width(br.get("cout", c)), {**br, "stride": 1, "pad": "same"}))
            y = self.op("Concat", [o[0] for o in outs], axis=1)
            return (y, sum(o[1] for o in outs), h, w)
        if kind == "split":
            n = min(b.get("parts", 2), c)
            if n < 2:
                return s
            cuts = sorted(set(int(v) % (c - 1) + 1 for v in b.get("cuts", [c // 2])))[: n - 1] or [c // 2]
            sizes = np.diff([0, *cuts, c]).tolist()
            if b.get("equal") and c % n == 0:
                sizes = [c // n] * n
            parts = self.op("Split", [x, self.const(np.array(sizes), "split", np.int64)], n_out=len(sizes), axis=1)
            branches = b.get("branches", [])
            outs = []
            for i, (p, cs) in enumerate(zip(parts, sizes)):
                br = branches[i] if i < len(branches) else {"kind": "identity"}
                ps = (p, cs, h, w)
                if br["kind"] == "identity":
                    outs.append(ps)
                else:
                    keep = b.get("merge") == "add"
                    outs.append(self.block(ps, {**br, "stride": 1, "pad": "same"}, keep_shape=keep))
            if b.get("merge") == "add" and len(set(sizes)) == 1:
                y = outs[0][0]
                for o in outs[1:]:
                    y = self.op("Add", [y, o[0]])
                return (y, sizes[0], h, w)
            order = list(range(len(outs)))
            if b.get("reverse"):
                order.reverse()
            extra = [x] if b.get("with_input") else []  # C2f-style: the unsplit map rejoins too
            y = self.op("Concat", [outs[i][0] for i in order] + extra, axis=1)
            return (y, sum(o[1] for o in outs) + (c if extra else 0), h, w)
        raise ValueError(f"unknown block kind {kind!r}")

    def gemm(self, f: str, k: int, n_out: int, trans_b: bool):
        wt = self.rng.standard_normal((n_out, k) if trans_b else (k, n_out)) / math.sqrt(k)
        bias = self.const(self.rng.standard_normal(n_out) * 0.5, "fcb")
        return self.op("Gemm", [f, self.const(wt, "fc"), bias], transB=int(trans_b))

    def head(self, s, head: dict) -> list[str]:
        x, c, h, w = s
        kind = head["kind"]
        n_out = head.get("n_out", 5)
        if kind == "feature_map":
            return [x]
        if kind == "flatten_gemm" and c * h * w <= 4096:
            return [self.gemm(self.op("Flatten", [x], axis=1), c * h * w, n_out, head.get("trans_b", True))]
        if kind == "tap":  # an intermediate map is a graph output too
            p = self.op("Flatten", [self.op("GlobalAveragePool", [x])], axis=1)
            tap = self.history[head.get("pick", 0) % len(self.history)][0] if self.history else x
            return [self.gemm(p, c, n_out, head.get("trans_b", True)), tap]
        if kind == "two_heads":
            p = self.op("Flatten", [self.op("GlobalAveragePool", [x])], axis=1)
            a = self.gemm(p, c, n_out, head.get("trans_b", True))
            b = self.gemm(p, c, 3, not head.get("trans_b", True))
            return [a, b]
        p = self.op("Flatten", [self.op("GlobalAveragePool", [x])], axis=1)
        return [self.gemm(p, c, n_out, head.get("trans_b", True))]


def _width(w: int) -> int:
    return max(1, int(w))


def build(spec: Spec) -> onnx.ModelProto:
    """A checked ONNX model for ``spec`` (full checker, shapes inferred)."""
    b = _Builder(spec)
    batch = spec.get("batch", 1)
    shape = [batch, spec["c_in"], spec["h"], spec["w"]]
    s = ("x", spec["c_in"], spec["h"], spec["w"])
    if spec.get("stem", True):
        s = b.cba(s, _width(spec.get("stem_width", 8)), {"k": 3, "act": spec.get("stem_act", "Relu")})
        b.history.append(s)
    for blk in spec["blocks"]:
        s = b.block(s, blk)
    outs = b.head(s, spec["head"])
    graph = helper.make_graph(
        b.nodes,
        "arch",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs],
        b.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", spec["opset"])])
    model.ir_version = min(model.ir_version, 8)  # every onnxruntime reads IR 8 with opset <= 17
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    return model


def input_for(model: onnx.ModelProto, seed: int = 0) -> np.ndarray:
    dims = [d.dim_value or 2 for d in model.graph.input[0].type.tensor_type.shape.dim]
    return np.random.default_rng(seed).standard_normal(dims).astype(np.float32)


# ----------------------------------------------------------------------------- drawing


class _Random:
    """The chooser interface over ``random.Random``."""

    def __init__(self, rng: random.Random):
        self.rng = rng

    def int(self, lo, hi):
        return self.rng.randint(lo, hi)

    def pick(self, seq):
        return self.rng.choice(list(seq))

    def bool(self):
        return self.rng.random() < 0.5


class _Draw:
    """The chooser interface over hypothesis' ``draw``."""

    def __init__(self, draw):
        from hypothesis import strategies as st

        self.draw, self.st = draw, st

    def int(self, lo, hi):
        return self.draw(self.st.integers(lo, hi))

    def pick(self, seq):
        return self.draw(self.st.sampled_from(list(seq)))

    def bool(self):
        return self.draw(self.st.booleans())


def _conv_params(ch, depth_ok=True) -> dict:
    p = {"k": ch.pick((3, 1)), "act": ch.pick(ACTIVATIONS), "bn": ch.bool(), "bias": ch.bool(), "cout": ch.pick(WIDTHS)}
    if depth_ok:
        p["stride"] = ch.pick((1, 1, 2))
        p["pad"] = ch.pick(("same", "same", "valid", "asym"))
    p["dilation"] = ch.pick((1, 1, 1, 2))
    return p


def _block(ch, depth: int) -> dict:
    kind = ch.pick(BLOCKS if depth == 0 else SHAPE_KEEPING + (("residual",) if depth == 1 else ()))
    b: dict = {"kind": kind}
    if kind in ("conv", "dw", "grouped"):
        b.update(_conv_params(ch, depth == 0))
        if kind == "dw":
            b["mult"] = ch.pick((1, 2))
        if kind == "grouped":
            b["groups"] = ch.int(0, 3)
    elif kind == "se":
        b.update(reduce=ch.pick((2, 4)), gate=ch.pick(("Sigmoid", "HardSigmoid", "swap")), squeeze=ch.pick(("gap", "reducemean")))
    elif kind == "act":
        b["act"] = ch.pick(ACTIVATIONS[:-1])
    elif kind in ("affine", "prelu", "pad", "avgpool", "slice"):
        b.update(layout=ch.int(0, 2), mode=ch.int(0, 2), value=ch.pick((0.0, 0.5, -1.0)), include_pad=ch.bool(),
                 start=ch.int(0, 23), length=ch.int(0, 23))
    elif kind in ("convT", "mlp"):
        b.update(cout=ch.pick(WIDTHS), bias=ch.bool(), act=ch.pick(ACTIVATIONS))
    elif kind == "dense":
        b.update(_conv_params(ch, depth_ok=False))
        b.update(pick=ch.int(0, 7), old_first=ch.bool())
    elif kind == "residual":
        b["body"] = [_block(ch, depth + 1) for _ in range(ch.int(1, 3))]
        b.update(swap=ch.bool(), post_act=ch.pick(ACTIVATIONS))
    elif kind == "concat":
        b["branches"] = [_branch(ch) for _ in range(ch.int(2, 3))]
    elif kind == "split":
        n = ch.int(2, 3)
        b.update(parts=n, cuts=[ch.int(0, 23) for _ in range(n - 1)], equal=ch.bool(), merge=ch.pick(("concat", "add")),
                 reverse=ch.bool(), with_input=ch.bool(), branches=[_branch(ch, split=True) for _ in range(n)])
    return b


def _branch(ch, split: bool = False) -> dict:
    kind = ch.pick(("conv", "identity", "maxpool") if not split else ("conv", "identity", "dw", "se"))
    b: dict = {"kind": kind}
    if kind in ("conv", "dw"):
        b.update(_conv_params(ch, depth_ok=False))
    elif kind == "se":
        b.update(reduce=2, gate=ch.pick(("Sigmoid", "HardSigmoid")))
    return b


def draw_spec(ch, max_blocks: int = 5) -> Spec:
    return {
        "opset": ch.pick(OPSETS),
        "batch": ch.pick((1, 1, 1, "N")),
        "c_in": ch.int(3, 8),
        "h": ch.int(8, 16),
        "w": ch.int(8, 16),
        "seed": ch.int(0, 2**16),
        "stem": ch.bool(),
        "stem_width": ch.pick(WIDTHS),
        "stem_act": ch.pick(ACTIVATIONS),
        "blocks": [_block(ch, 0) for _ in range(ch.int(1, max_blocks))],
        "head": {"kind": ch.pick(HEADS), "trans_b": ch.bool(), "n_out": ch.int(2, 10), "pick": ch.int(0, 7)},
    }


def random_spec(rng: random.Random, max_blocks: int = 5) -> Spec:
    return draw_spec(_Random(rng), max_blocks)


def spec_strategy(max_blocks: int = 5):
    """Hypothesis strategy of architecture specs (``build`` makes the model)."""
    from hypothesis import strategies as st

    @st.composite
    def specs(draw):
        return draw_spec(_Draw(draw), max_blocks)

    return specs()
