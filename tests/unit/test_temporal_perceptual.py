"""The training test stage's extra figures: temporal consistency (tdiff, flicker; no network) and
ST-LPIPS[alex] from the network shipped in the stlpips-pytorch wheel."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from fadm_lightning.metrics import MetricSuite
from fadm_lightning.metrics import perceptual as perceptual_module
from fadm_lightning.metrics.image import l1
from fadm_lightning.metrics.perceptual import (
    STLPIPS,
    STLPIPS_SHA256,
    build_stlpips_alex,
    stlpips_weights_file,
)
from fadm_lightning.metrics.temporal import flicker, tdiff, temporal_metrics

# ----------------------------------------------------------------------------------- temporal


def _moving_blob(frames: int = 8, size: int = 32, speed: float = 0.7) -> torch.Tensor:
    """A smooth Gaussian blob drifting right over a colour gradient: T×3×H×W in [0, 1]."""
    y, x = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    clip = []
    for t in range(frames):
        cx, cy = 8 + speed * t, 16.0
        blob = torch.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * 4.0**2))
        clip.append(torch.stack([0.2 + 0.6 * blob, 0.3 + 0.2 * x / size, 0.5 - 0.3 * blob]))
    return torch.stack(clip)


def test_identical_videos_score_zero():
    clip = _moving_blob()
    assert tdiff(clip, clip).item() == 0
    assert flicker(clip, clip).item() == 0
    assert temporal_metrics(clip, clip) == {"tdiff": 0, "flicker": 0}


def test_per_frame_noise_scores_worse_than_static_noise_of_the_same_size():
    torch.manual_seed(0)
    truth = _moving_blob()
    noise = 0.05 * torch.randn(1, *truth.shape[1:])
    static = truth + noise  # the same error pattern in every frame
    per_frame = truth + 0.05 * torch.randn_like(truth)  # a new pattern in every frame
    # the per-frame metric cannot tell them apart …
    assert l1(static, truth).mean().item() == pytest.approx(
        l1(per_frame, truth).mean().item(), rel=0.05
    )
    # … the temporal ones can
    assert tdiff(static, truth).item() < 1e-6
    assert tdiff(per_frame, truth).item() > 0.05  # E|n₁ − n₂| = 0.05·2/√π ≈ 0.056
    assert abs(flicker(static, truth).item()) < 1e-6
    assert flicker(per_frame, truth).item() > 0.05


def test_a_temporally_smooth_shift_scores_near_zero():
    torch.manual_seed(0)
    truth = _moving_blob()
    flickering = truth + 0.05 * torch.randn_like(truth)
    noisy = tdiff(flickering, truth).item()
    # a constant colour offset: no temporal error at all
    assert tdiff(truth + 0.1, truth).item() < 1e-6
    # a slow brightness drift (+0.004 per frame): tdiff is the drift per frame, flicker none
    drift = truth + 0.004 * torch.arange(truth.shape[0]).view(-1, 1, 1, 1)
    assert tdiff(drift, truth).item() == pytest.approx(0.004, abs=1e-6)
    assert abs(flicker(drift, truth).item()) < 1e-6
    # the whole video one pixel to the left (a fixed spatial shift): L1 sees an error,
    # the frame-to-frame change barely differs
    shifted = torch.roll(truth, shifts=-1, dims=-1)
    assert tdiff(shifted, truth).item() < 0.1 * noisy
    assert tdiff(shifted, truth).item() < 0.2 * l1(shifted, truth).mean().item()


def test_tdiff_is_the_mean_over_frames_of_the_frame_pair_error():
    torch.manual_seed(1)
    pred, truth = torch.rand(5, 3, 8, 8), torch.rand(5, 3, 8, 8)
    per_pair = [
        ((pred[t + 1] - pred[t]) - (truth[t + 1] - truth[t])).abs().mean() for t in range(4)
    ]
    assert tdiff(pred, truth).item() == pytest.approx(torch.stack(per_pair).mean().item(), rel=1e-6)


def test_frozen_prediction_is_smoother_than_the_truth():
    truth = _moving_blob(speed=2.5)
    frozen = truth[:1].expand_as(truth)
    assert tdiff(frozen, truth).item() > 0.005  # it misses the motion
    assert flicker(frozen, truth).item() < 0  # less jerk than the truth: negative


def test_short_clips_and_mismatched_shapes():
    one, two = torch.rand(1, 3, 8, 8), torch.rand(2, 3, 8, 8)
    assert temporal_metrics(one, one) == {}
    assert set(temporal_metrics(two, two)) == {"tdiff"}
    with pytest.raises(ValueError, match="at least 2 frames"):
        tdiff(one, one)
    with pytest.raises(ValueError, match="at least 3 frames"):
        flicker(two, two)
    with pytest.raises(ValueError, match="one shape"):
        tdiff(two, torch.rand(2, 3, 8, 9))


# ---------------------------------------------------------------------------------- ST-LPIPS


@pytest.fixture(scope="module")
def stlpips() -> STLPIPS:
    metric = STLPIPS()
    assert metric.available, metric.reason  # a dependency: its absence is a failure, not a skip
    return metric


def test_stlpips_network_ships_in_the_wheel_with_the_checked_file(stlpips):
    path = stlpips_weights_file()
    assert path is not None and path.name == "alex_shift_tolerant.pth"
    assert "site-packages" in str(path) or "stlpips_pytorch" in str(path)
    assert STLPIPS.label == "ST-LPIPS[alex]" and STLPIPS.key == "stlpips"
    assert "stlpips-pytorch" in stlpips.weights and STLPIPS_SHA256[:8] in stlpips.weights
    net = stlpips.net
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    # every tensor of the file is loaded (strict), none left at random init: the first
    # convolution holds values beyond PyTorch's default init bound 1/√fan_in
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert set(state) == set(net.state_dict())
    conv1 = net.net.slice1[0].weight
    assert torch.equal(conv1, state["net.slice1.0.weight"])
    assert (conv1.abs() > conv1[0].numel() ** -0.5).float().mean() > 0.05


def test_stlpips_is_zero_for_identical_frames_and_grows_with_the_distortion(stlpips):
    frames = _moving_blob(frames=3)
    assert torch.equal(stlpips(frames, frames), torch.zeros(3))
    torch.manual_seed(0)
    noise = torch.randn_like(frames)
    light = stlpips((frames + 0.03 * noise).clamp(0, 1), frames)
    heavy = stlpips((frames + 0.2 * noise).clamp(0, 1), frames)
    assert (light > 0).all() and (heavy > 2 * light).all()


def test_stlpips_is_tolerant_to_a_one_pixel_shift_on_real_faces(stlpips):
    from PIL import Image

    from ..conftest import FIXTURES

    if not FIXTURES.is_dir():
        pytest.skip(f"shared fixtures not found at {FIXTURES}")

    def load(name: str) -> torch.Tensor:
        image = np.array(Image.open(FIXTURES / f"{name}.png").convert("RGB"))
        return torch.from_numpy(image).permute(2, 0, 1).float()[None] / 255

    source, other = load("source"), load("driving_r")
    shifted = torch.roll(source, shifts=(1, 1), dims=(-2, -1))
    torch.manual_seed(0)
    noisy = (source + 0.03 * torch.randn_like(source)).clamp(0, 1)
    d_shift, d_noise, d_other = (stlpips(x, source).item() for x in (shifted, noisy, other))
    # the 1-pixel shift is the larger L1 error, but perceptually by far the smaller change
    # (measured: L1 0.026 vs 0.024, ST-LPIPS 0.006 vs 0.19; another face: 0.64)
    assert l1(shifted, source).item() > l1(noisy, source).item()
    assert d_shift < 0.1 * d_noise
    assert d_noise < d_other


def test_stlpips_matches_the_packages_own_implementation(stlpips, monkeypatch):
    pytest.importorskip("IPython")  # the package's modules import it (undeclared)
    # the package's stlpips module imports torchsummary (undeclared, unused for distances)
    monkeypatch.setitem(sys.modules, "torchsummary", types.SimpleNamespace(summary=None))
    from stlpips_pytorch import stlpips as package

    reference = package.LPIPS(net="alex", variant="shift_tolerant", verbose=False)
    torch.manual_seed(0)
    for size in (32, 45, 64):
        a = torch.rand(2, 3, size, size)
        b = (a + 0.2 * torch.randn_like(a)).clamp(0, 1)
        ours = stlpips.net(2 * a - 1, 2 * b - 1).flatten()
        theirs = reference(2 * a - 1, 2 * b - 1).flatten()
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7)


def test_stlpips_frame_size_limit(stlpips):
    small = torch.rand(1, 3, STLPIPS.min_size, STLPIPS.min_size + 5)
    assert stlpips(small, small).shape == (1,)
    too_small = torch.rand(1, 3, STLPIPS.min_size - 1, 64)
    with pytest.raises(ValueError, match="at least"):
        stlpips(too_small, too_small)


def _real_file() -> Path:
    path = stlpips_weights_file()
    assert path is not None
    return path


def test_stlpips_without_the_package_or_with_another_file_is_unavailable(monkeypatch, tmp_path):
    state = torch.load(_real_file(), map_location="cpu", weights_only=True)
    monkeypatch.setattr(perceptual_module, "stlpips_weights_file", lambda: None)
    metric = STLPIPS()
    assert not metric.available and "pip install stlpips-pytorch" in metric.reason
    with pytest.raises(RuntimeError, match="unavailable"):
        metric(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32))

    # a file that is not the package's (altered values): unavailable, never used
    altered = tmp_path / "alex_shift_tolerant.pth"
    state["lin0.model.1.weight"] = state["lin0.model.1.weight"] * 2
    torch.save(state, altered)
    monkeypatch.setattr(perceptual_module, "stlpips_weights_file", lambda: altered)
    metric = STLPIPS()
    assert not metric.available and "is not the file of stlpips-pytorch" in metric.reason

    assert "file not found" in STLPIPS(weights=tmp_path / "missing.pth").reason


def test_a_weights_file_with_missing_or_misshaped_tensors_is_refused(tmp_path):
    state = torch.load(_real_file(), map_location="cpu", weights_only=True)
    del state["net.slice5.13.weight"]
    state["lin1.model.1.weight"] = torch.zeros(1, 7, 1, 1)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"(?s)net\.slice5\.13\.weight.*lin1\.model\.1\.weight"):
        build_stlpips_alex(path)


def test_metric_suite_offers_stlpips(stlpips):
    suite = MetricSuite(["l1", "stlpips"])
    assert suite.label("stlpips") == "ST-LPIPS[alex]" and suite.header("stlpips").endswith("↓")
    assert suite.available("stlpips")
    assert any(
        line.startswith("ST-LPIPS[alex]: ") and "stlpips-pytorch" in line for line in suite.notes()
    )
    frames = _moving_blob(frames=2)
    values = suite.frame_values((frames + 0.1).clamp(0, 1), frames)
    assert set(values) == {"l1", "stlpips"} and values["stlpips"].shape == (2,)
    assert np.all(values["stlpips"] > 0)
