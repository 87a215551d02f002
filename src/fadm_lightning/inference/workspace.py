"""The web app's temporary folder (:class:`Workspace`) and the output names of its jobs
(:func:`safe_stem`)."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path


class Workspace:
    """The app's temporary folder: ``gradio/`` (Gradio's cache: uploads and served results) and
    ``jobs/<id>/`` (what each job writes)."""

    def __init__(self, parent: str | os.PathLike | None = None) -> None:
        if parent is not None:
            Path(parent).mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix="fadm_app_", dir=parent)).resolve()
        self.cache = self.root / "gradio"
        self.jobs = self.root / "jobs"
        self.cache.mkdir()
        self.jobs.mkdir()
        self._lock = threading.Lock()
        #: an API upload is removed this long after its last job let it go: Gradio stores
        #: uploads by content, so two clients sending the same file share one path, and the
        #: second one's call may start just after the first one's job ended
        self.upload_grace_s = 60.0
        self._holds: dict[Path, int] = {}
        self._released: dict[Path, float] = {}

    def new_job(self) -> Path:
        folder = self.jobs / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        folder.mkdir()
        return folder

    def prune(self, older_than_s: float) -> None:
        """Remove job folders last changed more than ``older_than_s`` seconds ago."""
        self.sweep_uploads()
        limit = time.time() - older_than_s
        with self._lock:
            for folder in self.jobs.iterdir():
                try:
                    if folder.stat().st_mtime < limit:
                        shutil.rmtree(folder, ignore_errors=True)
                except FileNotFoundError:
                    pass

    def _upload(self, path: str | os.PathLike | None) -> Path | None:
        if not path:
            return None
        path = Path(path).resolve()
        return path if self.cache in path.parents else None  # not an example file

    def hold_upload(self, path: str | os.PathLike | None) -> None:
        """A job uses this upload: it is not removed until every job using it let it go."""
        path = self._upload(path)
        if path is not None:
            with self._lock:
                self._holds[path] = self._holds.get(path, 0) + 1
                self._released.pop(path, None)

    def forget_upload(self, path: str | os.PathLike | None) -> None:
        """A job is done with this upload of Gradio's cache: it is removed (with its folder when
        that is left empty) ``upload_grace_s`` after the last job using it let it go."""
        path = self._upload(path)
        if path is None:
            return
        with self._lock:
            count = self._holds.get(path, 1) - 1
            if count > 0:
                self._holds[path] = count
            else:
                self._holds.pop(path, None)
                self._released[path] = time.monotonic()
        self.sweep_uploads()

    def sweep_uploads(self) -> None:
        """Remove the let-go uploads whose grace period is over."""
        now = time.monotonic()
        with self._lock:
            for path, released in list(self._released.items()):
                if path in self._holds or now - released < self.upload_grace_s:
                    continue
                del self._released[path]
                path.unlink(missing_ok=True)
                folder = path.parent
                while folder != self.cache and folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
                    folder = folder.parent

    def files(self) -> list[Path]:
        return sorted(p for p in self.root.rglob("*") if p.is_file())

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def safe_stem(path: str | os.PathLike, limit: int = 60) -> str:
    """A file name's stem fit for an output name: letters, digits, ``.``, ``-`` and ``_`` only,
    no leading dot, at most ``limit`` characters."""
    stem = re.sub(r"[^\w.-]+", "_", Path(path).stem)[:limit].strip("._")
    return stem or "input"


__all__ = ["Workspace", "safe_stem"]
