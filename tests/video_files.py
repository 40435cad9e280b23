"""Helpers for tests that lay out video folders: empty placeholder files and a fresh listing cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.paths import clear_index_cache


@pytest.fixture(autouse=True)
def fresh_listing_cache():
    """Each test sees video folders as they are now, not as an earlier test listed them."""
    clear_index_cache()
    yield
    clear_index_cache()


def touch(root: Path, rel: str) -> Path:
    """An empty placeholder file at ``root/rel`` (parents created)."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path
