"""OpenFace nn4.small2 (v1), laid out like the OpenFacePytorch port's ``openface.pth``.

The identity network of the FOMM / pose-evaluation AED protocol (REFERENCE_SPEC §6.1): a 96×96
BGR image in [0, 1] → a unit-length 128-d embedding. Written here from the facts of the port
(thnkim/OpenFacePytorch ``loadOpenFace.py``, as used by AliaksandrSiarohin/pose-evaluation),
itself a transcription of OpenFace's Torch7 ``nn4.small2.v1.t7``:

* stem: ``layer1`` conv 7×7/2 (3→64) · ``layer2`` BN · ReLU · max pool 3×3/2 pad 1 · LRN ·
  ``layer6`` conv 1×1 (64→64) · ``layer7`` BN · ReLU · ``layer9`` conv 3×3 pad 1 (64→192) ·
  ``layer10`` BN · ReLU · LRN · max pool 3×3/2 pad 1 (96 → 12×12);
* seven inception blocks ``layer14`` … ``layer19``, ``layer21`` (3a, 3b, 3c, 4a, 4e, 5a, 5b;
  table ``INCEPTION_BLOCKS``), whose branches are ``seq_list.<i>`` sequences with the port's
  module names (``1_conv``, ``2_bn``, ``4_conv``, ``5_bn``; pool branch ``1_pool``, ``2_conv``,
  ``3_bn``; 1×1 branch ``1_conv``, ``2_bn``). Branches that come out smaller (the pooling ones)
  are zero-padded around the centre (the extra row/column at the bottom/right) to the largest
  branch before concatenation, as the port does;
* 3×3 average pool → 736 · ``layer25`` linear 736 → 128 · ``x / sqrt(Σx² + 1e-6)``.

LRN: size 5, α = 1e-4, β = 0.75, k = 1 (Torch7 ``SpatialCrossMapLRN``). The port ran its own
Python transcription of that layer (adopted from ``torch.legacy.nn``) whose running window never
drops the square of channel 0 (an off-by-one when the Lua loop was moved to 0-based indices): in
the port every channel's sum includes channel 0. ``port_lrn=True`` (default) reproduces this, as
the protocol's numbers were computed with it; ``False`` gives the textbook LRN of the Torch7
original.

BatchNorms use torch's default ε = 1e-5, as in the port.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

INPUT_SIZE = 96
EMBEDDING_DIM = 128


class CrossMapLRN(nn.Module):
    """Local response normalisation across channels:
    ``y_c = x_c · (k + α/n · Σ_{j ∈ W(c)} x_j²)^(−β)``, ``W(c) = [c − n//2, c + n//2]``.

    Args:
        size (int, default 5): n, the window (odd).
        alpha (float, 1e-4), beta (float, 0.75), k (float, 1.0): as in the formula.
        port_lrn (bool, default True): channel 0 is in every window (the OpenFacePytorch port).
    """

    def __init__(
        self,
        size: int = 5,
        alpha: float = 1e-4,
        beta: float = 0.75,
        k: float = 1.0,
        port_lrn: bool = True,
    ) -> None:
        super().__init__()
        if size % 2 != 1:
            raise ValueError(f"size must be odd, got {size}")
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k
        self.port_lrn = port_lrn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = self.size // 2
        square = x.square()
        channels = x.shape[1]
        padded = F.pad(square, (0, 0, 0, 0, half, half))  # zeros beyond the first/last channel
        window = sum(padded[:, i : i + channels] for i in range(self.size))
        if self.port_lrn and channels > half + 1:
            # channels whose window no longer reaches channel 0 still count it
            extra = torch.zeros_like(window)
            extra[:, half + 1 :] = square[:, :1]
            window = window + extra
        return x * (self.k + self.alpha / self.size * window).pow(-self.beta)


class Branch(NamedTuple):
    reduce: int  # 1×1 conv channels before the n×n conv
    out: int  # n×n conv channels
    kernel: int
    stride: int


class InceptionSpec(NamedTuple):
    in_channels: int
    branches: tuple[Branch, ...]
    pool: str  # "max" (3×3/2) or "l2" (L2 pooling 3×3/3)
    pool_proj: int | None  # 1×1 conv after the pool (None: the pooled input as it is)
    proj: int | None  # a plain 1×1 conv branch (None: no such branch)

    @property
    def out_channels(self) -> int:
        pooled = self.pool_proj if self.pool_proj is not None else self.in_channels
        return sum(b.out for b in self.branches) + pooled + (self.proj or 0)


# name in the port's state dict → block (OpenFace's nn4.small2 definition)
INCEPTION_BLOCKS: dict[str, InceptionSpec] = {
    "layer14": InceptionSpec(192, (Branch(96, 128, 3, 1), Branch(16, 32, 5, 1)), "max", 32, 64),
    "layer15": InceptionSpec(256, (Branch(96, 128, 3, 1), Branch(32, 64, 5, 1)), "l2", 64, 64),
    "layer16": InceptionSpec(
        320, (Branch(128, 256, 3, 2), Branch(32, 64, 5, 2)), "max", None, None
    ),
    "layer17": InceptionSpec(640, (Branch(96, 192, 3, 1), Branch(32, 64, 5, 1)), "l2", 128, 256),
    "layer18": InceptionSpec(
        640, (Branch(160, 256, 3, 2), Branch(64, 128, 5, 2)), "max", None, None
    ),
    "layer19": InceptionSpec(1024, (Branch(96, 384, 3, 1),), "l2", 96, 256),
    "layer21": InceptionSpec(736, (Branch(96, 384, 3, 1),), "max", 96, 256),
}


class L2Pool(nn.Module):
    """L2 pooling 3×3, stride 3 (Torch7 ``SpatialLPPooling`` with p = 2)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.lp_pool2d(x, norm_type=2, kernel_size=3, stride=3)


def _conv_bn_relu(names: Sequence[str], cin: int, cout: int, kernel: int, stride: int):
    conv, bn, relu = names
    return [
        (conv, nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2)),
        (bn, nn.BatchNorm2d(cout)),
        (relu, nn.ReLU()),
    ]


