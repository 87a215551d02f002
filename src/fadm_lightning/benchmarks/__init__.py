"""Benchmarks: ``python -m fadm_lightning.benchmarks.<name>`` (see each module's docstring)."""
