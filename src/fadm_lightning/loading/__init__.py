"""Loading and saving FADM models, below the pipeline: a training checkpoint
(:mod:`~fadm_lightning.loading.training`), a pretrained folder
(:mod:`~fadm_lightning.loading.folder`, its card :mod:`~fadm_lightning.loading.card`) and their
errors (:mod:`~fadm_lightning.loading.errors`). These modules are handed the pipeline class and
never import it; :mod:`fadm_lightning.checkpoints` (``load_pipeline``) and
:mod:`fadm_lightning.pretrained` bind it and are what commands and users import.
"""
