"""Face detection, 68-point landmarks and identity embeddings shared by extractors and metrics.

* :mod:`.dlib_face` — dlib's detector, 68 landmarks and 128-d embeddings (PyPI files);
* :mod:`.fan` — face-alignment's FAN + S3FD from local files (the AKD protocol's landmarks);
* :mod:`.openface` — OpenFace nn4.small2 with the OpenFacePytorch port's layout (AED);
* :mod:`.iresnet`, :mod:`.alignment` — ArcFace's IResNet and its 112×112 5-point crop (CSIM);
* :mod:`.weights` — strict loading of user-supplied weight files.
"""

from fadm_lightning.models.face.dlib_face import DlibFace, DlibNotInstalledError

__all__ = ["DlibFace", "DlibNotInstalledError"]
