"""A model card: what a model is, what it takes, and what was measured on it, by which command.

Stored as JSON beside the model's safetensors weights. The registry (explorer.core.zoo) reads, lists and writes
cards; preprocessing (explorer.core.images) reads a card's input shape, normalization and `preprocess`. Both use
this module, which uses neither.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ModelCard:
    name: str                          # registry key, e.g. "mnist-cnn"
    family: str                        # "cnn" | "vit"
    task: str                          # "MNIST digits, 10 classes"
    architecture: str                  # key of architectures.ARCHITECTURES, or "custom"
    input_shape: tuple[int, int, int]  # (C, H, W)
    preprocess: str                    # "mnist" | "imagenet" | "resize": see core/images.py
    mean: tuple[float, ...]
    std: tuple[float, ...]
    labels: tuple[str, ...]
    n_params: int
    macs: int                          # multiply-accumulates per image (core/complexity.py)
    top1: float | None                 # test accuracy, a fraction; None when never measured
    evaluated_on: str                  # "MNIST test set, 10,000 images (split: test)"
    evaluated_date: str                # ISO date of the measurement
    evaluated_by: str                  # the command that measured it
    source: str                        # where the weights come from
    license: str
    weights: str                       # safetensors file name, beside the card
    sha256: str                        # of the weights file

    @classmethod
    def read(cls, path: Path) -> ModelCard:
        raw = json.loads(path.read_text())
        raw["input_shape"] = tuple(raw["input_shape"])
        for key in ("mean", "std", "labels"):
            raw[key] = tuple(raw[key])
        return cls(**raw)

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(dataclasses.asdict(self), indent=2) + "\n")

    def summary(self) -> str:
        accuracy = (f"not measured ({self.evaluated_on})" if self.top1 is None
                    else f"{self.top1:.2%} top-1 on {self.evaluated_on}")
        return (f"{self.name}: {self.task}; {self.n_params:,} parameters, {self.macs / 1e6:.2f} M MACs, "
                f"input {'x'.join(map(str, self.input_shape))}; {accuracy}")
