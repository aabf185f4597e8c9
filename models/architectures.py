"""The small PyTorch architectures of the model corpus (build-time only, see build_models.py)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        idn = x if self.downsample is None else self.downsample(x)
        return F.relu(out + idn)


class ResNetSmall(nn.Module):
    """ResNet-18-like layout at 64x64 input, widths 16/32/64."""

    def __init__(self, blocks=(2, 2, 2), widths=(16, 32, 64), num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 2, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
        layers, cin = [], widths[0]
        for i, (n, w) in enumerate(zip(blocks, widths)):
            for j in range(n):
                layers.append(BasicBlock(cin, w, 2 if (j == 0 and i > 0) else 1))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def make_div(v: float, d: int = 8) -> int:
    return max(d, int(v + d / 2) // d * d)


class SqueezeExcite(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        r = make_div(c / 4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(c, r, 1)
        self.fc2 = nn.Conv2d(r, c, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x):
        s = self.gate(self.fc2(F.relu(self.fc1(self.pool(x)))))
        return x * s


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, exp: int, cout: int, k: int, stride: int, se: bool, hs: bool) -> None:
        super().__init__()
        act = nn.Hardswish if hs else nn.ReLU
        layers: list[nn.Module] = []
        if exp != cin:
            layers += [nn.Conv2d(cin, exp, 1, bias=False), nn.BatchNorm2d(exp), act()]
        layers += [nn.Conv2d(exp, exp, k, stride, k // 2, groups=exp, bias=False), nn.BatchNorm2d(exp), act()]
        if se:
            layers.append(SqueezeExcite(exp))
        layers += [nn.Conv2d(exp, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.block(x)
        return x + y if self.residual else y


class MobileNetSE(nn.Module):
    """MobileNetV3-small-like: depthwise separable, SE with Hardsigmoid, Hardswish."""

    CFG = [  # cin, exp, cout, k, stride, se, hardswish
        (16, 16, 16, 3, 2, True, False),
        (16, 48, 24, 3, 2, False, False),
        (24, 72, 24, 3, 1, False, False),
        (24, 72, 40, 5, 2, True, True),
        (40, 120, 40, 5, 1, True, True),
        (40, 120, 40, 5, 1, True, True),
        (40, 96, 48, 3, 1, True, True),
    ]

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish())
        self.blocks = nn.Sequential(*[InvertedResidual(*c) for c in self.CFG])
        self.last = nn.Sequential(nn.Conv2d(48, 144, 1, bias=False), nn.BatchNorm2d(144), nn.Hardswish())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Linear(144, 128), nn.Hardswish(), nn.Linear(128, num_classes))

    def forward(self, x):
        x = self.last(self.blocks(self.stem(x)))
        return self.head(torch.flatten(self.pool(x), 1))


def conv_bn_relu(cin: int, cout: int, k: int, stride: int = 1, bias: bool = True) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=bias), nn.BatchNorm2d(cout), nn.ReLU())


class InceptionBlock(nn.Module):
    def __init__(self, cin: int, c1: int, c3r: int, c3: int, c5r: int, c5: int, pp: int) -> None:
        super().__init__()
        self.b1 = conv_bn_relu(cin, c1, 1)
        self.b3 = nn.Sequential(conv_bn_relu(cin, c3r, 1), conv_bn_relu(c3r, c3, 3))
        self.b5 = nn.Sequential(conv_bn_relu(cin, c5r, 1), conv_bn_relu(c5r, c5, 5))
        self.bp = nn.Sequential(nn.MaxPool2d(3, 1, 1), conv_bn_relu(cin, pp, 1))
        self.cout = c1 + c3 + c5 + pp

    def forward(self, x):
        return torch.cat([self.b1(x), self.b3(x), self.b5(x), self.bp(x)], 1)


class InceptionNet(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn_relu(3, 32, 3, 2), nn.MaxPool2d(3, 2, 1))
        self.inc_a = InceptionBlock(32, 16, 16, 24, 4, 8, 8)      # -> 56
        self.inc_b = InceptionBlock(56, 24, 24, 32, 8, 12, 12)    # -> 80
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.inc_c = InceptionBlock(80, 32, 32, 48, 8, 16, 16)    # -> 112
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(112, num_classes)

    def forward(self, x):
        x = self.inc_c(self.pool(self.inc_b(self.inc_a(self.stem(x)))))
        return self.fc(torch.flatten(self.gap(x), 1))


class DigitsNet(nn.Module):
    """Small residual CNN for 8x8 digits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = conv_bn_relu(1, 32, 3, bias=False)
        self.res_a = nn.Conv2d(32, 32, 3, 1, 1, bias=False)
        self.res_a_bn = nn.BatchNorm2d(32)
        self.res_b = nn.Conv2d(32, 32, 3, 1, 1, bias=False)
        self.res_b_bn = nn.BatchNorm2d(32)
        self.conv2 = conv_bn_relu(32, 64, 3, 2, bias=False)
        self.conv3 = conv_bn_relu(64, 64, 3, bias=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = self.conv1(x)
        y = self.res_b_bn(self.res_b(F.relu(self.res_a_bn(self.res_a(x)))))
        x = F.relu(x + y)
        x = self.conv3(self.conv2(x))
        return self.fc(torch.flatten(self.pool(x), 1))


# --- YOLOv8-style pieces ----------------------------------------------------

class ConvBnSiLU(nn.Module):
    def __init__(self, cin: int, cout: int, k: int = 1, s: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.SiLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, c: int, shortcut: bool) -> None:
        super().__init__()
        self.cv1 = ConvBnSiLU(c, c, 3)
        self.cv2 = ConvBnSiLU(c, c, 3)
        self.add = shortcut

    def forward(self, x):
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    def __init__(self, cin: int, cout: int, n: int = 1, shortcut: bool = False) -> None:
        super().__init__()
        self.c = cout // 2
        self.cv1 = ConvBnSiLU(cin, 2 * self.c, 1)
        self.cv2 = ConvBnSiLU((2 + n) * self.c, cout, 1)
        self.m = nn.ModuleList(Bottleneck(self.c, shortcut) for _ in range(n))

    def forward(self, x):
        # Ultralytics' export path (forward_split): split with explicit sizes -> one ONNX Split
        y = list(self.cv1(x).split((self.c, self.c), 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    def __init__(self, cin: int, cout: int, k: int = 5) -> None:
        super().__init__()
        c_ = cin // 2
        self.cv1 = ConvBnSiLU(cin, c_, 1)
        self.cv2 = ConvBnSiLU(c_ * 4, cout, 1)
        self.m = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x):
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))


