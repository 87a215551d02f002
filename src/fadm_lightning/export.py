"""Export a trained FADM as a shareable folder (diffusers layout, safetensors, a model card).

    python -m fadm_lightning.export ckpt=logs/train/runs/<run>/checkpoints/last.ckpt output=fadm-vox256
    python -m fadm_lightning.export ckpt=… output=… results=logs/evaluate/runs/<run>/results.json

Hydra, ``conf/export.yaml``; the folder: :mod:`fadm_lightning.pretrained`, docs/inference.md
("Sharing a trained model"). The EMA weights are exported when the run kept them; the frozen
coarse generator and attribute extractor are read from their own files and stored in the folder.
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

from omegaconf import DictConfig

from fadm_lightning.config import hydra_main
from fadm_lightning.inference import cli

NAME = "export"


def run(cfg: DictConfig) -> int:
    """The command (also callable with a composed config); returns the exit status."""
    from fadm_lightning.checkpoints import load_pipeline
    from fadm_lightning.pretrained import (
        PretrainedFolderError,
        check_output_folder,
        folder_summary,
        read_results,
    )

    if not cfg.get("ckpt"):
        raise PretrainedFolderError(
            "no checkpoint given: set ckpt=<run dir>/checkpoints/last.ckpt (a checkpoint written "
            "by `python -m fadm_lightning.train`)"
        )
    if not cfg.get("output"):
        raise PretrainedFolderError("no output folder given: set output=FOLDER")
    output = Path(cfg.output)
    check_output_folder(output, overwrite=bool(cfg.overwrite))  # before loading anything
    results = read_results(cfg.results) if cfg.get("results") else None
    pipe, _ = load_pipeline(
        cfg.ckpt, overrides=list(cfg.get("overrides") or []), use_ema=bool(cfg.use_ema)
    )
    pipe.save_pretrained(
        output, model_card_metrics=results, overwrite=bool(cfg.overwrite), name=cfg.get("name")
    )
    print(
        f"{NAME}: wrote {output} ({folder_summary(output)}) from {cfg.ckpt}"
        + (f" with the metrics of {cfg.results}" if results else ""),
        file=sys.stderr,
    )
    return 0


@hydra_main("export", errors=partial(cli.run_command, NAME))
def main(cfg: DictConfig) -> int:
    return run(cfg)


if __name__ == "__main__":
    main()
