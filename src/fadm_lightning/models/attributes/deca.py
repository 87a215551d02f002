"""DECA's coarse encoder ``E_flame`` as FADM uses it: expression and pose of a face (REFERENCE_SPEC §3).

FADM feeds the whole 256×256 frame in [0, 1], bilinearly resized to 224×224 without antialiasing
and without any normalisation or face cropping, to ``E_flame`` (a ResNet-50 trunk and a
2048 → 1024 → 236 head) and keeps ``exp`` (50) and ``pose`` (6: global rotation, jaw rotation,
axis-angle radians) of the 236-d code. The attribute here is ``cat(exp, pose)``, B×56; the model
takes source minus driving itself (eq. 9).

Only ``E_flame`` is built: DECA's FLAME layer, detail encoder and detail decoder are not needed
(§7 item 14). Weights come from DECA's ``deca_model.tar`` (its ``'E_flame'`` entry), loaded with
``torch.load(weights_only=True)`` and checked key by key; a missing or mismatched checkpoint is an
error, never a silent fall-back to random weights.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fadm_lightning.models.attributes.base import AttributeExtractor
from fadm_lightning.models.errors import WeightsError, compare_state_dicts
from fadm_lightning.models.torch_file import load_torch_file

ENCODER_SIZE = 224  # E_flame's AvgPool2d(7) on the 7×7 layer4 map: only 224×224 input works
# DECA's ``param_list`` order and sizes (decompose_code); 236 in all
PARAM_SPLIT: tuple[tuple[str, int], ...] = (
    ("shape", 100),  # FLAME identity
    ("tex", 50),  # albedo
    ("exp", 50),  # FLAME expression
    ("pose", 6),  # [0:3] global head rotation, [3:6] jaw rotation; axis-angle, radians
    ("cam", 3),  # orthographic scale, 2-D translation
    ("light", 27),  # spherical-harmonics lighting, 9×3
)
CODE_DIM = sum(size for _, size in PARAM_SPLIT)
CHECKPOINT_DESCRIPTION = (
    "DECA's pretrained model 'deca_model.tar' (a torch.save dict with 'E_flame', 'E_detail', "
    "'D_detail'; only 'E_flame' is used). It is distributed by the DECA authors "
    "(github.com/yfeng95/DECA, download link in its README, after accepting the FLAME licence) "
    "and shipped in the official FADM 'data.zip' as modules/deca/data/deca_model.tar."
)


class CheckpointError(WeightsError):
    """A checkpoint that cannot be used; the message names the file and what is wrong."""


# --- ResNet-50 trunk (torchvision naming: conv1, bn1, layer1..4, downsample.0/.1) ------------------
class Bottleneck(nn.Module):
    """1×1 reduce -> 3×3 (carries the stride) -> 1×1 expand (×4), plus the shortcut."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


