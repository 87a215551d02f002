"""The errors of the loaders: every checkpoint or folder that does not fit is a
:class:`CheckpointError` whose message names the file and lists the differing keys (a
:class:`~fadm_lightning.models.errors.WeightsError`, like every loader's error)."""

from __future__ import annotations

from fadm_lightning.models.errors import WeightsError


class CheckpointError(WeightsError):
    """A checkpoint that does not fit; the message names the file and lists the differences."""


class PretrainedFolderError(CheckpointError):
    """A pretrained folder that cannot be read or written; the message names the folder or the
    file and lists what differs."""
