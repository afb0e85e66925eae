"""Small built-in models that train well and fast on a CPU.

Both take the image geometry from the data (`channels`, `image_size`) and the config's
`model.width`, `model.depth` and `model.dropout`; `SimpleCNN` also takes `convs_per_block`
through `model.kwargs`.
"""

from __future__ import annotations

import torch
from torch import nn

# The smallest feature map SimpleCNN pools down to: pooling a 2x2 map would leave 1x1 early.
MIN_POOLED_SIZE = 2


def _conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


class SimpleCNN(nn.Module):
    """`depth` blocks of `convs_per_block` x (conv3x3-BN-ReLU) then 2x2 max-pool.

    Block `i` has `width * 2**i` channels. A block pools only while the feature map stays at
    least 2x2, so any depth works on 8x8 images. Global average pooling, dropout and one linear
    layer make the head.
    """

    min_depth = 1

    def __init__(
        self,
        channels: int,
        num_classes: int,
        width: int = 32,
        depth: int = 2,
        dropout: float = 0.2,
        image_size: int = 32,
        convs_per_block: int = 2,
    ) -> None:
        super().__init__()
        if convs_per_block < 1:
            raise ValueError(f"convs_per_block must be >= 1, got {convs_per_block}")
        layers: list[nn.Module] = []
        in_channels, size = channels, image_size
        for i in range(depth):
            out_channels = width * 2**i
            for j in range(convs_per_block):
                layers += _conv_bn_relu(in_channels if j == 0 else out_channels, out_channels)
            if size // 2 >= MIN_POOLED_SIZE:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            in_channels = out_channels
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x)).flatten(1)
        return self.classifier(self.dropout(x))


class MLP(nn.Module):
    """Flatten, `depth` x (Linear-BN-ReLU-Dropout) hidden layers of `width` units, linear head.

    `depth=0` is a linear (softmax-regression) model.
    """

    min_depth = 0

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        width: int = 256,
        depth: int = 2,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        features = in_features
        for _ in range(depth):
            layers += [nn.Linear(features, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True)]
            layers.append(nn.Dropout(dropout))
            features = width
        self.body = nn.Sequential(*layers)
        self.classifier = nn.Linear(features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.body(x))


BUILTIN_MODELS: dict[str, type[nn.Module]] = {"simple_cnn": SimpleCNN, "mlp": MLP}
