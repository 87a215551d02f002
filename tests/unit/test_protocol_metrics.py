"""The paper's protocol face networks (FAN, OpenFace nn4.small2, ArcFace IResNet) from user files:
their layouts, strict loading, honest unavailability and the ArcFace alignment.

Networks with random weights appear here only to test plumbing (shapes, loading, wiring); no
value computed with them is a metric.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from fadm_lightning.faces.alignment import (
    ARCFACE_TEMPLATE_112,
    align_arcface,
    five_points,
    similarity_transform,
    warp_affine,
)
from fadm_lightning.metrics import MetricSuite
from fadm_lightning.metrics.face_protocol import ArcFaceEmbedder, OpenFaceEmbedder
from fadm_lightning.models.face.fan import FAN_FILE, S3FD_FILE, package_version
from fadm_lightning.models.face.iresnet import IResNet, iresnet
from fadm_lightning.models.face.openface import CrossMapLRN, OpenFaceNN4Small2
from fadm_lightning.models.face.weights import WeightsFileError, load_weights

# ------------------------------------------------------------------------------ OpenFace


def test_openface_state_dict_has_the_ports_layout():
    # facts of OpenFacePytorch's netOpenFace / openface.pth (module names, shapes)
    net = OpenFaceNN4Small2()
    state = net.state_dict()
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    expected = {
        "layer1.weight": (64, 3, 7, 7),
        "layer2.running_var": (64,),
        "layer6.weight": (64, 64, 1, 1),
        "layer9.weight": (192, 64, 3, 3),
        "layer10.bias": (192,),
        "layer14.seq_list.0.1_conv.weight": (96, 192, 1, 1),
        "layer14.seq_list.0.4_conv.weight": (128, 96, 3, 3),
        "layer14.seq_list.1.4_conv.weight": (32, 16, 5, 5),
        "layer14.seq_list.2.2_conv.weight": (32, 192, 1, 1),
        "layer14.seq_list.2.3_bn.running_mean": (32,),
        "layer14.seq_list.3.1_conv.weight": (64, 192, 1, 1),
        "layer15.seq_list.2.2_conv.weight": (64, 256, 1, 1),
        "layer16.seq_list.0.4_conv.weight": (256, 128, 3, 3),
        "layer17.seq_list.3.1_conv.weight": (256, 640, 1, 1),
        "layer18.seq_list.1.4_conv.weight": (128, 64, 5, 5),
        "layer19.seq_list.1.2_conv.weight": (96, 1024, 1, 1),
        "layer21.seq_list.2.2_bn.weight": (256,),
        "layer25.weight": (128, 736),
        "layer25.bias": (128,),
    }
    for key, shape in expected.items():
        assert shapes.get(key) == shape, key
    # 3c and 4e: pooled input without projection, no 1×1 branch
    for block in ("layer16", "layer18"):
        assert not any(k.startswith(f"{block}.seq_list.2.") for k in state)
        assert not any(k.startswith(f"{block}.seq_list.3.") for k in state)
    owners = {k.split(".")[0] for k in state}
    assert owners == {f"layer{i}" for i in (1, 2, 6, 7, 9, 10, 14, 15, 16, 17, 18, 19, 21, 25)}
    # the parameter count OpenFace publishes for nn4.small2
    assert sum(p.numel() for p in net.parameters()) == 3_733_968
    with torch.no_grad():
        out = net.eval()(torch.rand(2, 3, 96, 96))
    assert out.shape == (2, 128)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2), atol=1e-4, rtol=0)


def _port_lrn_reference(x: torch.Tensor, size=5, alpha=1e-4, beta=0.75, k=1.0) -> torch.Tensor:
    """The port's running-window LRN: the first window is channels 0 … prePad−1; each next
    channel adds the square prePad−1 ahead and, only once c > prePad, drops the one prePad
    behind (0-based), so channel 0's square is never dropped."""
    square = x.square()
    channels = x.shape[1]
    pre_pad = (size - 1) // 2 + 1
    scale = torch.zeros_like(x)
    scale[:, 0] = square[:, : min(pre_pad, channels)].sum(1)
    for c in range(1, channels):
        scale[:, c] = scale[:, c - 1]
        if c < channels - pre_pad + 1:
            scale[:, c] += square[:, c + pre_pad - 1]
        if c > pre_pad:
            scale[:, c] -= square[:, c - pre_pad]
    return x * (k + alpha / size * scale).pow(-beta)


