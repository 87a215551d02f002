"""Faces in frames: detection (:mod:`.dlib_face`, :mod:`.detection`), tubes over time
(:mod:`.tubes`), square crop boxes, cutting and paste-back (:mod:`.crop`: one crop policy for
preprocessing, inference and metrics), crops of a portrait or a video (:mod:`.scan`) and
ArcFace's 5-point alignment (:mod:`.alignment`). Below everything but media: it imports nothing
else of fadm_lightning."""

from fadm_lightning.faces.crop import FaceCrop, center_crop, cut_square, soft_mask, square_crop_box
from fadm_lightning.faces.detection import FaceFinder
from fadm_lightning.faces.dlib_face import DlibFace, DlibNotInstalledError
from fadm_lightning.faces.scan import NoFaceFoundError, image_crop, scan_video, video_crop

__all__ = [
    "DlibFace",
    "DlibNotInstalledError",
    "FaceCrop",
    "FaceFinder",
    "NoFaceFoundError",
    "center_crop",
    "cut_square",
    "image_crop",
    "scan_video",
    "soft_mask",
    "square_crop_box",
    "video_crop",
]
