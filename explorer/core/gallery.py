"""Gallery inputs: MNIST test digits from the shipped sample, scikit-image's photos for other models.

Only scikit-image sample images that ship inside its wheel are used (never ones it downloads).
Built once per process; no UI imports, so tests and lessons can use it too.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import skimage.data

from explorer.core import data, zoo

DIGITS_PER_CLASS = 3
# scikit-image sample images inside its wheel, with what they show (ImageNet has classes for most).
PHOTOS = {
    "chelsea": "a tabby cat (Chelsea)",
    "coffee": "a cup of espresso",
    "astronaut": "astronaut Eileen Collins",
    "rocket": "a rocket on its launch pad",
    "camera": "a photographer with a camera (grayscale)",
    "coins": "old coins (grayscale)",
    "retina": "a retina photograph",
    "colorwheel": "a colour wheel",
}


@dataclass(frozen=True, eq=False)
class GalleryItem:
    key: str              # stable id: "mnist-1234" (test-set index) or the scikit-image name
    description: str      # shown to the student and used as alt text
    source: np.ndarray    # what is handed to images.to_input: uint8 (H, W) or (H, W, 3)
    label: str | None     # the true class, where known


@functools.cache
def mnist_gallery() -> tuple[GalleryItem, ...]:
    """The first DIGITS_PER_CLASS sample digits of each class, in class order."""
    sample = data.mnist("sample")
    items = []
    for digit in range(10):
        for i in np.flatnonzero(sample.labels == digit)[:DIGITS_PER_CLASS]:
            index = int(sample.indices[i])
            items.append(GalleryItem(f"mnist-{index}", f"MNIST test digit {digit} (#{index})", sample.images[i],
                                     str(digit)))
    return tuple(items)


@functools.cache
def photo_gallery() -> tuple[GalleryItem, ...]:
    return tuple(GalleryItem(name, f"{text} (scikit-image)", getattr(skimage.data, name)(), None)
                 for name, text in PHOTOS.items())


def gallery_for(card: zoo.ModelCard) -> tuple[GalleryItem, ...]:
    """Digits for MNIST-style models, photos for the others."""
    return mnist_gallery() if card.preprocess == "mnist" else photo_gallery()


def find(card: zoo.ModelCard, key: str) -> GalleryItem:
    from explorer.errors import choice

    items = {item.key: item for item in gallery_for(card)}
    return items[choice(key, items, "gallery image")]
