"""Export the PaddlePaddle model of the corpus with the real paddle2onnx.

Run with a Python that has paddlepaddle and paddle2onnx (not the torch venv): ``.venv-paddle`` at
the repository root, or the one named by ONNXCOMPRESS_PADDLE_PYTHON (build_models.py runs it
so). Create it once, from the repository root:
    python3 -m venv .venv-paddle && .venv-paddle/bin/pip install paddlepaddle paddle2onnx packaging
    .venv-paddle/bin/python models/build_paddle.py
It writes models/paddle_style_mbv3.onnx and prints one JSON line of metadata
(MACs and params counted in paddle itself) that build_models.py merges into
MODELS.json.
"""
from __future__ import annotations

import json
import os
import tempfile

import numpy as np
import paddle
import paddle2onnx

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "paddle_style_mbv3.onnx")
OPSET = 11


def randomize_bn(model: paddle.nn.Layer, rng: np.random.Generator) -> None:
    """Give every BatchNorm non-trivial affine params and running stats."""
    for layer in model.sublayers():
        if isinstance(layer, paddle.nn.BatchNorm2D):
            c = layer.weight.shape[0]
            layer.weight.set_value(rng.uniform(0.5, 1.5, c).astype("float32"))
            layer.bias.set_value(rng.normal(0.0, 0.2, c).astype("float32"))
            layer._mean.set_value(rng.normal(0.0, 0.2, c).astype("float32"))
            layer._variance.set_value(rng.uniform(0.5, 1.5, c).astype("float32"))


def count(model: paddle.nn.Layer, shape: list[int]) -> tuple[int, int]:
    """MACs of Conv2D/Linear by forward hooks (same convention as the tool) and params+BN stats."""
    macs = [0]

    def conv_hook(layer, inp, out):
        w = layer.weight.shape  # [C_out, C_in/group, kh, kw]
        macs[0] += int(np.prod(out.shape)) * int(w[1]) * int(w[2]) * int(w[3])

    def linear_hook(layer, inp, out):
        macs[0] += int(np.prod(out.shape)) * int(layer.weight.shape[0])  # weight is [in, out]

    hooks = []
    for layer in model.sublayers():
        if isinstance(layer, paddle.nn.Conv2D):
            hooks.append(layer.register_forward_post_hook(conv_hook))
        elif isinstance(layer, paddle.nn.Linear):
            hooks.append(layer.register_forward_post_hook(linear_hook))
    with paddle.no_grad():
        model(paddle.zeros(shape, dtype="float32"))
    for h in hooks:
        h.remove()
    params = sum(int(np.prod(v.shape)) for v in model.state_dict().values()
                 if v.dtype == paddle.float32)
    return macs[0], params


def main() -> None:
    paddle.seed(0)
    np.random.seed(0)
    rng = np.random.default_rng(1234)
    model = paddle.vision.models.mobilenet_v3_small(scale=0.35, num_classes=10)
    randomize_bn(model, rng)
    model.eval()
    macs, params = count(model, [1, 3, 64, 64])

    spec = [paddle.static.InputSpec(shape=[None, 3, None, None], dtype="float32", name="x")]
    with tempfile.TemporaryDirectory() as tmp:
        prefix = os.path.join(tmp, "mbv3")
        paddle.jit.save(model, prefix, input_spec=spec)
        model_file = prefix + ".json" if os.path.exists(prefix + ".json") else prefix + ".pdmodel"
        # optimize_tool="None": keep paddle2onnx's own graph, skip the Polygraphy
        # constant folding that paddle.onnx.export adds by default.
        paddle2onnx.export(model_file, prefix + ".pdiparams", save_file=OUT,
                           opset_version=OPSET, auto_upgrade_opset=False,
                           enable_onnx_checker=True, optimize_tool="None")
    print(json.dumps({
        "paddle_version": paddle.__version__,
        "paddle2onnx_version": paddle2onnx.__version__,
        "torch_macs": macs,
        "torch_params": params,
    }))


if __name__ == "__main__":
    main()
