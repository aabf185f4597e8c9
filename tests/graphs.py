"""Small graph builders for tests: every model has non-zero biases and BN betas."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class G:
    """Tiny fluent builder over onnx.helper with random, non-trivial parameters."""

    def __init__(self, seed: int = 0, opset: int = 17):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.opset = opset
        self.n = 0
        self.inputs: list[onnx.ValueInfoProto] = []
        self.channels: dict[str, int] = {}

    def name(self, base: str) -> str:
        self.n += 1
        return f"{base}{self.n}"

    def const(self, arr, base="c", dtype=np.float32) -> str:
        name = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(arr, dtype=dtype), name))
        return name

    def input(self, name="x", shape=("N", 3, 16, 16)) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)))
        self.channels[name] = shape[1]
        return name

    def op(self, op_type, inputs, n_out=1, **attrs):
        name = self.name(op_type.lower())
        outs = [f"{name}_o{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=name, **attrs))
        return outs[0] if n_out == 1 else outs

    def conv(self, x, cin, cout, k=3, stride=1, group=1, pad=None, bias=True, dilation=1):
        pad = k // 2 * dilation if pad is None else pad
        w = self.const(self.rng.standard_normal((cout, cin // group, k, k)) * 0.3, "w")
        ins = [x, w]
        if bias:
            ins.append(self.const(self.rng.standard_normal(cout) * 0.5, "b"))
        return self.op("Conv", ins, kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4, group=group, dilations=[dilation] * 2)

    def bn(self, x, c, **attrs):
        r = self.rng
        ps = [r.uniform(0.5, 1.5, c), r.standard_normal(c) * 0.5, r.standard_normal(c) * 0.2, r.uniform(0.5, 1.5, c)]
        return self.op("BatchNormalization", [x] + [self.const(p, "bn") for p in ps], epsilon=1e-5, **attrs)

    def cbr(self, x, cin, cout, k=3, stride=1, group=1, act="Relu"):
        y = self.bn(self.conv(x, cin, cout, k, stride, group), cout)
        return self.op(act, [y]) if act else y

    def gemm_head(self, x, c, n_out=10):
        p = self.op("GlobalAveragePool", [x])
        f = self.op("Flatten", [p], axis=1)
        w = self.const(self.rng.standard_normal((n_out, c)) * 0.3, "fc")
        b = self.const(self.rng.standard_normal(n_out), "fcb")
        return self.op("Gemm", [f, w, b], transB=1)

    def model(self, outputs, ir_version: int | None = None) -> onnx.ModelProto:
        outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs]
        inputs = list(self.inputs)
        if ir_version is not None and ir_version < 4:
            # Old exporters list every initializer as a graph input too.
            inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in self.inits]
        g = helper.make_graph(self.nodes, "test", inputs, outs, self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", self.opset)])
        if ir_version:
            m.ir_version = ir_version
        m = onnx.shape_inference.infer_shapes(m)
        onnx.checker.check_model(m, full_check=True)
        return m
