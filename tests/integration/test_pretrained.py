"""Shareable pipelines, the diffusers way (issue 16): a trained FADM or the official release saved
as a folder (``save_pretrained``), loaded back (``from_pretrained``) with the same samples, and
taken by every ``ckpt=`` (animate, rectify, evaluate); the export and convert_release commands;
strict loading of a tampered folder."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict
from safetensors.torch import load_file, save_file

from fadm_lightning.checkpoints import CheckpointError, load_pipeline
from fadm_lightning.inference.cli import run_command
from fadm_lightning.pipeline import FADMPipeline
from fadm_lightning.pretrained import PretrainedFolderError
from fadm_lightning.sampler import OFFICIAL, SamplerConfig
from fadm_lightning.train import train

from ..conftest import CONFIG_DIR, TINY_OVERRIDES


def _compose(name: str, overrides: list[str], hydra: bool = False) -> DictConfig:
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            return compose(config_name=name, return_hydra_config=hydra, overrides=overrides)
    finally:
        GlobalHydra.instance().clear()


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


# ------------------------------------------------------------------------ a trained tiny model
@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """The tiny synthetic CPU preset (residual x₀-prediction, EMA) trained for 2 steps."""
    root = tmp_path_factory.mktemp("pretrained_train")
    torch.set_num_threads(1)
    cfg = _compose(
        "train",
        [*TINY_OVERRIDES, "++trainer.max_steps=2", "++trainer.limit_val_batches=0", "test=false"],
        hydra=True,
    )
    with open_dict(cfg):
        cfg.paths.root_dir = str(root)
        cfg.paths.cache_dir = str(root / "cache")
        cfg.paths.output_dir = str(root / "run")
        cfg.hydra.runtime.output_dir = str(root / "run")
    HydraConfig().set_config(cfg)
    result = train(cfg)
    return Path(result["last_checkpoint"])


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory) -> Path:
    pipe, _ = load_pipeline(trained)
    return pipe.save_pretrained(tmp_path_factory.mktemp("exported") / "tiny")


def test_save_then_load_gives_the_same_samples(trained, tmp_path):
    pipe, cfg = load_pipeline(trained)
    assert pipe.source["ema"] is True  # the CPU preset keeps an EMA: the exported weights
    folder = pipe.save_pretrained(tmp_path / "tiny")
    again = FADMPipeline.from_pretrained(folder)

    for name in ("agcn", "unet"):
        ours, theirs = getattr(pipe, name).state_dict(), getattr(again, name).state_dict()
        assert list(ours) == list(theirs)
        assert all(torch.equal(ours[k], theirs[k]) for k in ours), name
    public = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}  # noqa: E731
    assert public(again.scheduler.config) == public(pipe.scheduler.config)
    assert (again.attributes_from, again.target, again.coarse_input) == (
        "driving",
        "residual",
        True,
    )
    assert again.image_size == 32 and again.sampler.as_dict() == pipe.sampler.as_dict() == {
        "steps": 2,  # TINY_OVERRIDES' model.sampler.steps; the rest: fadm_small's
        "eta": 0.0,
        "strength": 0.1,
        "clip_sample": True,
        "start_noise": True,
    }
    torch.manual_seed(0)
    coarse, attr_diff = torch.rand(3, 3, 32, 32), torch.randn(3, 11)
    official = OFFICIAL.with_(steps=5)  # η = 1: fresh noise at every step
    for sampler in (pipe.sampler, official):
        before = pipe.sample(coarse, attr_diff, sampler.with_(seed=4))
        after = again.sample(coarse, attr_diff, sampler.with_(seed=4))
        assert torch.equal(before, after), sampler
        assert not torch.equal(before, coarse)  # a refinement, not the identity
    # the one loader takes the folder too, with the run's data config for evaluate
    loaded, stored = load_pipeline(folder)
    assert stored.data.image_size == cfg.data.image_size == 32
    assert stored.model._target_ == cfg.model._target_
    assert torch.equal(
        loaded.sample(coarse, attr_diff, official.with_(seed=4)),
        pipe.sample(coarse, attr_diff, official.with_(seed=4)),
    )


def test_folder_layout_index_and_model_card(exported):
    from diffusers import DDIMScheduler, UNet2DModel

    assert _files(exported) == {
        "model_index.json",
        "README.md",
        "agcn/config.json",
        "agcn/model.safetensors",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "scheduler/scheduler_config.json",
        "coarse/config.json",  # the synthetic parts have no weights: their config only
        "attributes/config.json",
    }
    assert _leftovers(exported.parent) == []
    index = json.loads((exported / "model_index.json").read_text())
    assert index["_class_name"] == "FADMPipeline" and index["_fadm_lightning_version"]
    assert index["agcn"] == ["fadm_lightning.models.agcn", "AGCN"]
    assert index["unet"] == ["diffusers", "UNet2DModel"]
    assert index["scheduler"] == ["diffusers", "DDIMScheduler"]
    assert index["coarse"] == ["fadm_lightning.models.coarse.synthetic", "SyntheticCoarseGenerator"]
    assert index["attributes"][1] == "SyntheticAttributes"
    assert index["image_size"] == 32 and index["sampler"]["steps"] == 2
    assert index["run_config"]["data"]["image_size"] == 32
    assert index["run_config"]["model"]["_target_"] == "fadm_lightning.systems.fadm.FADMLitModule"
    assert index["source"]["ema"] is True and index["source"]["global_step"] == 2

    agcn_config = json.loads((exported / "agcn" / "config.json").read_text())
    assert agcn_config["_target_"] == "fadm_lightning.models.agcn.AGCN"
    assert agcn_config["attr_dim"] == 11 and agcn_config["feature_channels"] == 4
    pipe, _ = load_pipeline(exported)
    assert set(load_file(exported / "agcn" / "model.safetensors")) == set(pipe.agcn.state_dict())
    # the UNet and the scheduler are diffusers' own folders
    unet = UNet2DModel.from_pretrained(exported, subfolder="unet")
    pairs = zip(unet.parameters(), pipe.unet.parameters(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    scheduler = DDIMScheduler.from_pretrained(exported, subfolder="scheduler")
    assert scheduler.config.prediction_type == "sample"
    # a folder written before the sampler had one name per knob: `default_sampler`, and
    # `val_*` in its run config, load to the same sampler
    old = dict(index)
    old["default_sampler"] = old.pop("sampler")
    model = dict(old["run_config"]["model"])
    model.update({f"val_{k}": v for k, v in model.pop("sampler").items()})
    model["val_num_inference_steps"] = model.pop("val_steps")
    old["run_config"] = {**old["run_config"], "model": model}
    (exported / "model_index.json").write_text(json.dumps(old))
    again, stored = load_pipeline(exported)
    assert again.sampler == pipe.sampler and stored.model.sampler.steps == 2
    (exported / "model_index.json").write_text(json.dumps(index))

    card = (exported / "README.md").read_text()
    agcn_params = sum(p.numel() for p in pipe.agcn.parameters())
    for text in (
        "library_name: fadm_lightning",
        "# tiny",
        "Face Animation with an Attribute-Guided Diffusion Model",
        "## Parts",
        f"| agcn | `fadm_lightning.models.agcn.AGCN` | {agcn_params:,} |",
        "`unet/diffusion_pytorch_model.safetensors`",
        "(step 2, EMA weights)",
        "2 DDIM steps, η = 0, strength 0.1, x̂₀ clipped",
        "python -m fadm_lightning.animate ckpt=tiny",
        "python -m fadm_lightning.rectify ckpt=tiny",
        "python -m fadm_lightning.evaluate ckpt=tiny",
        "sampler=official",
        "sampler.steps=2 sampler.eta=0 sampler.strength=0.1",
        'FADMPipeline.from_pretrained("tiny"',
        "Not evaluated yet",
        "@inproceedings{zeng2023fadm",
    ):
        assert text in card, text


def test_a_tampered_folder_is_an_error_naming_the_file_and_the_keys(exported, tmp_path):
    copies = iter(range(100))

    def copy() -> Path:
        return Path(shutil.copytree(exported, tmp_path / f"copy{next(copies)}"))

    def fails(folder: Path, *texts: str, error: type[Exception] = PretrainedFolderError) -> str:
        with pytest.raises(error) as caught:
            load_pipeline(folder)
        message = str(caught.value)
        for text in texts:
            assert text in message, (text, message)
        return message

    # a removed key, an extra key
    folder = copy()
    weights = folder / "agcn" / "model.safetensors"
    state = load_file(weights)
    removed = sorted(state)[0]
    del state[removed]
    state["extra.weight"] = torch.zeros(2)
    save_file(state, weights)
    fails(folder, str(weights), "missing (1): " + removed, "unexpected (1): extra.weight")
    # a wrong shape
    folder = copy()
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(weights)
    state["conv_in.weight"] = torch.zeros(1, *state["conv_in.weight"].shape[1:])
    save_file(state, weights)
    fails(folder, str(weights), "mis-shaped (1): conv_in.weight: file (1, 9, 3, 3) vs model (8,")
    # a missing weights file, a missing part, no model_index.json
    folder = copy()
    (folder / "agcn" / "model.safetensors").unlink()
    fails(folder, "agcn/model.safetensors is missing")
    folder = copy()
    index = json.loads((folder / "model_index.json").read_text())
    del index["scheduler"]
    (folder / "model_index.json").write_text(json.dumps(index))
    fails(folder, "model_index.json", "missing keys: scheduler")
    folder = copy()
    (folder / "model_index.json").unlink()
    fails(folder, f"{folder}: a folder without model_index.json")
    with pytest.raises(PretrainedFolderError, match="without model_index.json"):
        FADMPipeline.from_pretrained(folder)
    # code outside the package, random weights, overrides of the fixed networks: refused
    folder = copy()
    (folder / "agcn" / "config.json").write_text(json.dumps({"_target_": "os.system"}))
    fails(folder, "'os.system' is not code of fadm_lightning or diffusers")
    folder = copy()
    config = {"_target_": "fadm_lightning.models.attributes.synthetic.SyntheticAttributes"}
    config["allow_random_weights_for_tests"] = True
    (folder / "attributes" / "config.json").write_text(json.dumps(config))
    fails(folder, "never loaded with random weights")
    with pytest.raises(PretrainedFolderError, match="model.unet.layers_per_block=2"):
        load_pipeline(exported, overrides=["model.unet.layers_per_block=2"])
    assert issubclass(PretrainedFolderError, CheckpointError)  # reported by the commands


def test_export_evaluate_and_the_card_metrics(trained, tmp_path, monkeypatch, capsys):
    """export writes the folder; evaluate ckpt=FOLDER gives the checkpoint's figures; export with
    results=…/results.json fills the card; an existing output is refused, a failure leaves
    nothing behind."""
    from fadm_lightning import export
    from fadm_lightning.evaluation import evaluate

    def run_export(*overrides: str) -> int:
        cfg = _compose("export", [f"ckpt={trained}", *overrides])
        return run_command("export", lambda: export.run(cfg))

    folder = tmp_path / "tiny-fadm"
    assert run_export(f"output={folder}") == 0
    assert "export: wrote" in capsys.readouterr().err

    def run_evaluate(ckpt: Path, out: Path) -> dict:
        cfg = _compose(
            "evaluate",
            [
                f"ckpt={ckpt}",
                "metrics.reconstruction=[l1,psnr,ssim]",
                "sampler.steps=2",
                "sampler.eta=0",
                "sampler.strength=0.1",
                "sampler.clip_sample=true",
                "batch_size=3",
            ],
            hydra=True,
        )
        with open_dict(cfg):
            cfg.paths.root_dir = str(tmp_path)
            cfg.paths.output_dir = cfg.hydra.runtime.output_dir = str(out)
        return evaluate(cfg)

    from_folder = run_evaluate(folder, tmp_path / "eval_folder")
    from_checkpoint = run_evaluate(trained, tmp_path / "eval_ckpt")
    rows = {r["method"]: r["values"] for r in from_folder["table"]}
    assert rows == {r["method"]: r["values"] for r in from_checkpoint["table"]}
    assert rows["refined"]["psnr"] > 0 and rows["refined"] != rows["coarse"]

    results = Path(from_folder["output_dir"]) / "results.json"
    with_metrics = tmp_path / "with-metrics"
    assert run_export(f"output={with_metrics}", f"results={results}", "name=FADM-tiny") == 0
    card = (with_metrics / "README.md").read_text()
    assert "# FADM-tiny" in card and "Same-identity reconstruction" in card
    assert "| method | frames | L1 ↓ | PSNR ↑ | SSIM ↑ |" in card
    assert f"| refined | 4 | {rows['refined']['l1']:.4f} |" in card

    # an existing non-empty output is refused; overwrite replaces it
    before = _files(folder)
    assert run_export(f"output={folder}") == 1
    assert "not empty" in capsys.readouterr().err
    assert run_export(f"output={folder}", "overwrite=true") == 0
    assert _files(folder) == before
    # a failure while writing leaves no partial folder and the old one untouched
    from fadm_lightning.loading import folder as pretrained_folder

    def broken(module, path):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(pretrained_folder, "_save_weights", broken)
    with pytest.raises(OSError, match="disk full"):
        run_export(f"output={folder}", "overwrite=true")
    with pytest.raises(OSError, match="disk full"):
        run_export(f"output={tmp_path / 'new'}")
    assert _files(folder) == before and not (tmp_path / "new").exists()
    assert _leftovers(tmp_path) == []
    monkeypatch.undo()
    # a results file that is not one
    assert run_export(f"output={tmp_path / 'x'}", f"results={trained}") == 1
    assert "not readable JSON" in capsys.readouterr().err


def test_animate_and_rectify_take_the_folder(tmp_path):
    pytest.importorskip("dlib", reason="the face crops and landmark attributes need dlib")
    from fadm_lightning.media.video import probe_video

    from .test_inference import (
        FAST,
        TINY_256,
        frames_of,
        render_faces,
        run_app,
        save_checkpoint,
        write_video,
    )

    # the 256×256 model of the inference tests: a tiny random FOMM (stored in the folder) and
    # the dlib landmark extractor (no weights: its config only)
    ckpt = save_checkpoint(tmp_path / "tiny256.ckpt", TINY_256)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*RANDOM WEIGHTS")
        pipe, _ = load_pipeline(ckpt)
    with pytest.warns(UserWarning, match="coarse of this pipeline was built with"):
        folder = pipe.save_pretrained(tmp_path / "tiny256")
    assert {"coarse/model.safetensors", "attributes/config.json"} <= _files(folder)
    assert "attributes/model.safetensors" not in _files(folder)
    coarse_config = json.loads((folder / "coarse" / "config.json").read_text())
    assert coarse_config["checkpoint"] == "model.safetensors"
    assert "allow_random_weights_for_tests" not in coarse_config
    assert "coarse: random weights" in (folder / "README.md").read_text()

    clip = write_video(tmp_path / "clip.mp4", render_faces(3, seed=3), 25)
    from PIL import Image

    portrait = tmp_path / "portrait.png"
    Image.fromarray(render_faces(1, seed=7)[0]).save(portrait)
    out = tmp_path / "animated.mp4"
    common = [f"ckpt={folder}", "audio=false", *FAST]
    assert (
        run_app("animate", [f"source={portrait}", f"driving={clip}", f"output={out}", *common]) == 0
    )
    assert probe_video(out).num_frames == 3
    # rectify needs no coarse generator: the folder and the checkpoint give the same frames
    outputs = {}
    for name, model in (("folder", folder), ("ckpt", ckpt)):
        outputs[name] = tmp_path / f"rectified_{name}.mp4"
        overrides = [f"video={clip}", f"output={outputs[name]}", f"ckpt={model}", "audio=false"]
        assert run_app("rectify", [*overrides, *FAST]) == 0
    assert (frames_of(outputs["folder"]) == frames_of(outputs["ckpt"])).all()


# ------------------------------------------------------------------------ the official release
FACEVID = dict(
    num_kp=5, kp_block_expansion=4, kp_max_features=16, kp_reshape_channel=64, kp_reshape_depth=4,
    kp_num_blocks=2, he_block_expansion=8, he_max_features=64, block_expansion=8, max_features=32,
    reshape_channel=8, reshape_depth=4, num_resblocks=1, dense_motion_block_expansion=8,
    dense_motion_max_features=32, dense_motion_num_blocks=2, dense_motion_compress=2,
)  # fmt: skip
DENOISER = dict(
    image_size=64, inner_channel=8, channel_mults=[1, 2], attn_res=[32], res_blocks=1, norm_groups=4
)


@pytest.fixture(scope="module")
def release_files(tmp_path_factory) -> dict[str, Path]:
    """Random-weight files in the official layout: a tiny Facevid.pth and diffusion.pth, and a
    deca_model.tar with a full-size random E_flame (100 MB)."""
    from fadm_lightning.models.attributes.deca import FlameEncoder
    from fadm_lightning.models.coarse.facevid import (
        FacevidCoarseGenerator,
        save_facevid_checkpoint,
    )
    from fadm_lightning.models.official import OfficialFADMDenoiser, save_diffusion_checkpoint

    folder = tmp_path_factory.mktemp("release")
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*RANDOM WEIGHTS")
        facevid = FacevidCoarseGenerator(None, allow_random_weights_for_tests=True, **FACEVID)
    save_facevid_checkpoint(
        folder / "Facevid.pth", facevid.kp_detector, facevid.he_estimator, facevid.generator
    )
    denoiser = OfficialFADMDenoiser(**DENOISER)
    with torch.no_grad():  # every weight random (the output layer starts at zero otherwise)
        for parameter in denoiser.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    save_diffusion_checkpoint(folder / "diffusion.pth", denoiser)
    torch.save({"E_flame": FlameEncoder().state_dict()}, folder / "deca_model.tar")
    return {
        "diffusion": folder / "diffusion.pth",
        "deca": folder / "deca_model.tar",
        "facevid": folder / "Facevid.pth",
    }


def _frames(batch: int, seed: int) -> torch.Tensor:
    return torch.rand(batch, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def test_official_release_saved_and_loaded_gives_the_same_samples(release_files, tmp_path):
    """A conversion test: random-weight files in the official layout (not the released weights,
    which are not available offline) → FADMPipeline.from_official_release → save_pretrained →
    from_pretrained, and the same coarse frames, attributes and refined frames, bit for bit."""
    pipe = FADMPipeline.from_official_release(
        **release_files, facevid_options=FACEVID, denoiser_options=DENOISER
    )
    folder = pipe.save_pretrained(tmp_path / "official")
    again = FADMPipeline.from_pretrained(folder)
    source, driving = _frames(1, 0), _frames(2, 1)
    before = pipe(source, driving, sampler=SamplerConfig(steps=3, eta=1.0, seed=0))
    after = again(source, driving, sampler=SamplerConfig(steps=3, eta=1.0, seed=0))
    for name in ("coarse", "attr_diff", "refined"):
        assert torch.equal(getattr(before, name), getattr(after, name)), name
    assert not torch.equal(before.refined, before.coarse)

    assert again.agcn is again.unet and again.sampler == OFFICIAL
    assert again.attributes_from == "coarse" and again.image_size == 64
    index = json.loads((folder / "model_index.json").read_text())
    assert index["agcn"] == "unet"
    assert index["unet"] == ["fadm_lightning.models.official.denoiser", "OfficialFADMDenoiser"]
    assert index["coarse"][1] == "FacevidCoarseGenerator"
    assert index["attributes"][1] == "DECAAttributes" and index["run_config"] is None
    assert {
        "unet/model.safetensors",
        "coarse/model.safetensors",
        "attributes/model.safetensors",
        "scheduler/scheduler_config.json",
    } <= _files(folder)
    coarse = json.loads((folder / "coarse" / "config.json").read_text())
    assert coarse["checkpoint"] == "model.safetensors" and coarse["num_kp"] == 5
    card = (folder / "README.md").read_text()
    assert "The official FADM release (`diffusion.pth`, `deca_model.tar`, `Facevid.pth`)" in card
    assert "100 DDIM steps, η = 1, strength 1 (the official sampler)" in card
    assert "evaluate ckpt=official data=voxceleb" in card  # the release carries no data config
    # the frozen parts' own loaders check the folder's safetensors strictly
    weights = folder / "coarse" / "model.safetensors"
    state = load_file(weights)
    del state[next(k for k in sorted(state) if k.startswith("generator."))]
    state["stray.weight"] = torch.zeros(1)
    save_file(state, weights)
    from fadm_lightning.models.coarse.facevid.checkpoint import FacevidCheckpointError

    with pytest.raises(FacevidCheckpointError, match="stray.weight"):
        load_pipeline(folder)


def test_convert_release_command(release_files, tmp_path, capsys):
    from fadm_lightning import convert_release
    from fadm_lightning.inference.model import load_refiner

    output = tmp_path / "fadm-official"

    def run(*overrides: str) -> int:
        files = [f"{k}={v}" for k, v in release_files.items()]
        sizes = [f"+release.facevid_options.{k}={v}" for k, v in FACEVID.items()]
        sizes += [f"+release.denoiser_options.{k}={v}" for k, v in DENOISER.items()]
        cfg = _compose("convert_release", [*files, *sizes, *overrides])
        return run_command("convert_release", lambda: convert_release.run(cfg))

    assert run(f"output={output}") == 0
    assert "convert_release: wrote" in capsys.readouterr().err
    refiner = load_refiner(ckpt=output, device="cpu")
    assert refiner.image_size == 64 and refiner.sampler == OFFICIAL
    assert refiner.name == f"model folder {output}"
    assert refiner.pipe.coarse.mode == "absolute"  # the demo's face-vid2vid options
    direct = FADMPipeline.from_official_release(
        **release_files, facevid_options=FACEVID, denoiser_options=DENOISER
    )
    source, driving = _frames(1, 2), _frames(2, 3)
    assert torch.equal(
        refiner.pipe(source, driving, sampler=SamplerConfig(steps=2, seed=1)).refined,
        direct(source, driving, sampler=SamplerConfig(steps=2, seed=1)).refined,
    )
    # an existing output is refused; missing files are all listed and nothing is written
    assert run(f"output={output}") == 1
    assert "not empty" in capsys.readouterr().err
    missing = tmp_path / "missing"
    assert run(f"output={missing}", f"deca={tmp_path / 'absent.tar'}", "facevid=null") == 1
    err = capsys.readouterr().err
    assert "2 required file(s) missing" in err and "absent.tar" in err and "facevid: not set" in err
    assert not missing.exists() and _leftovers(tmp_path) == []


def test_the_release_target_moved_out_of_models():
    """models/ never imports the pipeline: the assembly is FADMPipeline.from_official_release, and
    the old ``_target_`` of a stored config still resolves to it."""
    from hydra.utils import get_method

    from fadm_lightning.checkpoints import translate_targets
    from fadm_lightning.inference.model import RELEASE_TARGET

    old = {"model": {"_target_": "fadm_lightning.models.official.load_official_release"}}
    assert translate_targets(old)["model"]["_target_"] == RELEASE_TARGET
    assert get_method(RELEASE_TARGET) == FADMPipeline.from_official_release
    models = Path(__file__).resolve().parents[2] / "src" / "fadm_lightning" / "models"
    for path in models.rglob("*.py"):
        text = path.read_text()
        assert "from fadm_lightning.pipeline import" not in text, path
        assert "import fadm_lightning.pipeline" not in text, path


def test_a_folder_is_refused_where_a_training_checkpoint_is_needed(exported):
    """A distillation teacher needs the run config of a training checkpoint: one line says so."""
    from fadm_lightning.checkpoints import CheckpointError, read_run_config

    with pytest.raises(CheckpointError, match="a pretrained folder; this needs the training"):
        read_run_config(exported)
