"""What Bokeh draws of an image_rgba source, in NumPy: the reference the tests read pictures back from."""

from __future__ import annotations

import numpy as np


def read_back(pictures: dict, shape: tuple[int, int], x: float, y: float, dw: float, dh: float) -> np.ndarray:
    """The picture of `shape` meant to fill the rectangle (x, y, dw, dh), read back from an image_rgba source's
    data at each of its cells' centres: the pixel there of the last picture that is not transparent, as Bokeh
    draws them (each picture scaled nearest-neighbour into its own rectangle, later ones on top)."""
    h, w = shape
    ys, xs = y + (np.arange(h) + 0.5) * dh / h, x + (np.arange(w) + 0.5) * dw / w
    seen = np.zeros((h, w), np.uint32)
    for image, left, top, width, height in zip(*(pictures[k] for k in ("image", "x", "y", "dw", "dh")), strict=True):
        rows = np.floor((ys - top) * image.shape[0] / height).astype(int)
        cols = np.floor((xs - left) * image.shape[1] / width).astype(int)
        inside = ((rows >= 0) & (rows < image.shape[0]))[:, None] & ((cols >= 0) & (cols < image.shape[1]))[None, :]
        pixels = image[np.ix_(rows.clip(0, image.shape[0] - 1), cols.clip(0, image.shape[1] - 1))]
        seen = np.where(inside & (pixels != 0), pixels, seen)  # 0: transparent, covers nothing
    return seen
