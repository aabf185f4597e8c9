"""Export the TensorFlow/Keras model of the corpus with the real tf2onnx.

Run with a Python that has tensorflow-cpu and tf2onnx (not the torch venv): ``.venv-tf`` at the
repository root, or the one named by ONNXCOMPRESS_TF_PYTHON. From any other interpreter the
script re-executes itself under it. Create it once, from the repository root:
    python3 -m venv .venv-tf && .venv-tf/bin/pip install tensorflow-cpu tf2onnx
    python models/build_tf.py
It writes models/tf_keras_se.onnx (a CNN) and models/tf_keras_mha.onnx (two transformer blocks
with Keras MultiHeadAttention) and merges their entries into models/MODELS.json, with MACs and
params counted from the Keras layers themselves.
"""
from __future__ import annotations

import json
import os
import sys

if __name__ == "__main__":  # under the TensorFlow venv (bench/venvs.py), before its imports
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from bench.venvs import run_under

    run_under("tf")

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf2onnx  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
NAME = "tf_keras_se.onnx"
OPSET = 13


def build() -> tf.keras.Model:
    """Conv-BN-ReLU residual, a Dense-layer SE gate (Reshape + Multiply), strided, depthwise, head."""
    layers = tf.keras.layers
    i = tf.keras.Input((32, 32, 3), name="input")
    x = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(16, 3, padding="same")(i)))
    y = layers.BatchNormalization()(layers.Conv2D(16, 3, padding="same")(x))
    x = layers.ReLU()(layers.Add()([x, y]))
    s = layers.GlobalAveragePooling2D()(x)
    s = layers.Dense(16, activation="sigmoid")(layers.Dense(8, activation="relu")(s))
    x = layers.Multiply()([x, layers.Reshape((1, 1, 16))(s)])
    x = layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.DepthwiseConv2D(3, padding="same")(x)
    x = layers.Conv2D(32, 1, activation="relu")(x)
    return tf.keras.Model(i, layers.Dense(10)(layers.GlobalAveragePooling2D()(x)))


