"""Batch mode redoes its jobs when the model behind ``ckpt=`` changes, file or folder."""

from __future__ import annotations

import os

from omegaconf import OmegaConf

from fadm_lightning.inference.cli import batch_settings


def test_a_changed_file_inside_a_pretrained_folder_changes_the_settings(tmp_path):
    folder = tmp_path / "model"
    (folder / "unet").mkdir(parents=True)
    (folder / "model_index.json").write_text("{}")
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(b"0" * 16)
    cfg = OmegaConf.create({"ckpt": str(folder), "sampler": {"steps": 1}})
    before = batch_settings(cfg)
    assert before == batch_settings(cfg)  # nothing changed: the jobs are skipped
    weights.write_bytes(b"1" * 17)
    assert batch_settings(cfg) != before


def test_a_replaced_checkpoint_file_changes_the_settings(tmp_path):
    ckpt = tmp_path / "last.ckpt"
    ckpt.write_bytes(b"a")
    cfg = OmegaConf.create({"ckpt": str(ckpt)})
    before = batch_settings(cfg)
    os.utime(ckpt, ns=(1, 1))
    assert batch_settings(cfg) != before
