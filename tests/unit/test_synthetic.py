"""The embedded synthetic talking-head world: generator, renderer, coarse generator, attributes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fadm_lightning import synthetic as S
from fadm_lightning.media.video import read_frames
from fadm_lightning.models.attributes.synthetic import SyntheticAttributes
from fadm_lightning.models.coarse.synthetic import SyntheticCoarseGenerator
from fadm_lightning.synthetic.annotations import annotation_path, load_annotation

LM = {name: i for i, name in enumerate(S.LANDMARK_NAMES)}


def _world(n: int, seed: int = 0, frames: int = 48) -> tuple[torch.Tensor, ...]:
    """n random (identity, pose, expression) triples, one per identity: B×P, B×6, B×5."""
    ids, poses, exprs = [], [], []
    for i in range(n):
        ids.append(S.sample_identity(np.random.default_rng([seed, i])))
        pose, expr = S.sample_motion(np.random.default_rng([seed, i, 1]), frames)
        k = np.random.default_rng([seed, i, 2]).integers(frames)
        poses.append(pose[k])
        exprs.append(expr[k])
    return tuple(torch.from_numpy(np.stack(x)) for x in (ids, poses, exprs))


def _sample(images: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinear colours B×3 of images B×3×H×W at points B×2 in the [−1, 1] grid."""
    grid = points.view(-1, 1, 1, 2)
    return F.grid_sample(images, grid, align_corners=False).view(-1, 3)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 10 * torch.log10(1 / (a - b).square().flatten(1).mean(1))


# ---------------------------------------------------------------------------------------------
# identities and motion
# ---------------------------------------------------------------------------------------------


def test_sampling_is_deterministic_and_seed_dependent():
    a = S.sample_identity(np.random.default_rng(3))
    assert a.shape == (S.IDENTITY_DIM,) and a.dtype == np.float32
    np.testing.assert_array_equal(a, S.sample_identity(np.random.default_rng(3)))
    assert not np.allclose(a, S.sample_identity(np.random.default_rng(4)))

    pose, expr = S.sample_motion(np.random.default_rng(3), 60)
    pose2, expr2 = S.sample_motion(np.random.default_rng(3), 60)
    np.testing.assert_array_equal(pose, pose2)
    np.testing.assert_array_equal(expr, expr2)
    assert not np.allclose(pose, S.sample_motion(np.random.default_rng(4), 60)[0])


def test_motion_ranges_and_smoothness():
    for seed in range(20):
        pose, expr = S.sample_motion(np.random.default_rng(seed), 100)
        assert pose.shape == (100, 6) and expr.shape == (100, 5)
        limits = np.array([0.5, 0.3, 0.2, 0.1, 0.1])
        assert (np.abs(pose[:, :5]) <= limits + 1e-6).all()
        assert ((pose[:, 5] >= 0.9 - 1e-6) & (pose[:, 5] <= 1.1 + 1e-6)).all()
        assert ((expr >= 0) & (expr <= 1)).all()
        # smooth head motion: at most 0.5 rad · 2π · 0.7 Hz / 25 fps ≈ 0.09 rad per frame
        assert np.abs(np.diff(pose[:, :3], axis=0)).max() < 0.09
    # blinks happen over long clips, mostly with both eyes together
    _, expr = S.sample_motion(np.random.default_rng(0), 500)
    assert expr[:, 2].max() > 0.8 and expr[:, 3].max() > 0.8
    assert np.corrcoef(expr[:, 2], expr[:, 3])[0, 1] > 0.5
    assert expr[:, 0].std() > 0.1  # talking


# ---------------------------------------------------------------------------------------------
# renderer and landmarks
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [64, 128])
def test_render_range_shape_determinism(size):
    ident, pose, expr = _world(4)
    img = S.render(ident, pose, expr, size)
    assert img.shape == (4, 3, size, size) and img.dtype == torch.float32
    assert img.min() >= 0 and img.max() <= 1
    assert torch.equal(img, S.render(ident, pose, expr, size))
    assert img.std() > 0.05
    assert (img[0] - img[1]).abs().mean() > 0.05  # identities look different


