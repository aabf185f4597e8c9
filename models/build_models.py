"""Regenerate the committed ONNX model corpus in models/.

Run from the repository root with the torch venv (``.venv-torch``, or the Python named by
``ONNXCOMPRESS_TORCH_PYTHON``; bench/venvs.py has the one command that creates it). Any other
interpreter, the project venv's included, re-executes the script under it:

    python models/build_models.py

Torch is a build-time tool only: the .onnx files, digits_eval.npz and
MODELS.json are committed and the tests never import torch. Everything is
seeded, so a rerun gives the same weights. The PaddlePaddle model is exported
by models/build_paddle.py in a separate interpreter (ONNXCOMPRESS_PADDLE_PYTHON,
default ``.venv-paddle`` at the repository root); without one the committed file and its
MODELS.json entry are kept as they are.

For every model MODELS.json records an independent count made in the source
framework at batch 1: ``torch_macs`` (MACs of conv, conv-transpose, linear and
matmul, from torch.utils.flop_counter divided by 2) and ``torch_params``
(parameters plus floating-point buffers such as BN running stats).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from typing import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.venvs import interpreter, run_under  # noqa: E402

if __name__ == "__main__":
    run_under("torch")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn
import torch.nn.functional as F
from onnx import helper, numpy_helper
from onnx.external_data_helper import set_external_data
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from architectures import (  # noqa: E402  (models/ is on sys.path when run as a script)
    ConvNeXtTiny, DenseNetTiny, DigitsNet, InceptionNet, MobileNetSE, ResNetSmall, ShuffleNetTiny,
    TinyUNet, WeightNormNet, YoloC2f,
)

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS_JSON = os.path.join(HERE, "MODELS.json")
PADDLE_PYTHON = str(interpreter("paddle", os.environ.get("PADDLE_PYTHON")))  # PADDLE_PYTHON: the old name

warnings.filterwarnings("ignore")
torch.set_num_threads(1)  # bit-for-bit repeatable training and export
ort.set_default_logger_severity(3)  # old-style models warn about initializers listed as inputs


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def seed(n: int) -> None:
    torch.manual_seed(n)
    np.random.seed(n)


def randomize_norms(model: nn.Module, gen_seed: int) -> None:
    """Give BN/LN layers non-trivial affine params and running stats.

    Freshly initialised BN is an identity (gamma 1, beta 0, mean 0, var 1),
    which hides bugs in BN folding and in the constant a pruned channel
    leaves behind (act(BN(bias)) is only interesting with beta != 0).
    """
    g = torch.Generator().manual_seed(gen_seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                c = m.num_features
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.2)
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)


def torch_counts(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[int, int]:
    """(MACs, params) at the given inputs, counted in torch.

    FlopCounterMode reports 2*MACs for convolution (2 * out elements *
    C_in/group * prod(k)), transposed convolution (2 * in elements *
    C_out/group * prod(k)) and mm/addmm/bmm (2 * out elements * K), which is
    exactly the convention of the tool; see check_flop_convention().
    Params are parameters plus floating-point buffers (BN running mean/var),
    without num_batches_tracked.
    """
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(*inputs)
    flops = fc.get_total_flops()
    assert flops % 2 == 0
    params = sum(p.numel() for p in model.parameters())
    params += sum(b.numel() for b in model.buffers() if b.is_floating_point())
    return flops // 2, params


def check_flop_convention() -> None:
    """Check by hand that FlopCounterMode's FLOPs are 2*MACs in our convention."""
    x = torch.randn(1, 8, 10, 10)
    cases = [
        (nn.Conv2d(8, 12, 3, stride=2, padding=1, groups=4), x, 12 * 5 * 5 * (8 // 4) * 9),
        (nn.ConvTranspose2d(8, 6, 3, stride=2, padding=1, output_padding=1, groups=2), x,
         8 * 10 * 10 * (6 // 2) * 9),
        (nn.Linear(10, 7), x, 8 * 10 * 7 * 10),  # out elements (1*8*10*7) * K (10)
    ]
    for mod, inp, macs in cases:
        got, _ = torch_counts(mod, (inp,))
        assert got == macs, (mod, got, macs)


def onnx_macs(path: str, input_shapes: dict[str, list[int]]) -> int:
    """MACs of the exported graph at the given shapes, in the tool's convention.

    Only a build-time cross-check of the torch count. Shapes come from running
    the graph in onnxruntime with the conv/matmul tensors exposed as outputs,
    because onnx shape inference stops at some exporters' idioms (paddle2onnx
    feeds Reshape shapes through Identity nodes).
    """
    model = onnx.load(path)
    wanted: list[str] = []
    for node in model.graph.node:
        if node.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            wanted += [node.input[0], node.input[1], node.output[0]]
    existing = {o.name for o in model.graph.output}
    for name in dict.fromkeys(wanted):
        if name not in existing:
            model.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {n: np.zeros(s, np.float32) for n, s in input_shapes.items()}
    names = [o.name for o in sess.get_outputs()]
    shapes = {n: list(v.shape) for n, v in zip(names, sess.run(names, feeds))}
    for init in model.graph.initializer:
        shapes.setdefault(init.name, list(init.dims))
    total = 0
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type in ("Conv", "ConvTranspose"):
            w = shapes[node.input[1]]
            k = int(np.prod(w[2:]))
            ref = node.output[0] if node.op_type == "Conv" else node.input[0]
            total += int(np.prod(shapes[ref])) * w[1] * k
        elif node.op_type in ("Gemm", "MatMul"):
            a = shapes[node.input[0]]
            kdim = a[0] if attrs.get("transA", 0) else a[-1]
            total += int(np.prod(shapes[node.output[0]])) * kdim
    return total


def export_legacy(model: nn.Module, inputs: tuple[torch.Tensor, ...], path: str,
                  input_names: list[str], output_names: list[str], *, opset: int = 17,
                  fold: bool = True, keep_bn: bool = True,
                  keep_initializers_as_inputs: bool = False) -> None:
    """TorchScript (legacy) exporter with a symbolic batch dim on every input and output.

    keep_bn=True exports with TrainingMode.PRESERVE on an eval model: same
    inference graph, but the exporter's eval peephole that fuses Conv+BN is
    skipped so BatchNormalization nodes stay in the graph.
    """
    dyn = {n: {0: "batch"} for n in input_names + output_names}
    torch.onnx.export(
        model, inputs, path, dynamo=False, opset_version=opset,
        input_names=input_names, output_names=output_names, dynamic_axes=dyn,
        do_constant_folding=fold,
        training=torch.onnx.TrainingMode.PRESERVE if keep_bn else torch.onnx.TrainingMode.EVAL,
        keep_initializers_as_inputs=keep_initializers_as_inputs,
    )


def verify(path: str, model: nn.Module | None, input_shapes: dict[str, list[int]],
           rtol: float = 1e-3, atol: float = 1e-4) -> dict[str, list[int]]:
    """Checker (full) + onnxruntime at batch 1 and 2, compared with torch. Returns output shapes at batch 1."""
    onnx.checker.check_model(path, full_check=True)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    out_shapes: dict[str, list[int]] = {}
    for batch in (1, 2):
        feeds = {n: rng.standard_normal([batch] + s[1:]).astype(np.float32) for n, s in input_shapes.items()}
        outs = sess.run(None, feeds)
        if model is not None:
            with torch.no_grad():
                ref = model(*[torch.from_numpy(v) for v in feeds.values()])
            ref = ref if isinstance(ref, (tuple, list)) else (ref,)
            for o, r in zip(outs, ref):
                np.testing.assert_allclose(o, r.numpy(), rtol=rtol, atol=atol, err_msg=path)
        if batch == 1:
            out_shapes = {o.name: list(v.shape) for o, v in zip(sess.get_outputs(), outs)}
    return out_shapes


# --------------------------------------------------------------------------
# model builders: each returns its MODELS.json entry
# --------------------------------------------------------------------------

IMG = [1, 3, 64, 64]


def _finish(name: str, model: nn.Module | None, inputs: tuple[torch.Tensor, ...],
            input_shapes: dict[str, list[int]], entry: dict) -> dict:
    path = os.path.join(HERE, name)
    out_shapes = verify(path, model, input_shapes)
    macs, params = torch_counts(model, inputs)
    graph_macs = onnx_macs(path, input_shapes)
    assert graph_macs == macs, (name, graph_macs, macs)
    m = onnx.load(path, load_external_data=False)
    opset = next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))
    entry.update(opset=opset, input_shapes=input_shapes, output_shapes=out_shapes,
                 torch_macs=macs, torch_params=params)
    print(f"{name:28s} opset {opset:2d}  macs {macs:>10,d}  params {params:>8,d}  "
          f"{os.path.getsize(path) / 1e3:8.1f} kB")
    return entry


def build_resnet_small() -> dict:
    seed(1)
    model = ResNetSmall().eval()
    randomize_norms(model, 101)
    x = torch.randn(IMG)
    export_legacy(model, (x,), os.path.join(HERE, "resnet_small.onnx"), ["input"], ["logits"], keep_bn=False)
    return _finish("resnet_small.onnx", model, (x,), {"input": IMG}, {
        "description": "ResNet-18-like residual CNN (3 stages x 2 BasicBlocks, widths 16/32/64, strided 1x1 "
                       "downsample), GAP, Flatten, Linear. Random weights. The README's main demo model.",
        "exporter": "torch.onnx legacy",
        "idioms": ["residual Add", "strided 1x1 downsample conv", "BN fused into Conv by the exporter "
                   "(default constant folding, eval mode): convs carry non-zero biases", "GlobalAveragePool",
                   "Flatten -> Gemm"],
    })


def build_mobilenet_se() -> dict:
    seed(2)
    model = MobileNetSE().eval()
    randomize_norms(model, 102)
    x = torch.randn(IMG)
    export_legacy(model, (x,), os.path.join(HERE, "mobilenet_se.onnx"), ["input"], ["logits"])
    return _finish("mobilenet_se.onnx", model, (x,), {"input": IMG}, {
        "description": "MobileNetV3-small-like CNN: inverted residuals with depthwise convs, squeeze-excitation "
                       "(GlobalAveragePool -> 1x1 conv -> ReLU -> 1x1 conv -> HardSigmoid -> Mul), HardSwish. "
                       "Random weights.",
        "exporter": "torch.onnx legacy",
        "idioms": ["depthwise Conv (group=C)", "squeeze-excitation gating Mul", "HardSigmoid", "HardSwish",
                   "inverted residual Add", "BatchNormalization kept as nodes"],
    })


def build_inception() -> dict:
    seed(3)
    model = InceptionNet().eval()
    randomize_norms(model, 103)
    x = torch.randn(IMG)
    export_legacy(model, (x,), os.path.join(HERE, "inception_concat.onnx"), ["input"], ["logits"])
    return _finish("inception_concat.onnx", model, (x,), {"input": IMG}, {
        "description": "Inception-style CNN: three blocks of parallel branches (1x1, 1x1->3x3, 1x1->5x5, "
                       "maxpool->1x1) joined by a channel Concat. Convs have biases and are followed by BN. "
                       "Random weights.",
        "exporter": "torch.onnx legacy",
        "idioms": ["channel Concat of 4 branches", "one tensor feeding several convs", "MaxPool branch",
                   "Conv with bias followed by BatchNormalization"],
    })


def build_digits() -> dict:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = digits.target.astype(np.int64)
    x_tr, x_ev, y_tr, y_ev = train_test_split(x, y, train_size=0.7, stratify=y, random_state=0)
    np.savez_compressed(os.path.join(HERE, "digits_eval.npz"), x=x_ev, y=y_ev)

    seed(4)
    model = DigitsNet()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    epochs, bs = 60, 64
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * ((len(x_tr) + bs - 1) // bs))
    xt, yt = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
    g = torch.Generator().manual_seed(4)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(xt), generator=g)
        for i in range(0, len(xt), bs):
            idx = perm[i:i + bs]
            xb = xt[idx]
            # augmentation: random shift by up to one pixel
            dx, dy = torch.randint(-1, 2, (2,), generator=g).tolist()
            xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
            loss = F.cross_entropy(model(xb), yt[idx], label_smoothing=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    ex = torch.from_numpy(x_ev[:1])
    path = os.path.join(HERE, "digits_cnn.onnx")
    export_legacy(model, (ex,), path, ["input"], ["logits"])
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    pred = sess.run(None, {"input": x_ev})[0].argmax(1)
    acc = float((pred == y_ev).mean())
    with torch.no_grad():
        torch_acc = float((model(torch.from_numpy(x_ev)).argmax(1).numpy() == y_ev).mean())
    print(f"digits: held-out accuracy onnxruntime {acc:.4f}, torch {torch_acc:.4f}")
    assert acc >= 0.97, acc
    return _finish("digits_cnn.onnx", model, (ex,), {"input": [1, 1, 8, 8]}, {
        "description": "Small residual CNN trained on scikit-learn's load_digits (8x8 handwritten digits, "
                       "pixel/16 in [0,1]); stratified 70/30 split (random_state=0), the 30% held out in "
                       "digits_eval.npz (x float32 [N,1,8,8], y int64 [N]).",
        "exporter": "torch.onnx legacy",
        "idioms": ["trained weights and BN stats", "residual Add", "BatchNormalization kept as nodes",
                   "accuracy check on real data"],
        "eval_data": "digits_eval.npz",
        "eval_samples": int(len(y_ev)),
        "eval_accuracy": acc,
    })


def build_zoo_opset9() -> list[tuple[str, dict]]:
    """Old model-zoo idioms: opset 9, Sum residuals, Reshape with an initializer shape,
    initializers listed as graph inputs. A twin at opset 8 carries BN's spatial=1 attribute,
    which BatchNormalization-9 removed (onnxruntime rejects it at opset 9)."""
    seed(5)
    model = ResNetSmall(blocks=(1, 1, 1)).eval()
    randomize_norms(model, 105)
    x = torch.randn(IMG)
    path9 = os.path.join(HERE, "zoo_opset9_resnet.onnx")
    export_legacy(model, (x,), path9, ["data"], ["prob"], opset=9, keep_initializers_as_inputs=True)
    m = onnx.load(path9)
    g = m.graph
    for node in g.node:
        if node.op_type == "Add":
            node.op_type = "Sum"
    new_nodes = []
    for node in g.node:
        if node.op_type == "Flatten":
            shape_name = node.output[0] + "_shape"
            g.initializer.append(numpy_helper.from_array(np.array([0, -1], np.int64), shape_name))
            g.input.append(helper.make_tensor_value_info(shape_name, onnx.TensorProto.INT64, [2]))
            new_nodes.append(helper.make_node("Reshape", [node.input[0], shape_name], list(node.output), name=node.name or "reshape"))
        else:
            new_nodes.append(node)
    del g.node[:]
    g.node.extend(new_nodes)
    inputs = {i.name for i in g.input}
    assert all(i.name in inputs for i in g.initializer)
    m.producer_name, m.producer_version = "onnxcompress-corpus", "zoo-style rewrite"
    onnx.save(m, path9)
    idioms = ["opset 9", "residual Sum (not Add)", "Reshape with an initializer shape [0,-1] before Gemm",
              "initializers also listed as graph inputs (IR 4)", "BatchNormalization kept as nodes",
              "Gemm transB=1"]
    e9 = _finish("zoo_opset9_resnet.onnx", model, (x,), {"data": IMG}, {
        "description": "Small ResNet (1 BasicBlock per stage) in old ONNX-model-zoo style at opset 9. "
                       "Exported by the legacy exporter at opset 9 with keep_initializers_as_inputs=True, "
                       "then rewritten with onnx helpers: Add -> Sum, Flatten -> Reshape(shape initializer). "
                       "No BN spatial attribute: BatchNormalization-9 removed it and onnxruntime rejects it "
                       "(see zoo_opset8_bn_spatial.onnx).",
        "exporter": "torch.onnx legacy + onnx helper rewrite",
        "idioms": idioms,
    })
    m8 = onnx.load(path9)
    m8.opset_import[0].version = 8  # every op used here has the same semantics at opset 8
    for node in m8.graph.node:
        if node.op_type == "BatchNormalization":
            node.attribute.append(helper.make_attribute("spatial", 1))
    m8.ir_version = 3
    onnx.save(m8, os.path.join(HERE, "zoo_opset8_bn_spatial.onnx"))
    e8 = _finish("zoo_opset8_bn_spatial.onnx", model, (x,), {"data": IMG}, {
        "description": "Twin of zoo_opset9_resnet.onnx (same weights) declared at opset 8 / IR 3 so that "
                       "BatchNormalization can carry the old spatial=1 attribute.",
        "exporter": "torch.onnx legacy + onnx helper rewrite",
        "idioms": ["opset 8", "IR version 3", "BatchNormalization spatial=1"] + idioms[1:4],
    })
    return [("zoo_opset9_resnet.onnx", e9), ("zoo_opset8_bn_spatial.onnx", e8)]


def build_yolo() -> dict:
    seed(6)
    model = YoloC2f().eval()
    randomize_norms(model, 106)
    x = torch.randn(IMG)
    export_legacy(model, (x,), os.path.join(HERE, "yolo_c2f.onnx"), ["images"], ["p3", "p4"])
    return _finish("yolo_c2f.onnx", model, (x,), {"images": IMG}, {
        "description": "YOLOv8-style backbone/neck/head: Conv+BN+SiLU, C2f blocks (1x1 conv -> Split in halves "
                       "-> bottlenecks appended -> Concat -> 1x1 conv), SPPF (chained MaxPool + Concat), nearest "
                       "Resize x2 + Concat, a strided conv + Concat path, and a 2-level detect head "
                       "(box and class branches concatenated) with two outputs. Random weights.",
        "exporter": "torch.onnx legacy",
        "idioms": ["SiLU as Sigmoid*x", "channel Split into halves", "Concat of split halves and bottleneck "
                   "outputs", "SPPF MaxPool chain", "Resize (nearest, scales)", "several graph outputs",
                   "BatchNormalization kept as nodes"],
    })


def build_densenet() -> dict:
    seed(7)
    model = DenseNetTiny().eval()
    randomize_norms(model, 107)
    x = torch.randn(IMG)
    export_legacy(model, (x,), os.path.join(HERE, "densenet_tiny.onnx"), ["input"], ["logits"])
    return _finish("densenet_tiny.onnx", model, (x,), {"input": IMG}, {
        "description": "DenseNet-style CNN: two dense blocks of 4 BN-ReLU-Conv1x1-BN-ReLU-Conv3x3 layers "
                       "(growth 8), each layer concatenating all earlier features, and a BN-ReLU-Conv1x1-AvgPool "
                       "transition. Random weights.",
        "exporter": "torch.onnx legacy",
        "idioms": ["growing Concat chains (one tensor in many Concats)", "pre-activation BN after Concat",
                   "AveragePool transition", "BatchNormalization kept as nodes"],
    })


def build_convnext() -> dict:
    seed(8)
    model = ConvNeXtTiny().eval()
    randomize_norms(model, 108)
    x = torch.randn(IMG)
    export_legacy(model, (x,), os.path.join(HERE, "convnext_tiny.onnx"), ["input"], ["logits"])
    return _finish("convnext_tiny.onnx", model, (x,), {"input": IMG}, {
        "description": "ConvNeXt-style CNN: 4x4/4 patchify stem, blocks of depthwise 7x7 conv -> Transpose to "
                       "NHWC -> LayerNormalization -> MatMul 4x expansion -> GELU (Erf form) -> MatMul -> layer "
                       "scale Mul -> Transpose back -> residual Add; LN + 2x2/2 conv downsample; ReduceMean + LN + "
                       "Linear head. Random weights.",
        "exporter": "torch.onnx legacy",
        "idioms": ["depthwise 7x7 Conv", "Transpose to channels-last and back", "LayerNormalization (opset 17)",
                   "MatMul + Add linear on channels-last tensor", "GELU decomposed with Erf", "layer scale Mul",
                   "ReduceMean over H,W"],
    })


def build_shufflenet() -> dict:
    seed(9)
    model = ShuffleNetTiny().eval()
    randomize_norms(model, 109)
    x = torch.randn(IMG)
    export_legacy(model, (x,), os.path.join(HERE, "shufflenet_tiny.onnx"), ["input"], ["logits"])
    return _finish("shufflenet_tiny.onnx", model, (x,), {"input": IMG}, {
        "description": "ShuffleNetV2-style CNN: stride-2 units (two branches concatenated) and stride-1 units "
                       "(chunk in halves, one half through 1x1 -> dw3x3 -> 1x1), each followed by a channel "
                       "shuffle written torchvision-style (view -> transpose -> view with the batch taken from "
                       "x.size()). Random weights.",
        "exporter": "torch.onnx legacy",
        "idioms": ["channel shuffle Reshape -> Transpose -> Reshape", "Reshape shapes built at run time from "
                   "Shape/Gather/Div/Unsqueeze/Concat (torchvision style, dynamic batch)",
                   "x.chunk(2, 1) exported as two Slices whose ends are computed from Shape",
                   "Concat", "depthwise Conv", "ReduceMean head"],
    })


def build_dynamo_ext() -> dict:
    seed(10)
    model = ResNetSmall(blocks=(1, 1), widths=(16, 32)).eval()
    randomize_norms(model, 110)
    x2 = torch.randn(2, 3, 64, 64)  # batch 2: torch.export specialises example dims of size 1
    batch = torch.export.Dim("batch", min=1, max=1024)
    prog = torch.onnx.export(model, (x2,), dynamo=True, opset_version=18, input_names=["input"],
                             output_names=["logits"], dynamic_shapes={"x": {0: batch}})
    mp = prog.model_proto
    # Node stack traces hold this machine's absolute paths and line numbers; the
    # rest of the dynamo exporter's node metadata (namespace, class hierarchy) stays.
    for node in mp.graph.node:
        kept = [p for p in node.metadata_props if p.key != "pkg.torch.onnx.stack_trace"]
        del node.metadata_props[:]
        node.metadata_props.extend(kept)
    for vi in list(mp.graph.input) + list(mp.graph.output):
        d0 = vi.type.tensor_type.shape.dim[0]
        assert d0.HasField("dim_param"), vi
        d0.dim_param = "batch"
    path = os.path.join(HERE, "dynamo_ext.onnx")
    data = os.path.join(HERE, "dynamo_ext.onnx.data")
    if os.path.exists(data):
        os.remove(data)
    # Every float tensor goes to the one data file (size_threshold 0). Integer
    # tensors (Reshape shapes, ReduceMean axes) stay inline: onnx's full checker
    # cannot run shape inference through external data.
    for t in mp.graph.initializer:
        if t.data_type != onnx.TensorProto.INT64:
            if not t.HasField("raw_data"):
                t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t), t.name))
            set_external_data(t, location="dynamo_ext.onnx.data")
    onnx.save(mp, path)
    x = torch.randn(IMG)
    return _finish("dynamo_ext.onnx", model, (x,), {"input": IMG}, {
        "description": "Small residual CNN (2 stages x 1 BasicBlock, widths 16/32) exported with the dynamo "
                       "exporter (torch.export) and saved with every tensor in external data "
                       "(dynamo_ext.onnx.data). The exporter's default optimizer fuses the BNs into the convs. Random weights.",
        "exporter": "torch.onnx dynamo",
        "external_data": "dynamo_ext.onnx.data",
        "idioms": ["external data (every float tensor in one file; int64 shape/axes tensors inline)",
                   "dynamo exporter naming and ops (ReduceMean + Reshape for pool/flatten)",
                   "BN fused into Conv by the exporter's optimizer (no BatchNormalization nodes)",
                   "residual Add", "symbolic batch from torch.export.Dim",
                   "node metadata_props (namespace, class hierarchy, fx node; stack traces stripped)"],
    })


