"""ONNX export of a model, optionally with chosen intermediate outputs (per-layer activations).

The TorchScript-based exporter (`dynamo=False`) is used: it needs no extra packages and records
forward hooks, which is how the intermediate outputs are exposed without changing the model.
Attention probabilities are exported the same way, from the hook points that `trace` reads them
from (our ViT's `probs` nn.Identity).

`export_model` writes the ONNX file and a metadata JSON beside it (labels, normalization, input
shape, and each output's name, layer, kind and shape): all a browser page needs to run the model
with onnxruntime-web. Tests (tests/core/test_export.py) compare onnxruntime's outputs with torch's
(max abs difference <= 1e-4) on random and real MNIST inputs, for the logits and every intermediate.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from explorer.core import trace
from explorer.errors import InputError

if TYPE_CHECKING:
    from explorer.core.zoo import ZooModel

OPSET = 17
INPUT_NAME = "input"
LOGITS_NAME = "logits"
MODEL_FILE = "model.onnx"
METADATA_FILE = "model.json"
FEATURE_MAP_LAYERS = 2  # conv layers whose outputs (and the activations after them) are exported by default


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


def to_onnx(module: nn.Module, path: str | Path, example: torch.Tensor, layers: Sequence[str] = (),
            dynamic_batch: bool = True) -> Path:
    """Write `module` as ONNX to `path`: input "input", outputs "logits" and one per layer in `layers`.

    `module` is exported on the CPU in float32 from a copy of its state, so a shared model is not moved.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapped = _WithIntermediates(copy.deepcopy(module), layers).cpu().float().eval()
    outputs = [LOGITS_NAME, *layers]  # each activation is named like its Trace record
    axes = {name: {0: "batch"} for name in [INPUT_NAME, *outputs]} if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter: see the module docstring
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # unpacking q, k, v: a fixed size of 3
        torch.onnx.export(wrapped, (example.detach().cpu().float().contiguous(),), str(path), dynamo=False,
                          opset_version=OPSET, input_names=[INPUT_NAME], output_names=outputs, dynamic_axes=axes)
    return path


def attention_probes(module: nn.Module) -> list[str]:
    """The names of the submodules whose outputs are attention probabilities (B, heads, T, T)."""
    return [f"{name}.{child}" for name, m in module.named_modules() if trace.kind_of(m) == "attention"
            for child in trace.PROBE_NAMES if isinstance(getattr(m, child, None), nn.Module)]


def default_layers(module: nn.Module) -> list[str]:
    """The first conv layers and the activations right after them (feature maps), and every attention probe."""
    layers, kinds = [], _kinds(module)
    for i, (name, kind) in enumerate(kinds):
        if kind == "conv" and sum(k == "conv" for _, k in kinds[:i]) < FEATURE_MAP_LAYERS:
            layers.append(name)
            after = next((n for n, k in kinds[i + 1:i + 4] if k == "activation"), None)  # conv -> norm -> act
            if after is not None:
                layers.append(after)
    return [*layers, *attention_probes(module)]


def export_model(model: ZooModel, out: str | Path, layers: Sequence[str] | None = None) -> Path:
    """Write `out`/model.onnx and `out`/model.json (see the module docstring); return the metadata's path.

    `layers` defaults to `default_layers(model.module)`.
    """
    out = Path(out)
    card = model.card
    layers = default_layers(model.module) if layers is None else list(layers)
    example = torch.zeros(1, *card.input_shape)
    to_onnx(model.module, out / MODEL_FILE, example, layers)
    probes = set(attention_probes(model.module))
    kinds = dict(_kinds(model.module))
    with torch.no_grad():
        values = _WithIntermediates(copy.deepcopy(model.module), layers).cpu().float().eval()(example)
    outputs = [{"name": LOGITS_NAME, "layer": None, "kind": "logits", "shape": list(values[0].shape)}]
    outputs += [{"name": layer, "layer": layer, "shape": list(value.shape),
                 "kind": "attention_probs" if layer in probes else kinds.get(layer, "other")}
                for layer, value in zip(layers, values[1:], strict=True)]
    metadata = {"name": card.name, "family": card.family, "task": card.task, "labels": list(card.labels),
                "input": {"name": INPUT_NAME, "shape": [1, *card.input_shape], "preprocess": card.preprocess,
                          "mean": list(card.mean), "std": list(card.std)},
                "outputs": outputs, "model_file": MODEL_FILE, "opset": OPSET,
                "top1": card.top1, "evaluated_on": card.evaluated_on, "license": card.license}
    path = out / METADATA_FILE
    path.write_text(json.dumps(metadata, indent=1))
    return path


def _kinds(module: nn.Module) -> list[tuple[str, str]]:
    """(name, kind) of the layers `trace` records by default, in order."""
    modules = dict(module.named_modules())
    return [(name, trace.kind_of(modules[name])) for name in trace.default_names(module)]
