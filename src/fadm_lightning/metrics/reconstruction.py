"""Names of the FOMM pretraining's evaluation metrics (``experiment=fomm_pretrain``): per-frame
mean |·| against the driving frame, logged as ``<stage>/<name>`` by
:class:`~fadm_lightning.systems.fomm.FOMMLitModule` and shown one row each in the results table
(:func:`fadm_lightning.evaluation.tables.results_table`). Kept here, below both, so that the
system and the table read one list."""

from __future__ import annotations

# per-frame mean |·| against the driving frame, logged as <stage>/<name>, with their table rows:
# the reconstruction, copying the source frame, and the source image warped by the predicted
# motion without the decoder (``deformed``), which tells whether the motion or the decoder limits
# the reconstruction
EVAL_METRICS = {
    "l1": "FOMM reconstruction",
    "l1_copy_source": "copy the source frame",
    "l1_warped_source": "source warped by the motion (no decoder)",
}
