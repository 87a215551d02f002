"""Evaluation: the paper's Tables 1–3 and every table of numbers (entry points:
``python -m fadm_lightning.evaluate`` and ``python -m fadm_lightning.report``).

* :mod:`~fadm_lightning.evaluation.protocols` — the protocols (``reconstruction``,
  ``cross_identity``) and :class:`EvaluationError`;
* :mod:`~fadm_lightning.evaluation.systems` — the models evaluated (``ckpt=``, ``model=``,
  ``extra_ckpts``) and their row names from the training overrides;
* :mod:`~fadm_lightning.evaluation.items` — the test data of each protocol as items;
* :mod:`~fadm_lightning.evaluation.store` — ``per_clip.csv``, FID features, resuming;
* :mod:`~fadm_lightning.evaluation.evaluator` — :class:`Evaluator`, :func:`aggregate` and the
  :func:`evaluate` driver;
* :mod:`~fadm_lightning.evaluation.tables` — the one number format, the evaluation's tables and
  the end-of-run results table of training (:func:`results_table`, :func:`format_table`);
* :mod:`~fadm_lightning.evaluation.report` — the Table-3 comparison of a multirun (:func:`gather`);
* :mod:`~fadm_lightning.evaluation.videos` and :mod:`~fadm_lightning.evaluation.loggers` — the
  side-by-side videos, and the results to W&B.
"""

from fadm_lightning.evaluation.evaluator import Evaluator, aggregate, evaluate
from fadm_lightning.evaluation.protocols import PROTOCOLS, EvaluationError
from fadm_lightning.evaluation.report import ReportCallback, gather
from fadm_lightning.evaluation.store import ResultStore
from fadm_lightning.evaluation.systems import System, load_systems
from fadm_lightning.evaluation.tables import (
    TableColumn,
    format_table,
    format_value,
    results_table,
)

__all__ = [
    "PROTOCOLS",
    "EvaluationError",
    "Evaluator",
    "ReportCallback",
    "ResultStore",
    "System",
    "TableColumn",
    "aggregate",
    "evaluate",
    "format_table",
    "format_value",
    "gather",
    "load_systems",
    "results_table",
]