def count(model: tf.keras.Model) -> tuple[int, int]:
    """MACs (Conv: out pixels x C_out x C_in/groups x k*k; depthwise: out pixels x C x k*k; Dense: in x out)."""
    macs = 0
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.DepthwiseConv2D):
            _, h, w, c = layer.output.shape
            macs += h * w * c * int(np.prod(layer.kernel_size))
        elif isinstance(layer, tf.keras.layers.Conv2D):
            _, h, w, c = layer.output.shape
            cin = layer.input.shape[-1]
            macs += h * w * c * (cin // layer.groups) * int(np.prod(layer.kernel_size))
        elif isinstance(layer, tf.keras.layers.Dense):
            macs += layer.input.shape[-1] * layer.units
    params = sum(int(np.prod(v.shape)) for v in model.weights)  # includes BN moving mean/variance
    return int(macs), params


def build_mha() -> tf.keras.Model:
    """Two pre-LN transformer blocks (Keras MultiHeadAttention, 4 heads of 16; a ReLU MLP of 256), then a head."""
    layers = tf.keras.layers
    i = tf.keras.Input((MHA_LEN, MHA_DIM), name="x")
    h = i
    for _ in range(2):
        a = layers.LayerNormalization(epsilon=1e-5)(h)
        h = layers.Add()([h, layers.MultiHeadAttention(num_heads=4, key_dim=MHA_DIM // 4)(a, a)])
        m = layers.LayerNormalization(epsilon=1e-5)(h)
        h = layers.Add()([h, layers.Dense(MHA_DIM)(layers.Dense(4 * MHA_DIM, activation="relu")(m))])
    return tf.keras.Model(i, layers.Dense(10)(layers.GlobalAveragePooling1D()(h)))


def count_mha(model: tf.keras.Model) -> tuple[int, int]:
    """MACs per sample: Dense in x out per position; attention: its four projections per position,
    and the scores and the weighted sum (length^2 x width each)."""
    macs = 0
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.MultiHeadAttention):
            macs += 4 * MHA_LEN * MHA_DIM * MHA_DIM + 2 * MHA_LEN * MHA_LEN * MHA_DIM
        elif isinstance(layer, tf.keras.layers.Dense):
            positions = MHA_LEN if len(layer.input.shape) == 3 else 1
            macs += positions * layer.input.shape[-1] * layer.units
    return int(macs), sum(int(np.prod(v.shape)) for v in model.weights)


def export(model: tf.keras.Model, name: str, spec, opset: int, entry: dict, counts: tuple[int, int],
           count_notes: str) -> None:
    """tf2onnx's export of ``model`` into models/NAME, and its entry in MODELS.json."""
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset, output_path=os.path.join(HERE, name))
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    out = proto.graph.output[0]
    in_name, in_shape = spec[0].name, [1, *spec[0].shape[1:]]
    meta_path = os.path.join(HERE, "MODELS.json")
    meta = json.load(open(meta_path))
    meta[name] = {
        **entry,
        "exporter": "tf2onnx",
        "exporter_versions": {"tensorflow": tf.__version__, "tf2onnx": tf2onnx.__version__},
        "opset": opset,
        "batch_dim": batch_dim,
        "input_shapes": {in_name: in_shape},
        "output_shapes": {out.name: [1, 10]},
        "symbolic_dims": {in_name: [batch_dim, *in_shape[1:]]},
        "torch_macs": counts[0],
        "torch_params": counts[1],
        "count_notes": count_notes,
    }
    with open(meta_path, "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    print("wrote", name, *counts)


def main() -> None:
    tf.random.set_seed(0)
    rng = np.random.default_rng(0)
    model = build()
    for layer in model.layers:  # non-trivial BN, as in the rest of the corpus
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            c = layer.get_weights()[0].shape
            layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.3, c), rng.normal(0, 0.2, c), rng.uniform(0.5, 1.5, c)])
    export(model, NAME, (tf.TensorSpec((None, 32, 32, 3), tf.float32, name="input"),), OPSET, {
        "description": "A small Keras CNN (residual Conv-BN-ReLU, Dense-layer SE gate, depthwise conv) with random "
        "weights and randomized BN, exported by the real tf2onnx from channels-last Keras.",
        "idioms": [
            "NHWC input with a Transpose into NCHW",
            "BatchNorm folded by tf2onnx into the conv",
            "Dense layers as MatMul + Add",
            "SE gate: GlobalAveragePool -> Squeeze -> MatMul -> Reshape -> Mul",
            "depthwise conv from DepthwiseConv2D",
        ]}, count(model), "counted from the Keras layers (Conv2D, DepthwiseConv2D, Dense), not in torch")
    tf.keras.utils.set_random_seed(0)
    mha = build_mha()
    export(mha, MHA_NAME, (tf.TensorSpec((None, MHA_LEN, MHA_DIM), tf.float32, name="x"),), MHA_OPSET, {
        "description": "Two pre-LN transformer blocks with Keras MultiHeadAttention (4 heads of 16, width 64, length 16) "
        "and a ReLU MLP, random weights, exported by the real tf2onnx: its unfused attention idioms.",
        "idioms": [
            "EinsumDense projections lowered to Reshape + MatMul with constant targets",
            "attention einsums lowered to Unsqueeze -> Transpose -> Reshape(Concat(ReduceProd(Shape[0,1]), -1, "
            "Shape[4])) -> MatMul -> Reshape(Concat(Max(Shape[0,1], Shape[0,1]), ...)): the heads merge with "
            "the batch at run time",
            "Dense on (N, L, C) as Tensordot: Reshape to 2-D, MatMul, Reshape(Cast(Concat(Shape[0,1], C)))",
            "LayerNormalization decomposed (mean, variance, Reciprocal of Sqrt)",
        ]}, count_mha(mha), "counted from the Keras layers (MultiHeadAttention, Dense), not in torch")


MHA_NAME, MHA_OPSET, MHA_LEN, MHA_DIM = "tf_keras_mha.onnx", 17, 16, 64


if __name__ == "__main__":
    main()
