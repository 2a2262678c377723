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
