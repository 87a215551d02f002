"""ArcFace's IResNet backbone, laid out like insightface ``arcface_torch``'s ``backbone.pth``.

The CSIM network (REFERENCE_SPEC §6.2): a face aligned to 112×112 (``alignment.py``), RGB,
normalised ``(x − 0.5) / 0.5`` → a 512-d embedding. Written from the facts of insightface's
``recognition/arcface_torch/backbones/iresnet.py``:

* stem ``conv1`` 3×3 (3→64, no bias) · ``bn1`` · ``prelu``;
* ``layer1`` … ``layer4`` (64, 128, 256, 512 channels), each a sequence of ``IBasicBlock``s whose
  first block halves the resolution (112 → 56 → 28 → 14 → 7) and has a ``downsample``
  (``0``: 1×1 conv with the stride, no bias; ``1``: BN); blocks per stage: r18 [2, 2, 2, 2],
  r34 [3, 4, 6, 3], r50 [3, 4, 14, 3], r100 [3, 13, 30, 3];
* block: ``bn1`` · ``conv1`` 3×3 · ``bn2`` · ``prelu`` · ``conv2`` 3×3 (the stride) · ``bn3``,
  plus the shortcut (no activation after the sum);
* head ``bn2`` (512) · flatten · ``dropout`` · ``fc`` (512·7·7 → 512) · ``features``
  (BatchNorm1d 512). Every BN has ε = 1e-5.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

INPUT_SIZE = 112
ARCHITECTURES: dict[str, tuple[int, int, int, int]] = {
    "r18": (2, 2, 2, 2),
    "r34": (3, 4, 6, 3),
    "r50": (3, 4, 14, 3),
    "r100": (3, 13, 30, 3),
}


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """BN · conv 3×3 · BN · PReLU · conv 3×3 (stride) · BN, plus the shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=1e-5)
        self.conv1 = _conv3x3(cin, cout)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-5)
        self.prelu = nn.PReLU(cout)
        self.conv2 = _conv3x3(cout, cout, stride)
        self.bn3 = nn.BatchNorm2d(cout, eps=1e-5)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout, eps=1e-5)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut


class IResNet(nn.Module):
    """ArcFace IResNet: B×3×112×112 RGB in [−1, 1] → B×512 embeddings (not normalised).

    Args:
        layers (4 ints, default r100's (3, 13, 30, 3)): blocks per stage (``ARCHITECTURES``).
        widths (4 ints, default (64, 128, 256, 512)): channels per stage (other values only for
            tests: published weights have these).
        num_features (int, default 512): embedding size.
    """

    def __init__(
        self,
        layers: Sequence[int] = ARCHITECTURES["r100"],
        widths: Sequence[int] = (64, 128, 256, 512),
        num_features: int = 512,
    ) -> None:
        super().__init__()
        if len(layers) != 4 or len(widths) != 4:
            raise ValueError(f"layers and widths need 4 values, got {layers} and {widths}")
        # 1. stem (112×112)
        self.conv1 = nn.Conv2d(3, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0], eps=1e-5)
        self.prelu = nn.PReLU(widths[0])
        # 2. four stages, each halving the resolution (→ 7×7)
        cin = widths[0]
        for i, (count, width) in enumerate(zip(layers, widths, strict=True)):
            blocks = [IBasicBlock(cin, width, stride=2)]
            blocks += [IBasicBlock(width, width) for _ in range(count - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            cin = width
        # 3. head
        self.bn2 = nn.BatchNorm2d(cin, eps=1e-5)
        self.dropout = nn.Dropout(p=0.0)
        self.fc = nn.Linear(cin * (INPUT_SIZE // 16) ** 2, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != (INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"expected B×3×112×112 aligned faces, got {tuple(x.shape)}")
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.fc(self.dropout(self.bn2(x).flatten(1)))
        return self.features(x)


def iresnet(arch: str = "r100") -> IResNet:
    """The published configuration ``arch`` (``r18``, ``r34``, ``r50``, ``r100``)."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown ArcFace backbone {arch!r}; choose among {list(ARCHITECTURES)}")
    return IResNet(ARCHITECTURES[arch])