def build_weightnorm() -> dict:
    # spectral_norm is not used: its eval-mode sigma uses aten::vdot, which the
    # legacy exporter cannot export (torch 2.14.1, opset 17), so the Linear
    # carries weight_norm as well.
    seed(11)
    model = WeightNormNet(spectral=False).eval()
    randomize_norms(model, 111)
    x = torch.randn(IMG)
    export_legacy(model, (x,), os.path.join(HERE, "weightnorm_nofold.onnx"), ["input"], ["logits"], fold=False)
    return _finish("weightnorm_nofold.onnx", model, (x,), {"input": IMG}, {
        "description": "CNN whose three convs and final Linear use torch.nn.utils.parametrizations.weight_norm, "
                       "plus a plain Conv+BN pair, exported with do_constant_folding=False so every "
                       "weight_norm weight is computed at run time from g and v (ReduceL2 -> Div -> Mul). "
                       "spectral_norm was tried and does not export (aten::vdot). Random weights.",
        "exporter": "torch.onnx legacy (do_constant_folding=False)",
        "idioms": ["weights computed at run time from g and v (ReduceL2/Div/Mul chains)",
                   "computed Gemm weight", "Conv+BN pairs (BatchNormalization kept as nodes)",
                   "residual Add", "no exporter constant folding"],
        "count_notes": "torch_params counts weight_norm's g and v separately (the folded model stores only W: "
                       "g adds C_out per layer) plus BN running stats",
    })


