"""Models for the benchmark suite: torchvision classifiers and a small YOLOv8n-like detector.

Weights are random (no downloads); BatchNorm gets random, non-trivial statistics so
folding and the pruned filters' constant outputs (act(BN beta)) are exercised.
"""

from __future__ import annotations

import copy
from pathlib import Path

import sys

import torch
from torch import nn

# The YOLO building blocks are the ones the shipped yolo_c2f model uses (models/architectures.py).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "models"))
from architectures import C2f, ConvBnSiLU, SPPF  # noqa: E402

CLASSIFIERS = {
    "resnet50": "resnet50",
    "mobilenet_v2": "mobilenet_v2",
    "mobilenet_v3_large": "mobilenet_v3_large",
    "efficientnet_b0": "efficientnet_b0",
    "densenet121": "densenet121",
}
MODELS = [*CLASSIFIERS, "yolov8n_like"]


# --------------------------------------------------------------------------- YOLO-style detector
class Detect(nn.Module):
    """Per level: a box branch (4 x 16 DFL bins) and a class branch; outputs (N, 64 + nc, anchors)."""

    def __init__(self, nc: int, chs: tuple[int, ...]):
        super().__init__()
        c2, c3 = max(16, chs[0] // 4, 64), max(chs[0], min(nc, 100))
        self.box = nn.ModuleList(
            nn.Sequential(ConvBnSiLU(c, c2, 3), ConvBnSiLU(c2, c2, 3), nn.Conv2d(c2, 64, 1)) for c in chs
        )
        self.cls = nn.ModuleList(
            nn.Sequential(ConvBnSiLU(c, c3, 3), ConvBnSiLU(c3, c3, 3), nn.Conv2d(c3, nc, 1)) for c in chs
        )

    def forward(self, feats):
        outs = []
        for x, b, c in zip(feats, self.box, self.cls):
            y = torch.cat((b(x), c(x)), 1)
            outs.append(y.flatten(2))
        return torch.cat(outs, 2)

    def output_convs(self) -> list[nn.Module]:
        return [s[-1] for s in (*self.box, *self.cls)]


class YoloV8nLike(nn.Module):
    """YOLOv8n layout (width 0.25, depth 0.33): backbone, SPPF, FPN/PAN neck, decoupled head."""

    def __init__(self, nc: int = 80):
        super().__init__()
        self.b0 = ConvBnSiLU(3, 16, 3, 2)
        self.b1 = ConvBnSiLU(16, 32, 3, 2)
        self.b2 = C2f(32, 32, 1, True)
        self.b3 = ConvBnSiLU(32, 64, 3, 2)
        self.b4 = C2f(64, 64, 2, True)
        self.b5 = ConvBnSiLU(64, 128, 3, 2)
        self.b6 = C2f(128, 128, 2, True)
        self.b7 = ConvBnSiLU(128, 256, 3, 2)
        self.b8 = C2f(256, 256, 1, True)
        self.b9 = SPPF(256, 256)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.h12 = C2f(384, 128, 1)
        self.h15 = C2f(192, 64, 1)
        self.h16 = ConvBnSiLU(64, 64, 3, 2)
        self.h18 = C2f(192, 128, 1)
        self.h19 = ConvBnSiLU(128, 128, 3, 2)
        self.h21 = C2f(384, 256, 1)
        self.detect = Detect(nc, (64, 128, 256))

    def forward(self, x):
        p3 = self.b4(self.b3(self.b2(self.b1(self.b0(x)))))
        p4 = self.b6(self.b5(p3))
        p5 = self.b9(self.b8(self.b7(p4)))
        n4 = self.h12(torch.cat((self.up(p5), p4), 1))
        n3 = self.h15(torch.cat((self.up(n4), p3), 1))
        m4 = self.h18(torch.cat((self.h16(n3), n4), 1))
        m5 = self.h21(torch.cat((self.h19(m4), p5), 1))
        return self.detect([n3, m4, m5])


# --------------------------------------------------------------------------- building and export
def randomize_bn(model: nn.Module, seed: int) -> None:
    """Non-trivial BN statistics and affine params (beta != 0), so folding matters."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            with torch.no_grad():
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))


def build(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    if name == "yolov8n_like":
        model = YoloV8nLike()
    else:
        import torchvision

        model = getattr(torchvision.models, CLASSIFIERS[name])(weights=None)
    randomize_bn(model, seed)
    return model.eval()


def input_size(name: str, quick: bool) -> int:
    if name == "yolov8n_like":
        return 320 if quick else 640
    return 128 if quick else 224


def output_layers(model: nn.Module) -> list[nn.Module]:
    """Layers Torch-Pruning must leave alone: the classifier or the detect output convs."""
    if isinstance(model, YoloV8nLike):
        return model.detect.output_convs()
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def export(model: nn.Module, path: Path, size: int) -> Path:
    """ONNX export with a dynamic batch axis (TorchScript exporter, opset 17: folds BN into Conv)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        torch.onnx.export(
            model, (x,), str(path), dynamo=False, opset_version=17, input_names=["input"], output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, do_constant_folding=True,
        )
    return path


def torch_pruning_model(model: nn.Module, ratio: float, size: int, round_to: int = 8) -> nn.Module:
    """Torch-Pruning's magnitude pruner (L1, local) at ``ratio`` on a copy of ``model``."""
    import torch_pruning as tp

    m = copy.deepcopy(model)
    x = torch.randn(1, 3, size, size)
    pruner = tp.pruner.MagnitudePruner(
        m, x, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=ratio,
        ignored_layers=output_layers(m), round_to=round_to,
    )
    pruner.step()
    return m.eval()
