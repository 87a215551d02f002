"""FOMM training objective: equivariance warp and losses, pyramid, perceptual losses, the system."""

from __future__ import annotations

import pytest
import torch

from fadm_lightning.models.coarse.fomm import (
    FOMMCoarseGenerator,
    KPDetector,
    MultiScaleDiscriminator,
    OcclusionAwareGenerator,
)
from fadm_lightning.models.coarse.fomm.geometry import make_coordinate_grid
from fadm_lightning.models.coarse.fomm.training import (
    ImagePyramid,
    LaplacianL1Loss,
    PyramidL1Loss,
    RandomTPSTransform,
    VGG19Features,
    VGGPerceptualLoss,
    _vgg19_features_layers,
    equivariance_losses,
    laplacian_bands,
)
from fadm_lightning.systems.fomm import FOMMLitModule, split_optimizer_state

SIZE = 32  # image side of the small networks below
TINY_KP = dict(num_kp=4, block_expansion=8, max_features=32, num_blocks=3)
TINY_GEN = dict(
    num_kp=4,
    block_expansion=8,
    max_features=32,
    num_down_blocks=1,
    num_bottleneck_blocks=1,
    dense_motion_block_expansion=8,
    dense_motion_max_features=32,
    dense_motion_num_blocks=3,
)
# the same networks as FOMMCoarseGenerator arguments
TINY_COARSE = dict(
    num_kp=4,
    kp_block_expansion=8,
    kp_max_features=32,
    kp_num_blocks=3,
    block_expansion=8,
    max_features=32,
    num_down_blocks=1,
    num_bottleneck_blocks=1,
    dense_motion_block_expansion=8,
    dense_motion_max_features=32,
    dense_motion_num_blocks=3,
)


def blob(center: torch.Tensor, size: int = 96, std: float = 0.05) -> torch.Tensor:
    """``B×1×size×size`` Gaussian blobs at ``center`` (B×2, ``[-1, 1]`` FOMM grid)."""
    grid = make_coordinate_grid(size, size)  # H×W×2
    distance = ((grid[None] - center[:, None, None]) ** 2).sum(-1)  # B×H×W
    return torch.exp(-0.5 * distance / std**2)[:, None]


def centroid(image: torch.Tensor) -> torch.Tensor:
    """Intensity-weighted mean grid position of ``B×1×H×W`` images → ``B×1×2`` (a keypoint)."""
    grid = make_coordinate_grid(*image.shape[2:])  # H×W×2
    weights = image[:, 0] / image[:, 0].sum(dim=(1, 2), keepdim=True)  # B×H×W
    return torch.einsum("bhw,hwc->bc", weights, grid)[:, None]


def make_module(**kwargs) -> FOMMLitModule:
    torch.manual_seed(0)
    defaults = dict(
        kp_detector=KPDetector(**TINY_KP),
        generator=OcclusionAwareGenerator(**TINY_GEN),
        perceptual=PyramidL1Loss(),
        optimizer=lambda params: torch.optim.Adam(params, lr=2e-4, betas=(0.5, 0.999)),
    )
    return FOMMLitModule(**{**defaults, **kwargs})


# ------------------------------------------------------------------------------- the warp


def test_transform_with_zero_sigmas_is_the_identity():
    transform = RandomTPSTransform(2, sigma_affine=0.0, sigma_tps=0.0)
    points = torch.rand(2, 7, 2) * 2 - 1
    frame = torch.rand(2, 3, 16, 16)
    assert torch.equal(transform.warp_coordinates(points), points)
    assert torch.allclose(transform.jacobian(points), torch.eye(2).expand(2, 7, 2, 2))
    assert torch.allclose(transform.transform_frame(frame), frame, atol=1e-5)


def test_transform_is_deterministic_given_a_generator():
    first = RandomTPSTransform(3, generator=torch.Generator().manual_seed(7))
    second = RandomTPSTransform(3, generator=torch.Generator().manual_seed(7))
    other = RandomTPSTransform(3, generator=torch.Generator().manual_seed(8))
    points = torch.rand(3, 5, 2) * 2 - 1
    assert torch.equal(first.warp_coordinates(points), second.warp_coordinates(points))
    assert not torch.equal(first.warp_coordinates(points), other.warp_coordinates(points))