def test_landmarks_land_on_features():
    ident, pose, expr = _world(8, seed=5)
    expr[:, 0] = 1.0  # mouth wide open
    expr[:, 2:4] = 0.0  # eyes open
    img = S.render(ident, pose, expr, 128)
    lm = S.landmarks(ident, pose, expr)
    assert lm.shape == (8, S.NUM_LANDMARKS, 2)

    cheek = _sample(img, 0.5 * (lm[:, LM["eye_left_outer"]] + lm[:, LM["mouth_left"]]))
    lip = _sample(img, lm[:, LM["lip_upper"]])
    mouth = _sample(img, 0.5 * (lm[:, LM["lip_upper"]] + lm[:, LM["lip_lower"]]))
    eye = _sample(img, 0.5 * (lm[:, LM["eye_left_outer"]] + lm[:, LM["eye_left_inner"]]))

    def redness(c):
        return c[:, 0] / c.sum(1)

    assert (redness(lip) > redness(cheek) + 0.02).all()  # lips are redder than skin
    assert (mouth.mean(1) < 0.6 * cheek.mean(1)).all()  # the open mouth is dark
    assert ((eye - cheek).abs().sum(1) > 0.25).all()  # the eye is not skin


def test_eye_and_mouth_landmarks_follow_expression():
    ident, pose, expr = _world(2)
    shut, opened = expr.clone(), expr.clone()
    shut[:, 2:4], opened[:, 2:4] = 1.0, 0.0
    shut[:, 0], opened[:, 0] = 0.0, 1.0
    lm_shut, lm_open = S.landmarks(ident, pose, shut), S.landmarks(ident, pose, opened)
    gap = (lm_open[:, LM["eye_left_bottom"]] - lm_open[:, LM["eye_left_top"]]).norm(dim=-1)
    assert torch.allclose(lm_shut[:, LM["eye_left_bottom"]], lm_shut[:, LM["eye_left_top"]])
    assert (gap > 0.03).all()
    lips_open = (lm_open[:, LM["lip_lower"]] - lm_open[:, LM["lip_upper"]]).norm(dim=-1)
    lips_shut = (lm_shut[:, LM["lip_lower"]] - lm_shut[:, LM["lip_upper"]]).norm(dim=-1)
    assert (lips_open > lips_shut + 0.05).all()


def test_mouth_open_changes_only_the_mouth_region():
    ident, pose, expr = _world(4, seed=2)
    shut, opened = expr.clone(), expr.clone()
    shut[:, 0], opened[:, 0] = 0.0, 1.0
    size = 96
    diff = (S.render(ident, pose, opened, size) - S.render(ident, pose, shut, size)).abs().sum(1)
    lm = S.landmarks(ident, pose, opened)
    mouth = lm[:, [LM["mouth_left"], LM["mouth_right"], LM["lip_upper"], LM["lip_lower"]]]
    lo, hi = mouth.amin(1) - 0.06, mouth.amax(1) + 0.06  # a box around the mouth (+ margin)
    coords = (torch.arange(size) + 0.5) * (2.0 / size) - 1.0
    inside_x = (coords[None] >= lo[:, :1]) & (coords[None] <= hi[:, :1])  # B×W
    inside_y = (coords[None] >= lo[:, 1:]) & (coords[None] <= hi[:, 1:])  # B×H
    box = inside_y[:, :, None] & inside_x[:, None, :]
    share = (diff * box).flatten(1).sum(1) / diff.flatten(1).sum(1)
    assert (diff.flatten(1).sum(1) > 1.0).all()
    assert (share > 0.97).all()


def test_background_is_static():
    ident, pose, expr = _world(1)
    moved = pose.clone()
    moved[:, 3] += 0.1
    a, b = S.render(ident, pose, expr, 64), S.render(ident, moved, expr, 64)
    assert torch.allclose(a[..., :6, :6], b[..., :6, :6])  # the top-left corner is background


