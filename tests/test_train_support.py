"""Deprecated: the colour-retrieval helpers live in tests/helpers.py (import them from there).

Kept only as a re-export while test modules still import from here; remove once none does.
"""

from tests.helpers import COLOURS, colour_captions, colour_videos, tiny_config  # noqa: F401
