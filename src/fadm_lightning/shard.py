"""A VoxCeleb-layout root → LitData shards, one dataset per split, for streaming training.

``python -m fadm_lightning.shard input_dir=VOX output_dir=SHARDS [splits=[train,test]]
[chunk_bytes=64MB] [num_workers=4] [overwrite=true]`` (Hydra, ``conf/shard.yaml``).

Every clip of ``input_dir`` (mp4 files or PNG-frame folders, as ``fadm_lightning.preprocess``
writes them, with the annotations of ``annotations/<split>/`` when the root has them, e.g. the
synthetic world) becomes one record of ``output_dir/<split>/`` holding its bytes as stored (never
decoded pixels); clips that cannot be opened are left out, with one warning, and listed in
``output_dir/shard_summary.json``. Train from them with ``data=voxceleb_shards
data.root=SHARDS`` (a folder, or the same folder copied to ``s3://…`` / ``gs://…``).
Layout and record format: ``fadm_lightning.data.shards``; guide: ``docs/scaling.md, "Sharded streaming data"``.
"""

from __future__ import annotations

import sys

from omegaconf import DictConfig, OmegaConf

from fadm_lightning.config import hydra_main
from fadm_lightning.data.shard_writer import format_summary, write_shards


def _main(cfg: DictConfig) -> None:
    missing = [k for k in ("input_dir", "output_dir") if OmegaConf.is_missing(cfg, k)]
    if missing:
        print(
            f"shard: set {' and '.join(missing)}, e.g. "
            "python -m fadm_lightning.shard input_dir=VOX output_dir=SHARDS",
            file=sys.stderr,
        )
        sys.exit(2)
    splits = cfg.splits
    if splits is not None and not isinstance(splits, str):
        splits = [str(s) for s in splits]
    try:
        summary = write_shards(
            cfg.input_dir,
            cfg.output_dir,
            splits=splits,
            chunk_bytes=cfg.chunk_bytes,
            num_workers=int(cfg.num_workers),
            overwrite=bool(cfg.overwrite),
            index_cache_dir=cfg.index_cache_dir,
            progress=bool(cfg.progress),
            start_method=cfg.get("start_method"),
        )
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        print(f"shard: {err}", file=sys.stderr)
        sys.exit(2)
    print(format_summary(summary))


@hydra_main("shard")
def main(cfg: DictConfig) -> None:
    _main(cfg)


if __name__ == "__main__":
    main()
