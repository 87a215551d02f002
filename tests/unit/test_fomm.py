"""FOMM coarse generator: official state-dict layout, checkpoints, motion formulas, wrapper."""

from __future__ import annotations

import inspect
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from fadm_lightning.models.coarse.fomm import (
    DenseMotionNetwork,
    FOMMCheckpointError,
    FOMMCoarseGenerator,
    KPDetector,
    MultiScaleDiscriminator,
    OcclusionAwareGenerator,
    convex_hull_area,
    find_best_frame,
    load_fomm_checkpoint,
    normalize_kp,
    save_fomm_checkpoint,
)
from fadm_lightning.models.coarse.fomm.blocks import AntiAliasInterpolation2d
from fadm_lightning.models.coarse.fomm.geometry import make_coordinate_grid

ROOT = Path(__file__).resolve().parents[2]
KEYS_FILE = ROOT / "tests" / "data" / "reference" / "fomm_keys.txt"
CONFIG_FILE = ROOT / "conf" / "coarse" / "fomm.yaml"

# a small CPU preset built from the same constructor args (64×64 images, 10×10 heatmaps)
SMALL_KP = dict(block_expansion=8, num_kp=5, max_features=32, num_blocks=3)
SMALL_GEN = dict(
    num_kp=5,
    block_expansion=8,
    max_features=32,
    num_bottleneck_blocks=1,
    dense_motion_block_expansion=8,
    dense_motion_max_features=32,
    dense_motion_num_blocks=3,
)
SMALL_DISC = dict(block_expansion=4, max_features=16, num_blocks=2, scales=(1, 0.5))
SMALL_WRAPPER = dict(
    num_kp=5,
    kp_block_expansion=8,
    kp_max_features=32,
    kp_num_blocks=3,
    block_expansion=8,
    max_features=32,
    num_bottleneck_blocks=1,
    dense_motion_block_expansion=8,
    dense_motion_max_features=32,
    dense_motion_num_blocks=3,
)


# ----------------------------------------------------------------------------- helpers


def read_reference_keys() -> dict[str, dict]:
    """``{network: {"params": int, "floats": int, "entries": [(key, shape, dtype), …]}}``."""
    networks: dict[str, dict] = {}
    current = None
    for line in KEYS_FILE.read_text().splitlines():
        if line.startswith("## "):
            name, _, params = line[3:].split()
            current = networks[name] = {"params": int(params.split("=")[1]), "entries": []}
        elif line.startswith("# total entries") and current is not None:
            current["floats"] = int(line.rsplit(":", 1)[1])
        elif line and not line.startswith("#") and current is not None:
            key, shape, dtype = line.split("\t")
            current["entries"].append((key, shape, dtype))
    return networks


def state_entries(module: torch.nn.Module) -> list[tuple[str, str, str]]:
    return [
        (key, str(tuple(value.shape)), str(value.dtype).removeprefix("torch."))
        for key, value in module.state_dict().items()
    ]


