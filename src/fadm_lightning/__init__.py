"""fadm_lightning: FADM (Zeng et al., CVPRW 2023) in PyTorch Lightning + Hydra."""

__version__ = "0.1.0"
