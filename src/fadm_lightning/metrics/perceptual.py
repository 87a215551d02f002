"""Shift-tolerant LPIPS (``ST-LPIPS[alex]``) from the weights shipped in the PyPI wheel
``stlpips-pytorch``: a perceptual distance that works offline.

ST-LPIPS (Ghildyal & Liu, "Shift-tolerant Perceptual Similarity Metric", ECCV 2022) is LPIPS
v0.1 on an *anti-aliased, shift-tolerant* AlexNet: stride-1 first convolution, every
down-sampling done by a 3×3 binomial blur-pool with reflection padding, max pools of stride 1.
Unlike LPIPS[alex], whose backbone is torchvision's ImageNet AlexNet (a download), ST-LPIPS's
backbone was trained from scratch together with its linear layers on LPIPS's BAPPS 2AFC data
(64×64 patches; the authors' ``train.py --from_scratch --train_trunk``), so the whole network —
backbone, input scaling and the five linear layers — is one file inside the wheel:

    stlpips_pytorch/weights/vST0.0/alex_shift_tolerant.pth   (20 tensors, 2,473,734 values,
                                                              sha256 b356b382…)

The package's own code cannot be imported as installed (its ``stlpips`` module imports
``torchsummary`` and ``IPython``, which it does not declare), so :class:`STLPIPSAlexNet` builds
the same network here and loads that file with ``strict=True`` (every tensor by name and
shape; nothing left at random init). It equals the package's
``stlpips.LPIPS(net="alex", variant="shift_tolerant")`` to float precision
(``tests/unit/test_temporal_perceptual.py``).

Inputs are B×3×H×W frames in [0, 1]; like ``LPIPS[alex]`` the metric sees the uint8 frames
(``quantize``) scaled to [−1, 1]. Frames need H, W ≥ :data:`STLPIPS_MIN_SIZE`. Lower is better.
"""

from __future__ import annotations

import importlib.util
import os
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fadm_lightning.metrics.image import quantize
from fadm_lightning.metrics.lpips_fid import _load_state_dict, file_digest
from fadm_lightning.models.errors import MetricWeightsError, check_state_dict

PathLike = str | os.PathLike

STLPIPS_PACKAGE = "stlpips-pytorch"
STLPIPS_MODULE = "stlpips_pytorch"
STLPIPS_FILE = "weights/vST0.0/alex_shift_tolerant.pth"
# sha256 of the file in stlpips-pytorch 0.0.2 (also listed in the wheel's RECORD)
STLPIPS_SHA256 = "b356b382f96010f77d085ee8343ecd9fd322d0a56e8de2b2d0549fafcad8b9ee"
# smallest frame side the shift-tolerant AlexNet accepts (its reflection pads need ≥ 3 pixels)
STLPIPS_MIN_SIZE = 21

_CHANNELS = (64, 192, 384, 256, 256)