class Inception(nn.Module):
    """One inception block: n×n branches, a pooling branch, a 1×1 branch (``InceptionSpec``)."""

    def __init__(self, spec: InceptionSpec) -> None:
        super().__init__()
        branches = []
        for b in spec.branches:  # 1×1 reduce → n×n
            layers = _conv_bn_relu(("1_conv", "2_bn", "3_relu"), spec.in_channels, b.reduce, 1, 1)
            layers += _conv_bn_relu(
                ("4_conv", "5_bn", "6_relu"), b.reduce, b.out, b.kernel, b.stride
            )
            branches.append(nn.Sequential(OrderedDict(layers)))
        pool = nn.MaxPool2d(3, stride=2) if spec.pool == "max" else L2Pool()
        layers = [("1_pool", pool)]
        if spec.pool_proj is not None:
            layers += _conv_bn_relu(
                ("2_conv", "3_bn", "4_relu"), spec.in_channels, spec.pool_proj, 1, 1
            )
        branches.append(nn.Sequential(OrderedDict(layers)))
        if spec.proj is not None:
            layers = _conv_bn_relu(("1_conv", "2_bn", "3_relu"), spec.in_channels, spec.proj, 1, 1)
            branches.append(nn.Sequential(OrderedDict(layers)))
        self.seq_list = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ys = [branch(x) for branch in self.seq_list]
        height = max(y.shape[-2] for y in ys)
        width = max(y.shape[-1] for y in ys)
        padded = []
        for y in ys:
            top, left = (height - y.shape[-2]) // 2, (width - y.shape[-1]) // 2
            bottom, right = height - y.shape[-2] - top, width - y.shape[-1] - left
            padded.append(F.pad(y, (left, right, top, bottom)))
        return torch.cat(padded, dim=1)


class OpenFaceNN4Small2(nn.Module):
    """OpenFace nn4.small2: B×3×96×96 BGR in [0, 1] → B×128 unit-length embeddings.

    Args:
        port_lrn (bool, default True): LRN as the OpenFacePytorch port computes it (see the
            module docstring); False: the Torch7 original's.
    """

    def __init__(self, port_lrn: bool = True) -> None:
        super().__init__()
        # 1. stem (96 → 12)
        self.layer1 = nn.Conv2d(3, 64, 7, stride=2, padding=3)
        self.layer2 = nn.BatchNorm2d(64)
        self.layer4 = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer5 = CrossMapLRN(5, 1e-4, 0.75, 1.0, port_lrn)
        self.layer6 = nn.Conv2d(64, 64, 1)
        self.layer7 = nn.BatchNorm2d(64)
        self.layer9 = nn.Conv2d(64, 192, 3, padding=1)
        self.layer10 = nn.BatchNorm2d(192)
        self.layer12 = CrossMapLRN(5, 1e-4, 0.75, 1.0, port_lrn)
        self.layer13 = nn.MaxPool2d(3, stride=2, padding=1)
        # 2. inception 3a … 5b (12 → 3)
        for name, spec in INCEPTION_BLOCKS.items():
            self.add_module(name, Inception(spec))
        # 3. head
        self.layer22 = nn.AvgPool2d(3, stride=1)
        self.layer25 = nn.Linear(INCEPTION_BLOCKS["layer21"].out_channels, EMBEDDING_DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != (INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"expected B×3×96×96 inputs, got {tuple(x.shape)}")
        # 1. stem
        x = self.layer5(self.layer4(F.relu(self.layer2(self.layer1(x)))))
        x = F.relu(self.layer7(self.layer6(x)))
        x = self.layer13(self.layer12(F.relu(self.layer10(self.layer9(x)))))
        # 2. inception blocks
        for name in INCEPTION_BLOCKS:
            x = getattr(self, name)(x)
        # 3. 736-d pooled features → 128-d, unit length (the port's ε)
        x = self.layer25(self.layer22(x).flatten(1))
        return x / torch.sqrt(x.square().sum(dim=1, keepdim=True) + 1e-6)