def randomise(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random weights *and* BatchNorm statistics, so that loading visibly changes outputs."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if tensor.is_floating_point() and not name.endswith("down.weight"):
                noise = torch.rand(tensor.shape, generator=generator)
                tensor.copy_(
                    0.5 + noise if "running_var" in name else tensor + 0.05 * (noise - 0.5)
                )
    return module.eval()


def smooth_images(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    """``B×3×size×size`` in [0, 1], smooth (bilinear upsampling of an 8×8 random image)."""
    low = torch.rand(batch, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    return F.interpolate(low, size=(size, size), mode="bilinear", align_corners=True)


def keypoints(value: torch.Tensor, jacobian: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    out = {"value": value}
    if jacobian is not None:
        out["jacobian"] = jacobian
    return out


def identity_jacobians(batch: int, num_kp: int) -> torch.Tensor:
    return torch.eye(2).expand(batch, num_kp, 2, 2).clone()


@pytest.fixture(scope="module")
def vox256() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {
        "kp_detector": KPDetector().eval(),
        "generator": OcclusionAwareGenerator().eval(),
        "discriminator": MultiScaleDiscriminator().eval(),
    }


@pytest.fixture
def small_networks() -> tuple[KPDetector, OcclusionAwareGenerator, MultiScaleDiscriminator]:
    torch.manual_seed(1)
    return (
        randomise(KPDetector(**SMALL_KP), seed=1),
        randomise(OcclusionAwareGenerator(**SMALL_GEN), seed=2),
        randomise(MultiScaleDiscriminator(**SMALL_DISC), seed=3),
    )


@pytest.fixture
def small_checkpoint(tmp_path, small_networks) -> Path:
    kp_detector, generator, discriminator = small_networks
    return save_fomm_checkpoint(tmp_path / "small.pth.tar", kp_detector, generator, discriminator)


# ----------------------------------------------------------------------------- official layout


@pytest.mark.parametrize("name", ["kp_detector", "generator", "discriminator"])
def test_state_dict_matches_official_vox256_keys(vox256, name):
    reference = read_reference_keys()[name]
    module = vox256[name]
    assert state_entries(module) == reference["entries"]  # same keys, order, shapes, dtypes
    assert sum(p.numel() for p in module.parameters()) == reference["params"]
    floats = sum(v.numel() for v in module.state_dict().values() if v.is_floating_point())
    assert floats == reference["floats"]


def test_vox256_forward_256_outputs_and_58x58_heatmaps(vox256):
    kp_detector, generator = vox256["kp_detector"], vox256["generator"]
    heatmap_shapes = []
    hook = kp_detector.kp.register_forward_hook(lambda m, i, o: heatmap_shapes.append(o.shape))
    source, driving = smooth_images(2, 256, seed=1).chunk(2)
    with torch.no_grad():
        kp_source, kp_driving = kp_detector(source), kp_detector(driving)
        out = generator(source, kp_driving=kp_driving, kp_source=kp_source)
    hook.remove()

    assert heatmap_shapes == [torch.Size([1, 10, 58, 58])] * 2
    assert kp_detector.heatmap_size(256) == 58  # 256·0.25 − 7 + 1
    assert kp_source["value"].shape == (1, 10, 2) and kp_source["jacobian"].shape == (1, 10, 2, 2)
    assert kp_source["value"].abs().max() <= 1
    expected = {
        "mask": (1, 11, 64, 64),
        "sparse_deformed": (1, 11, 3, 64, 64),
        "occlusion_map": (1, 1, 64, 64),
        "deformed": (1, 3, 256, 256),
        "prediction": (1, 3, 256, 256),
    }
    assert {key: tuple(value.shape) for key, value in out.items()} == expected
    assert list(out) == list(expected)
    assert torch.allclose(out["mask"].sum(dim=1), torch.ones(1, 64, 64), atol=1e-5)
    assert 0 < out["prediction"].min() and out["prediction"].max() < 1


# ----------------------------------------------------------------------------- geometry, blocks


def test_coordinate_grid_is_x_first_and_spans_pixel_centres():
    grid = make_coordinate_grid(3, 5)  # H=3, W=5
    assert grid.shape == (3, 5, 2)
    assert grid[0, 0].tolist() == [-1.0, -1.0]
    assert grid[-1, -1].tolist() == [1.0, 1.0]
    assert grid[1, 2].tolist() == [0.0, 0.0]
    assert grid[0, 1].tolist() == [-0.5, -1.0]  # x varies along columns


def test_antialias_kernel_is_a_13x13_normalised_gaussian_buffer():
    down = AntiAliasInterpolation2d(3, 0.25)
    assert "weight" in down.state_dict()  # persistent: "down.weight" in checkpoints
    assert down.weight.shape == (3, 1, 13, 13)
    assert torch.allclose(down.weight.sum(dim=(2, 3)), torch.ones(3, 1))
    assert torch.equal(down.weight, down.weight.flip(2)) and torch.equal(
        down.weight, down.weight.mT
    )
    constant = torch.full((1, 3, 256, 256), 0.3)
    out = down(constant)
    assert out.shape == (1, 3, 64, 64)
    assert torch.allclose(out[..., 2:-2, 2:-2], torch.full_like(out[..., 2:-2, 2:-2], 0.3))


def test_keypoint_jacobians_start_at_identity():
    kp_detector = KPDetector(**SMALL_KP).eval()
    with torch.no_grad():
        kp = kp_detector(smooth_images(2, 64))
    assert kp["value"].shape == (2, 5, 2)
    assert kp_detector.heatmap_size(64) == 10
    assert torch.allclose(kp["jacobian"], identity_jacobians(2, 5), atol=1e-6)


# ----------------------------------------------------------------------------- motion formulas


def test_identity_motion_gives_identity_sparse_motions():
    dense_motion = DenseMotionNetwork(num_kp=4)  # only the motion formulas are used
    value = torch.rand(2, 4, 2) * 2 - 1
    jacobian = identity_jacobians(2, 4) + 0.3 * torch.rand(2, 4, 2, 2)  # J_s = J_d ≠ I
    kp = keypoints(value, jacobian)
    motions = dense_motion.create_sparse_motions(16, 12, kp_driving=kp, kp_source=kp)
    identity = make_coordinate_grid(16, 12).expand(2, 5, 16, 12, 2)
    assert motions.shape == (2, 5, 16, 12, 2)
    assert torch.allclose(motions, identity, atol=1e-5)


def test_sparse_motion_translation_and_jacobian():
    dense_motion = DenseMotionNetwork(num_kp=1)
    kp_driving = keypoints(torch.tensor([[[0.2, -0.4]]]), identity_jacobians(1, 1))
    shift = torch.tensor([0.1, 0.3])
    kp_source = keypoints(kp_driving["value"] + shift, identity_jacobians(1, 1))
    motions = dense_motion.create_sparse_motions(8, 8, kp_driving=kp_driving, kp_source=kp_source)
    grid = make_coordinate_grid(8, 8)
    assert torch.allclose(motions[0, 0], grid)  # background = identity
    assert torch.allclose(motions[0, 1], grid + shift)  # T(z) = z + t

    # T(z) = J_s·J_d⁻¹·(z − kp_d) + kp_s
    a = torch.tensor([[1.2, 0.3], [-0.1, 0.8]])
    b = torch.tensor([[0.9, -0.2], [0.4, 1.1]])
    kp_driving["jacobian"] = b.view(1, 1, 2, 2)
    kp_source["jacobian"] = a.view(1, 1, 2, 2)
    motions = dense_motion.create_sparse_motions(8, 8, kp_driving=kp_driving, kp_source=kp_source)
    expected = (grid - kp_driving["value"][0, 0]) @ (a @ torch.linalg.inv(b)).T + kp_source[
        "value"
    ][0, 0]
    assert torch.allclose(motions[0, 1], expected, atol=1e-5)


@pytest.mark.parametrize("align_corners", [True, False])
def test_identity_motion_deforms_source_to_itself(align_corners):
    generator = randomise(OcclusionAwareGenerator(**SMALL_GEN, align_corners=align_corners), seed=4)
    source = smooth_images(2, 64)
    kp = keypoints(torch.rand(2, 5, 2) * 1.6 - 0.8, identity_jacobians(2, 5))
    with torch.no_grad():
        motion = generator.dense_motion_network(source, kp_driving=kp, kp_source=kp)
        out = generator(source, kp_driving=kp, kp_source=kp)
    identity = make_coordinate_grid(16, 16).expand(2, 16, 16, 2)
    assert torch.allclose(motion["deformation"], identity, atol=1e-5)  # Σ_k mask_k·z = z
    if align_corners:  # the grid convention of FOMM: exact identity
        assert torch.allclose(out["deformed"], source, atol=1e-5)
    else:
        # FADM's torch ≥ 1.3 default reads the [-1, 1] pixel-centre grid with pixel-corner
        # semantics: identity motion becomes a slight zoom about the centre (here 16→64:
        # source column ≈ 16/15·i − 2.1; for vox-256, 64→256: ≈ 64/63·i − 2.0) with zero
        # padding at the border. Only the centre is close to the source.
        error = (out["deformed"] - source).abs()
        assert error[..., 24:40, 24:40].max() < 0.1
        assert error.max() > 0.1  # not the identity


def test_normalize_kp_absolute_returns_driving():
    kp_source = keypoints(torch.rand(1, 3, 2), identity_jacobians(1, 3))
    kp_driving = keypoints(torch.rand(1, 3, 2), 2 * identity_jacobians(1, 3))
    out = normalize_kp(kp_source, kp_driving, kp_source)
    assert out["value"] is kp_driving["value"] and out["jacobian"] is kp_driving["jacobian"]


def test_normalize_kp_relative_formulas():
    source = keypoints(
        torch.tensor([[[-0.5, -0.5], [0.5, -0.5], [0.0, 0.5]]]),
        torch.tensor([[[1.0, 0.2], [0.0, 1.0]]]).expand(1, 3, 2, 2),
    )
    initial = keypoints(
        torch.tensor([[[-0.25, 0.0], [0.25, 0.0], [0.0, 0.5]]]),  # half the source's size
        torch.tensor([[[0.8, 0.0], [0.1, 1.2]]]).expand(1, 3, 2, 2),
    )
    relative = dict(use_relative_movement=True, use_relative_jacobian=True)

    # 1. driving == initial → source keypoints back (value and jacobian)
    out = normalize_kp(source, initial, initial, **relative)
    assert torch.allclose(out["value"], source["value"])
    assert torch.allclose(out["jacobian"], source["jacobian"], atol=1e-6)

    # 2. pure translation, without and with the movement scale (sqrt of area ratio = 2)
    shift = torch.tensor([0.05, -0.1])
    moved = keypoints(initial["value"] + shift, initial["jacobian"])
    out = normalize_kp(source, moved, initial, **relative)
    assert torch.allclose(out["value"], source["value"] + shift)
    out = normalize_kp(source, moved, initial, adapt_movement_scale=True, **relative)
    assert torch.allclose(out["value"], source["value"] + 2 * shift)

    # 3. jacobian composition: (J_d · J_init⁻¹) · J_s
    rotation = torch.tensor([[math.cos(0.3), -math.sin(0.3)], [math.sin(0.3), math.cos(0.3)]])
    turned = keypoints(initial["value"], rotation @ initial["jacobian"])
    out = normalize_kp(source, turned, initial, **relative)
    assert torch.allclose(out["jacobian"], rotation @ source["jacobian"], atol=1e-6)
    out = normalize_kp(source, turned, initial, use_relative_movement=True)
    assert torch.allclose(out["jacobian"], turned["jacobian"])  # absolute jacobian kept


def test_normalize_kp_movement_scale_is_per_batch_item():
    base = torch.tensor([[-0.2, -0.2], [0.2, -0.2], [0.0, 0.2]])
    source = keypoints(torch.stack([base, 3 * base]))  # hull side ratios 1 and 3
    initial = keypoints(torch.stack([base, base]))
    shift = torch.tensor([0.01, 0.02])
    driving = keypoints(initial["value"] + shift)
    out = normalize_kp(
        source, driving, initial, adapt_movement_scale=True, use_relative_movement=True
    )
    assert torch.allclose(
        out["value"] - source["value"], torch.stack([shift, 3 * shift])[:, None].expand(2, 3, 2)
    )
    assert torch.allclose(convex_hull_area(source["value"]).float(), torch.tensor([0.08, 0.72]))

    line = keypoints(torch.tensor([[[0.0, 0.0], [0.1, 0.1], [0.2, 0.2]]]))  # zero area
    with pytest.warns(UserWarning, match="degenerate"):
        out = normalize_kp(line, line, line, adapt_movement_scale=True, use_relative_movement=True)
    assert torch.allclose(out["value"], line["value"])


def test_find_best_frame_is_translation_and_scale_invariant():
    generator = torch.Generator().manual_seed(5)
    source = torch.rand(12, 2, generator=generator)
    driving = torch.stack(
        [
            torch.rand(12, 2, generator=generator),
            source + 0.05 * torch.randn(12, 2, generator=generator),
            2.5 * source + torch.tensor([3.0, -1.0]),  # same layout, moved and scaled
            torch.zeros(12, 2),  # degenerate: never chosen
        ]
    )
    assert find_best_frame(source, driving) == 2
    assert find_best_frame(source.unsqueeze(0), driving[:2]) == 1
    with pytest.raises(ValueError, match="T×N×2"):
        find_best_frame(source, driving[:, :5])


# ----------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip_in_official_format(tmp_path, small_networks):
    kp_detector, generator, discriminator = small_networks
    optimizer = torch.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    path = save_fomm_checkpoint(
        tmp_path / "sub" / "cpk.pth.tar",
        kp_detector,
        generator,
        discriminator,
        optimizers={"generator": optimizer},
        epoch=7,
    )
    assert sorted(torch.load(path, weights_only=True)) == [
        "discriminator",
        "epoch",
        "generator",
        "kp_detector",
        "optimizer_generator",
    ]
    assert [p.name for p in path.parent.iterdir()] == ["cpk.pth.tar"]  # no temporary left

    fresh_kp = randomise(KPDetector(**SMALL_KP), seed=11)
    fresh_gen = randomise(OcclusionAwareGenerator(**SMALL_GEN), seed=12)
    fresh_disc = randomise(MultiScaleDiscriminator(**SMALL_DISC), seed=13)
    checkpoint = load_fomm_checkpoint(path, fresh_kp, fresh_gen, fresh_disc)
    assert checkpoint["epoch"] == 7

    source, driving = smooth_images(2, 64, seed=2).chunk(2)
    with torch.no_grad():
        expected = generator(source, kp_detector(driving), kp_detector(source))["prediction"]
        got = fresh_gen(source, fresh_kp(driving), fresh_kp(source))["prediction"]
        pyramid = {"prediction_1": source, "prediction_0.5": F.avg_pool2d(source, 2)}
        expected_disc = discriminator(pyramid)["prediction_map_0.5"]
        got_disc = fresh_disc(pyramid)["prediction_map_0.5"]
    assert torch.equal(got, expected)
    assert torch.equal(got_disc, expected_disc)


def test_checkpoint_in_legacy_serialisation_loads(tmp_path, small_networks):
    """The 2019 vox-cpk.pth.tar predates the zip format."""
    kp_detector, generator, _ = small_networks
    path = tmp_path / "legacy.pth.tar"
    state = {
        "generator": generator.state_dict(),
        "kp_detector": kp_detector.state_dict(),
        "epoch": 99,
    }
    torch.save(state, path, _use_new_zipfile_serialization=False)
    fresh_kp = KPDetector(**SMALL_KP)
    load_fomm_checkpoint(path, fresh_kp, OcclusionAwareGenerator(**SMALL_GEN))
    assert torch.equal(fresh_kp.kp.weight, kp_detector.kp.weight)


class NotAStateDict:
    """A pickled Python object that ``torch.load(weights_only=True)`` must refuse."""


def _edit_checkpoint(path: Path, edit) -> Path:
    checkpoint = torch.load(path, weights_only=True)
    edit(checkpoint)
    torch.save(checkpoint, path)
    return path


def _truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize(
    ("damage", "patterns"),
    [
        (
            lambda p: _edit_checkpoint(p, lambda c: c["generator"].pop("final.bias")),
            ["missing keys (1)", "final.bias", "[generator]"],
        ),
        (
            lambda p: _edit_checkpoint(
                p, lambda c: c["kp_detector"].update({"extra.weight": torch.zeros(1)})
            ),
            ["unexpected keys (1)", "extra.weight", "[kp_detector]"],
        ),
        (
            lambda p: _edit_checkpoint(
                p, lambda c: c["kp_detector"].update({"kp.weight": torch.zeros(10, 35, 7, 7)})
            ),
            ["mis-shaped keys (1)", "kp.weight: checkpoint (10, 35, 7, 7) vs model (5, 11, 7, 7)"],
        ),
        (
            lambda p: _edit_checkpoint(p, lambda c: c.pop("generator")),
            ["lacks the entries ['generator']", "'kp_detector'", "vox-cpk.pth.tar"],
        ),
        (
            lambda p: (p.write_text("epoch: 3\n"), p)[1],
            ["not a readable FOMM checkpoint: it is a text file", "Expected a FOMM vox-256"],
        ),
        (_truncate, ["truncated"]),
        (lambda p: (torch.save([1, 2], p), p)[1], ["holds a list, expected a dict"]),
        (
            lambda p: _edit_checkpoint(p, lambda c: c.update({"kp_detector": 3})),
            ["['kp_detector'] are not state dicts"],
        ),
        (
            lambda p: (torch.save({"generator": NotAStateDict()}, p), p)[1],
            ["holds Python objects that cannot be loaded safely", "NotAStateDict"],
        ),
    ],
    ids=[
        "missing-key",
        "unexpected-key",
        "wrong-shape",
        "no-generator",
        "not-a-checkpoint",
        "truncated",
        "not-a-dict",
        "entry-not-a-state-dict",
        "pickled-object",
    ],
)
def test_bad_checkpoints_raise_clear_errors(small_checkpoint, damage, patterns):
    path = damage(small_checkpoint)
    with pytest.raises(FOMMCheckpointError) as error:
        load_fomm_checkpoint(path, KPDetector(**SMALL_KP), OcclusionAwareGenerator(**SMALL_GEN))
    assert isinstance(error.value, RuntimeError)
    message = str(error.value)
    assert str(path) in message
    for pattern in patterns:
        assert pattern in message


def test_truncated_legacy_checkpoint_raises_clear_error(tmp_path, small_networks):
    kp_detector, generator, _ = small_networks
    path = tmp_path / "legacy.pth.tar"
    state = {"generator": generator.state_dict(), "kp_detector": kp_detector.state_dict()}
    torch.save(state, path, _use_new_zipfile_serialization=False)
    _truncate(path)
    with pytest.raises(FOMMCheckpointError, match="truncated"):
        load_fomm_checkpoint(path, KPDetector(**SMALL_KP), OcclusionAwareGenerator(**SMALL_GEN))


def test_discriminator_is_optional(tmp_path, small_networks):
    kp_detector, generator, _ = small_networks
    path = save_fomm_checkpoint(tmp_path / "no_disc.pth", kp_detector, generator)
    discriminator = MultiScaleDiscriminator(**SMALL_DISC)
    before = {k: v.clone() for k, v in discriminator.state_dict().items()}
    load_fomm_checkpoint(path, KPDetector(**SMALL_KP), OcclusionAwareGenerator(**SMALL_GEN))
    with pytest.warns(UserWarning, match="no discriminator"):
        load_fomm_checkpoint(
            path, KPDetector(**SMALL_KP), OcclusionAwareGenerator(**SMALL_GEN), discriminator
        )
    assert all(torch.equal(before[k], v) for k, v in discriminator.state_dict().items())


def test_missing_checkpoint_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="coarse.checkpoint=PATH"):
        load_fomm_checkpoint(
            tmp_path / "nope.pth", KPDetector(**SMALL_KP), OcclusionAwareGenerator(**SMALL_GEN)
        )


# ----------------------------------------------------------------------------- coarse generator


@pytest.mark.parametrize("checkpoint", [None, "/no/such/dir/vox-cpk.pth.tar"])
def test_missing_checkpoint_error_names_path_file_and_fix(checkpoint):
    with pytest.raises(FileNotFoundError) as error:
        FOMMCoarseGenerator(checkpoint)
    message = str(error.value)
    assert (checkpoint or "checkpoint=None") in message
    for expected in (
        "vox-cpk.pth.tar",
        "vox-adv-cpk.pth.tar",
        "FOMM.pth",
        "'generator'",
        "'kp_detector'",
    ):
        assert expected in message
    assert "coarse.checkpoint=PATH" in message
    assert "checkpoint" in FOMMCoarseGenerator.required_paths


def test_coarse_generator_loads_checkpoint_and_stays_frozen(small_checkpoint, small_networks):
    kp_detector, generator, _ = small_networks
    coarse = FOMMCoarseGenerator(str(small_checkpoint), **SMALL_WRAPPER)
    assert not coarse.training and all(not p.requires_grad for p in coarse.parameters())
    coarse.train()
    assert not any(module.training for module in coarse.modules())

    source, driving = smooth_images(4, 64, seed=3).chunk(2)
    out = coarse(source, driving)
    with torch.no_grad():
        expected = generator(source, kp_detector(driving), kp_detector(source))["prediction"]
    assert torch.allclose(out["prediction"], expected, atol=1e-6)
    assert out["prediction"].shape == (2, 3, 64, 64) and not out["prediction"].requires_grad
    for key in ("mask", "sparse_deformed", "occlusion_map", "deformed"):
        assert key in out
    for key in ("kp_source", "kp_driving", "kp_norm"):
        assert out[key].shape == (2, 5, 2) and out[f"{key}_jacobian"].shape == (2, 5, 2, 2)
    assert torch.equal(out["kp_norm"], out["kp_driving"])  # absolute mode
    with pytest.raises(ValueError, match="same shape"):
        coarse(source, driving[:1])


def test_random_weights_only_with_the_loud_flag():
    with pytest.warns(UserWarning, match="RANDOM WEIGHTS"):
        coarse = FOMMCoarseGenerator(None, allow_random_weights_for_tests=True, **SMALL_WRAPPER)
    assert coarse.checkpoint is None
    with pytest.raises(ValueError, match="mode"):
        FOMMCoarseGenerator(None, mode="sideways", allow_random_weights_for_tests=True)


def test_relative_mode(small_checkpoint):
    absolute = FOMMCoarseGenerator(small_checkpoint, **SMALL_WRAPPER)
    relative = FOMMCoarseGenerator(small_checkpoint, mode="relative", **SMALL_WRAPPER)
    source, driving = smooth_images(4, 64, seed=4).chunk(2)
    with pytest.raises(ValueError, match="set_driving_initial"):
        relative(source, driving)

    # driving == reference frame → the source keypoints drive the source: same as absolute(s, s)
    out = relative(source, driving, driving_initial=driving)
    assert torch.allclose(out["kp_norm"], out["kp_source"], atol=1e-6)
    assert torch.allclose(out["prediction"], absolute(source, source)["prediction"], atol=1e-5)

    relative.set_driving_initial(driving[:1])  # one reference frame for the whole batch
    out = relative(source, driving)
    delta = out["kp_driving"] - out["kp_driving"][:1]
    assert torch.allclose(out["kp_norm"], out["kp_source"] + delta, atol=1e-6)


def test_animate_video_from_best_frame(small_checkpoint):
    coarse = FOMMCoarseGenerator(
        small_checkpoint, mode="relative", adapt_movement_scale=True, **SMALL_WRAPPER
    )
    frames = smooth_images(6, 64, seed=5)
    source, video = frames[0], frames[1:]  # T = 5
    result = coarse.animate(
        source, video, relative=True, adapt_scale=True, best_frame=3, batch_size=2
    )
    assert result.shape == (5, 3, 64, 64)
    expected = coarse(source.expand(5, -1, -1, -1), video, driving_initial=video[3:4])["prediction"]
    assert torch.allclose(result, expected, atol=1e-5)

    absolute = coarse.animate(source, video, relative=False, batch_size=4)
    coarse.mode = "absolute"
    assert torch.allclose(
        absolute, coarse(source.expand(5, -1, -1, -1), video)["prediction"], atol=1e-5
    )
    assert coarse.animate(source, video, auto_best_frame=True, batch_size=5).shape == (5, 3, 64, 64)
    with pytest.raises(ValueError, match="best_frame=5"):
        coarse.animate(source, video, best_frame=5)


def test_hydra_config_matches_constructor_defaults():
    from hydra.utils import instantiate

    config = OmegaConf.load(CONFIG_FILE)
    assert config._target_ == "fadm_lightning.models.coarse.fomm.FOMMCoarseGenerator"
    parameters = inspect.signature(FOMMCoarseGenerator.__init__).parameters
    fields = {key: config[key] for key in config if key not in ("_target_", "checkpoint")}
    assert set(fields) == set(parameters) - {"self", "checkpoint"}
    for key, value in fields.items():  # the vox-256 values are also the constructor defaults
        assert parameters[key].default == value, key

    root = OmegaConf.create({"paths": {"pretrained_dir": "/nonexistent"}, "coarse": config})
    with pytest.raises(Exception, match="/nonexistent/fomm/vox-cpk.pth.tar"):
        instantiate(root.coarse)
