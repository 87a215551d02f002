"""One collection, N independent tasks: which task does an item, which task is this process, and
the summary parts the tasks leave behind.

Used by ``python -m fadm_lightning.preprocess`` and the batch mode of ``animate`` / ``rectify``
(``num_tasks=N task_index=I``; docs/scaling.md):

* :func:`task_of` assigns an item to a task by a stable hash of its name (its path relative to the
  input folder, or its output file name): every task computes the same assignment on its own,
  whatever else is in its listing and whichever machine it runs on, so each item is done by
  exactly one task;
* :func:`resolve_task` reads the task from the settings, or from a SLURM job array
  (``sbatch --array=0-<N-1>``) when only ``num_tasks`` is given;
* :class:`TaskParts` stores each task's summary part and tells when all N parts of one run are
  there (the last task to finish, in whatever order they finish, merges them).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

#: submitit's own SLURM jobs (Hydra's submitit launcher) set this: their array is the sweep
SUBMITIT_MARKER = "SUBMITIT_EXECUTOR"


def task_of(name: str, num_tasks: int) -> int:
    """The task, 0 … ``num_tasks`` − 1, that processes the item called ``name`` (a relative path
    with ``/`` separators, or an output file name): the first 8 bytes of its SHA-1, modulo
    ``num_tasks``."""
    if num_tasks <= 1:
        return 0
    digest = hashlib.sha1(name.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % num_tasks


def resolve_task(
    num_tasks: int | str | None,
    task_index: int | str | None,
    environ: Mapping[str, str] | None = None,
) -> tuple[int, int, str]:
    """``(task_index, num_tasks, where the index came from)``.

    ``num_tasks`` unset is 1 (the whole collection, ``task_index`` 0). With ``num_tasks`` > 1 and
    ``task_index`` unset, the index is ``SLURM_ARRAY_TASK_ID`` of the SLURM job array this
    process runs in (``sbatch --array=0-<N-1>``; ``--array=3,7`` reruns tasks 3 and 7), except
    inside a job of Hydra's submitit launcher, whose array is the multirun's list of jobs (give
    ``task_index`` there, e.g. ``'task_index=range(0,N)'``). A SLURM array never splits a run
    that did not ask for it (``num_tasks`` unset).

    Raises:
        ValueError: ``num_tasks`` < 1, an index outside 0 … ``num_tasks`` − 1, or ``num_tasks``
            > 1 with no index to take.
    """
    environ = os.environ if environ is None else environ
    num_tasks = 1 if num_tasks is None else int(num_tasks)
    source = "settings"
    if num_tasks < 1:
        raise ValueError(f"num_tasks must be ≥ 1, got {num_tasks}")
    if task_index is None:
        if num_tasks == 1:
            task_index = 0
        elif "SLURM_ARRAY_TASK_ID" in environ and SUBMITIT_MARKER not in environ:
            task_index, source = environ["SLURM_ARRAY_TASK_ID"], "SLURM_ARRAY_TASK_ID"
        else:
            raise ValueError(
                f"num_tasks={num_tasks} needs task_index=0…{num_tasks - 1} (or a SLURM job array: "
                f"sbatch --array=0-{num_tasks - 1} …, whose SLURM_ARRAY_TASK_ID is the index)"
            )
    task_index = int(task_index)
    if not 0 <= task_index < num_tasks:
        raise ValueError(
            f"task_index must be in 0 … {num_tasks - 1} (num_tasks={num_tasks}), got {task_index}"
            + (" from SLURM_ARRAY_TASK_ID" if source != "settings" else "")
        )
    return task_index, num_tasks, source


def digest(items: Iterable[Any]) -> str:
    """A short fingerprint of a JSON-able sequence (the list of a run's items)."""
    return hashlib.sha1(json.dumps(list(items), default=str).encode()).hexdigest()[:16]


class TaskParts:
    """The summary parts of N tasks in one folder: ``task-<index>-of-<N>.json``.

    A part holds ``run`` (what must be equal in every task of one run: settings, inputs, N) and
    the task's own results. :meth:`complete` returns the N parts when every task of the run of a
    given part has written its part; parts of another run (other settings, another N, another
    listing) never count.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)

    def path(self, task_index: int, num_tasks: int) -> Path:
        width = max(5, len(str(num_tasks)))
        return self.folder / f"task-{task_index:0{width}d}-of-{num_tasks:0{width}d}.json"

    def clear(self, task_index: int, num_tasks: int) -> None:
        """Remove this task's part of an earlier run (at the start of the task)."""
        self.path(task_index, num_tasks).unlink(missing_ok=True)

    def write(self, task_index: int, num_tasks: int, run: dict, results: Any) -> Path:
        target = self.path(task_index, num_tasks)
        target.parent.mkdir(parents=True, exist_ok=True)
        part = {
            "task_index": task_index,
            "num_tasks": num_tasks,
            "run": _plain(run),
            "results": results,
        }
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(part, default=str) + "\n")
        os.replace(tmp, target)
        return target

    def read(self, path: Path) -> dict | None:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def newest(self) -> dict | None:
        """The part written last (the run ``merge=true`` merges)."""
        stamped = []
        for path in self.folder.glob("task-*-of-*.json"):
            try:
                stamped.append((path.stat().st_mtime_ns, path))
            except OSError:  # removed by a task starting again
                continue
        return self.read(max(stamped)[1]) if stamped else None

    def status(self, run: dict, num_tasks: int) -> tuple[list[dict], list[int]]:
        """``(parts of this run, task indices still missing)``."""
        found, missing = [], []
        run = _plain(run)
        for index in range(num_tasks):
            part = self.read(self.path(index, num_tasks))
            if part is not None and part.get("run") == run:
                found.append(part)
            else:
                missing.append(index)
        return found, missing

    def complete(self, run: dict, num_tasks: int) -> list[dict] | None:
        found, missing = self.status(run, num_tasks)
        return None if missing else found


def _plain(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples → lists), for comparisons with a part."""
    return json.loads(json.dumps(value, default=str))


def write_json(target: Path, content: Any) -> None:
    """Write ``content`` as indented JSON, atomically (a reader sees the old or the new file)."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(content, indent=2, default=str) + "\n")
    os.replace(tmp, target)
