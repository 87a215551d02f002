"""A web page to animate a portrait and to rectify a video, on this machine.

    python -m fadm_lightning.app ckpt=CKPT                      # http://127.0.0.1:7860
    python -m fadm_lightning.app ckpt=FOLDER server_port=8080 device=cuda
    python -m fadm_lightning.app model=fadm_official_release model.diffusion=… model.deca=… model.facevid=…

Hydra, ``conf/app.yaml``; the model options are those of ``animate`` (``ckpt``, ``model``,
``coarse``, ``attributes``, ``overrides``, ``device``). The model is loaded once; a Gradio page with
an Animate tab (portrait + driving video) and a Rectify tab (a video) serves it, jobs one at a
time, with the API endpoints ``/animate`` and ``/rectify`` (``gradio_client``). Uploads and
results live in a temporary folder removed when the app stops (Ctrl-C). ``docs/inference.md``
("Web app").
"""

from __future__ import annotations

from functools import partial

from omegaconf import DictConfig

from fadm_lightning.config import hydra_main
from fadm_lightning.inference import cli
from fadm_lightning.inference.app import NAME, run


@hydra_main("app", errors=partial(cli.run_command, NAME))
def main(cfg: DictConfig) -> int:
    return run(cfg)


if __name__ == "__main__":
    main()
