"""Animate a portrait with a driving video, then refine every frame with FADM.

    python -m fadm_lightning.animate source=portrait.png driving=video.mp4 ckpt=CKPT [output=out.mp4]
    python -m fadm_lightning.animate batch=pairs.csv output_dir=animated/ ckpt=CKPT
    python -m fadm_lightning.animate source=… driving=… model=fadm_official_release model.diffusion=…

Hydra, ``conf/animate.yaml`` (every option is a ``key=value`` override; ``docs/inference.md``):

1. the portrait's face is cut like a training image, the driving video's like a training clip
   (one square for all frames), both resized to the model's resolution
   (:mod:`fadm_lightning.faces`; ``crop.*=none`` for inputs that are face crops);
2. the coarse generator (the checkpoint's own, or ``coarse=…``) animates the portrait: FOMM's
   relative motion from the driving frame whose landmark layout best matches the portrait's
   (``mode=relative best_frame=auto``, REFERENCE_SPEC §1.4), or absolute keypoints
   (``mode=absolute``, what FADM was trained on);
3. FADM refines the coarse frames in batches with one noise draw for the whole video
   (``sampler.*``);
4. the refined frames — pasted back into the portrait with ``paste_back=true`` — are written as
   an mp4 with the driving video's frame rate, frame count and audio; ``side_by_side=true`` also
   writes source | driving | coarse | refined. Outputs appear only when complete.
"""

from __future__ import annotations

from functools import partial

from omegaconf import DictConfig

from fadm_lightning.config import hydra_main
from fadm_lightning.inference import cli
from fadm_lightning.inference.animate import NAME, run


@hydra_main("animate", errors=partial(cli.run_command, NAME))
def main(cfg: DictConfig) -> int:
    return run(cfg)


if __name__ == "__main__":
    main()
