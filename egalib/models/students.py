"""Student backbones: images in, a pooled feature vector out (no classifier).

`resnet8x4` follows the CRD code base's CIFAR ResNet (BasicBlocks, widths 32-64-128-256, one
block per stage); with a 100-way linear classifier on its 256-d features it has 1,233,540
parameters. Pooling is adaptive, so any input size works.
"""

from torch import nn


def conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv_bn_relu(cin, cout, stride)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

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
    return Backbone(layers, widths[3])


def small_cnn(in_channels: int = 3, width: int = 16) -> Backbone:
    """A CPU-sized student for the demo: four conv blocks, widths w, 2w, 4w, 8w (8w-d features)."""
    layers = nn.Sequential(
        conv_bn_relu(in_channels, width),
        conv_bn_relu(width, 2 * width, stride=2),
        conv_bn_relu(2 * width, 4 * width, stride=2),
        conv_bn_relu(4 * width, 8 * width, stride=2),
    )
    return Backbone(layers, 8 * width)


STUDENTS = {"resnet8x4": resnet8x4, "small-cnn": small_cnn}