def build_unet() -> dict:
    seed(12)
    model = TinyUNet().eval()
    randomize_norms(model, 112)
    x = torch.randn(IMG)
    export_legacy(model, (x,), os.path.join(HERE, "convtranspose_unet.onnx"), ["input"], ["mask"])
    return _finish("convtranspose_unet.onnx", model, (x,), {"input": IMG}, {
        "description": "Tiny U-Net: two strided-conv encoder stages, a grouped 3x3 conv (group=4, not "
                       "depthwise), two ConvTranspose stride-2 decoder stages (k2 s2, and k3 s2 p1 "
                       "output_padding 1) each followed by a skip Concat, and a 1x1 segmentation head "
                       "(3 classes at 64x64). Random weights.",
        "exporter": "torch.onnx legacy",
        "idioms": ["ConvTranspose stride 2 (weight layout [C_in, C_out/group, k, k])", "output_padding",
                   "skip Concat", "grouped Conv group=4", "spatial output (segmentation)"],
    })


def build_paddle(previous: dict) -> dict | None:
    """Run build_paddle.py in the paddle interpreter; keep the committed entry if there is none."""
    name = "paddle_style_mbv3.onnx"
    if not os.path.exists(PADDLE_PYTHON):
        print(f"paddle: {PADDLE_PYTHON} not found, keeping the committed {name}")
        return previous.get(name)
    res = subprocess.run([PADDLE_PYTHON, os.path.join(HERE, "build_paddle.py")], capture_output=True, text=True)
    if res.returncode != 0:
        sys.stderr.write(res.stdout + res.stderr)
        raise RuntimeError("build_paddle.py failed")
    meta = json.loads(res.stdout.strip().splitlines()[-1])
    path = os.path.join(HERE, name)
    shapes = {"x": IMG}
    out_shapes = verify(path, None, shapes)
    graph_macs = onnx_macs(path, shapes)
    assert graph_macs == meta["torch_macs"], (graph_macs, meta)
    # H and W are symbolic too: it must also run at another resolution
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    sess.run(None, {"x": np.zeros((2, 3, 96, 80), np.float32)})
    print(f"{name:28s} opset 11  macs {meta['torch_macs']:>10,d}  params {meta['torch_params']:>8,d}  "
          f"{os.path.getsize(path) / 1e3:8.1f} kB")
    return {
        "description": "paddle.vision.models.mobilenet_v3_small(scale=0.35, num_classes=10) with randomized BN "
                       "stats, exported by the real paddle2onnx (optimize_tool='None', so no Polygraphy "
                       "folding) with batch, H and W symbolic. Random weights.",
        "exporter": "paddle2onnx",
        "exporter_versions": {"paddlepaddle": meta["paddle_version"], "paddle2onnx": meta["paddle2onnx_version"]},
        "opset": 11,
        "batch_dim": "DynamicDimension.0",
        "input_shapes": shapes,
        "output_shapes": out_shapes,
        "symbolic_dims": {"x": ["DynamicDimension.0", 3, "DynamicDimension.1", "DynamicDimension.2"]},
        "idioms": ["weights as Constant nodes (no initializers)", "paddle naming (p2o.pd_op.*, fetch_name_0)",
                   "hard-swish as HardSigmoid(alpha=1/6, beta=0.5) * x", "SE gating with HardSigmoid",
                   "conv bias as a separate Add of a Reshape'd Constant", "Identity nodes after elementwise ops",
                   "Reshape shapes fed through Identity(Constant): onnx shape inference loses every shape "
                   "after the first SE block until constants are folded",
                   "symbolic H and W", "flatten as Shape/Slice/Concat/Reshape", "Linear as MatMul + Add"],
        "torch_macs": meta["torch_macs"],
        "torch_params": meta["torch_params"],
        "count_notes": "counted in paddle (forward hooks on Conv2D/Linear, same MAC convention; params are the "
                       "float32 state_dict entries incl. BN mean/variance), not in torch",
    }