def test_mirror_identity_renders_the_mirror_image():
    ident, pose, expr = _world(4, seed=3)
    expr[:, 2], expr[:, 3] = 0.9, 0.1  # a wink, to see the blink swap
    m_pose, m_expr = pose.clone(), expr.clone()
    m_pose[:, [0, 2, 3]] *= -1  # yaw, roll, tx
    m_expr[:, [2, 3]] = expr[:, [3, 2]]
    m_ident = S.mirror_identity(ident)
    img = S.render(ident, pose, expr, 64)
    torch.testing.assert_close(
        S.render(m_ident, m_pose, m_expr, 64), img.flip(-1), atol=1e-4, rtol=0
    )
    lm = S.landmarks(ident, pose, expr)
    m_lm = S.landmarks(m_ident, m_pose, m_expr)
    expected = lm[:, list(S.LANDMARK_FLIP_INDEX)] * torch.tensor([-1.0, 1.0])
    torch.testing.assert_close(m_lm, expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(
        S.mirror_identity(S.mirror_identity(ident.numpy())), ident.numpy(), atol=1e-6
    )


# ---------------------------------------------------------------------------------------------
# dataset writer
# ---------------------------------------------------------------------------------------------

TINY = dict(
    num_train_ids=2,
    clips_per_id=1,
    num_test_ids=1,
    test_clips_per_id=2,
    num_frames=6,
    image_size=32,
    progress=False,
)


@pytest.mark.parametrize("fmt", ["mp4", "png"])
def test_generate_dataset_layout(tmp_path, fmt):
    root = S.generate_dataset(tmp_path / "ds", format=fmt, seed=1, **TINY)
    train = sorted(p.name for p in (root / "train").iterdir())
    test = sorted(p.name for p in (root / "test").iterdir())
    assert train == ["id00000#clip00.mp4", "id00001#clip00.mp4"]
    assert test == ["id00002#clip00.mp4", "id00002#clip01.mp4"]
    for split, names in (("train", train), ("test", test)):
        for name in names:
            clip = root / split / name
            assert clip.is_dir() == (fmt == "png")
            frames = read_frames(clip)
            assert frames.shape == (6, 32, 32, 3) and frames.dtype == np.uint8
            ann = load_annotation(annotation_path(root, split, name))
            assert ann["pose"].shape == (6, 6)
            assert ann["expression"].shape == (6, 5)
            assert ann["landmarks"].shape == (6, S.NUM_LANDMARKS, 2)
            assert ann["identity"].shape == (S.IDENTITY_DIM,)
            rendered, _ = S.render_clip(ann["identity"], ann["pose"], ann["expression"], 32)
            if fmt == "png":  # lossless
                np.testing.assert_array_equal(frames, rendered)
            else:  # H.264 at crf 15
                assert np.abs(frames.astype(int) - rendered.astype(int)).mean() < 6
    marker = json.loads((root / ".complete").read_text())
    assert marker["seed"] == 1 and marker["format"] == fmt and marker["num_frames"] == 6
    if fmt == "png":
        assert sorted(p.name for p in (root / "train" / train[0]).iterdir())[0] == "0000000.png"


def test_generate_dataset_is_deterministic_and_idempotent(tmp_path):
    a = S.generate_dataset(tmp_path / "a", format="png", seed=7, **TINY)
    b = S.generate_dataset(tmp_path / "b", format="png", seed=7, **TINY)
    c = S.generate_dataset(tmp_path / "c", format="png", seed=8, **TINY)
    name = "id00001#clip00.mp4"
    np.testing.assert_array_equal(read_frames(a / "train" / name), read_frames(b / "train" / name))
    ann_a = load_annotation(annotation_path(a, "train", name))
    ann_b = load_annotation(annotation_path(b, "train", name))
    ann_c = load_annotation(annotation_path(c, "train", name))
    for key in ann_a:
        np.testing.assert_array_equal(ann_a[key], ann_b[key])
    assert not np.allclose(ann_a["identity"], ann_c["identity"])
    # train and test identities are disjoint
    test_ann = load_annotation(annotation_path(a, "test", "id00002#clip00.mp4"))
    assert not np.allclose(test_ann["identity"], ann_a["identity"])

    stamp = (a / ".complete").stat().st_mtime_ns
    assert S.generate_dataset(a, format="png", seed=7, **TINY) == a  # returns at once
    assert (a / ".complete").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="already holds"):
        S.generate_dataset(a, format="png", seed=9, **TINY)


# ---------------------------------------------------------------------------------------------
# coarse generator
# ---------------------------------------------------------------------------------------------


