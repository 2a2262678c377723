"""A private, empty cache of kept measurements for a test."""

from __future__ import annotations

from pathlib import Path

import pytest

from explorer.core import paths


def empty_measurements_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point EXPLORER_CACHE at a new folder that links everything of the user cache (MNIST, fetched models, int8
    files) but the kept measurements: measuring starts from nothing, and nothing measured is kept for later."""
    private = tmp_path / "cache"
    private.mkdir()
    for entry in paths.cache_dir().iterdir():
        if entry.name != "measurements":
            (private / entry.name).symlink_to(entry)
    monkeypatch.setenv(paths.CACHE_ENV_VAR, str(private))
    return private
