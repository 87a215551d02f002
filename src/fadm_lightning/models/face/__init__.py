"""Face detection, 68-point landmarks and identity embeddings shared by extractors and metrics."""

from fadm_lightning.models.face.dlib_face import DlibFace, DlibNotInstalledError

__all__ = ["DlibFace", "DlibNotInstalledError"]
