"""Face networks of the evaluation protocols, loaded from user-supplied weight files.

* :mod:`.fan` — face-alignment's FAN + S3FD from local files (the AKD protocol's landmarks);
* :mod:`.openface` — OpenFace nn4.small2 with the OpenFacePytorch port's layout (AED);
* :mod:`.iresnet` — ArcFace's IResNet (CSIM; its 112×112 crop is :mod:`fadm_lightning.faces.alignment`);
* :mod:`.weights` — strict loading of user-supplied weight files.

dlib's detector, landmarks and embeddings (PyPI files) live in :mod:`fadm_lightning.faces`.
"""
