"""What a training data set could not read, carried inside its items.

Training datasets replace an item they cannot read and report what they skipped inside the item
(:func:`encode_skipped` / :func:`decode_skipped` under the key :data:`SKIPPED_KEY`), so the
report survives DataLoader worker processes
(:class:`~fadm_lightning.callbacks.data_errors.DataErrorsCallback` collects it).
"""

from __future__ import annotations

from collections.abc import Sequence

SKIPPED_KEY = "skipped"


def encode_skipped(entries: Sequence[tuple[str, str]]) -> str:
    """``[(name, reason), …]`` as one string (one ``name<TAB>reason`` line each; "" when none).

    A string collates into a list of strings, whatever the number of entries per item.
    """
    return "\n".join(f"{name}\t{' '.join(str(reason).split())}" for name, reason in entries)


def decode_skipped(value: str) -> list[tuple[str, str]]:
    """Inverse of ``encode_skipped``."""
    out = []
    for line in value.splitlines():
        name, _, reason = line.partition("\t")
        if name:
            out.append((name, reason))
    return out
