"""Agreement: the "accuracy" of a model that has no labelled test set here (MobileNetV2: no ImageNet offline).

    agreement(f̃, f) = (1 / N) · Σᵢ [argmax f̃(xᵢ) = argmax f(xᵢ)]

is the fraction of images on which a changed model f̃ (pruned, quantized) keeps the top-1 class of the model f it
was made from. It is top-1 accuracy on the images labelled with f's own predictions (`labelled`), so
core/evaluate measures it like any accuracy, and f itself scores exactly 1.

The images, one set for every lesson that measures agreement (pruning and quantization, so that their numbers
compare): the gallery's photos (core/gallery.py: scikit-image samples inside its wheel), then the same photos
mirrored left to right, 2 · len(photos) in all, prepared for the model by core/images.py.

Identity: `name` (the set's EvalSet.name, which keys kept measurements in core/measurements.py) ends with the
SHA-256 of the model-ready inputs. Other photos, another preprocessing or another scikit-image picture give
another key, never an old value. `description` is the same name without the digest, for the student.

Tests (tests/core/test_agreement.py) check the inputs against the photos prepared one by one, the labels against
the model's own argmax, accuracy 1 for the model itself, that the name changes with the photos, and that a
lookup does not run the model.
"""

from __future__ import annotations

import functools
import hashlib
import threading
import weakref

import numpy as np
import torch
from torch import Tensor, nn

from explorer.core import evaluate, gallery, images
from explorer.core.card import ModelCard
from explorer.core.data import EvalSet

DIGEST_CHARS = 16  # of the inputs' SHA-256 hex digest, in the name: 64 bits, plenty to tell sets apart


def photos() -> list[np.ndarray]:
    """The gallery's photos, then each mirrored left to right (uint8 arrays, as images.to_input takes them)."""
    originals = [item.source for item in gallery.photo_gallery()]
    return originals + [np.ascontiguousarray(p[:, ::-1]) for p in originals]


def description() -> str:
    """The set in words: what the student reads."""
    return f"{len(gallery.photo_gallery())} gallery photos and their mirror images"


@functools.lru_cache(maxsize=8)
def inputs(card: ModelCard) -> Tensor:
    """The photos prepared for the model of `card`, (2 · photos, C, H, W) float32 on the CPU; built once per card.
    Shared read-only by every caller (the quantization lesson calibrates activation ranges on it too)."""
    return torch.cat([images.to_input(p, card) for p in photos()])


@functools.lru_cache(maxsize=8)
def name(card: ModelCard) -> str:
    """The set's EvalSet.name for the model of `card`: `description()`, then the digest of its inputs. Known
    without running the model (labels depend on the model's weights, which a measurement's key names anyway)."""
    digest = hashlib.sha256(inputs(card).contiguous().numpy().tobytes()).hexdigest()
    return f"{description()}, inputs sha256 {digest[:DIGEST_CHARS]}"


def labelled(model: nn.Module, x: Tensor, set_name: str) -> EvalSet:
    """`x` labelled with `model`'s own top-1: accuracy on it is agreement with `model`."""
    unlabelled = EvalSet(set_name, x, torch.zeros(len(x), dtype=torch.int64))
    return EvalSet(set_name, x, evaluate.predictions(model, unlabelled))


def agreement_set(model: nn.Module, card: ModelCard) -> EvalSet:
    """The photos, labelled by `model` (the unchanged, shared model of `card`): built once per model object."""
    set_name = name(card)
    with _lock:
        known = _sets.get(model)
    if known is None or known.name != set_name:  # a new name: other photos, labelled afresh
        known = labelled(model, inputs(card), set_name)
        with _lock:
            _sets[model] = known
    return known


_sets: weakref.WeakKeyDictionary[nn.Module, EvalSet] = weakref.WeakKeyDictionary()
_lock = threading.Lock()
