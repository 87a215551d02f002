"""The errors of the loaders: every checkpoint or folder that does not fit is a
:class:`CheckpointError` whose message names the file and lists the differing keys."""

from __future__ import annotations


class CheckpointError(RuntimeError):
    """A checkpoint that does not fit; the message names the file and lists the differences."""


class PretrainedFolderError(CheckpointError):
    """A pretrained folder that cannot be read or written; the message names the folder or the
    file and lists what differs."""
