"""Refine a talking-head video made by any animator (FOMM, face-vid2vid, LivePortrait, …) with FADM.

    python -m fadm_lightning.rectify video=animated.mp4 ckpt=CKPT [output=rectified.mp4]
    python -m fadm_lightning.rectify batch=videos/ output_dir=rectified/ ckpt=CKPT

Hydra, ``conf/rectify.yaml`` (``docs/inference.md``). The video itself is the coarse input g:

1. its face is cut like a training clip (one square for all frames; ``crop.video=none`` for a
   video that is a face crop) and resized to the model's resolution;
2. the source of the attribute difference attr_s − attr_d (eq. 9) is frame ``source_frame``
   (the first by default) or, with ``source=IMAGE``, the portrait the animator was given
   (cropped like a training portrait); attr_d comes from each frame;
3. FADM refines the frames in batches with one noise draw for the whole video (``sampler.*``;
   ``sampler.strength < 1`` keeps more of the input);
4. the refined frames — pasted back into the original frames with ``paste_back=true`` — are
   written as an mp4 with the input's frame rate, frame count and audio; ``side_by_side=true``
   also writes input | refined. Outputs appear only when complete.
"""

from __future__ import annotations

from functools import partial

from omegaconf import DictConfig

from fadm_lightning.config import hydra_main
from fadm_lightning.inference import cli
from fadm_lightning.inference.rectify import NAME, run


@hydra_main("rectify", errors=partial(cli.run_command, NAME))
def main(cfg: DictConfig) -> int:
    return run(cfg)


if __name__ == "__main__":
    main()
