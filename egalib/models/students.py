"""Student backbones: images in, a pooled feature vector out (no classifier).

The architectures follow the CRD code base (RepDistiller): with a 100-way linear classifier on
their features they have exactly CRD's parameter counts (tests/test_students.py). Pooling is
adaptive, so any input size works (CRD hard-codes pool sizes for 32x32 inputs).
"""

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def he_init(backbone: "Backbone") -> "Backbone":
    """The CRD code base's initialisation of resnet8x4, VGG13 and WRN-40-2: every conv weight
    normal with std sqrt(2 / fan_out) (He, fan_out = out channels x kernel area), conv biases 0,
    batch norms weight 1 and bias 0. ShuffleNetV1 keeps PyTorch's default there, as here."""
    for m in backbone.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return backbone


def conv_bn(cin: int, cout: int, stride=1, kernel=3, groups=1, bias=False) -> list[nn.Module]:
    """A 'same'-padded convolution and its BatchNorm, as a list to splice into a Sequential."""
    conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=bias)
    return [conv, nn.BatchNorm2d(cout)]


def conv_bn_relu(cin: int, cout: int, stride: int = 1, **conv_kwargs) -> nn.Sequential:
    """Conv, BatchNorm, ReLU; `conv_kwargs` (kernel, groups, bias) go to `conv_bn`."""
    return nn.Sequential(*conv_bn(cin, cout, stride, **conv_kwargs), nn.ReLU(inplace=True))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv_bn_relu(cin, cout, stride)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(*conv_bn(cin, cout, stride, kernel=1))

    def forward(self, x):
        return (self.bn2(self.conv2(self.conv1(x))) + self.shortcut(x)).relu()


class Backbone(nn.Module):
    """A stack of layers ending in global average pooling; `feature_dim` is its output size."""

    def __init__(self, layers: nn.Sequential, feature_dim: int):
        super().__init__()
        self.layers = layers
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.feature_dim = feature_dim

    def forward(self, x):
        return self.pool(self.layers(x))


def resnet8x4(in_channels: int = 3) -> Backbone:
    widths = (32, 64, 128, 256)
    layers = nn.Sequential(
        conv_bn_relu(in_channels, widths[0]),
        BasicBlock(widths[0], widths[1]),
        BasicBlock(widths[1], widths[2], stride=2),
        BasicBlock(widths[2], widths[3], stride=2),
    )
    return he_init(Backbone(layers, widths[3]))


def small_cnn(in_channels: int = 3, width: int = 16) -> Backbone:
    """A CPU-sized student for the demo: four conv blocks, widths w, 2w, 4w, 8w (8w-d features)."""
    layers = nn.Sequential(
        conv_bn_relu(in_channels, width),
        conv_bn_relu(width, 2 * width, stride=2),
        conv_bn_relu(2 * width, 4 * width, stride=2),
        conv_bn_relu(4 * width, 8 * width, stride=2),
    )
    return Backbone(layers, 8 * width)