def main(only: list[str]) -> None:
    """Build every model (or only the given builder keys) and rewrite MODELS.json."""
    check_flop_convention()
    previous: dict = {}
    if os.path.exists(MODELS_JSON):
        with open(MODELS_JSON) as f:
            previous = json.load(f)
    builders: dict[str, Callable[[], list[tuple[str, dict]]]] = {
        "resnet_small": lambda: [("resnet_small.onnx", build_resnet_small())],
        "mobilenet_se": lambda: [("mobilenet_se.onnx", build_mobilenet_se())],
        "inception_concat": lambda: [("inception_concat.onnx", build_inception())],
        "digits_cnn": lambda: [("digits_cnn.onnx", build_digits())],
        "zoo": build_zoo_opset9,
        "paddle_style_mbv3": lambda: [("paddle_style_mbv3.onnx", build_paddle(previous))],
        "yolo_c2f": lambda: [("yolo_c2f.onnx", build_yolo())],
        "densenet_tiny": lambda: [("densenet_tiny.onnx", build_densenet())],
        "convnext_tiny": lambda: [("convnext_tiny.onnx", build_convnext())],
        "shufflenet_tiny": lambda: [("shufflenet_tiny.onnx", build_shufflenet())],
        "dynamo_ext": lambda: [("dynamo_ext.onnx", build_dynamo_ext())],
        "weightnorm_nofold": lambda: [("weightnorm_nofold.onnx", build_weightnorm())],
        "convtranspose_unet": lambda: [("convtranspose_unet.onnx", build_unet())],
    }
    unknown = set(only) - set(builders)
    if unknown:
        raise SystemExit(f"unknown model keys {sorted(unknown)}; choose from {sorted(builders)}")
    entries: dict[str, dict] = {}
    for key, build in builders.items():
        if only and key not in only:
            entries.update((n, e) for n, e in previous.items() if n.startswith(key) or
                           (key == "zoo" and n.startswith("zoo_")))
            continue
        for name, entry in build():
            if entry is not None:
                entry.setdefault("batch_dim", "batch")
                entries[name] = entry
    with open(MODELS_JSON, "w") as f:
        json.dump(entries, f, indent=2)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(HERE, p)) for p in os.listdir(HERE))
    print(f"models/: {len(entries)} models, folder {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main(sys.argv[1:])