def test_lrn_is_torch7s_and_reproduces_the_ports_channel_zero_quirk():
    x = torch.randn(2, 12, 3, 3) * 30  # large enough for the normalisation to matter
    textbook = torch.nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)(x)
    torch.testing.assert_close(CrossMapLRN(port_lrn=False)(x), textbook)
    port = CrossMapLRN(port_lrn=True)(x)
    torch.testing.assert_close(port, _port_lrn_reference(x))
    torch.testing.assert_close(port[:, :3], textbook[:, :3])  # windows that hold channel 0
    assert not torch.allclose(port[:, 3:], textbook[:, 3:])


@pytest.fixture
def openface_file(tmp_path) -> Path:
    """A randomly initialised nn4.small2 saved like the port's file (for plumbing only)."""
    torch.manual_seed(0)
    state = {
        k: v for k, v in OpenFaceNN4Small2().state_dict().items() if "num_batches" not in k
    }  # the port's file predates BatchNorm's counter
    path = tmp_path / "openface.pth"
    torch.save(state, path)
    return path


def test_openface_loads_the_ports_file_and_preprocesses_like_pose_evaluation(openface_file):
    embedder = OpenFaceEmbedder(openface_file)
    assert embedder.available and "openface.pth" in embedder.weights
    frames = torch.rand(2, 3, 256, 256)
    inputs = embedder.inputs(frames)
    assert inputs.shape == (2, 3, 96, 96)
    # extract.py: uint8 frame[..., ::-1] (BGR), skimage resize to 96×96 (0.14: no antialiasing)
    transform = pytest.importorskip("skimage.transform")
    uint8 = (frames[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    expected = transform.resize(uint8[..., ::-1], (96, 96), order=1, anti_aliasing=False)
    np.testing.assert_allclose(inputs[0].permute(1, 2, 0).numpy(), expected, atol=5e-5)  # float32
    # plumbing: AED through the suite (random weights: the value means nothing)
    suite = MetricSuite(["aed"], identity_aed="openface", weights={"openface": openface_file})
    assert suite.label("aed") == "AED[openface-nn4.small2]" and suite.available("aed")
    values = suite.frame_values(frames, torch.cat([frames[:1], frames[:1]]))
    assert values["aed"][0] == pytest.approx(0.0, abs=1e-9) and values["aed"][1] > 0
    assert any(n.startswith("AED[openface-nn4.small2]: squared L2") for n in suite.notes())


# ------------------------------------------------------------------------------- ArcFace


def test_iresnet_state_dict_has_arcface_torchs_layout():
    with torch.device("meta"):  # shapes only: no 260 MB of random weights
        r100, r50 = iresnet("r100"), iresnet("r50")
    shapes = {k: tuple(v.shape) for k, v in r100.state_dict().items()}
    expected = {
        "conv1.weight": (64, 3, 3, 3),
        "bn1.running_mean": (64,),
        "prelu.weight": (64,),
        "layer1.0.bn1.weight": (64,),
        "layer1.0.conv1.weight": (64, 64, 3, 3),
        "layer1.0.bn2.weight": (64,),
        "layer1.0.prelu.weight": (64,),
        "layer1.0.conv2.weight": (64, 64, 3, 3),
        "layer1.0.bn3.weight": (64,),
        "layer1.0.downsample.0.weight": (64, 64, 1, 1),
        "layer1.0.downsample.1.running_var": (64,),
        "layer2.0.conv1.weight": (128, 64, 3, 3),
        "layer2.0.downsample.0.weight": (128, 64, 1, 1),
        "layer3.29.conv2.weight": (256, 256, 3, 3),
        "layer4.2.bn3.bias": (512,),
        "bn2.weight": (512,),
        "fc.weight": (512, 512 * 7 * 7),
        "fc.bias": (512,),
        "features.weight": (512,),
        "features.running_mean": (512,),
    }
    for key, shape in expected.items():
        assert shapes.get(key) == shape, key
    assert not any(k.startswith("conv1.bias") or ".conv1.bias" in k for k in shapes)
    for model, blocks in ((r100, (3, 13, 30, 3)), (r50, (3, 4, 14, 3))):
        for stage, count in enumerate(blocks, start=1):
            layer = getattr(model, f"layer{stage}")
            assert len(layer) == count
            assert layer[0].downsample is not None and all(b.downsample is None for b in layer[1:])
    assert sum(p.numel() for p in r100.parameters()) == 65_156_160  # "65.2M"


def test_weights_round_trip_through_our_loader(tmp_path):
    torch.manual_seed(0)
    tiny = IResNet((1, 1, 1, 1), widths=(8, 8, 16, 16), num_features=32).eval()
    x = torch.rand(2, 3, 112, 112)
    with torch.no_grad():
        expected = tiny(x)
    path = tmp_path / "backbone.pth"
    torch.save({f"module.{k}": v for k, v in tiny.state_dict().items()}, path)  # DataParallel
    loaded = load_weights(IResNet((1, 1, 1, 1), (8, 8, 16, 16), 32), path, "tiny IResNet")
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), expected)


