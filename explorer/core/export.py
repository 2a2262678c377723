"""ONNX export of a model, optionally with chosen intermediate outputs (per-layer activations).

The TorchScript-based exporter (`dynamo=False`) is used: it needs no extra packages and records
forward hooks, which is how the intermediate outputs are exposed without changing the model.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from explorer.errors import InputError

OPSET = 17
INPUT_NAME = "input"
LOGITS_NAME = "logits"


class _WithIntermediates(nn.Module):
    """Returns (logits, *outputs of the named submodules), collected with forward hooks."""

    def __init__(self, module: nn.Module, layers: Sequence[str]):
        super().__init__()
        self.module, self.layers = module, tuple(layers)
        submodules = dict(module.named_modules())
        missing = [name for name in self.layers if name not in submodules]
        if missing:
            raise InputError(f"the model has no layer named {', '.join(missing)}")
        self._targets = [submodules[name] for name in self.layers]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        seen: dict[str, torch.Tensor] = {}
        handles = [target.register_forward_hook(self._keep(name, seen))
                   for name, target in zip(self.layers, self._targets, strict=True)]
        try:
            logits = self.module(x)
        finally:
            for handle in handles:
                handle.remove()
        return (logits, *(seen[name] for name in self.layers))

    @staticmethod
    def _keep(name: str, seen: dict[str, torch.Tensor]):
        def hook(_module, _inputs, output):
            seen[name] = output
        return hook


def output_name(layer: str) -> str:
    """The ONNX output name of a layer's activation (ONNX names may not contain '.')."""
    return layer.replace(".", "/")


def to_onnx(module: nn.Module, path: str | Path, example: torch.Tensor, layers: Sequence[str] = (),
            dynamic_batch: bool = True) -> Path:
    """Write `module` as ONNX to `path`: input "input", outputs "logits" and one per layer in `layers`.

    `module` is exported on the CPU in float32 from a copy of its state, so a shared model is not moved.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapped = _WithIntermediates(copy.deepcopy(module), layers).cpu().float().eval()
    outputs = [LOGITS_NAME, *(output_name(layer) for layer in layers)]
    axes = {name: {0: "batch"} for name in [INPUT_NAME, *outputs]} if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter: see the module docstring
        torch.onnx.export(wrapped, (example.detach().cpu().float().contiguous(),), str(path), dynamo=False,
                          opset_version=OPSET, input_names=[INPUT_NAME], output_names=outputs, dynamic_axes=axes)
    return path
