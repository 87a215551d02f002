"""Gather a multirun of evaluations into one comparison, laid out like the paper's Table 3.

    python -m fadm_lightning.train -m model.agcn.use_appearance=true,false \\
        model.agcn.use_motion_weighting=true,false                    # the four variants
    python -m fadm_lightning.evaluate -m ckpt=<run 0>/checkpoints/last.ckpt,<run 1>/…
    python -m fadm_lightning.report multirun_dir=logs/evaluate/multiruns/<time> [output=DIR]

The evaluate multirun writes the report itself when it ends (``report=true``, the default).

A training multirun with seeds gives the same table from each run's own test stage, as mean ± std
over the seeds (``test_metrics.json``, written by every training run that tests):

    python -m fadm_lightning.train -m model.agcn.use_appearance=true,false seed=1,2,3
    python -m fadm_lightning.report multirun_dir=logs/train/multiruns/<time>

Each job's ``results.json`` gives one row (its refined output); the row is named after what
varies between the jobs — the training overrides of its checkpoint (read from the training
run's ``.hydra/overrides.yaml``) and the evaluation overrides — using the paper's names for the
AGCN ablations ("w/o color condition", "w/o motion condition"). The coarse generator's row comes
first (once when it is the same in every job). Output: ``report.md`` and ``report.csv`` in the
multirun folder (or ``output``).
"""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from fadm_lightning.config import hydra_main


@hydra_main("report")
def main(cfg: DictConfig) -> int:
    from fadm_lightning.evaluation.report import gather

    if not cfg.multirun_dir:
        print(
            "usage: python -m fadm_lightning.report multirun_dir=<evaluate or training multirun "
            "folder> [output=<folder>]",
            file=sys.stderr,
        )
        return 2
    paths = gather(str(cfg.multirun_dir), cfg.output and str(cfg.output))
    print(paths["markdown"].read_text())
    print(f"Report: {paths['markdown']} and {paths['csv']}")
    return 0


if __name__ == "__main__":
    main()