def _tiny_state(tmp_path: Path) -> tuple[dict[str, torch.Tensor], Path]:
    state = IResNet((1, 1, 1, 1), (8, 8, 16, 16), 32).state_dict()
    return state, tmp_path / "backbone.pth"


def test_a_wrong_weights_file_is_an_error_naming_the_file_and_the_differences(tmp_path):
    state, path = _tiny_state(tmp_path)

    def load():
        return load_weights(IResNet((1, 1, 1, 1), (8, 8, 16, 16), 32), path, "tiny IResNet")

    # a missing key, an unexpected one and a wrong shape: all listed
    broken = dict(state)
    del broken["fc.weight"]
    broken["head.weight"] = torch.zeros(3)
    broken["conv1.weight"] = torch.zeros(8, 3, 5, 5)
    torch.save(broken, path)
    with pytest.raises(WeightsFileError) as error:
        load()
    message = str(error.value)
    assert str(path) in message and "not tiny IResNet weights" in message
    assert "missing (1): fc.weight" in message
    assert "unexpected (1): head.weight" in message
    assert "mis-shaped (1): conv1.weight (8, 3, 5, 5) (expected (8, 3, 3, 3))" in message
    # not a checkpoint at all
    path.write_text("not weights")
    with pytest.raises(WeightsFileError, match="not a readable PyTorch weights file"):
        load()
    # a truncated download
    torch.save(state, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(WeightsFileError, match=re.escape(str(path))):
        load()
    # a pickle of other objects than tensors is refused by weights_only loading
    torch.save({"net": torch.nn.Linear(2, 2)}, path)
    with pytest.raises(WeightsFileError, match="not a readable PyTorch weights file"):
        load()
    torch.save({"epoch": 3}, path)
    with pytest.raises(WeightsFileError, match="not tensors: epoch"):
        load()


def _landmarks_for(points5: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """68 landmarks whose derived eye centres, nose tip and mouth corners are ``points5``."""
    landmarks = rng.uniform(0, 112, (68, 2))
    for eye, centre in ((slice(36, 42), points5[0]), (slice(42, 48), points5[1])):
        offsets = rng.normal(0, 3, (6, 2))
        landmarks[eye] = centre + offsets - offsets.mean(0)
    landmarks[30], landmarks[48], landmarks[54] = points5[2], points5[3], points5[4]
    return landmarks


def test_five_point_alignment_maps_the_template_onto_itself_and_recovers_a_similarity():
    rng = np.random.default_rng(0)
    template = ARCFACE_TEMPLATE_112
    landmarks = _landmarks_for(template, rng)
    np.testing.assert_allclose(five_points(landmarks), template, atol=1e-12)
    identity = similarity_transform(five_points(landmarks), template)
    np.testing.assert_allclose(identity, [[1, 0, 0], [0, 1, 0]], atol=1e-9)
    # a known similarity (scale 1.7, 20°, a shift) applied to the template is undone exactly
    angle, scale, shift = math.radians(20), 1.7, np.array([31.0, -12.5])
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    moved = template @ (scale * rotation).T + shift
    recovered = similarity_transform(moved, template)
    np.testing.assert_allclose(recovered[:, :2], rotation.T / scale, atol=1e-9)
    np.testing.assert_allclose(moved @ recovered[:, :2].T + recovered[:, 2], template, atol=1e-9)
    forward = similarity_transform(template, moved)
    np.testing.assert_allclose(forward, np.c_[scale * rotation, shift], atol=1e-9)


def test_warp_is_cv2s_and_an_aligned_face_is_the_template_crop():
    rng = np.random.default_rng(1)
    image = torch.nn.functional.interpolate(
        torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)), size=112
    )[0]
    # the identity alignment returns the image itself
    crop = align_arcface(image, _landmarks_for(ARCFACE_TEMPLATE_112, rng))
    torch.testing.assert_close(crop, image, atol=1e-5, rtol=0)
    cv2 = pytest.importorskip("cv2")
    matrix = np.array([[0.9, 0.2, -5.0], [-0.2, 0.9, 10.0]])
    uint8 = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    expected = cv2.warpAffine(uint8, matrix, (40, 40), borderValue=0.0).astype(np.float32)
    ours = warp_affine(torch.from_numpy(uint8).permute(2, 0, 1)[None].float(), matrix[None], 40)
    np.testing.assert_allclose(ours[0].permute(1, 2, 0).numpy(), expected, atol=1.0)


