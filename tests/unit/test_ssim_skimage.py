"""The project's SSIM (``fadm_lightning.metrics.image.ssim``) against scikit-image's
``structural_similarity`` on procedurally generated image pairs.

Settings. The project follows the FOMM / FADM evaluation protocol, which is scikit-image's
*default* SSIM, not the Gaussian-window variant (σ = 1.5, population covariances) of Wang et
al.'s paper and of torchmetrics: a 7×7 **uniform** window (``gaussian_weights=False``,
``win_size=7``), **sample** covariances (``use_sample_covariance=True``), K1 = 0.01, K2 = 0.03,
``data_range=255`` on the **uint8** frames (the project quantises [0, 1] floats by ×255 and
truncation), the (win − 1)/2 border left out, and the per-channel SSIM averaged over the three
RGB channels (``channel_axis=-1``). scikit-image is called with exactly these arguments, spelled
out below even where they are its defaults, so that a change of either side shows here.

The images are generated (no files): smooth random fields (Gaussian-filtered noise, any
spectrum from fine to coarse) at 64 and 256 px, paired with versions that are noisy, blurred,
shifted, rescaled in contrast, brightened (clipped), JPEG-like blocky, or unrelated; plus the
edge cases of identical and flat images.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fadm_lightning.metrics.image import quantize, ssim

skimage_metrics = pytest.importorskip("skimage.metrics")
ndimage = pytest.importorskip("scipy.ndimage")

SKIMAGE_SETTINGS = dict(
    win_size=7,
    gaussian_weights=False,
    use_sample_covariance=True,
    K1=0.01,
    K2=0.03,
    data_range=255,
    channel_axis=-1,
)
# absolute, on SSIM values in [-1, 1]; measured max difference 2.7e-8 (the float32 output)
TOLERANCE = 1e-6


def smooth_image(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """size×size×3 float image in [0, 1]: Gaussian-filtered noise stretched to the full range,
    with a different field per channel plus a shared one (colour images are correlated)."""
    shared = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma, mode="wrap")
    channels = [
        0.6 * shared
        + 0.4 * ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma, mode="wrap")
        for _ in range(3)
    ]
    image = np.stack(channels, -1)
    image = (image - image.min()) / (image.max() - image.min() + 1e-12)
    return image


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.round(image * 255), 0, 255).astype(np.uint8)


def distortions(rng: np.random.Generator, clean: np.ndarray) -> dict[str, np.ndarray]:
    """Float [0, 1] versions of ``clean`` (H×W×3) of every kind, from near-identical to unrelated."""
    size = clean.shape[0]
    blocks = clean.reshape(size // 8, 8, size // 8, 8, 3).mean(axis=(1, 3))
    return {
        "noise_0.02": clean + 0.02 * rng.standard_normal(clean.shape),
        "noise_0.2": clean + 0.2 * rng.standard_normal(clean.shape),
        "blur_1": ndimage.gaussian_filter(clean, (1.0, 1.0, 0)),
        "blur_4": ndimage.gaussian_filter(clean, (4.0, 4.0, 0)),
        "shift_1px": np.roll(clean, 1, axis=1),
        "shift_3_5px": np.roll(clean, (3, -5), axis=(0, 1)),
        "contrast_0.5": 0.5 * (clean - 0.5) + 0.5,
        "brighter_clipped": clean + 0.3,
        "blocky_8": np.repeat(np.repeat(blocks, 8, axis=0), 8, axis=1),
        "blur_noise_shift": np.roll(ndimage.gaussian_filter(clean, (2, 2, 0)), 2, axis=0)
        + 0.05 * rng.standard_normal(clean.shape),
        "unrelated": smooth_image(rng, size, sigma=3.0),
    }


def project_ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The project's SSIM of two uint8 B×H×W×3 stacks, fed as [0, 1] frames whose quantisation
    gives back exactly these uint8 values (the +0.5 keeps the truncation off the boundary)."""

    def frames(u8: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy((u8.astype(np.float32) + 0.5) / 255.0).permute(0, 3, 1, 2)
        assert torch.equal(quantize(x), torch.from_numpy(u8).permute(0, 3, 1, 2).float())
        return x

    return ssim(frames(a), frames(b)).double().numpy()


def skimage_ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array(
        [
            skimage_metrics.structural_similarity(x, y, **SKIMAGE_SETTINGS)
            for x, y in zip(a, b, strict=True)
        ]
    )


@pytest.mark.parametrize("size", [64, 256])
@pytest.mark.parametrize("sigma", [1.0, 4.0])
def test_ssim_matches_skimage_on_generated_pairs(size, sigma):
    rng = np.random.default_rng(1000 * size + int(10 * sigma))
    clean = smooth_image(rng, size, sigma)
    cases = distortions(rng, clean)
    names = list(cases)
    a = np.stack([to_uint8(clean)] * len(names))
    b = np.stack([to_uint8(cases[name]) for name in names])

    ours, reference = project_ssim(a, b), skimage_ssim(a, b)
    diff = np.abs(ours - reference)
    worst = names[int(diff.argmax())]
    assert diff.max() <= TOLERANCE, f"max |Δ| {diff.max():.2e} at {worst} ({size} px, σ {sigma})"
    # the pairs span the scale: near 1 for mild noise, low for unrelated images
    by_name = dict(zip(names, reference, strict=True))
    assert by_name["noise_0.02"] > 0.8 and by_name["unrelated"] < 0.3
    assert by_name["noise_0.02"] > by_name["noise_0.2"]
    # symmetric, as skimage's
    np.testing.assert_allclose(project_ssim(b, a), ours, rtol=0, atol=TOLERANCE)


def test_ssim_matches_skimage_on_float_frames_quantised_by_truncation():
    """[0, 1] floats (not on the uint8 grid): the project truncates ×255 to uint8; skimage gets
    those uint8 frames."""
    rng = np.random.default_rng(7)
    clean = np.clip(smooth_image(rng, 64, 2.0), 0, 1).astype(np.float32)
    noisy = np.clip(clean + 0.1 * rng.standard_normal(clean.shape), 0, 1).astype(np.float32)
    x = torch.from_numpy(clean[None]).permute(0, 3, 1, 2)
    y = torch.from_numpy(noisy[None]).permute(0, 3, 1, 2)
    truncated = [
        np.floor(np.clip(im, 0, 1) * np.float32(255)).astype(np.uint8) for im in (clean, noisy)
    ]
    rounded = [to_uint8(im) for im in (clean, noisy)]
    ours = float(ssim(y, x)[0])
    reference = skimage_metrics.structural_similarity(
        truncated[1], truncated[0], **SKIMAGE_SETTINGS
    )
    assert abs(ours - reference) <= TOLERANCE
    # rounding instead of truncating would be a different number (the test can tell them apart)
    other = skimage_metrics.structural_similarity(rounded[1], rounded[0], **SKIMAGE_SETTINGS)
    assert abs(other - reference) > 10 * TOLERANCE


def test_ssim_edge_cases_match_skimage():
    rng = np.random.default_rng(3)
    image = to_uint8(smooth_image(rng, 64, 2.0))
    flat_a = np.full((64, 64, 3), 100, np.uint8)
    flat_b = np.full((64, 64, 3), 180, np.uint8)
    gray = np.repeat(image[..., :1], 3, axis=-1)
    a = np.stack([image, flat_a, flat_a, gray, image])
    b = np.stack([image, flat_a, flat_b, image, 255 - image])
    ours, reference = project_ssim(a, b), skimage_ssim(a, b)
    np.testing.assert_allclose(ours, reference, rtol=0, atol=TOLERANCE)
    assert ours[0] == pytest.approx(1.0, abs=1e-7) and ours[1] == pytest.approx(1.0, abs=1e-7)
    assert ours[4] < 0  # inverted image: anti-correlated


def test_ssim_uses_the_uniform_window_not_the_gaussian_one():
    """The protocol's uniform 7×7 window and sample covariances differ measurably from the
    Gaussian σ = 1.5 variant, so the comparison above pins down which one the project uses."""
    rng = np.random.default_rng(11)
    clean = smooth_image(rng, 64, 1.5)
    a = to_uint8(clean)[None]
    b = to_uint8(clean + 0.15 * rng.standard_normal(clean.shape))[None]
    ours = project_ssim(a, b)[0]
    gaussian = skimage_metrics.structural_similarity(
        a[0],
        b[0],
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=255,
        channel_axis=-1,
    )
    assert abs(ours - gaussian) > 100 * TOLERANCE
