"""Raw talking-head videos → the paper's Table 1 on held-out persons, in one command.

    python -m fadm_lightning.recipe raw_dir=DIR work_dir=DIR [split=FILE.json] [preset=tiny|cpu|paper]

Hydra, ``conf/recipe.yaml`` and ``conf/preset/*.yaml``; the stages and their outputs:
:mod:`fadm_lightning.workflows.recipe`, docs/real_faces.md. A rerun skips the finished stages
and resumes an interrupted training.
"""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from fadm_lightning.config import hydra_main


@hydra_main("recipe")
def main(cfg: DictConfig) -> int:
    from fadm_lightning.workflows.recipe import RecipeError, run

    try:
        return run(cfg)
    except RecipeError as err:
        print(f"recipe: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    main()
