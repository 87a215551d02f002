"""face-vid2vid coarse generator: official state-dict layout, checkpoints, quirks, wrapper."""

from __future__ import annotations

import inspect
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from fadm_lightning.models.coarse.facevid import (
    FacevidCheckpointError,
    FacevidCoarseGenerator,
    HEEstimator,
    KPDetector,
    OcclusionAwareGenerator,
    get_rotation_matrix,
    headpose_pred_to_degree,
    keypoint_transformation,
    load_facevid_checkpoint,
    save_facevid_checkpoint,
)
from fadm_lightning.models.coarse.facevid.geometry import make_coordinate_grid_3d

ROOT = Path(__file__).resolve().parents[2]
KEYS_FILE = ROOT / "tests" / "data" / "reference" / "facevid_keys.txt"
CONFIG_FILE = ROOT / "conf" / "coarse" / "facevid.yaml"

# a small CPU preset built from the same constructor args (64×64 images, 4×16×16 volumes)
SMALL_KP = dict(
    block_expansion=4, num_kp=5, max_features=16, reshape_channel=64, reshape_depth=4, num_blocks=2
)
SMALL_HE = dict(block_expansion=8, num_kp=5, max_features=64)
SMALL_GEN = dict(
    num_kp=5,
    block_expansion=8,
    max_features=32,
    reshape_channel=8,
    reshape_depth=4,
    num_resblocks=1,
    dense_motion_block_expansion=8,
    dense_motion_max_features=32,
    dense_motion_num_blocks=2,
    dense_motion_compress=2,
)
SMALL_WRAPPER = dict(
    num_kp=5,
    kp_block_expansion=4,
    kp_max_features=16,
    kp_reshape_channel=64,
    kp_reshape_depth=4,
    kp_num_blocks=2,
    he_block_expansion=8,
    he_max_features=64,
    block_expansion=8,
    max_features=32,
    reshape_channel=8,
    reshape_depth=4,
    num_resblocks=1,
    dense_motion_block_expansion=8,
    dense_motion_max_features=32,
    dense_motion_num_blocks=2,
    dense_motion_compress=2,
)


# ----------------------------------------------------------------------------- helpers


def read_reference_keys(path: Path = KEYS_FILE) -> dict[str, dict]:
    """``{network: {"params": int, "floats": int, "entries": [(key, shape, dtype), …]}}``."""
    networks: dict[str, dict] = {}
    current = None
    for line in path.read_text().splitlines():
        if line.startswith("## "):
            name = line[3:].split()[0]
            params = int(line.split("params=")[1].split(";")[0])
            current = networks[name] = {"params": params, "entries": []}
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