class DetectLevel(nn.Module):
    def __init__(self, c: int, hidden: int, reg: int, nc: int) -> None:
        super().__init__()
        self.box = nn.Sequential(ConvBnSiLU(c, hidden, 3), ConvBnSiLU(hidden, hidden, 3), nn.Conv2d(hidden, 4 * reg, 1))
        self.cls = nn.Sequential(ConvBnSiLU(c, hidden, 3), ConvBnSiLU(hidden, hidden, 3), nn.Conv2d(hidden, nc, 1))

    def forward(self, x):
        return torch.cat((self.box(x), self.cls(x)), 1)


class YoloC2f(nn.Module):
    def __init__(self, nc: int = 8, reg: int = 4) -> None:
        super().__init__()
        self.b0 = ConvBnSiLU(3, 16, 3, 2)     # 32x32
        self.b1 = ConvBnSiLU(16, 32, 3, 2)    # 16x16
        self.b2 = C2f(32, 32, 1, True)        # P3
        self.b3 = ConvBnSiLU(32, 64, 3, 2)    # 8x8
        self.b4 = C2f(64, 64, 1, True)
        self.b5 = SPPF(64, 64)                # P4
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.n3 = C2f(96, 32, 1, False)
        self.down = ConvBnSiLU(32, 32, 3, 2)
        self.n4 = C2f(96, 64, 1, False)
        self.det3 = DetectLevel(32, 16, reg, nc)
        self.det4 = DetectLevel(64, 16, reg, nc)

    def forward(self, x):
        p3 = self.b2(self.b1(self.b0(x)))
        p4 = self.b5(self.b4(self.b3(p3)))
        n3 = self.n3(torch.cat((self.up(p4), p3), 1))
        n4 = self.n4(torch.cat((self.down(n3), p4), 1))
        return self.det3(n3), self.det4(n4)


# --- DenseNet ------------------------------------------------------------

class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int, bn_size: int = 4) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, bn_size * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, 1, 1, bias=False)

    def forward(self, features: list[torch.Tensor]):
        x = torch.cat(features, 1)  # torchvision style: every layer concatenates all previous features
        x = self.conv1(F.relu(self.norm1(x)))
        return self.conv2(F.relu(self.norm2(x)))


class DenseBlock(nn.Module):
    def __init__(self, n: int, cin: int, growth: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DenseLayer(cin + i * growth, growth) for i in range(n))
        self.cout = cin + n * growth

    def forward(self, x):
        feats = [x]
        for layer in self.layers:
            feats.append(layer(feats))
        return torch.cat(feats, 1)


