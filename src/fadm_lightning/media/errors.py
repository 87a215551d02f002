"""The errors of media reading: each names the file and the problem."""


class VideoReadError(RuntimeError):
    """A clip that cannot be read; the message names the file and the problem."""


class ImageReadError(VideoReadError):
    """An image (a PNG frame, a source portrait) that cannot be read; the message names it."""
