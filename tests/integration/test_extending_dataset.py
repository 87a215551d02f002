"""The recipe of docs/extending.md, "Add a dataset", run as written: a toy dataset and data module
outside the package, a ``data/toy.yaml`` found through ``hydra.searchpath``, and a training run
that takes one batch of it, all through configuration."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from ..conftest import TINY_OVERRIDES, plugin_env

# the module of the recipe, as a user writes it (outside fadm_lightning, on PYTHONPATH)
TOY_MODULE = '''
"""Toy talking heads rendered in memory: a dataset and its data module."""

import numpy as np
import torch
from torch.utils.data import Dataset

from fadm_lightning.data.base import PairDataModule
from fadm_lightning.data.batch import ClipItem, FrameAnnotation, PairItem, check_item
from fadm_lightning.synthetic import render_clip, sample_identity, sample_motion


class ToyClips(Dataset):
    """``num_clips`` clips of ``num_frames`` rendered faces, with their ground truth."""

    def __init__(self, num_clips, num_frames, image_size, seed, pairs=True, max_frames=None):
        self.clips = []
        for k in range(num_clips):
            rng = np.random.default_rng([seed, k])
            identity = sample_identity(rng)
            pose, expression = sample_motion(rng, num_frames)
            frames, marks = render_clip(identity, pose, expression, image_size)
            video = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255  # T×3×H×W in [0, 1]
            truth = {"pose": pose, "expression": expression, "landmarks": marks}
            truth = {key: torch.from_numpy(np.asarray(v, np.float32)) for key, v in truth.items()}
            truth["identity"] = torch.from_numpy(np.asarray(identity, np.float32))
            self.clips.append((f"toy{k:02d}", video[:max_frames], truth))
        self.pairs = pairs

    def __len__(self):
        return len(self.clips)

    def frame(self, truth, i) -> FrameAnnotation:
        out = {key: v[i] for key, v in truth.items() if key != "identity"}
        return {**out, "identity": truth["identity"]}

    def __getitem__(self, k):
        name, video, truth = self.clips[k]
        if not self.pairs:  # a test clip
            cut = {key: v[: len(video)] if key != "identity" else v for key, v in truth.items()}
            item: ClipItem = {"video": video, "name": name, "annotation": cut}
        else:  # a (source, driving) pair: the first frame and the last
            i, j = 0, len(video) - 1
            item: PairItem = {
                "source": video[i],
                "driving": video[j],
                "name": name,
                "source_annotation": self.frame(truth, i),
                "driving_annotation": self.frame(truth, j),
            }
        check_item(item)  # the contract of fadm_lightning.data.batch
        return item


class ToyDataModule(PairDataModule):
    """Toy clips: train and validation pairs, test clips. Only its own arguments are declared;
    ``batch_size``, ``num_workers``, ``image_size`` … are the base module's."""

    def __init__(self, num_clips: int = 4, num_frames: int = 6, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.num_clips, self.num_frames, self.seed = num_clips, num_frames, seed

    def setup(self, stage=None):
        size = self.image_size
        self.train_set = ToyClips(self.num_clips, self.num_frames, size, self.seed)
        self.val_set = ToyClips(self.num_val_pairs, self.num_frames, size, self.seed + 1)
        self.test_set = ToyClips(
            1, self.num_frames, size, self.seed + 2, pairs=False, max_frames=self.test_max_frames
        )

    def train_dataloader(self):
        generator = torch.Generator().manual_seed(self.seed)  # leaves the global RNG alone
        return self.make_loader(
            self.train_set, self.batch_size, shuffle=True, drop_last=True, generator=generator
        )

    def val_dataloader(self):
        return self.make_loader(self.val_set, self.val_batch_size)

    def test_dataloader(self):
        return self.make_loader(self.test_set, 1)
'''

TOY_YAML = """
# conf/data/toy.yaml: the toy data module; the loader keys are those of every data module
_target_: toy_faces.ToyDataModule
_convert_: all
num_clips: 4
num_frames: 6
seed: 0
image_size: 32
augment: false          # the synthetic coarse frame is rendered from the annotations
batch_size: 2
val_batch_size: 2
num_val_pairs: 2
num_workers: 0
test_max_frames: 4
"""


def test_a_toy_dataset_trains_through_configuration_only(tmp_path, shared_cache):
    code = tmp_path / "code"
    code.mkdir()
    (code / "toy_faces.py").write_text(textwrap.dedent(TOY_MODULE).lstrip())
    conf = tmp_path / "conf"
    (conf / "data").mkdir(parents=True)
    (conf / "data" / "toy.yaml").write_text(TOY_YAML.lstrip())
    run_dir = tmp_path / "run"
    tiny = [o for o in TINY_OVERRIDES if not o.startswith("data.")]
    env = plugin_env(code, shared_cache, tmp_path)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fadm_lightning.train",
            "data=toy",
            f"hydra.searchpath=[file://{conf}]",
            *tiny,
            "++trainer.max_steps=1",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    saved = (run_dir / ".hydra" / "config.yaml").read_text()
    assert "toy_faces.ToyDataModule" in saved
    assert "test/l1_refined" in proc.stdout + Path(run_dir / "train.log").read_text()
