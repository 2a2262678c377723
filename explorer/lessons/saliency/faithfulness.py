"""Faithfulness of a saliency map: does removing what it points at change the prediction?

Deletion and insertion (Petsiuk et al., "RISE: Randomized Input Sampling for Explanation of Black-box Models",
2018, §4.1). Rank the H·W pixels by the map, largest (most positive) first; ties keep reading order (row by row).
At step k of n, the first m_k = ⌊k·H·W / n⌋ pixels are changed in every channel, and the curve is the target class's
softmax probability against the fraction m_k / (H·W):

    deletion    the ranked pixels are set to black (a zero-intensity pixel through the model's normalisation,
                `black`; the zero input when unknown): a faithful map makes the probability fall fast (small area)
    insertion   the ranked pixels of x are revealed on a blurred copy of x (Gaussian, σ = max(H, W) / 10 px, as
                Integrated Gradients' blurred baseline) or on black: a faithful map makes it rise fast (large area)

The area under the curve is the trapezoid rule over those fractions. The n + 1 images go through the model in
batches, in eval mode, on the model's own device; the model is never modified.

Tests (tests/lessons/test_saliency_faithfulness.py) compare both curves with a plain NumPy loop over the pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from explorer.errors import InputError, choice
from explorer.lessons.saliency.math import BATCH, as_input_of, black_image, blurred, class_scores, evaluating

INSERTION_STARTS: tuple[str, ...] = ("blurred", "black")


@dataclass(frozen=True)
class Curve:
    fractions: np.ndarray      # (steps + 1,) share of the pixels changed, from 0 to 1
    probabilities: np.ndarray  # (steps + 1,) the target class's softmax probability at each fraction
    area: float                # area under the curve (trapezoid rule)


def deletion_curve(model: nn.Module, x: Tensor, heat: np.ndarray, target: int, steps: int = 20,
                   black: tuple[float, ...] | None = None) -> Curve:
    """Set the pixels of x (1, C, H, W) to black, the most attributed first (see the module)."""
    return _curve(model, x, heat, target, steps, lambda xs: (xs, black_image(xs, black)))


def insertion_curve(model: nn.Module, x: Tensor, heat: np.ndarray, target: int, steps: int = 20,
                    start: str = "blurred", black: tuple[float, ...] | None = None) -> Curve:
    """Reveal the pixels of x (1, C, H, W) on a blurred (or black) image, the most attributed first (see the module)."""
    choice(start, INSERTION_STARTS, "insertion start")
    return _curve(model, x, heat, target, steps,
                  lambda xs: (blurred(xs) if start == "blurred" else black_image(xs, black), xs))


def pixel_order(heat: np.ndarray) -> np.ndarray:
    """(H·W,) flat pixel indices, the largest value of the map first, ties in reading order."""
    return np.argsort(-np.asarray(heat, dtype=np.float64).ravel(), kind="stable")


def _curve(model: nn.Module, x: Tensor, heat: np.ndarray, target: int, steps: int,
           ends: Callable[[Tensor], tuple[Tensor, Tensor]]) -> Curve:
    """The curve from ends(x) = (the image with no pixel changed, the image with every pixel changed)."""
    h, w = x.shape[-2:]
    if x.dim() != 4 or x.shape[0] != 1:
        raise InputError(f"a faithfulness curve is for one input of shape (1, C, H, W), got {tuple(x.shape)}.")
    if np.shape(heat) != (h, w):
        raise InputError(f"the map has shape {np.shape(heat)} but the input is {h}×{w} px; pass the map made for "
                         "this input (Attribution.heat).")
    if not 1 <= steps <= h * w:
        raise InputError(f"the curve needs from 1 to {h * w} steps (one per pixel at most), got {steps}.")
    changed = torch.arange(steps + 1) * (h * w) // steps  # (steps + 1,) m_k, exact integers
    rank = torch.empty(h * w, dtype=torch.long)
    rank[torch.from_numpy(pixel_order(heat))] = torch.arange(h * w)  # rank[p]: where pixel p comes in the order
    with evaluating(model) as m, torch.no_grad():
        x = as_input_of(m, x)
        before, after = ends(x)
        masks = (rank[None, :] < changed[:, None]).reshape(steps + 1, 1, h, w).to(x)  # 1 where changed
        probabilities = torch.cat([
            class_scores(m(before + mask * (after - before)).softmax(dim=-1), target)
            for mask in masks.split(BATCH)]).double().cpu().numpy()
    fractions = (changed.double() / (h * w)).numpy()
    return Curve(fractions, probabilities, float(np.trapezoid(probabilities, fractions)))
