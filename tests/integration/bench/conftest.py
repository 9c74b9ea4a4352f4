"""Fixtures of the bench tests: the pre-encoded media, encoded once per session into a temp dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.media_source import EncodedMedia, load_media


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media-cache")


@pytest.fixture(scope="session")
def media(media_dir: Path) -> EncodedMedia:
    """3 s of VP8 (one keyframe, at frame 0) and Opus."""
    return load_media(media_dir, seconds=3)