def _pairs(n: int, seed: int = 0, size: int = 64):
    """Same-identity (source, driving) frame pairs with their annotations."""
    ids, sp, se, dp, de = [], [], [], [], []
    for i in range(n):
        ident = S.sample_identity(np.random.default_rng([seed, i]))
        pose, expr = S.sample_motion(np.random.default_rng([seed, i, 1]), 48)
        a, b = np.random.default_rng([seed, i, 2]).choice(48, 2, replace=False)
        ids.append(ident)
        sp.append(pose[a])
        se.append(expr[a])
        dp.append(pose[b])
        de.append(expr[b])
    ids, sp, se, dp, de = (torch.from_numpy(np.stack(x)) for x in (ids, sp, se, dp, de))
    src_ann = {"identity": ids, "pose": sp, "expression": se}
    drv_ann = {"identity": ids, "pose": dp, "expression": de}
    return S.render(ids, sp, se, size), S.render(ids, dp, de, size), src_ann, drv_ann


def test_coarse_is_deterministic_degraded_and_in_psnr_band():
    source, driving, src_ann, drv_ann = _pairs(48)
    coarse = SyntheticCoarseGenerator()
    out = coarse(source, driving, src_ann, drv_ann)["prediction"]
    assert out.shape == driving.shape and out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, coarse(source, driving, src_ann, drv_ann)["prediction"])
    psnr = _psnr(out, driving)
    assert (psnr < 35).all()  # visibly different from the truth
    assert 21.0 < psnr.mean() < 29.0, psnr.mean()
    # the artefacts are systematic: without them the render is the truth
    clean = SyntheticCoarseGenerator(
        expression_transfer=1.0,
        blur_sigma=0.0,
        warp_amplitude=0.0,
        pose_error=0.0,
        region_blur=0.0,
        gaze_drift=0.0,
        teeth=1.0,
        color_shift=0.0,
    )
    assert torch.allclose(
        clean(source, driving, src_ann, drv_ann)["prediction"], driving, atol=1e-5
    )


def test_coarse_keeps_the_source_identity_and_driving_size():
    ids_a, pose_a, expr_a = _world(6, seed=11)
    ids_b, pose_b, expr_b = _world(6, seed=12)
    size = 48
    source = S.render(ids_a, pose_a, expr_a, size)
    driving = S.render(ids_b, pose_b, expr_b, size)
    src_ann = {"identity": ids_a, "pose": pose_a, "expression": expr_a}
    drv_ann = {"identity": ids_b, "pose": pose_b, "expression": expr_b}
    out = SyntheticCoarseGenerator()(source, driving, src_ann, drv_ann)["prediction"]
    assert out.shape == (6, 3, size, size)
    as_source = S.render(ids_a, pose_b, expr_b, size)  # the source identity in the driving motion
    err_source = (out - as_source).abs().flatten(1).mean(1)
    err_driving = (out - driving).abs().flatten(1).mean(1)
    assert (err_source < err_driving).all()


def test_coarse_needs_annotations():
    source, driving, src_ann, drv_ann = _pairs(2, size=32)
    coarse = SyntheticCoarseGenerator()
    assert coarse.needs_annotations
    with pytest.raises(ValueError, match="source_annotation"):
        coarse(source, driving, None, drv_ann)
    with pytest.raises(ValueError, match="driving_annotation"):
        coarse(source, driving, src_ann, None)
    with pytest.raises(ValueError, match="pose"):
        coarse(source, driving, src_ann, {"expression": drv_ann["expression"]})


# ---------------------------------------------------------------------------------------------
# attribute extractor
# ---------------------------------------------------------------------------------------------


def test_attributes_from_annotation():
    extractor = SyntheticAttributes()
    assert extractor.dim == 11 and extractor.needs_annotations
    pose, expr = torch.rand(3, 6), torch.rand(3, 5)
    images = torch.rand(3, 3, 16, 16, dtype=torch.float64)
    attr = extractor(images, {"pose": pose, "expression": expr, "identity": torch.rand(3, 40)})
    assert attr.shape == (3, 11) and attr.dtype == torch.float64
    torch.testing.assert_close(attr, torch.cat([expr, pose], 1).double())
    with pytest.raises(ValueError, match="annotation"):
        extractor(images)
    with pytest.raises(ValueError, match="pose"):
        extractor(images, {"expression": expr})