class ChannelShuffle(nn.Module):
    """Interleaves the channels of `groups` groups so the next grouped conv sees every group."""

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x):
        b, c, h, w = x.shape
        return x.view(b, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNetV1 bottleneck: grouped 1x1, shuffle, depthwise 3x3, grouped 1x1, then a residual.
    With stride 2 the shortcut is a 3x3 average pool concatenated to the branch (so the branch
    only makes `cout - cin` channels); with stride 1 it is an identity added to the branch."""

    def __init__(self, cin: int, cout: int, stride: int, groups: int, first_groups: int):
        super().__init__()
        self.concat = stride == 2
        branch_out = cout - cin if self.concat else cout
        mid = branch_out // 4
        self.branch = nn.Sequential(
            conv_bn_relu(cin, mid, kernel=1, groups=first_groups),
            ChannelShuffle(first_groups),
            conv_bn_relu(mid, mid, stride, groups=mid),
            *conv_bn(mid, branch_out, kernel=1, groups=groups),
        )
        self.shortcut = nn.AvgPool2d(3, 2, 1) if self.concat else nn.Identity()

    def forward(self, x):
        out, res = self.branch(x), self.shortcut(x)
        return (torch.cat([out, res], 1) if self.concat else out + res).relu()


def shufflenetv1(in_channels: int = 3) -> Backbone:
    """CRD's ShuffleV1: groups 3, widths 240-480-960, 4-8-4 units. Each stage opens with a
    downsampling unit; the first one's first 1x1 conv is ungrouped, as in the paper and CRD. The
    stem is a 1x1 conv to 24 channels, as in CRD: a 3x3 one would miss CRD's parameter count."""
    widths, blocks, groups = (24, 240, 480, 960), (4, 8, 4), 3
    layers = [conv_bn_relu(in_channels, widths[0], kernel=1)]
    for stage, (cin, cout, n) in enumerate(zip(widths, widths[1:], blocks)):
        layers.append(ShuffleUnit(cin, cout, 2, groups, first_groups=1 if stage == 0 else groups))
        layers += [ShuffleUnit(cout, cout, 1, groups, groups) for _ in range(n - 1)]
    return Backbone(nn.Sequential(*layers), widths[-1])


class MaxPoolIfLarge(nn.Module):
    """2x2 max pool of maps at least `min_size` pixels a side. CRD's VGG pools before its last
    stage only for 64x64 inputs, keeping a 4x4 map for 32x32 ones; this does so for any size."""

    def __init__(self, min_size: int = 8):
        super().__init__()
        self.min_size = min_size

    def forward(self, x):
        return nn.functional.max_pool2d(x, 2) if min(x.shape[-2:]) >= self.min_size else x


def vgg13(in_channels: int = 3) -> Backbone:
    """CRD's vgg13 with BN: five stages of two biased 3x3 convs, 64-128-256-512-512."""
    stages = (64, 128, 256, 512, 512)
    layers, cin = [], in_channels
    for i, width in enumerate(stages):
        layers += [conv_bn_relu(cin, width, bias=True), conv_bn_relu(width, width, bias=True)]
        if i < 3:
            layers.append(nn.MaxPool2d(2))
        elif i == 3:
            layers.append(MaxPoolIfLarge(8))
        cin = width
    return he_init(Backbone(nn.Sequential(*layers), stages[-1]))


class PreActBlock(nn.Module):
    """Wide-ResNet pre-activation block: BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus a shortcut. When
    the width or stride changes, the shortcut is a 1x1 conv of the *activated* input (as in the
    WRN reference code); otherwise it is the raw input."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.preact = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(inplace=True))
        first_conv = [*conv_bn(cin, cout, stride), nn.ReLU(inplace=True)]
        self.branch = nn.Sequential(*first_conv, nn.Conv2d(cout, cout, 3, 1, 1, bias=False))
        self.projection = None
        if stride != 1 or cin != cout:
            self.projection = nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        act = self.preact(x)
        shortcut = x if self.projection is None else self.projection(act)
        return self.branch(act) + shortcut


def wide_resnet(depth: int, widen: int, in_channels: int = 3) -> Backbone:
    """WRN-depth-widen: a 16-channel stem, three stages of (depth-4)/6 blocks, final BN-ReLU."""
    n = (depth - 4) // 6
    widths = (16, 16 * widen, 32 * widen, 64 * widen)
    layers = [nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)]
    for stage, (cin, cout) in enumerate(zip(widths, widths[1:])):
        stride = 1 if stage == 0 else 2
        layers += [PreActBlock(cin, cout, stride)] + [PreActBlock(cout, cout) for _ in range(n - 1)]
    layers += [nn.BatchNorm2d(widths[-1]), nn.ReLU(inplace=True)]
    return he_init(Backbone(nn.Sequential(*layers), widths[-1]))


def wrn_40_2(in_channels: int = 3) -> Backbone:
    return wide_resnet(40, 2, in_channels)


STUDENTS = {
    "resnet8x4": resnet8x4,
    "small-cnn": small_cnn,
    "shufflenetv1": shufflenetv1,
    "vgg13": vgg13,
    "wrn-40-2": wrn_40_2,
}


def fold_batch_norms(backbone: nn.Module) -> nn.Module:
    """An eval-mode copy of `backbone` in which every BatchNorm that directly follows a
    convolution in an nn.Sequential is folded into that convolution's weights and bias. It
    computes the same function, to float rounding, with one pass over the activations fewer:
    for evaluation passes, not for training (a folded BatchNorm no longer learns)."""
    folded = copy.deepcopy(backbone).eval()
    for layers in [m for m in folded.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(layers) - 1):
            conv, norm = layers[i], layers[i + 1]
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                layers[i], layers[i + 1] = fuse_conv_bn_eval(conv, norm), nn.Identity()
    return folded
