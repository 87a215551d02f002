"""Evaluate FADM as the paper's Tables 1–3: ``python -m fadm_lightning.evaluate ckpt=PATH [...]``.

    python -m fadm_lightning.evaluate ckpt=logs/train/runs/<run>/checkpoints/last.ckpt
    python -m fadm_lightning.evaluate ckpt=… protocol=cross_identity
    python -m fadm_lightning.evaluate model=fadm_official_release data=voxceleb paths.data_dir=/data
    python -m fadm_lightning.evaluate -m ckpt=a.ckpt,b.ckpt          # Table 3; report at the end

Protocols (REFERENCE_SPEC §5.3, §5.4, §6):

* ``reconstruction`` (Table 1): every test clip, source = its first frame, driving = every frame
  (of the data config's test frames); L1, LPIPS, PSNR, SSIM, AKD, AED averaged over all frames.
* ``cross_identity`` (Table 2): the evaluation pairs (``pairs.csv`` in the run dir: from
  ``pairs.csv=…`` or drawn from ``pairs.seed``); source = a portrait of another person; FID
  (generated frames vs the driving frames) and CSIM (generated frame vs the source).

In one pass on the same frames: the coarse generator alone (row ``coarse``), the FADM-refined
output (``refined``) and optional other checkpoints (``extra_ckpts=[…]``, rows
``refined[<their training overrides>]``). Written to the run dir: ``table.md`` / ``table.csv``
(the paper's layout), ``results.json``, ``per_clip.csv``, ``videos/*.mp4`` (driving | coarse |
refined …), ``features/`` (FID features), ``settings.json``; and to W&B when ``logger=wandb``.

Resumable: run again with ``hydra.run.dir=<that run dir>``; clips (pairs) already in
``per_clip.csv`` are skipped. A metric whose network is not on this machine is reported as
unavailable, with the reason, never computed with other weights.
"""

from __future__ import annotations

from omegaconf import DictConfig

from fadm_lightning.config import hydra_main
from fadm_lightning.evaluation import evaluate


@hydra_main("evaluate")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