def stlpips_weights_file() -> Path | None:
    """``alex_shift_tolerant.pth`` of the installed ``stlpips-pytorch`` (the package is not
    imported), or None when it is not installed."""
    spec = importlib.util.find_spec(STLPIPS_MODULE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / STLPIPS_FILE
    return path if path.is_file() else None


class BlurPool(nn.Module):
    """Anti-aliased down-sampling (Zhang 2019) as ST-LPIPS uses it: reflection padding of 2 on
    each side, depthwise 3×3 binomial filter ([1, 2, 1]ᵀ[1, 2, 1] / 16), stride 2."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        a = torch.tensor([1.0, 2.0, 1.0])
        kernel = a[:, None] * a[None, :]
        self.register_buffer("filt", (kernel / kernel.sum()).expand(channels, 1, 3, 3).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(
            F.pad(x, (2, 2, 2, 2), mode="reflect"), self.filt, stride=2, groups=x.shape[1]
        )


def _seq(**layers: nn.Module) -> nn.Sequential:
    # module names are the indices of the original ``features`` list: the weight file's keys
    return nn.Sequential(OrderedDict((name.lstrip("_"), m) for name, m in layers.items()))


class ShiftTolerantAlexNet(nn.Module):
    """The backbone of ST-LPIPS[alex]; returns the five ReLU outputs (relu1 … relu5)."""

    def __init__(self) -> None:
        super().__init__()
        relu = lambda: nn.ReLU(inplace=False)  # noqa: E731
        pool = lambda: nn.MaxPool2d(kernel_size=3, stride=1)  # noqa: E731
        self.slice1 = _seq(
            _0=nn.Conv2d(3, 64, kernel_size=11, stride=1, padding=2), _1=BlurPool(64), _2=relu()
        )
        self.slice2 = _seq(
            _3=pool(), _4=BlurPool(64), _5=nn.Conv2d(64, 192, kernel_size=5, padding=2), _6=relu()
        )
        self.slice3 = _seq(
            _7=pool(),
            _8=BlurPool(192),
            _9=nn.Conv2d(192, 384, kernel_size=3, padding=1),
            _10=relu(),
        )
        self.slice4 = _seq(_11=nn.Conv2d(384, 256, kernel_size=3, padding=1), _12=relu())
        self.slice5 = _seq(_13=nn.Conv2d(256, 256, kernel_size=3, padding=1), _14=relu())

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for block in (self.slice1, self.slice2, self.slice3, self.slice4, self.slice5):
            x = block(x)
            out.append(x)
        return out


class _ScalingLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        # LPIPS v0.1's constants; the weight file carries them too (loaded over these)
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale


class _Linear(nn.Module):
    """LPIPS's 1×1 linear layer (``model.0`` was a Dropout, inactive in eval; no weights)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class STLPIPSAlexNet(nn.Module):
    """ST-LPIPS v0.1 (alex, shift_tolerant): ``forward(a, b)`` → B×1×1×1 distances for inputs in
    [−1, 1]. Keys are those of ``alex_shift_tolerant.pth``."""

    def __init__(self) -> None:
        super().__init__()
        self.scaling_layer = _ScalingLayer()
        self.net = ShiftTolerantAlexNet()
        for i, c in enumerate(_CHANNELS):
            self.add_module(f"lin{i}", _Linear(c))

    def forward(self, in0: torch.Tensor, in1: torch.Tensor) -> torch.Tensor:
        feats0 = self.net(self.scaling_layer(in0))
        feats1 = self.net(self.scaling_layer(in1))
        total = 0
        for i, (f0, f1) in enumerate(zip(feats0, feats1, strict=True)):
            f0 = f0 / (f0.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            f1 = f1 / (f1.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            total = total + getattr(self, f"lin{i}")((f0 - f1) ** 2).mean(dim=(2, 3), keepdim=True)
        return total


def build_stlpips_alex(weights: PathLike) -> STLPIPSAlexNet:
    """The network with every tensor of ``weights`` (strict: missing, unexpected or mis-shaped
    keys are a MetricWeightsError, also a ValueError, naming them), frozen, in eval mode."""
    path = Path(weights)
    state = _load_state_dict(
        path, f"the ST-LPIPS[alex] weights {Path(STLPIPS_FILE).name} of {STLPIPS_PACKAGE}"
    )
    net = STLPIPSAlexNet()
    own = net.state_dict()
    check_state_dict(
        own,
        state,
        path=path,
        what="ST-LPIPS[alex] weights file",
        error=MetricWeightsError,
    )
    net.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    # the blur filters are fixed, not learnt: the file's must be the binomial ones built here
    for name, buffer in own.items():
        if name.endswith(".filt") and not torch.allclose(state[name].float(), buffer):
            raise MetricWeightsError(f"{path}: {name} is not the 3×3 binomial blur filter")
    return net.eval().requires_grad_(False)


class STLPIPS:
    """Shift-tolerant LPIPS with its AlexNet (``ST-LPIPS[alex]``), per frame.

    Args:
        weights (path or None): None (default): ``alex_shift_tolerant.pth`` of the installed
            PyPI package ``stlpips-pytorch``, whose sha256 is checked; a path: another copy of
            that file (named with its sha256 prefix).
        device: where the network runs.

    When the package (or the file) is absent the metric is unavailable (``reason``); it never
    runs with random or downloaded weights.
    """

    key = "stlpips"
    label = "ST-LPIPS[alex]"
    min_size = STLPIPS_MIN_SIZE

    def __init__(self, weights: PathLike | None = None, device: str | torch.device = "cpu"):
        self.net: STLPIPSAlexNet | None = None
        self.reason: str | None = None
        self.weights = ""
        if weights is None:
            path = stlpips_weights_file()
            if path is None:
                self.reason = (
                    f"its network comes with the PyPI package {STLPIPS_PACKAGE} (pip install "
                    f"{STLPIPS_PACKAGE}), which is not installed"
                )
                return
            digest = file_digest(path)
            if digest != STLPIPS_SHA256:
                self.reason = (
                    f"{path}: sha256 {digest[:8]}… is not the file of {STLPIPS_PACKAGE} 0.0.2 "
                    f"({STLPIPS_SHA256[:8]}…); reinstall {STLPIPS_PACKAGE}"
                )
                return
            source = f"{STLPIPS_PACKAGE} {Path(STLPIPS_FILE).name}"
        else:
            path = Path(weights).expanduser()
            if not path.is_file():
                self.reason = f"{path}: file not found"
                return
            digest = file_digest(path)
            source = path.name
        self.net = build_stlpips_alex(path).to(device)
        self.weights = (
            f"shift-tolerant AlexNet and LPIPS v0.1 linear layers, trained from scratch on BAPPS "
            f"by the ST-LPIPS authors, from {source} (sha256 {digest[:8]})"
        )

    @property
    def available(self) -> bool:
        return self.net is not None

    @property
    def device(self) -> torch.device:
        if self.net is None:
            raise RuntimeError(f"{self.label} is unavailable: {self.reason}")
        return next(self.net.parameters()).device

    def to(self, device: str | torch.device) -> STLPIPS:
        if self.net is not None:
            self.net.to(device)
        return self

    @torch.no_grad()
    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """B values (lower = more similar) for B×3×H×W frames in [0, 1], on the CPU."""
        if pred.shape != target.shape or pred.ndim != 4:
            raise ValueError(
                f"expected two B×3×H×W tensors of one shape, got {tuple(pred.shape)} and "
                f"{tuple(target.shape)}"
            )
        if min(pred.shape[-2:]) < self.min_size:
            raise ValueError(
                f"{self.label} needs frames of at least {self.min_size}×{self.min_size}, got "
                f"{tuple(pred.shape[-2:])}"
            )
        device = self.device
        a = quantize(pred).to(device) / 255 * 2 - 1
        b = quantize(target).to(device) / 255 * 2 - 1
        return self.net(a, b).flatten().float().cpu()