def smooth_images(batch: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    """``B×3×size×size`` in [0, 1], smooth (bilinear upsampling of an 8×8 random image)."""
    low = torch.rand(batch, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    return F.interpolate(low, size=(size, size), mode="bilinear", align_corners=True)


def small_wrapper(**overrides) -> FacevidCoarseGenerator:
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="RANDOM WEIGHTS"):
        coarse = FacevidCoarseGenerator(
            None, allow_random_weights_for_tests=True, **{**SMALL_WRAPPER, **overrides}
        )
    for seed, module in enumerate((coarse.kp_detector, coarse.he_estimator, coarse.generator)):
        randomise(module, seed)
    return coarse


def rotation_numpy(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Independent reference: R = P·Y·R_z with degrees converted by 3.14 / 180."""
    y, p, r = (np.float64(a) / 180 * 3.14 for a in (yaw, pitch, roll))
    pitch_m = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    yaw_m = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    roll_m = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return pitch_m @ yaw_m @ roll_m


# ----------------------------------------------------------------------------- layout


def test_state_dicts_match_the_official_keys_shapes_and_counts():
    reference = read_reference_keys()
    with torch.device("meta"):  # shapes only: no 125 M parameters in memory
        networks = {
            "kp_detector": KPDetector(),
            "he_estimator": HEEstimator(),
            "generator": OcclusionAwareGenerator(),
        }
    assert set(reference) == set(networks)
    for name, module in networks.items():
        expected = reference[name]
        assert state_entries(module) == expected["entries"], name  # key for key, in order
        assert sum(p.numel() for p in module.parameters()) == expected["params"], name
        floats = sum(v.numel() for v in module.state_dict().values() if v.is_floating_point())
        assert floats == expected["floats"], name
    assert reference["kp_detector"]["params"] == 41_940_047
    assert reference["he_estimator"]["params"] == 30_254_838
    assert reference["generator"]["params"] == 53_101_392


def test_wrapper_holds_the_three_networks_under_their_checkpoint_names():
    with torch.device("meta"), pytest.warns(UserWarning, match="RANDOM WEIGHTS"):
        coarse = FacevidCoarseGenerator(None, allow_random_weights_for_tests=True)
    reference = read_reference_keys()
    for name in ("kp_detector", "he_estimator", "generator"):
        assert state_entries(getattr(coarse, name)) == reference[name]["entries"]


def test_config_lists_every_constructor_argument():
    config = OmegaConf.to_container(OmegaConf.load(CONFIG_FILE), resolve=False)
    parameters = set(inspect.signature(FacevidCoarseGenerator.__init__).parameters) - {"self"}
    assert set(config) - {"_target_"} == parameters
    assert config["checkpoint"] == "${paths.pretrained_dir}/facevid/Facevid.pth"
    defaults = {
        name: p.default
        for name, p in inspect.signature(FacevidCoarseGenerator.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    assert set(defaults) == parameters - {"checkpoint"}
    for name, default in defaults.items():
        assert config[name] == default, name  # the yaml states FADM's vox-256 values


# ----------------------------------------------------------------------------- quirks


def test_angle_bins_decode_as_3_times_expected_bin_minus_99():
    uniform = torch.zeros(2, 66)
    torch.testing.assert_close(headpose_pred_to_degree(uniform), torch.full((2,), 3 * 32.5 - 99))
    for index, degrees in ((0, -99.0), (33, 0.0), (65, 96.0)):
        one_hot = torch.full((1, 66), -1e4)
        one_hot[0, index] = 0
        assert headpose_pred_to_degree(one_hot).item() == pytest.approx(degrees)
    logits = torch.randn(3, 66, generator=torch.Generator().manual_seed(0))
    probabilities = np.exp(logits.double().numpy())
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    expected = 3 * (probabilities * np.arange(66)).sum(axis=1) - 99
    np.testing.assert_allclose(headpose_pred_to_degree(logits).numpy(), expected, atol=1e-4)


def test_rotation_is_pitch_yaw_roll_with_pi_approximated_by_3_14():
    angles = [(30.0, -20.0, 10.0), (-75.0, 45.0, -60.0), (90.0, 0.0, 0.0)]
    yaw, pitch, roll = (
        torch.tensor(column, dtype=torch.float64) for column in zip(*angles, strict=True)
    )
    rotation = get_rotation_matrix(yaw, pitch, roll)
    for index, (y, p, r) in enumerate(angles):
        np.testing.assert_allclose(rotation[index].numpy(), rotation_numpy(y, p, r), atol=1e-12)
    # 90° is 1.57 rad, not π/2: the yaw matrix keeps cos(1.57) ≈ 7.96e-4 on its diagonal
    assert rotation[2, 0, 0].item() == pytest.approx(math.cos(1.57), abs=1e-12)
    assert rotation[2, 0, 0].item() != pytest.approx(0.0, abs=1e-6)
    # order matters: P·Y·R_z, not R_z·Y·P
    y, p, r = (np.float64(a) / 180 * 3.14 for a in angles[0])
    pitch_only, yaw_only, roll_only = (
        rotation_numpy(0, p * 180 / 3.14, 0),
        rotation_numpy(y * 180 / 3.14, 0, 0),
        rotation_numpy(0, 0, r * 180 / 3.14),
    )
    np.testing.assert_allclose(rotation[0].numpy(), pitch_only @ yaw_only @ roll_only, atol=1e-12)
    assert not np.allclose(rotation[0].numpy(), roll_only @ yaw_only @ pitch_only)
    identity = rotation @ rotation.transpose(1, 2)
    torch.testing.assert_close(identity, torch.eye(3, dtype=torch.float64).expand(3, 3, 3))


def test_estimator_outputs_yaw_from_fc_roll_and_roll_from_fc_yaw():
    estimator = HEEstimator(**SMALL_HE).eval()
    with torch.no_grad():
        for layer, peak in (
            (estimator.fc_roll, 40),
            (estimator.fc_pitch, 20),
            (estimator.fc_yaw, 10),
        ):
            layer.weight.zero_()
            layer.bias.fill_(-1e4)
            layer.bias[peak] = 0
        out = estimator(smooth_images(2))
    degrees = {name: headpose_pred_to_degree(out[name]) for name in ("yaw", "pitch", "roll")}
    torch.testing.assert_close(degrees["yaw"], torch.full((2,), 3 * 40 - 99.0))  # from fc_roll
    torch.testing.assert_close(degrees["pitch"], torch.full((2,), 3 * 20 - 99.0))
    torch.testing.assert_close(degrees["roll"], torch.full((2,), 3 * 10 - 99.0))  # from fc_yaw
    assert out["t"].shape == (2, 3) and out["exp"].shape == (2, 15)


def test_keypoint_transformation_formula_and_inputs_untouched():
    generator = torch.Generator().manual_seed(0)
    batch, num_kp = 2, 5
    kp_canonical = {"value": torch.rand(batch, num_kp, 3, generator=generator) * 2 - 1}
    he = {
        "yaw": torch.randn(batch, 66, generator=generator),
        "pitch": torch.randn(batch, 66, generator=generator),
        "roll": torch.randn(batch, 66, generator=generator),
        "t": torch.randn(batch, 3, generator=generator),
        "exp": torch.randn(batch, 3 * num_kp, generator=generator),
    }
    before = {key: value.clone() for key, value in he.items()}
    canonical_before = kp_canonical["value"].clone()

    first = keypoint_transformation(kp_canonical, he)
    second = keypoint_transformation(kp_canonical, he)  # the official code breaks here (t is B×1×3)

    for key, value in he.items():
        assert value.shape == before[key].shape and torch.equal(value, before[key]), key
    assert torch.equal(kp_canonical["value"], canonical_before)
    torch.testing.assert_close(first["value"], second["value"])
    rotation = get_rotation_matrix(
        headpose_pred_to_degree(he["yaw"]),
        headpose_pred_to_degree(he["pitch"]),
        headpose_pred_to_degree(he["roll"]),
    )
    expected = (
        torch.einsum("bij,bkj->bki", rotation, kp_canonical["value"])
        + he["t"][:, None]
        + he["exp"].view(batch, num_kp, 3)
    )
    torch.testing.assert_close(first["value"], expected)
    torch.testing.assert_close(first["rotation"], rotation)


def test_free_view_angles_replace_the_estimate_in_the_rotation():
    generator = torch.Generator().manual_seed(1)
    kp_canonical = {"value": torch.rand(2, 5, 3, generator=generator)}
    he = {name: torch.randn(2, 66, generator=generator) for name in ("yaw", "pitch", "roll")}
    he.update(t=torch.zeros(2, 3), exp=torch.zeros(2, 15))
    free = keypoint_transformation(kp_canonical, he, yaw=30.0, roll=-10.0)
    pitch = headpose_pred_to_degree(he["pitch"])
    torch.testing.assert_close(free["pose"][:, 1], pitch)
    torch.testing.assert_close(free["pose"][:, 0], torch.full((2,), 30.0))
    expected = get_rotation_matrix(torch.full((2,), 30.0), pitch, torch.full((2,), -10.0))
    torch.testing.assert_close(free["rotation"], expected)


# ----------------------------------------------------------------------------- networks


def test_canonical_keypoints_are_expectations_inside_the_cube():
    detector = randomise(KPDetector(**SMALL_KP), seed=0)
    with torch.no_grad():
        kp = detector(smooth_images(2))["value"]
    assert kp.shape == (2, 5, 3) and kp.abs().max() <= 1
    # a single hot voxel gives its grid coordinate
    grid = make_coordinate_grid_3d(4, 16, 16)
    assert grid[0, 0, 0].tolist() == [-1, -1, -1] and grid[-1, -1, -1].tolist() == [1, 1, 1]
    assert grid[2, 5, 7].tolist() == pytest.approx([2 * 7 / 15 - 1, 2 * 5 / 15 - 1, 2 * 2 / 3 - 1])


def test_generator_outputs_and_identity_motion():
    generator = randomise(OcclusionAwareGenerator(**SMALL_GEN), seed=3)
    source = smooth_images(2)
    kp = {"value": torch.rand(2, 5, 3, generator=torch.Generator().manual_seed(0)) - 0.5}
    with torch.no_grad():
        out = generator(source, kp_driving=kp, kp_source=kp)
    assert set(out) == {"mask", "deformation", "occlusion_map", "prediction"}
    assert out["mask"].shape == (2, 6, 4, 16, 16)
    torch.testing.assert_close(out["mask"].sum(1), torch.ones(2, 4, 16, 16))
    assert out["occlusion_map"].shape == (2, 1, 16, 16)
    assert out["prediction"].shape == (2, 3, 64, 64)
    assert 0 < out["prediction"].min() and out["prediction"].max() < 1
    # equal source and driving keypoints: every sparse motion is the identity
    identity = make_coordinate_grid_3d(4, 16, 16).expand(2, -1, -1, -1, -1)
    torch.testing.assert_close(out["deformation"], identity, atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------- checkpoints


@pytest.fixture
def small_networks() -> tuple[KPDetector, HEEstimator, OcclusionAwareGenerator]:
    torch.manual_seed(1)
    return (
        randomise(KPDetector(**SMALL_KP), seed=1),
        randomise(HEEstimator(**SMALL_HE), seed=2),
        randomise(OcclusionAwareGenerator(**SMALL_GEN), seed=3),
    )


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path, small_networks):
    kp_detector, he_estimator, generator = small_networks
    path = save_facevid_checkpoint(tmp_path / "Facevid.pth", kp_detector, he_estimator, generator)
    stored = torch.load(path, weights_only=True)
    assert {"kp_detector", "he_estimator", "generator"} <= set(stored)

    coarse = FacevidCoarseGenerator(path, **SMALL_WRAPPER)
    assert coarse.checkpoint == str(path)
    for name, original in zip(
        ("kp_detector", "he_estimator", "generator"), small_networks, strict=True
    ):
        loaded = getattr(coarse, name).state_dict()
        for key, value in original.state_dict().items():
            assert torch.equal(loaded[key], value), f"{name}.{key}"

    source, driving = smooth_images(2, seed=1), smooth_images(2, seed=2)
    out = coarse(source, driving)
    with torch.no_grad():
        kp_c = kp_detector(source)
        kp_s = keypoint_transformation(kp_c, he_estimator(source))
        kp_d = keypoint_transformation(kp_c, he_estimator(driving))
        expected = generator(source, kp_driving=kp_d, kp_source=kp_s)["prediction"]
    torch.testing.assert_close(out["prediction"], expected)
    assert out["prediction"].shape == (2, 3, 64, 64)


def test_missing_checkpoint_names_the_path_and_the_expected_file(tmp_path):
    absent = tmp_path / "facevid" / "Facevid.pth"
    with pytest.raises(FileNotFoundError) as error:
        FacevidCoarseGenerator(absent, **SMALL_WRAPPER)
    assert str(absent) in str(error.value) and "Facevid.pth" in str(error.value)
    with pytest.raises(FileNotFoundError, match="checkpoint=None"):
        FacevidCoarseGenerator(None, **SMALL_WRAPPER)


def test_wrong_checkpoints_list_every_difference(tmp_path, small_networks):
    kp_detector, he_estimator, generator = small_networks
    # 1. a missing entry
    path = tmp_path / "no_he.pth"
    torch.save({"kp_detector": kp_detector.state_dict(), "generator": generator.state_dict()}, path)
    with pytest.raises(FacevidCheckpointError, match="lacks the entries \\['he_estimator'\\]"):
        load_facevid_checkpoint(path, kp_detector, he_estimator, generator)

    # 2. missing, unexpected and mis-shaped keys, reported per network with the file name
    kp_state = dict(kp_detector.state_dict())
    kp_state.pop("kp.bias")
    kp_state["kp.extra"] = torch.zeros(1)
    he_state = dict(he_estimator.state_dict())
    he_state["fc_exp.weight"] = torch.zeros(3, 64)
    path = tmp_path / "bad.pth"
    torch.save(
        {"kp_detector": kp_state, "he_estimator": he_state, "generator": generator.state_dict()},
        path,
    )
    before = {k: v.clone() for k, v in generator.state_dict().items()}
    with pytest.raises(FacevidCheckpointError) as error:
        load_facevid_checkpoint(path, kp_detector, he_estimator, generator)
    message = str(error.value)
    for needle in (str(path), "[kp_detector]", "kp.bias", "kp.extra", "[he_estimator]"):
        assert needle in message, needle
    assert "fc_exp.weight: checkpoint (3, 64) vs model (15, 64)" in message
    assert "[generator]" not in message
    for key, value in generator.state_dict().items():  # nothing loaded
        assert torch.equal(value, before[key])

    # 3. another configuration (num_kp) does not fit
    path = save_facevid_checkpoint(
        tmp_path / "other.pth",
        KPDetector(**{**SMALL_KP, "num_kp": 4}),
        HEEstimator(**{**SMALL_HE, "num_kp": 4}),
        OcclusionAwareGenerator(**{**SMALL_GEN, "num_kp": 4}),
    )
    with pytest.raises(FacevidCheckpointError, match="mis-shaped keys"):
        FacevidCoarseGenerator(path, **SMALL_WRAPPER)

    # 4. not a torch file, and a pickle that weights_only=True refuses
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(FacevidCheckpointError, match="garbage.pth"):
        load_facevid_checkpoint(garbage, kp_detector, he_estimator, generator)
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"kp_detector": Path("x")}, unsafe)
    with pytest.raises(FacevidCheckpointError, match="cannot be loaded safely") as error:
        load_facevid_checkpoint(unsafe, kp_detector, he_estimator, generator)
    assert "weights_only" not in str(error.value) and "\n" not in str(error.value)


# ----------------------------------------------------------------------------- wrapper


def test_wrapper_is_frozen_and_in_eval_mode():
    coarse = small_wrapper()
    coarse.train()
    assert not coarse.training and not any(m.training for m in coarse.modules())
    assert not any(p.requires_grad for p in coarse.parameters())
    with pytest.raises(ValueError, match="mode"):
        FacevidCoarseGenerator(None, mode="sideways", allow_random_weights_for_tests=True)


def test_free_view_override_changes_only_the_driving_rotation():
    coarse = small_wrapper()
    source, driving = smooth_images(2, seed=1), smooth_images(2, seed=2)
    estimated = coarse(source, driving)
    coarse.set_view(yaw=30.0, pitch=-15.0)
    free = coarse(source, driving)

    torch.testing.assert_close(free["kp_source"], estimated["kp_source"])
    assert not torch.allclose(free["rotation_driving"], estimated["rotation_driving"])
    roll = estimated["pose_driving"][:, 2]
    torch.testing.assert_close(free["pose_driving"][:, 2], roll)  # not overridden
    expected = get_rotation_matrix(torch.full((2,), 30.0), torch.full((2,), -15.0), roll)
    torch.testing.assert_close(free["rotation_driving"], expected)
    assert not torch.allclose(free["prediction"], estimated["prediction"])

    yaml_view = small_wrapper(yaw=30.0, pitch=-15.0)(source, driving)  # constructor option
    torch.testing.assert_close(yaml_view["rotation_driving"], expected)


def test_relative_mode_moves_the_source_keypoints_by_the_driving_motion():
    coarse = small_wrapper(mode="relative")
    source, driving = smooth_images(2, seed=1), smooth_images(2, seed=2)
    with pytest.raises(ValueError, match="reference driving frame"):
        coarse(source, driving)
    # the reference frame itself: no motion, the generator is driven by the source keypoints
    still = coarse(source, driving, driving_initial=driving)
    torch.testing.assert_close(still["kp_norm"], still["kp_source"])
    # another reference frame: kp_norm = kp_source + kp_driving − kp_initial
    initial = smooth_images(1, seed=3)
    coarse.set_driving_initial(initial)
    moved = coarse(source, driving)
    absolute = small_wrapper()
    kp_initial = absolute(source, initial.expand(2, -1, -1, -1))["kp_driving"]
    torch.testing.assert_close(
        moved["kp_norm"], moved["kp_source"] + moved["kp_driving"] - kp_initial
    )


def test_coarse_config_and_reenactment_experiment_compose(compose_train):
    cfg = compose_train("experiment=facevid_reenact", tiny=False)
    assert cfg.coarse._target_.endswith("FacevidCoarseGenerator")
    assert cfg.attributes._target_.endswith("DECAAttributes")
    assert cfg.data._target_.endswith("VoxCelebDataModule") and cfg.data.image_size == 256
    assert cfg.model.agcn._target_.endswith("AGCN")
    assert cfg.coarse.checkpoint == f"{cfg.paths.pretrained_dir}/facevid/Facevid.pth"
    # missing weights: a clear error naming the path, before anything is built
    with pytest.raises(InstantiationException, match="Facevid.pth") as error:
        instantiate(cfg.coarse)
    assert isinstance(error.value.__cause__, FileNotFoundError)


@pytest.mark.slow
def test_full_size_forward_at_256():
    """FADM's vox-256 configuration end to end (about 10 s on one CPU core)."""
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="RANDOM WEIGHTS"):
        coarse = FacevidCoarseGenerator(None, allow_random_weights_for_tests=True)
    out = coarse(smooth_images(1, size=256, seed=1), smooth_images(1, size=256, seed=2))
    assert out["prediction"].shape == (1, 3, 256, 256)
    assert out["mask"].shape == (1, 16, 16, 64, 64)
    assert out["deformation"].shape == (1, 16, 64, 64, 3)
    assert out["occlusion_map"].shape == (1, 1, 64, 64)
    assert out["kp_driving"].shape == (1, 15, 3)
