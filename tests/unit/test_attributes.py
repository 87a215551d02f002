"""Attribute extractors: DECA's E_flame (faithful to FADM) and the dlib landmark extractor."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from scipy.spatial.transform import Rotation

from fadm_lightning.models.attributes import landmarks as lm
from fadm_lightning.models.attributes.deca import (
    CODE_DIM,
    CheckpointError,
    DECAAttributes,
    FlameEncoder,
)

REPO = Path(__file__).resolve().parents[2]
REFERENCE_KEYS = REPO / "tests" / "data" / "reference" / "deca_encoder_keys.txt"
FIXTURES = REPO.parent / "shared" / "fixtures" / "voxceleb_sample"
FIXTURE_IMAGES = ("source.png", "driving.png", "source_r.png", "driving_r.png")
HAS_DLIB = importlib.util.find_spec("dlib") is not None

needs_dlib = pytest.mark.skipif(
    not HAS_DLIB, reason="dlib not installed (pip install dlib-bin face-recognition-models)"
)
needs_fixtures = pytest.mark.skipif(
    not FIXTURES.is_dir(), reason=f"real face fixtures not found at {FIXTURES}"
)


# --- DECA ---------------------------------------------------------------------------------------
def reference_section(name: str) -> tuple[dict[str, tuple[tuple[int, ...], str]], int]:
    """{key: (shape, dtype)} of one network of deca_encoder_keys.txt, and its header count."""
    section: dict[str, tuple[tuple[int, ...], str]] = {}
    params, inside = -1, False
    for line in REFERENCE_KEYS.read_text().splitlines():
        if line.startswith(f"## {name} "):
            inside, params = True, int(line.rsplit("params=", 1)[1])
        elif inside and line.startswith("#"):
            break
        elif inside and line.strip():
            key, shape, dtype = line.split("\t")
            section[key] = (tuple(int(s) for s in shape.strip("()").split(",") if s.strip()), dtype)
    return section, params


@pytest.fixture(scope="module")
def deca() -> DECAAttributes:
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="RANDOM weights"):
        return DECAAttributes(allow_random_weights_for_tests=True)


@pytest.fixture(scope="module")
def deca_tar(deca, tmp_path_factory) -> Path:
    """A file laid out like deca_model.tar, holding the random E_flame of ``deca``."""
    path = tmp_path_factory.mktemp("deca") / "deca_model.tar"
    detail = {"encoder.conv1.weight": torch.zeros(64, 3, 7, 7)}
    torch.save({"E_flame": deca.flame_encoder.state_dict(), "E_detail": detail}, path)
    return path


def test_flame_encoder_matches_reference_keys():
    reference, params = reference_section("E_flame")
    encoder = FlameEncoder()
    ours = {
        k: (tuple(v.shape), str(v.dtype).removeprefix("torch."))
        for k, v in encoder.state_dict().items()
    }
    assert list(ours) == list(reference)  # same keys, same order
    assert ours == reference  # same shapes and dtypes
    assert params == 25_848_108
    assert sum(p.numel() for p in encoder.parameters()) == params


def test_trunk_uses_torchvision_resnet50_names():
    torchvision = pytest.importorskip("torchvision")
    theirs = {
        f"encoder.{k}": tuple(v.shape)
        for k, v in torchvision.models.resnet50().state_dict().items()
        if not k.startswith("fc.")
    }
    ours = {
        k: tuple(v.shape) for k, v in FlameEncoder().encoder.state_dict(prefix="encoder.").items()
    }
    assert ours == theirs


def test_output_is_exp_and_pose_of_the_236_code(deca):
    images = torch.rand(2, 3, 256, 256)
    attributes = deca(images)
    code = deca.flame_encoder(deca.preprocess(images))  # 2×236
    parts = deca.encode(images)
    assert code.shape == (2, CODE_DIM) and attributes.shape == (2, deca.dim) == (2, 56)
    expected_shapes = {"shape": 100, "tex": 50, "exp": 50, "pose": 6, "cam": 3}
    assert {k: v.shape[1] for k, v in parts.items() if k != "light"} == expected_shapes
    assert parts["light"].shape == (2, 9, 3)
    torch.testing.assert_close(attributes, code[:, 150:206])
    torch.testing.assert_close(parts["light"].flatten(1), code[:, 209:236])
    torch.testing.assert_close(parts["cam"], code[:, 206:209])


def test_resize_to_224_without_antialias(deca):
    tf = pytest.importorskip("torchvision.transforms.functional")
    images = torch.rand(2, 3, 256, 256)
    resized = deca.preprocess(images)
    assert resized.shape == (2, 3, 224, 224)
    assert torch.equal(resized, tf.resize(images, [224, 224], antialias=False))
    assert not torch.allclose(resized, tf.resize(images, [224, 224], antialias=True), atol=1e-3)
    with pytest.raises(ValueError, match="224"):
        deca.flame_encoder(images)  # E_flame itself only takes 224 (AvgPool2d(7))
    torch.testing.assert_close(deca(resized), deca(images))


def test_frozen_in_eval_mode(deca):
    deca.train()
    assert not deca.training and not deca.flame_encoder.encoder.bn1.training
    assert not any(p.requires_grad for p in deca.parameters())
    images = torch.rand(1, 3, 256, 256, requires_grad=True)
    assert not deca(images).requires_grad


def test_checkpoint_round_trip(deca, deca_tar, tmp_path):
    images = torch.rand(2, 3, 256, 256)
    expected = deca(images)
    torch.testing.assert_close(
        DECAAttributes(checkpoint=deca_tar)(images), expected, rtol=0, atol=0
    )
    # torch's pre-1.6 (non-zip) format, in which older DECA files may be written
    legacy = tmp_path / "legacy.tar"
    state = {"E_flame": deca.flame_encoder.state_dict(), "D_detail": {}}
    torch.save(state, legacy, _use_new_zipfile_serialization=False)
    torch.testing.assert_close(DECAAttributes(checkpoint=legacy)(images), expected, rtol=0, atol=0)


def test_default_constructor_refuses_without_checkpoint():
    with pytest.raises(ValueError, match="deca_model.tar"):
        DECAAttributes()


def test_missing_checkpoint_file_names_it(tmp_path):
    path = tmp_path / "nowhere" / "deca_model.tar"
    with pytest.raises(FileNotFoundError, match=str(path)):
        DECAAttributes(checkpoint=path)


def test_not_a_checkpoint(tmp_path):
    text = tmp_path / "deca_model.tar"
    text.write_text("not a checkpoint\n" * 10)
    with pytest.raises(CheckpointError, match="not a readable DECA checkpoint: it is a text file"):
        DECAAttributes(checkpoint=text)
    other = tmp_path / "other.tar"
    torch.save({"model": {}}, other)
    with pytest.raises(CheckpointError, match="no 'E_flame' entry.*'model'"):
        DECAAttributes(checkpoint=other)


def test_missing_unexpected_and_misshaped_keys_are_listed(deca, tmp_path):
    state = dict(deca.flame_encoder.state_dict())
    del state["layers.2.bias"]
    state["layers.0.weight"] = torch.zeros(1024, 1000)
    state["encoder.fc.weight"] = torch.zeros(1000, 2048)
    path = tmp_path / "broken.tar"
    torch.save({"E_flame": state}, path)
    with pytest.raises(CheckpointError) as info:
        DECAAttributes(checkpoint=path)
    message = str(info.value)
    assert str(path) in message
    assert "1 missing key(s): layers.2.bias" in message
    assert "1 unexpected key(s): encoder.fc.weight" in message
    assert "layers.0.weight: checkpoint (1024, 1000) vs model (1024, 2048)" in message


def test_num_batches_tracked_may_be_absent(deca, tmp_path):
    state = {k: v for k, v in deca.flame_encoder.state_dict().items() if "num_batches" not in k}
    path = tmp_path / "old_torch.tar"
    torch.save({"E_flame": state, "D_detail": {}}, path)
    DECAAttributes(checkpoint=path)


def test_pickled_objects_are_refused(deca, tmp_path):
    """Always ``torch.load(weights_only=True)``: a file that pickles other objects is refused."""
    path = tmp_path / "with_cfg.tar"
    state = deca.flame_encoder.state_dict()
    torch.save({"E_flame": state, "cfg": argparse.Namespace(lr=1e-4)}, path)
    with pytest.raises(CheckpointError) as error:
        DECAAttributes(checkpoint=path)
    message = str(error.value)
    assert "cannot be loaded safely (argparse.Namespace)" in message
    assert "\n" not in message and "weights_only" not in message


def test_deca_config(deca_tar):
    from hydra.utils import instantiate

    cfg = OmegaConf.load(REPO / "conf" / "attributes" / "deca.yaml")
    root = OmegaConf.create({"paths": {"pretrained_dir": "/weights"}, "attributes": cfg})
    assert root.attributes.checkpoint == "/weights/deca/deca_model.tar"
    assert DECAAttributes.required_paths.keys() == {"checkpoint"}
    cfg.checkpoint = str(deca_tar)  # instead of ${paths.pretrained_dir}/…
    extractor = instantiate(cfg)
    assert isinstance(extractor, DECAAttributes) and extractor.dim == 56


# --- landmark geometry (numpy only) -------------------------------------------------------------
def posed_template(yaw: float, pitch: float, roll: float) -> np.ndarray:
    rotation = Rotation.from_euler("ZYX", [roll, yaw, pitch]).as_matrix()  # Rz·Ry·Rx
    pose = lm.HeadPose(rotation=rotation, scale=70.0, translation=np.array([128.0, 120.0]))
    return pose.project(lm.MEAN_FACE_3D)


def test_template_is_mirror_symmetric():
    mirrored = lm.MEAN_FACE_3D[lm.MIRROR_68] * np.array([-1.0, 1.0, 1.0])
    np.testing.assert_allclose(mirrored, lm.MEAN_FACE_3D, atol=1e-12)
    assert sorted(lm.MIRROR_68) == list(range(68))
    assert lm.LandmarkAttributes.dim == len(lm.ATTRIBUTE_NAMES) == 103


@pytest.mark.parametrize("ypr", [(0.0, 0.0, 0.0), (0.5, -0.2, 0.1), (-0.7, 0.4, -0.3)])
def test_pose_fit_recovers_known_pose(ypr):
    attributes = lm.attributes_from_landmarks(posed_template(*ypr))
    np.testing.assert_allclose(attributes[-3:], ypr, atol=1e-6)
    np.testing.assert_allclose(attributes[6:-3], 0.0, atol=1e-6)  # no offsets from the template


def test_pose_of_mirrored_landmarks():
    points = posed_template(0.3, 0.15, -0.2)
    mirrored = (points * np.array([-1.0, 1.0]) + np.array([255.0, 0.0]))[lm.MIRROR_68]
    yaw, pitch, roll = lm.attributes_from_landmarks(mirrored)[-3:]
    np.testing.assert_allclose([yaw, pitch, roll], [-0.3, 0.15, 0.2], atol=1e-6)


def test_expression_is_pose_normalised():
    open_mouth = lm.MEAN_FACE_3D.copy()
    open_mouth[[65, 66, 67], 1] += 0.2  # lower inner lip down by 0.2 inter-ocular distances
    gaps = []
    for ypr in [(0.0, 0.0, 0.0), (0.4, -0.2, 0.3)]:
        rotation = Rotation.from_euler("ZYX", [ypr[2], ypr[0], ypr[1]]).as_matrix()
        pose = lm.HeadPose(rotation=rotation, scale=70.0, translation=np.array([128.0, 120.0]))
        gaps.append(lm.attributes_from_landmarks(pose.project(open_mouth))[0])
    template = lm.MEAN_FACE_3D[:, 1]
    template_gap = 0.2 + template[[65, 66, 67]].mean() - template[[61, 62, 63]].mean()
    np.testing.assert_allclose(gaps, template_gap, atol=0.02)


# --- dlib and the landmark extractor on real faces ------------------------------------------------
def to_tensor(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255  # T×3×H×W in [0, 1]


@pytest.fixture(scope="module")
def extractor() -> lm.LandmarkAttributes:
    if not HAS_DLIB:
        pytest.skip("dlib not installed (pip install dlib-bin face-recognition-models)")
    return lm.LandmarkAttributes()


@pytest.fixture(scope="module")
def fixture_images() -> np.ndarray:
    if not FIXTURES.is_dir():
        pytest.skip(f"real face fixtures not found at {FIXTURES}")
    from PIL import Image

    return np.stack([np.asarray(Image.open(FIXTURES / n).convert("RGB")) for n in FIXTURE_IMAGES])


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    """Every 4th frame of driving.mp4 (57 of 227), uint8 T×256×256×3."""
    if not FIXTURES.is_dir():
        pytest.skip(f"real face fixtures not found at {FIXTURES}")
    from fadm_lightning.media.video import read_frames

    return read_frames(FIXTURES / "driving.mp4", range(0, 227, 4))


def test_missing_dlib_is_named(monkeypatch):
    from fadm_lightning.faces import dlib_face

    monkeypatch.setitem(sys.modules, "dlib", None)  # makes `import dlib` fail
    with pytest.raises(dlib_face.DlibNotInstalledError, match="dlib-bin"):
        dlib_face.DlibFace()


@needs_dlib
@needs_fixtures
def test_dlib_face_on_fixtures(extractor, fixture_images):
    face = extractor.face
    embeddings = []
    for image in fixture_images:
        boxes = face.detect(image)
        assert boxes.shape[0] >= 1 and boxes.shape[1] == 4
        points = face.landmarks68(image, boxes[0])
        assert points.shape == (68, 2)
        centre = points.mean(0)
        assert (centre > boxes[0, :2]).all() and (centre < boxes[0, 2:]).all()
        assert (points > -10).all() and (points < 266).all()
        embedding = face.embedding(image, points)
        assert embedding.shape == (128,)
        np.testing.assert_allclose(face.embedding(image, boxes[0]), embedding, atol=1e-6)
        embeddings.append(embedding)
    # source and driving are two different people
    assert np.linalg.norm(embeddings[0] - embeddings[1]) > 0.6


@needs_dlib
@needs_fixtures
def test_face_found_in_every_fixture_and_self_difference_is_zero(extractor, fixture_images):
    images = to_tensor(fixture_images)
    attributes = extractor(images)
    assert attributes.shape == (4, extractor.dim) and attributes.dtype == torch.float32
    assert not extractor.last_missing.any()
    assert torch.isfinite(attributes).all()
    again = extractor(images)
    assert torch.equal(again - attributes, torch.zeros_like(attributes))


# measured on the fixtures (dlib 20.0.1): |yaw + yaw_mirrored| ≤ 0.61°, |roll + roll_mirrored|
# ≤ 0.29° on the four images; on every 4th clip frame yaw mean 0.68° max 2.42°, roll mean 0.35°
# max 0.85°, |pitch − pitch_mirrored| max 2.0°
MIRROR_TOL_IMAGES_DEG = 2.0
MIRROR_TOL_CLIP_MEAN_DEG, MIRROR_TOL_CLIP_MAX_DEG = 1.0, 4.0


@needs_dlib
@needs_fixtures
def test_mirroring_flips_yaw_and_roll(extractor, fixture_images, clip):
    for frames, is_clip in ((fixture_images, False), (clip, True)):
        pose = np.degrees(extractor(to_tensor(frames))[:, -3:].numpy())
        mirrored = np.degrees(extractor(to_tensor(frames[:, :, ::-1].copy()))[:, -3:].numpy())
        error = np.abs(pose + mirrored * np.array([1.0, -1.0, 1.0]))  # yaw, roll: sum ≈ 0
        error[:, 1] = np.abs(pose[:, 1] - mirrored[:, 1])  # pitch unchanged
        if is_clip:
            assert error[:, [0, 2]].mean() < MIRROR_TOL_CLIP_MEAN_DEG, error.mean(0)
            assert error[:, [0, 2]].max() < MIRROR_TOL_CLIP_MAX_DEG, error.max(0)
            assert error[:, 1].max() < MIRROR_TOL_CLIP_MAX_DEG + 2.0, error.max(0)  # pitch
        else:
            assert error[:, [0, 2]].max() < MIRROR_TOL_IMAGES_DEG, error
            assert np.abs(pose[2, 0]) > 10.0  # source_r is clearly turned: the test has teeth


@needs_dlib
@needs_fixtures
def test_pose_track_of_a_clip_is_smooth(extractor, clip):
    attributes = extractor(to_tensor(clip))
    assert not extractor.last_missing.any()
    pose = np.degrees(attributes[:, -3:].numpy())  # T×3 (yaw, pitch, roll), 0.16 s apart
    steps = np.abs(np.diff(pose, axis=0))
    # measured: median step 1.8° yaw / 1.0° pitch / 0.5° roll, shuffled order 9.0° / 3.2° / 2.8°
    # mean; the head really turns (yaw spans 45°), so the track moves far more than it jitters
    assert (np.median(steps, axis=0) < 3.0).all(), np.median(steps, axis=0)
    assert np.ptp(pose[:, 0]) > 10 * np.median(steps[:, 0])
    shuffled = np.random.default_rng(0).permutation(pose)
    assert steps.mean() < 0.5 * np.abs(np.diff(shuffled, axis=0)).mean()


@needs_dlib
def test_blank_image_raises_no_face(extractor):
    blank = torch.full((2, 3, 256, 256), 0.5)
    with pytest.raises(lm.NoFaceError, match="no face detected in any of the 2 frame"):
        extractor(blank)


@needs_dlib
@needs_fixtures
def test_blank_frame_in_a_video_is_reported_and_filled(extractor, clip):
    frames = clip[:5].copy()
    frames[[0, 2]] = 128  # blank frames 0 and 2
    attributes = extractor(to_tensor(frames))
    assert extractor.last_missing.tolist() == [True, False, True, False, False]
    faces = extractor(to_tensor(clip[:5]))
    torch.testing.assert_close(attributes[0], faces[1])  # nearest frame with a face
    torch.testing.assert_close(attributes[2], faces[1])  # tie between 1 and 3: the earlier
    torch.testing.assert_close(attributes[[1, 3, 4]], faces[[1, 3, 4]])


@needs_dlib
def test_landmarks_config():
    from hydra.utils import instantiate

    extractor = instantiate(OmegaConf.load(REPO / "conf" / "attributes" / "landmarks.yaml"))
    assert isinstance(extractor, lm.LandmarkAttributes) and extractor.dim == 103
