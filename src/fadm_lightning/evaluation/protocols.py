"""The two evaluation protocols (name → the paper's table it reproduces) and
:class:`EvaluationError`, raised before anything is loaded or written when the configuration
cannot be evaluated. The lowest module of :mod:`fadm_lightning.evaluation`: every other one may
import it."""

from __future__ import annotations

PROTOCOLS = {
    "reconstruction": "Same-identity reconstruction (paper Table 1)",
    "cross_identity": "Cross-identity reenactment (paper Table 2)",
}


class EvaluationError(RuntimeError):
    """The evaluation cannot start as configured; the message says what to change."""
