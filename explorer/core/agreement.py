"""Agreement: the "accuracy" of a model that has no labelled test set here (MobileNetV2: no ImageNet offline).

    agreement(f̃, f) = (1 / N) · Σᵢ [argmax f̃(xᵢ) = argmax f(xᵢ)]

is the fraction of images on which a changed model f̃ (pruned, quantized) keeps the top-1 class of the model f it
was made from. It is top-1 accuracy on the images labelled with f's own predictions (`labelled`), so
core/evaluate measures it like any accuracy (with its Wilson interval, evaluate.wilson_interval), and f itself
scores exactly 1.

The images, one set for every lesson that measures agreement (pruning and quantization, so that their numbers
compare): the gallery's photos (core/gallery.py: scikit-image samples inside its wheel), each in the versions of
RECIPES, the kind of change a camera or a data loader gives a model (Pillow, deterministic):

- as is, and mirrored left to right;
- five crops of CROP_SIDE of each side (four corners and the centre, as in Krizhevsky et al. 2012's ten-crop test);
- rotated by ±ROTATION_DEG degrees (bicubic), cut to the largest centred rectangle of the photo's shape that holds
  no corner the rotation left empty (`_inscribed_scale`);
- brightness and contrast × (1 ∓ TONE_STEP) (PIL.ImageEnhance: a blend with black, or with the mean grey).

len(photos) · len(RECIPES) images in all, recipe by recipe (every photo as is, then every photo mirrored, ...),
prepared for the model by core/images.py. Photos seen this many ways make the agreement a fraction of a hundred
images rather than of sixteen; its confidence interval still says how far that is from the truth.

Identity: `name` (the set's EvalSet.name, which keys kept measurements in core/measurements.py) ends with the
SHA-256 of the model-ready inputs. Other photos, other recipes, another preprocessing or another scikit-image
picture give another key, never an old value. `description` is the same name without the digest, for the student.

Tests (tests/core/test_agreement.py) check every version against its recipe done again with NumPy and SciPy, the
count and that building twice gives the same digest, the inputs against the versions prepared one by one, the
labels against the model's own argmax, accuracy 1 for the model itself, that the name changes with the photos,
and that a lookup does not run the model.
"""

from __future__ import annotations

import functools
import hashlib
import math
import threading
import weakref
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps
from torch import Tensor, nn

from explorer.core import evaluate, gallery, images
from explorer.core.card import ModelCard
from explorer.core.data import EvalSet

DIGEST_CHARS = 16  # of the inputs' SHA-256 hex digest, in the name: 64 bits, plenty to tell sets apart
CROP_SIDE = 0.8    # a crop keeps this fraction of the photo's width and of its height
ROTATION_DEG = 10.0
TONE_STEP = 0.3    # brightness and contrast factors 0.7 and 1.3


def crop_box(width: int, height: int, where: str, side: float = CROP_SIDE) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of a crop of `side` of each side: "centre" or a corner ("top-left", ...)."""
    w, h = round(side * width), round(side * height)
    left = {"left": 0, "right": width - w}.get(where.split("-")[-1], (width - w) // 2)
    top = {"top": 0, "bottom": height - h}.get(where.split("-")[0], (height - h) // 2)
    return left, top, left + w, top + h


def _inscribed_scale(width: int, height: int, degrees: float) -> float:
    """The largest s such that the centred s·width × s·height rectangle lies inside the photo rotated by `degrees`:
    its corners, turned back, must stay within the photo (s·(w·cos θ + h·sin θ) ≤ w, s·(w·sin θ + h·cos θ) ≤ h)."""
    c, s = math.cos(math.radians(abs(degrees))), math.sin(math.radians(abs(degrees)))
    return min(width / (width * c + height * s), height / (width * s + height * c))


def _crop(where: str) -> Callable[[Image.Image], Image.Image]:
    return lambda im: im.crop(crop_box(*im.size, where))


def _rotate(degrees: float) -> Callable[[Image.Image], Image.Image]:
    def rotated(im: Image.Image) -> Image.Image:
        turned = im.rotate(degrees, resample=Image.Resampling.BICUBIC)  # about the centre, counter-clockwise
        return turned.crop(crop_box(*im.size, "centre", _inscribed_scale(*im.size, degrees)))
    return rotated


def _enhance(kind: type[ImageEnhance._Enhance], factor: float) -> Callable[[Image.Image], Image.Image]:
    return lambda im: kind(im).enhance(factor)


RECIPES: dict[str, Callable[[Image.Image], Image.Image]] = {
    "as is": lambda im: im,
    "mirrored": ImageOps.mirror,
    **{f"{where} crop": _crop(where) for where in ("top-left", "top-right", "bottom-left", "bottom-right", "centre")},
    f"rotated {ROTATION_DEG:g}° left": _rotate(ROTATION_DEG),
    f"rotated {ROTATION_DEG:g}° right": _rotate(-ROTATION_DEG),
    "darker": _enhance(ImageEnhance.Brightness, 1 - TONE_STEP),
    "brighter": _enhance(ImageEnhance.Brightness, 1 + TONE_STEP),
    "less contrast": _enhance(ImageEnhance.Contrast, 1 - TONE_STEP),
    "more contrast": _enhance(ImageEnhance.Contrast, 1 + TONE_STEP),
}


def version(photo: np.ndarray, recipe: str) -> np.ndarray:
    """One photo (uint8 (H, W) or (H, W, 3)) made by `recipe`, as uint8 again."""
    return np.asarray(RECIPES[recipe](Image.fromarray(photo)))


def photos() -> list[np.ndarray]:
    """Every version of every gallery photo, recipe by recipe (uint8 arrays, as images.to_input takes them)."""
    originals = [item.source for item in gallery.photo_gallery()]
    return [version(p, recipe) for recipe in RECIPES for p in originals]


def count() -> int:
    """How many images the set holds (the n of an agreement), known without making them."""
    return len(gallery.photo_gallery()) * len(RECIPES)


def description() -> str:
    """The set in words: what the student reads."""
    return (f"{count()} images: {len(gallery.photo_gallery())} gallery photos in {len(RECIPES)} versions each "
            f"(as is, mirrored, five crops, rotated ±{ROTATION_DEG:g}°, darker, brighter, less and more contrast)")


@functools.lru_cache(maxsize=8)
def inputs(card: ModelCard) -> Tensor:
    """The images prepared for the model of `card`, (count(), C, H, W) float32 on the CPU; built once per card.
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
