"""Convert the official FADM release (four files) into a pretrained folder, once.

    python -m fadm_lightning.convert_release output=fadm-official
    python -m fadm_lightning.convert_release diffusion=/w/diffusion.pth deca=/w/deca_model.tar \
        facevid=/w/Facevid.pth output=fadm-official [coarse_generator=fomm fomm=/w/FOMM.pth]

Hydra, ``conf/convert_release.yaml`` (defaults: ``conf/model/fadm_official_release.yaml``); the
folder: :mod:`fadm_lightning.pretrained`. The folder holds the denoiser, the chosen coarse
generator (face-vid2vid, as the official demo, by default) and DECA's encoder as safetensors, the
official sampler as its default, and a model card; ``ckpt=FOLDER`` then replaces
``model=fadm_official_release model.diffusion=… model.deca=… model.facevid=…``.
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from fadm_lightning.config import hydra_main
from fadm_lightning.inference import cli

NAME = "convert_release"


def run(cfg: DictConfig) -> int:
    """The command (also callable with a composed config); returns the exit status."""
    from fadm_lightning.pipeline import FADMPipeline
    from fadm_lightning.pretrained import (
        PretrainedFolderError,
        check_output_folder,
        folder_summary,
        read_results,
    )

    if not cfg.get("output"):
        raise PretrainedFolderError("no output folder given: set output=FOLDER")
    output = Path(cfg.output)
    check_output_folder(output, overwrite=bool(cfg.overwrite))  # before loading anything
    results = read_results(cfg.results) if cfg.get("results") else None
    release = OmegaConf.to_container(cfg.release, resolve=True)
    pipe = FADMPipeline.from_official_release(
        diffusion=cfg.diffusion,
        deca=cfg.deca,
        facevid=cfg.facevid,
        fomm=cfg.fomm,
        coarse=cfg.coarse_generator,
        attributes_from=release.get("attributes_from", "coarse"),
        facevid_options=release.get("facevid_options"),
        fomm_options=release.get("fomm_options"),
        denoiser_options=release.get("denoiser_options"),
    )
    pipe.save_pretrained(
        output, model_card_metrics=results, overwrite=bool(cfg.overwrite), name=cfg.get("name")
    )
    print(f"{NAME}: wrote {output} ({folder_summary(output)})", file=sys.stderr)
    return 0


@hydra_main("convert_release", errors=partial(cli.run_command, NAME))
def main(cfg: DictConfig) -> int:
    return run(cfg)


if __name__ == "__main__":
    main()
