"""The one place that picks where tensors live: CUDA, then Apple's MPS, then the CPU.

Set EXPLORER_DEVICE (e.g. "cpu", "cuda", "cuda:1", "mps") to override; an unusable
override is an error rather than a silent fallback.
"""

from __future__ import annotations

import functools
import os

import torch

from explorer.errors import InputError

ENV_VAR = "EXPLORER_DEVICE"


def pick_device(requested: str | None = None) -> torch.device:
    """The device named by `requested` (or $EXPLORER_DEVICE), else the best one available."""
    requested = requested if requested is not None else os.environ.get(ENV_VAR, "").strip()
    if requested:
        return _checked(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@functools.cache
def device() -> torch.device:
    """The process-wide device, chosen once. On CUDA, TensorFloat-32 is switched off: it rounds convolution and
    matrix inputs to 10 mantissa bits (about 1e-3 relative), and every number the explorer shows must be the
    float32 model's own, equal to the CPU's and to the references the tests use."""
    dev = pick_device()
    if dev.type == "cuda":
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    return dev


def describe(dev: torch.device | None = None) -> str:
    """A one-line description for `explorer info` and the app's sidebar."""
    dev = dev or device()
    if dev.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(dev)})"
    if dev.type == "mps":
        return "mps (Apple GPU)"
    return f"cpu ({torch.get_num_threads()} threads)"


def _checked(name: str) -> torch.device:
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise InputError(f"{ENV_VAR}={name!r} is not a device name; use cpu, cuda, cuda:N or mps.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"{ENV_VAR}={name!r} asks for CUDA, but this PyTorch build sees no CUDA GPU; "
                         "unset it or install a CUDA build of torch (see README).")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InputError(f"{ENV_VAR}={name!r}: only {torch.cuda.device_count()} CUDA device(s) are present.")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"{ENV_VAR}={name!r} asks for MPS, which is not available here; unset it.")
    if dev.type not in {"cpu", "cuda", "mps"}:
        raise InputError(f"{ENV_VAR}={name!r}: the explorer runs on cpu, cuda or mps.")
    return dev
