"""Device choice: CUDA, then MPS, then CPU; EXPLORER_DEVICE overrides; bad overrides are errors."""

from __future__ import annotations

import pytest
import torch

from explorer.core import device
from explorer.errors import InputError


def test_default_is_the_best_available(monkeypatch):
    monkeypatch.delenv(device.ENV_VAR, raising=False)
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert device.pick_device().type == expected


def test_cuda_is_preferred_then_mps(monkeypatch):
    monkeypatch.delenv(device.ENV_VAR, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert device.pick_device().type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert device.pick_device().type == "mps"


def test_environment_variable_overrides(monkeypatch):
    monkeypatch.setenv(device.ENV_VAR, "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert device.pick_device() == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for a machine without CUDA")
def test_asking_for_missing_cuda_is_an_error(monkeypatch):
    monkeypatch.setenv(device.ENV_VAR, "cuda")
    with pytest.raises(InputError, match="asks for CUDA, but this PyTorch build sees no CUDA GPU"):
        device.pick_device()


@pytest.mark.parametrize("name, message", [
    ("gpu0", "is not a device name; use cpu, cuda, cuda:N or mps"),
    ("meta", "the explorer runs on cpu, cuda or mps"),
])
def test_bad_override_names_are_errors(monkeypatch, name, message):
    monkeypatch.setenv(device.ENV_VAR, name)
    with pytest.raises(InputError, match=message):
        device.pick_device()


def test_describe_names_the_device():
    assert device.describe(torch.device("cpu")).startswith("cpu (")