class DenseNetTiny(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        self.block1 = DenseBlock(4, 16, 8)  # -> 48
        self.trans = nn.Sequential(nn.BatchNorm2d(48), nn.ReLU(), nn.Conv2d(48, 24, 1, bias=False), nn.AvgPool2d(2, 2))
        self.block2 = DenseBlock(4, 24, 8)  # -> 56
        self.norm = nn.BatchNorm2d(56)
        self.fc = nn.Linear(56, num_classes)

    def forward(self, x):
        x = self.block2(self.trans(self.block1(self.stem(x))))
        x = F.adaptive_avg_pool2d(F.relu(self.norm(x)), 1)
        return self.fc(torch.flatten(x, 1))


# --- ConvNeXt --------------------------------------------------------------

class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over channels of an NCHW tensor, via channels-last permutes."""

    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, 1, 3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        # layer scale: random, not 1e-6, so the block is not an identity
        self.gamma = nn.Parameter(torch.rand(dim) * 0.5 + 0.25)

    def forward(self, x):
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(F.gelu(self.pwconv1(self.norm(y))))
        return x + (self.gamma * y).permute(0, 3, 1, 2)


class ConvNeXtTiny(nn.Module):
    def __init__(self, dims=(32, 64), depths=(2, 2), num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, dims[0], 4, 4), LayerNorm2d(dims[0], eps=1e-6))
        self.stage1 = nn.Sequential(*[ConvNeXtBlock(dims[0]) for _ in range(depths[0])])
        self.down = nn.Sequential(LayerNorm2d(dims[0], eps=1e-6), nn.Conv2d(dims[0], dims[1], 2, 2))
        self.stage2 = nn.Sequential(*[ConvNeXtBlock(dims[1]) for _ in range(depths[1])])
        self.norm = nn.LayerNorm(dims[1], eps=1e-6)
        self.head = nn.Linear(dims[1], num_classes)

    def forward(self, x):
        x = self.stage2(self.down(self.stage1(self.stem(x))))
        return self.head(self.norm(x.mean([-2, -1])))


# --- ShuffleNetV2 ----------------------------------------------------------

def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, c, h, w = x.size()
    x = x.view(b, groups, c // groups, h, w)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(b, -1, h, w)


class ShuffleUnit(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        half = cout // 2
        if stride > 1:
            self.branch1 = nn.Sequential(
                nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin),
                nn.Conv2d(cin, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU())
        b2in = cin if stride > 1 else half
        self.branch2 = nn.Sequential(
            nn.Conv2d(b2in, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU(),
            nn.Conv2d(half, half, 3, stride, 1, groups=half, bias=False), nn.BatchNorm2d(half),
            nn.Conv2d(half, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU())

    def forward(self, x):
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), 1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), 1)
        return channel_shuffle(out, 2)


class ShuffleNetTiny(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 24, 3, 2, 1, bias=False), nn.BatchNorm2d(24), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        self.stage2 = nn.Sequential(ShuffleUnit(24, 48, 2), ShuffleUnit(48, 48, 1), ShuffleUnit(48, 48, 1))
        self.stage3 = nn.Sequential(ShuffleUnit(48, 96, 2), ShuffleUnit(96, 96, 1))
        self.conv5 = nn.Sequential(nn.Conv2d(96, 192, 1, bias=False), nn.BatchNorm2d(192), nn.ReLU())
        self.fc = nn.Linear(192, num_classes)

    def forward(self, x):
        x = self.conv5(self.stage3(self.stage2(self.stem(x))))
        return self.fc(x.mean([2, 3]))


# --- weight norm ----------------------------------------------------------

class WeightNormNet(nn.Module):
    def __init__(self, num_classes: int = 10, spectral: bool = False) -> None:
        super().__init__()
        wn = nn.utils.parametrizations.weight_norm
        self.conv1 = wn(nn.Conv2d(3, 16, 3, 2, 1))
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = wn(nn.Conv2d(16, 32, 3, 2, 1))
        self.bn2 = nn.BatchNorm2d(32)
        self.conv3 = wn(nn.Conv2d(32, 32, 3, 1, 1))
        self.bn3 = nn.BatchNorm2d(32)
        self.conv4 = nn.Conv2d(32, 48, 3, 2, 1)  # plain Conv+BN pair
        self.bn4 = nn.BatchNorm2d(48)
        fc = nn.Linear(48, num_classes)
        self.fc = nn.utils.parametrizations.spectral_norm(fc) if spectral else wn(fc)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.relu(x + self.bn3(self.conv3(x)))
        x = F.relu(self.bn4(self.conv4(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# --- U-Net with ConvTranspose ------------------------------------------------

class TinyUNet(nn.Module):
    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.enc1 = conv_bn_relu(3, 16, 3)             # 64x64
        self.enc2 = conv_bn_relu(16, 32, 3, 2)         # 32x32
        self.enc3 = conv_bn_relu(32, 64, 3, 2)         # 16x16
        self.mid = nn.Sequential(nn.Conv2d(64, 64, 3, 1, 1, groups=4), nn.BatchNorm2d(64), nn.ReLU())
        self.up2 = nn.ConvTranspose2d(64, 32, 2, 2)    # -> 32x32
        self.dec2 = conv_bn_relu(64, 32, 3)
        self.up1 = nn.ConvTranspose2d(32, 16, 3, 2, padding=1, output_padding=1)  # -> 64x64
        self.dec1 = conv_bn_relu(32, 16, 3)
        self.head = nn.Conv2d(16, num_classes, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        b = self.mid(self.enc3(e2))
        d2 = self.dec2(torch.cat((self.up2(b), e2), 1))
        d1 = self.dec1(torch.cat((self.up1(d2), e1), 1))
        return self.head(d1)