def test_analytic_jacobian_equals_autograd():
    transform = RandomTPSTransform(2, 0.2, 0.05, generator=torch.Generator().manual_seed(0))
    points = (torch.rand(2, 6, 2) * 2 - 1).requires_grad_(True)
    warped = transform.warp_coordinates(points)
    rows = [torch.autograd.grad(warped[..., i].sum(), points, retain_graph=True)[0] for i in (0, 1)]
    assert torch.allclose(transform.jacobian(points), torch.stack(rows, dim=2), atol=1e-5)


def test_image_warp_and_point_warp_agree():
    """A blob drawn at p moves, in the warped image, to the point that T maps back to p."""
    torch.manual_seed(0)
    transform = RandomTPSTransform(4, sigma_affine=0.1, sigma_tps=0.01)  # 2× FOMM's strength
    centers = torch.tensor([[0.2, -0.3], [-0.4, 0.1], [0.0, 0.0], [0.3, 0.35]])
    warped_blob = transform.transform_frame(blob(centers))
    found = centroid(warped_blob)  # B×1×2, in the transformed frame
    mapped_back = transform.warp_coordinates(found)[:, 0]  # B×2, in the original frame
    assert (found[:, 0] - centers).abs().max() > 0.02  # the blob did move
    assert torch.allclose(mapped_back, centers, atol=0.01)  # ~1/3 pixel of 96


# ------------------------------------------------------------------------------- equivariance


def test_equivariance_losses_vanish_for_an_equivariant_detector_only():
    """The blob centroid is an exactly equivariant keypoint: value loss ≈ 0 under T, not T⁻¹."""
    torch.manual_seed(1)
    transform = RandomTPSTransform(3, sigma_affine=0.1, sigma_tps=0.0)
    centers = torch.tensor([[0.2, -0.3], [-0.4, 0.1], [0.1, 0.2]])
    frames = blob(centers)
    kp = {"value": centroid(frames)}
    kp_warped = {"value": centroid(transform.transform_frame(frames))}
    assert equivariance_losses(kp, kp_warped, transform)["value"] < 0.005
    # swapping the roles (the inverse direction) is not equivariant
    assert equivariance_losses(kp_warped, kp, transform)["value"] > 0.02


def test_jacobian_loss_is_zero_for_transported_jacobians():
    transform = RandomTPSTransform(2, sigma_affine=0.1, sigma_tps=0.0)
    points = torch.rand(2, 3, 2) * 2 - 1
    jacobian_warped = torch.eye(2) + 0.1 * torch.randn(2, 3, 2, 2)
    kp_warped = {"value": points, "jacobian": jacobian_warped}
    kp = {
        "value": transform.warp_coordinates(points),
        "jacobian": transform.jacobian(points) @ jacobian_warped,
    }
    losses = equivariance_losses(kp, kp_warped, transform)
    assert losses["value"] < 1e-6 and losses["jacobian"] < 1e-5
    kp["jacobian"] = jacobian_warped  # not transported
    assert equivariance_losses(kp, kp_warped, transform)["jacobian"] > 1e-3


def test_equivariance_loss_of_a_detector_is_zero_for_identity_and_positive_otherwise():
    torch.manual_seed(0)
    detector = KPDetector(**TINY_KP).eval()
    frames = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad():
        kp = detector(frames)
        identity = RandomTPSTransform(2, 0.0, 0.0)
        same = equivariance_losses(kp, detector(identity.transform_frame(frames)), identity)
        warp = RandomTPSTransform(2, 0.1, 0.01)
        other = equivariance_losses(kp, detector(warp.transform_frame(frames)), warp)
    assert same["value"] < 1e-5 and same["jacobian"] < 1e-5
    assert other["value"] > 1e-3 and other["jacobian"] > 1e-4


# ------------------------------------------------------------------------------- reconstruction