@pytest.fixture
def arcface_r18_file(tmp_path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "backbone.pth"
    torch.save(iresnet("r18").state_dict(), path)
    return path


def test_arcface_plumbing_aligns_found_faces_and_skips_the_others(arcface_r18_file):
    # random r18 weights: only the wiring is tested (alignment → network → unit vectors)
    embedder = ArcFaceEmbedder(arcface_r18_file, arch="r18")
    assert embedder.available and embedder.name == "arcface-r18"
    rng = np.random.default_rng(2)
    template_at_256 = ARCFACE_TEMPLATE_112 * 2 + 16
    frames = torch.rand(3, 3, 256, 256)
    observed = embedder.observe(frames, [_landmarks_for(template_at_256, rng), None, None])
    assert observed[0].embedding.shape == (512,) and observed[1].embedding is None
    assert np.linalg.norm(observed[0].embedding) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="arcface_arch"):
        ArcFaceEmbedder(arcface_r18_file, arch="r200")
    # a file for another depth is refused with the differences
    with pytest.raises(WeightsFileError, match="missing"):
        ArcFaceEmbedder(arcface_r18_file, arch="r34")


def test_arcface_alignment_of_real_faces_puts_their_five_points_on_the_template(
    arcface_r18_file,
):
    from PIL import Image

    from fadm_lightning.metrics.face import DlibFaceAnalyzer

    from ..conftest import FIXTURES

    if not FIXTURES.is_dir():
        pytest.skip(f"shared fixtures not found at {FIXTURES}")
    analyzer = DlibFaceAnalyzer(cnn_fallback=False)
    if not analyzer.available:
        pytest.skip(f"dlib is not installed: {analyzer.reason}")
    names = ("source", "driving")
    frames = torch.stack(
        [
            torch.from_numpy(np.array(Image.open(FIXTURES / f"{n}.png").convert("RGB")))
            .permute(2, 0, 1)
            .float()
            / 255
            for n in names
        ]
    )
    for observation in analyzer.observe(frames, embeddings=False):
        assert observation.found
        points = five_points(observation.landmarks)
        matrix = similarity_transform(points, ARCFACE_TEMPLATE_112)
        aligned = points @ matrix[:, :2].T + matrix[:, 2]
        # pixels of the 112×112 crop; what remains is expression (a smile widens the mouth)
        residual = np.linalg.norm(aligned - ARCFACE_TEMPLATE_112, axis=1)
        assert residual.max() < 10.0 and residual.mean() < 6.0, residual
        assert abs(aligned[0, 1] - aligned[1, 1]) < 2.0  # the eyes end up level
    # plumbing through the suite (random r18 weights: values mean nothing): a frame with itself
    suite = MetricSuite(
        ["csim"],
        identity_csim="arcface",
        weights={"arcface": arcface_r18_file},
        arcface_arch="r18",
        face={"cnn_fallback": False},
    )
    assert suite.label("csim") == "CSIM[arcface-r18]" and suite.available("csim")
    np.testing.assert_allclose(suite.frame_values(frames, frames)["csim"], [1.0, 1.0], atol=1e-6)
    assert any("aligned with the dlib-68 landmarks" in n for n in suite.notes())


# -------------------------------------------------------------------- unavailability, labels


