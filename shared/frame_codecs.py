"""The names of the frame codecs and their defaults: constants only, importing nothing.

The one list of codec names: :mod:`shared.framestore.codec` implements them, and the command lines that
offer them (``pipelines.caption --save-frames-codec``, ``pipelines.framestore build --codec``) take their
choices from here without importing Pillow, NumPy or pyarrow (the caption command's fast path stays light:
tests/test_caption_fastpath.py).
"""

from __future__ import annotations

CODECS = ("jpeg", "png", "webp-lossless", "raw")  # jpeg is lossy; the others store frames bit-exactly
DEFAULT_CODEC = "jpeg"
DEFAULT_QUALITY = 95  # JPEG quality 1-100 (why q95: shared/framestore/codec.py)
LOSSLESS = ("png", "webp-lossless", "raw")
