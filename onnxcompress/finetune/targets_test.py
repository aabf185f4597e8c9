"""The values distillation matches."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.helper as oh
import onnx.numpy_helper as onh
import onnx_ir as ir

from onnxcompress.finetune.targets import differentiable_targets


def test_a_non_differentiable_output_is_distilled_on_the_tensor_before_it(tmp_path):
    nodes = [oh.make_node("MatMul", ["x", "w"], ["logits"]), oh.make_node("ArgMax", ["logits"], ["ids"], axis=1),
             oh.make_node("Cast", ["ids"], ["out"], to=onnx.TensorProto.INT32)]
    g = oh.make_graph(nodes, "g", [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 4])],
                      [oh.make_tensor_value_info("out", onnx.TensorProto.INT32, ["N"]),
                       oh.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["N", 3])],
                      [onh.from_array(np.ones((4, 3), np.float32), "w")])
    m = ir.from_proto(oh.make_model(g, opset_imports=[oh.make_opsetid("", 13)]))
    targets, swapped = differentiable_targets(m)
    assert targets == ["logits"] and swapped == {"out": "logits"}