def test_missing_protocol_weights_make_the_metrics_unavailable_with_the_reason(tmp_path):
    weights = {
        "fan": tmp_path / "face_alignment" / FAN_FILE,
        "s3fd": tmp_path / "face_alignment" / S3FD_FILE,
        "openface": tmp_path / "openface" / "openface.pth",
        "arcface": tmp_path / "arcface" / "backbone.pth",
    }
    suite = MetricSuite(
        ["l1", "akd", "aed", "csim"],
        landmarks="fan",
        identity_aed="openface",
        identity_csim="arcface",
        weights=weights,
    )
    assert suite.faces is None  # dlib is not loaded when no metric uses it
    assert [suite.label(k) for k in ("akd", "aed", "csim")] == [
        "AKD[fan-2d]",
        "AED[openface-nn4.small2]",
        "CSIM[arcface-r100]",
    ]
    for key in ("akd", "aed", "csim"):
        assert not suite.available(key)
    if package_version() is None:
        assert "face-alignment" in suite.reason("akd")
    else:
        assert FAN_FILE in suite.reason("akd") and S3FD_FILE in suite.reason("akd")
        assert str(weights["fan"]) in suite.reason("akd")
    assert "openface.pth" in suite.reason("aed") and str(weights["openface"]) in suite.reason("aed")
    assert "metrics.weights.arcface" in suite.reason("csim")
    notes = suite.notes()
    for key, label in zip(
        ("akd", "aed", "csim"),
        ("AKD[fan-2d]", "AED[openface-nn4.small2]", "CSIM[arcface-r100]"),
        strict=True,
    ):
        assert f"{label}: unavailable — {suite.reason(key)}" in notes, label
    frames = torch.rand(2, 3, 16, 16)
    assert set(suite.frame_values(frames, frames)) == {"l1"}
    assert suite.observe(frames) is None
    # no path at all
    bare = MetricSuite(["aed"], identity_aed="openface")
    assert "metrics.weights.openface=PATH" in bare.reason("aed")
    with pytest.raises(ValueError, match="metrics.identity_aed='facenet'"):
        MetricSuite(["aed"], identity_aed="facenet")


def test_arcface_without_its_alignment_landmarks_is_unavailable(tmp_path, arcface_r18_file):
    suite = MetricSuite(
        ["csim"],
        identity_csim="arcface",
        landmarks="fan",
        weights={"arcface": arcface_r18_file, "fan": tmp_path / "absent.pth.tar"},
        arcface_arch="r18",
    )
    assert suite.label("csim") == "CSIM[arcface-r18]"
    assert suite.arcface.available and not suite.available("csim")
    assert suite.reason("csim").startswith("ArcFace's face alignment needs the fan-2d landmarks")


# ------------------------------------------------------------------------------------- FAN


@pytest.fixture(scope="module")
def fan_files(tmp_path_factory) -> tuple[Path, Path]:
    """Randomly initialised FAN and S3FD saved under the package's file names (plumbing)."""
    if package_version() is None:
        pytest.skip("face-alignment is not installed (pip install 'fadm-lightning[protocol]')")
    from face_alignment.detection.sfd.net_s3fd import s3fd
    from face_alignment.models import FAN

    folder = tmp_path_factory.mktemp("face_alignment")
    torch.manual_seed(0)
    torch.save(FAN(4).state_dict(), folder / FAN_FILE)
    torch.save(s3fd().state_dict(), folder / S3FD_FILE)
    return folder / FAN_FILE, folder / S3FD_FILE


@pytest.fixture
def no_downloads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"a download was attempted: {args}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    if package_version() is not None:
        import face_alignment.detection.sfd.sfd_detector as sfd_detector
        import face_alignment.utils as fa_utils

        monkeypatch.setattr(fa_utils, "download_url_to_file", refuse)
        monkeypatch.setattr(sfd_detector, "load_state_dict_from_url", refuse)


def test_fan_builds_from_local_files_only(fan_files, no_downloads):
    from fadm_lightning.metrics.face_protocol import FANLandmarkBackend

    backend = FANLandmarkBackend(*fan_files)
    assert backend.available and FAN_FILE in backend.weights and S3FD_FILE in backend.weights
    # plumbing without the (slow) networks: no detection → no landmarks → AKD skips the frame
    backend.fan.aligner.face_detector.detect_from_image = lambda image: []
    assert backend.landmarks(torch.rand(2, 3, 32, 32)) == [None, None]
    # the detector's file given as FAN's: refused, with the differences
    with pytest.raises(WeightsFileError, match="not face-alignment's 2DFAN-4"):
        FANLandmarkBackend(fan_files[1], fan_files[1])


@pytest.mark.slow
def test_fan_landmarks_of_a_given_face_box(fan_files, no_downloads):
    from fadm_lightning.metrics.face_protocol import FANLandmarkBackend

    backend = FANLandmarkBackend(*fan_files)  # random weights: shapes only
    backend.fan.aligner.face_detector.detect_from_image = lambda image: [
        np.array([64.0, 64.0, 192.0, 192.0, 0.99])
    ]
    (points,) = backend.landmarks(torch.rand(1, 3, 256, 256))
    assert points.shape == (68, 2) and np.isfinite(points).all()
