"""Fixtures shared by every test: a fresh, printed random seed (STYLE C12)."""

from __future__ import annotations

import os

import pytest
import torch


@pytest.fixture
def rng() -> torch.Generator:
    seed = int.from_bytes(os.urandom(4), "little")
    print(f"torch seed {seed}")  # pytest shows it on failure; reproduce with manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def seed(rng: torch.Generator) -> int:
    return rng.initial_seed()


@pytest.fixture
def fresh_agreement_caches():
    """The agreement set's inputs and name are forgotten before and after the test (a test that changes the photos)."""
    from explorer.core import agreement

    agreement.inputs.cache_clear()
    agreement.name.cache_clear()
    yield
    agreement.inputs.cache_clear()
    agreement.name.cache_clear()


@pytest.fixture
def other_photos(monkeypatch, fresh_agreement_caches):
    """A call replaces the gallery's first photo by its negative (same count, names and words) and forgets the
    agreement set built from the old photos."""
    def replace() -> None:
        import dataclasses

        from explorer.core import agreement, gallery

        items = gallery.photo_gallery()
        negative = dataclasses.replace(items[0], source=255 - items[0].source)
        monkeypatch.setattr(gallery, "photo_gallery", lambda: (negative, *items[1:]))
        agreement.inputs.cache_clear()
        agreement.name.cache_clear()

    return replace