def test_image_pyramid_keys_and_sizes():
    pyramid = ImagePyramid([1, 0.5, 0.25, 0.125])(torch.rand(2, 3, 64, 64))
    assert {k: tuple(v.shape[2:]) for k, v in pyramid.items()} == {
        "prediction_1": (64, 64),
        "prediction_0.5": (32, 32),
        "prediction_0.25": (16, 16),
        "prediction_0.125": (8, 8),
    }


def test_pyramid_l1_needs_no_file():
    pyramid = ImagePyramid([1, 0.5])
    x, y = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    loss = PyramidL1Loss(weight=10)
    assert loss(pyramid(x), pyramid(x)) == 0
    assert loss(pyramid(x), pyramid(y)) > 1


def test_laplacian_bands_add_back_up_to_the_image():
    pyramid = ImagePyramid([1, 0.5, 0.25])(torch.rand(2, 3, 32, 32))
    bands = laplacian_bands(pyramid)
    assert [tuple(b.shape[2:]) for b in bands] == [(32, 32), (16, 16), (8, 8)]
    rebuilt = bands[-1]
    for band in reversed(bands[:-1]):
        up = torch.nn.functional.interpolate(rebuilt, size=band.shape[2:], mode="bilinear")
        rebuilt = band + up
    torch.testing.assert_close(rebuilt, pyramid["prediction_1"])


def test_laplacian_l1_weighs_each_band_once():
    """A constant offset lives in the coarsest band only: the pyramid L1 counts it per level."""
    pyramid = ImagePyramid([1, 0.5, 0.25, 0.125])
    x = torch.rand(2, 3, 32, 32)
    offset = x + 0.1
    lap, pyr = LaplacianL1Loss(weight=1), PyramidL1Loss(weight=1)
    assert lap(pyramid(x), pyramid(x)) == 0
    # the offset survives at every pyramid level (less near the zero-padded borders)
    torch.testing.assert_close(
        lap(pyramid(offset), pyramid(x)), torch.tensor(0.1), atol=2e-3, rtol=0
    )
    assert pyr(pyramid(offset), pyramid(x)) > 3.5 * lap(pyramid(offset), pyramid(x))
    # fine detail (a 2-pixel checkerboard) is seen by the finest band
    checker = (torch.arange(32).view(1, 32) + torch.arange(32).view(32, 1)) % 2 * 0.2 - 0.1
    assert lap(pyramid(x + checker), pyramid(x)) > 0.05


def test_missing_vgg_file_stops_with_a_message_naming_it(tmp_path):
    path = tmp_path / "vgg19" / "vgg19-dcbb9e9d.pth"
    with pytest.raises(FileNotFoundError) as error:
        VGGPerceptualLoss(weights_path=path)
    message = str(error.value)
    assert str(path) in message and "model/perceptual=pyramid_l1" in message
    with pytest.raises(FileNotFoundError, match="no path was given"):
        VGG19Features(None)


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    """A torchvision-layout VGG-19 file with the layers FOMM uses (random values, ~50 MB)."""
    torch.manual_seed(0)
    state = {f"features.{k}": v for k, v in _vgg19_features_layers(30).state_dict().items()}
    path = tmp_path_factory.mktemp("vgg") / "vgg19.pth"
    torch.save(state, path)
    return path, state


def test_vgg_features_load_strictly_and_stay_frozen(vgg_file, tmp_path):
    path, state = vgg_file
    loss = VGGPerceptualLoss(weights_path=path)
    assert torch.equal(loss.vgg.features[28].weight, state["features.28.weight"])
    assert not any(p.requires_grad for p in loss.parameters())
    loss.train()
    assert not loss.vgg.training

    maps = loss.vgg(torch.rand(1, 3, 32, 32))
    assert [tuple(m.shape[1:]) for m in maps] == [
        (64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4), (512, 2, 2)
    ]  # fmt: skip
    pyramid = ImagePyramid([1, 0.5])
    prediction = torch.rand(1, 3, 32, 32, requires_grad=True)
    target = torch.rand(1, 3, 32, 32)
    assert loss(pyramid(target), pyramid(target)) == 0
    value = loss(pyramid(prediction), pyramid(target))
    value.backward()
    assert value > 0 and prediction.grad is not None

    # a file that is not a torchvision vgg19 state dict is refused, naming the key
    bad = tmp_path / "vgg19_bn.pth"
    torch.save({**state, "features.1.running_mean": torch.zeros(64)}, bad)
    with pytest.raises(RuntimeError, match="features.1.running_mean"):
        VGG19Features(bad)


