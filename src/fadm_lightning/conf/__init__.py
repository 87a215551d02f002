"""The Hydra configs (``train.yaml``, ``evaluate.yaml``, … and their groups), shipped inside the
package so that an installed package, or a wheel imported as a zip, finds them from any folder.

The repository's top-level ``conf/`` is a link to this folder: edit the configs there. This file
makes the folder a package, which Hydra's ``pkg://fadm_lightning.conf`` search path requires.
"""
