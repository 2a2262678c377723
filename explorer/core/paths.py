"""Where the explorer keeps things: shipped files beside the package, downloads in the user cache."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

# models/ and assets/ live at the top of the checkout (README: install with `pip install -e .`).
ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"
ASSETS = ROOT / "assets"
CACHE_ENV_VAR = "EXPLORER_CACHE"


def cache_dir() -> Path:
    """The user cache for fetched data and weights; $EXPLORER_CACHE overrides it."""
    path = Path(os.environ.get(CACHE_ENV_VAR) or platformdirs.user_cache_dir("nn-explorer"))
    path.mkdir(parents=True, exist_ok=True)
    return path
