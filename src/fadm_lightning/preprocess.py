"""Raw videos and portraits → face-centred clips in the VoxCeleb layout.

``python -m fadm_lightning.preprocess input_dir=RAW output_dir=OUT [split=train] [num_workers=4]``
(Hydra, ``conf/preprocess.yaml``; every setting below is a ``key=value`` override).

For every video under ``input_dir`` (any container PyAV reads, any size and frame rate):

1. decode it upright (the rotation metadata of a phone video is applied: the reader of the
   inference commands, ``fadm_lightning.media.video.iter_frames``), streaming, once to detect
   and once to crop, so long videos never sit in memory, optionally resampled to ``fps``;
2. detect faces in each frame with dlib (``DlibFace``; frames larger than ``detector.max_side``
   are scaled down for the detector only);
3. link the boxes into tubes, cut one square per tube and drop tubes that are too short or too
   small (``fadm_lightning.faces.tubes``: FOMM's ``crop_vox.py`` rules); a square that leaves
   the frame (a close-up) is padded by replicating the border, as inference pads it
   (``out_of_frame=pad``, the default; ``out_of_frame=drop`` drops the tube, as ``crop_vox.py``);
4. crop, resize to ``image_size`` (Lanczos, antialiased; ``faces.crop.cut_square``, the function
   inference cuts its faces with) and write
   ``output_dir/<split>/<video stem>#<tube index:03d>#<start:06d>#<end:06d>.mp4``
   (frame indices of the written clip's timeline, end exclusive): an H.264 file with a key
   frame every ``gop`` frames (``format=mp4``), or a folder of that name holding
   ``0000000.png, …`` (``format=png``, FOMM's "vox-png"; the fastest to train from).

Every image under ``input_dir`` (png, jpg, …; any mode: grayscale, RGBA, 16-bit are converted)
gets the same kind of crop around its largest face (with ``image_increase``: one box has no
motion to widen it, see ``docs/data.md``) and goes to ``output_dir/images/<stem>.png``.

Re-running skips the inputs already done with the same settings (a JSON record per input under
``output_dir/.preprocess/records/``). A broken input (unreadable, truncated, no frames) does not
stop the run: it is listed in the summary, printed at the end and written as
``output_dir/preprocess_summary.json``. The exit status is 0 once every input was tried.

Many machines (docs/scaling.md, "Distributed preprocessing")::

    python -m fadm_lightning.preprocess input_dir=RAW output_dir=OUT num_tasks=N task_index=I
    python -m fadm_lightning.preprocess -m hydra/launcher=submitit_slurm \
        input_dir=RAW output_dir=OUT num_tasks=N 'task_index=range(0,N)'
    sbatch --array=0-99 --wrap "python -m fadm_lightning.preprocess input_dir=RAW output_dir=OUT num_tasks=100"
    python -m fadm_lightning.preprocess output_dir=OUT merge=true

Task I processes the inputs whose relative path hashes to I (``data.partition.task_of``: the
same in every task), writes its summary part to ``output_dir/.preprocess/tasks/``, and the task
that finds all N parts of the run (the last to finish) writes ``preprocess_summary.json`` for the
whole collection. With ``num_tasks`` > 1 and no ``task_index``, the index is
``SLURM_ARRAY_TASK_ID`` (an ``sbatch --array`` job; not inside the jobs of Hydra's submitit
launcher, which get ``task_index`` from the sweep). ``merge=true`` only merges (exit status 1
while tasks of the run are missing, named in the message).
"""

from __future__ import annotations

import sys

from omegaconf import DictConfig, OmegaConf

from fadm_lightning.config import hydra_main
from fadm_lightning.data.partition import resolve_task
from fadm_lightning.data.preprocess_summary import format_summary
from fadm_lightning.data.preprocessing import merge, preprocess, settings_from_config


def _merge(cfg: DictConfig) -> None:
    if OmegaConf.is_missing(cfg, "output_dir"):
        print("preprocess: merge=true needs output_dir=OUT", file=sys.stderr)
        sys.exit(2)
    try:
        summary = merge(cfg.output_dir)
    except FileNotFoundError as err:
        print(f"preprocess: {err}", file=sys.stderr)
        sys.exit(2)
    except ValueError as err:
        print(f"preprocess: {err}", file=sys.stderr)
        sys.exit(1)
    print(format_summary(summary))


def _main(cfg: DictConfig) -> None:
    if cfg.get("merge"):
        _merge(cfg)
        return
    missing = [k for k in ("input_dir", "output_dir") if OmegaConf.is_missing(cfg, k)]
    if missing:
        print(
            f"preprocess: set {' and '.join(missing)}, e.g. "
            "python -m fadm_lightning.preprocess input_dir=RAW output_dir=OUT",
            file=sys.stderr,
        )
        sys.exit(2)
    try:
        task_index, num_tasks, _ = resolve_task(cfg.get("num_tasks"), cfg.get("task_index"))
        summary = preprocess(
            cfg.input_dir,
            cfg.output_dir,
            split=str(cfg.split),
            num_workers=int(cfg.num_workers),
            progress=bool(cfg.progress),
            settings=settings_from_config(cfg),
            num_tasks=num_tasks,
            task_index=task_index,
        )
    except (FileNotFoundError, ValueError) as err:
        print(f"preprocess: {err}", file=sys.stderr)
        sys.exit(2)
    print(format_summary(summary))


@hydra_main("preprocess")
def main(cfg: DictConfig) -> None:
    _main(cfg)


if __name__ == "__main__":
    main()