class ResNet50Trunk(nn.Module):
    """ResNet-50 without ``fc``: B×3×224×224 -> B×2048 (DECA's ``AvgPool2d(7, stride=1)`` head)."""

    def __init__(self, blocks: tuple[int, ...] = (3, 4, 6, 3)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_channels = 64
        for index, (width, count) in enumerate(zip((64, 128, 256, 512), blocks, strict=True)):
            stride = 1 if index == 0 else 2
            layer = []
            for block in range(count):
                layer.append(Bottleneck(in_channels, width, stride if block == 0 else 1))
                in_channels = width * Bottleneck.expansion
            self.add_module(f"layer{index + 1}", nn.Sequential(*layer))
        self.avgpool = nn.AvgPool2d(7, stride=1)
        self.out_features = in_channels
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: B×3×224×224
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # B×64×56×56
        x = self.layer1(x)  # B×256×56×56
        x = self.layer2(x)  # B×512×28×28
        x = self.layer3(x)  # B×1024×14×14
        x = self.layer4(x)  # B×2048×7×7
        return self.avgpool(x).flatten(1)  # B×2048


class FlameEncoder(nn.Module):
    """DECA's ``E_flame`` (``ResnetEncoder(outsize=236)``): B×3×224×224 in [0, 1] -> B×236 code."""

    def __init__(self, out_features: int = CODE_DIM) -> None:
        super().__init__()
        self.encoder = ResNet50Trunk()
        self.layers = nn.Sequential(
            nn.Linear(self.encoder.out_features, 1024),
            nn.ReLU(),
            nn.Linear(1024, out_features),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-2:] != (ENCODER_SIZE, ENCODER_SIZE):
            raise ValueError(
                f"E_flame takes {ENCODER_SIZE}×{ENCODER_SIZE} images, got {tuple(images.shape)}; "
                "use DECAAttributes, which resizes"
            )
        return self.layers(self.encoder(images))  # B×236, no output activation


def decompose_code(code: torch.Tensor) -> dict[str, torch.Tensor]:
    """Split B×236 into DECA's parameter groups (``light`` reshaped to B×9×3, as DECA does)."""
    if code.shape[-1] != CODE_DIM:
        raise ValueError(f"expected a B×{CODE_DIM} DECA code, got {tuple(code.shape)}")
    names, sizes = zip(*PARAM_SPLIT, strict=True)
    parts = dict(zip(names, code.split(list(sizes), dim=-1), strict=True))
    parts["light"] = parts["light"].reshape(code.shape[0], 9, 3)
    return parts


# --- checkpoint loading ---------------------------------------------------------------------------
def _describe_differences(
    expected: Mapping[str, torch.Tensor], found: Mapping[str, object]
) -> list[str]:
    """Key differences between our state dict and a checkpoint's, one line each."""
    # BatchNorm's num_batches_tracked is unused at inference; torch fills it in when absent
    diff = compare_state_dicts(expected, found, optional=(".num_batches_tracked",))
    lines = []
    for title, keys in zip(("missing", "unexpected", "mis-shaped"), diff.lists(), strict=True):
        if keys:
            lines.append(f"{len(keys)} {title} key(s): " + "; ".join(keys[:20]))
            if len(keys) > 20:
                lines[-1] += f"; … ({len(keys) - 20} more)"
    return lines


def _flame_encoder_state_from_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """``E_flame`` from a ``.safetensors`` file of ``DECAAttributes.state_dict()`` (keys
    ``flame_encoder.*``; any other key is left as it is, so the key check reports it)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from None
    prefix = "flame_encoder."
    return {k.removeprefix(prefix) if k.startswith(prefix) else k: v for k, v in state.items()}


def load_flame_encoder_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The ``'E_flame'`` state dict of a DECA checkpoint (other entries are ignored).

    Loads with ``torch.load(weights_only=True)``, always: DECA's ``deca_model.tar`` is a dict of
    state dicts (``{'E_flame': …, 'E_detail': …, 'D_detail': …}``), which needs nothing else. A file
    that is not such a torch file (an image, a config, an empty or truncated download, a pickle
    of Python objects) is a :class:`CheckpointError` of one line saying what it is.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"DECA checkpoint {path} not found. Expected: {CHECKPOINT_DESCRIPTION}"
        )
    if path.suffix == ".safetensors":  # DECAAttributes' own state_dict (a pretrained folder)
        return _flame_encoder_state_from_safetensors(path)
    checkpoint = load_torch_file(
        path, what="DECA checkpoint", expected=CHECKPOINT_DESCRIPTION, error=CheckpointError
    )
    if not isinstance(checkpoint, Mapping) or "E_flame" not in checkpoint:
        keys = list(checkpoint)[:10] if isinstance(checkpoint, Mapping) else type(checkpoint)
        raise CheckpointError(
            f"{path}: not a DECA checkpoint, no 'E_flame' entry (top level: {keys}). "
            f"Expected: {CHECKPOINT_DESCRIPTION}"
        )
    state = checkpoint["E_flame"]
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: 'E_flame' is a {type(state).__name__}, not a state dict")
    return dict(state)


class DECAAttributes(AttributeExtractor):
    """Frozen DECA ``E_flame``: B×3×H×W in [0, 1] -> B×56 ``[exp (50) | pose (6)]``.

    Always in eval mode with gradients off (``train()`` keeps it in eval, so BatchNorm statistics
    are never updated). Follows the module's device: inputs are moved to it and the output stays
    there. Any input size works: frames are resized to 224×224 as FADM does.

    Args:
        checkpoint (str | os.PathLike | None, default None): DECA's ``deca_model.tar``
            (see ``required_paths``). Required unless ``allow_random_weights_for_tests``.
        allow_random_weights_for_tests (bool, default False): with no checkpoint, keep random
            weights instead of raising. Attributes are then meaningless; for tests and timing only.
    """

    dim = 56
    required_paths = {"checkpoint": CHECKPOINT_DESCRIPTION}

    def __init__(
        self,
        checkpoint: str | os.PathLike | None = None,
        allow_random_weights_for_tests: bool = False,
    ) -> None:
        super().__init__()
        self.flame_encoder = FlameEncoder()  # E_flame
        if checkpoint is not None:
            self.load_checkpoint(checkpoint)
        elif allow_random_weights_for_tests:
            warnings.warn(
                "DECAAttributes uses RANDOM weights (allow_random_weights_for_tests=True): its "
                "attributes are meaningless; never use this outside tests.",
                stacklevel=2,
            )
        else:
            raise ValueError(
                f"DECAAttributes needs checkpoint=<path to deca_model.tar>: {CHECKPOINT_DESCRIPTION}"
            )
        self.requires_grad_(False)
        self.eval()

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Load ``E_flame`` from a DECA checkpoint; any key or shape difference is an error."""
        state = load_flame_encoder_state(path)
        problems = _describe_differences(self.flame_encoder.state_dict(), state)
        if problems:
            raise CheckpointError(
                f"{path}: 'E_flame' does not match DECA's ResnetEncoder(outsize=236):\n  "
                + "\n  ".join(problems)
            )
        self.flame_encoder.load_state_dict(state)

    def train(self, mode: bool = True) -> DECAAttributes:
        return super().train(False)  # frozen: BatchNorm stays in inference mode

    @staticmethod
    def preprocess(images: torch.Tensor) -> torch.Tensor:
        """FADM's input: bilinear resize to 224×224, no antialias, no normalisation."""
        # images: B×3×H×W in [0, 1] -> B×3×224×224
        if images.shape[-2:] == (ENCODER_SIZE, ENCODER_SIZE):
            return images
        return F.interpolate(
            images,
            size=(ENCODER_SIZE, ENCODER_SIZE),
            mode="bilinear",
            align_corners=False,
            antialias=False,
        )

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """All of DECA's parameter groups (``PARAM_SPLIT``) of B×3×H×W images in [0, 1]."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images B×3×H×W, got shape {tuple(images.shape)}")
        weight = self.flame_encoder.encoder.conv1.weight
        images = images.to(device=weight.device, dtype=weight.dtype)
        return decompose_code(self.flame_encoder(self.preprocess(images)))  # from B×236

    def forward(
        self, images: torch.Tensor, annotation: Mapping[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        # images: B×3×H×W in [0, 1] -> B×56 = [exp (50) | global rotation (3) | jaw (3)]
        code = self.encode(images)
        return torch.cat([code["exp"], code["pose"]], dim=1)