# ------------------------------------------------------------------------------- the system


def test_one_training_step_stays_finite_and_updates_both_networks():
    module = make_module()
    optimizer = module.configure_optimizers()[0]
    before = [
        p.detach().clone() for p in (module.kp_detector.kp.weight, module.generator.final.weight)
    ]
    source, driving = torch.rand(2, 2, 3, SIZE, SIZE)
    out = module.generator_losses(source, driving)
    assert set(out) >= {"loss", "perceptual", "equivariance_value", "equivariance_jacobian"}
    assert out["prediction"].shape == (2, 3, SIZE, SIZE)
    out["loss"].backward()
    optimizer.step()
    assert all(torch.isfinite(p).all() for p in module.parameters())
    after = (module.kp_detector.kp.weight, module.generator.final.weight)
    assert all(not torch.equal(b, a) for b, a in zip(before, after, strict=True))


def test_discriminator_terms_and_step():
    discriminator = MultiScaleDiscriminator(
        scales=[1], block_expansion=8, max_features=32, num_blocks=3
    )
    module = make_module(
        discriminator=discriminator, generator_gan_weight=1.0, feature_matching_weights=[10] * 3
    )
    source, driving = torch.rand(2, 2, 3, SIZE, SIZE)
    out = module.generator_losses(source, driving)
    assert out["generator_gan"] > 0 and out["feature_matching"] > 0
    loss_d = module.discriminator_loss(driving, out["prediction"], out["kp_driving"])
    assert torch.isfinite(loss_d) and loss_d > 0
    optimizers = module.configure_optimizers()  # no scheduler: the optimizers only
    assert [group["name"] for o in optimizers for group in o.param_groups] == [
        "generator", "kp_detector", "discriminator"
    ]  # fmt: skip


def test_invalid_settings_are_refused():
    discriminator = MultiScaleDiscriminator(
        scales=[1], block_expansion=8, max_features=32, num_blocks=3
    )
    with pytest.raises(ValueError, match="generator_gan_weight"):
        make_module(discriminator=discriminator)  # weight 0 with a discriminator
    with pytest.raises(ValueError, match="needs a discriminator"):
        make_module(generator_gan_weight=1.0)
    with pytest.raises(ValueError, match="one weight per discriminator block"):
        make_module(discriminator=discriminator, generator_gan_weight=1.0)  # 4 weights, 3 blocks
    with pytest.raises(TypeError, match="model/perceptual=pyramid_l1"):
        make_module(perceptual="pyramid_l1")


def test_exported_checkpoint_loads_into_the_coarse_generator(tmp_path):
    module = make_module()
    optimizer = module.configure_optimizers()[0]
    source, driving = torch.rand(2, 1, 3, SIZE, SIZE)
    module.generator_losses(source, driving)["loss"].backward()
    optimizer.step()

    # official format: networks, one optimizer state per network, epoch
    path = tmp_path / "fomm_checkpoint.pth.tar"
    states = split_optimizer_state(optimizer)
    assert set(states) == {"generator", "kp_detector"}
    module.export_fomm_checkpoint(path, epoch=3)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert {"kp_detector", "generator", "epoch"} <= set(checkpoint) and checkpoint["epoch"] == 3
    assert "discriminator" not in checkpoint
    alone = torch.optim.Adam(module.kp_detector.parameters(), lr=2e-4, betas=(0.5, 0.999))
    alone.load_state_dict(states["kp_detector"])  # FOMM's separate optimizer accepts it

    coarse = FOMMCoarseGenerator(checkpoint=path, **TINY_COARSE)
    module.eval()
    with torch.no_grad():
        expected = module.reconstruct(source, module.detect(source), module.detect(driving))
    result = coarse(source, driving)
    assert torch.allclose(result["prediction"], expected["prediction"], atol=1e-6)
