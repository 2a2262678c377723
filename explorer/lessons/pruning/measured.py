"""The pruning lesson's accuracies, kept: measured once per model and setting, then shown at once.

A point is the top-1 accuracy (MNIST) or agreement with the dense model (other models: core/agreement.py, the
images the quantization lesson uses too) of `math.prune(...)` on `held_out(model)`: the same pruned model whose
predictions the lesson shows (`math.measure`). `sample_size` is how many images that is: the n of the 95 % Wilson
interval the views show (core/evaluate.py). Points are kept by core/measurements.py under what="pruning",
setting {"method", "amount", "scope", "only"} and the held-out set's name (`dataset_id`; for the photos it holds
the digest of their inputs): stored beside the card by `explorer measure NAME` for the points `plan` lists, in the
on-disk cache (shared by every session and server process) for any other point the lesson measures. A lookup
builds nothing: no pruned copy, no labels for the photos.

The lesson's reading of them is here too: `curve` (the known points of one curve, with their 95 % Wilson
intervals: core/evaluate.py), `read_off` (the slider's
value between two of them, until its own is measured), `recalibrated` (the BatchNorm repair's before and after).

`plan` lists every point of the accuracy-vs-sparsity curves (each method and scope at CURVE_AMOUNTS) and the
per-layer sensitivities at SENSITIVITY_AMOUNTS (each method, each layer alone). At amount 0 nothing is pruned:
that one point (the dense model) is kept once, as method "none".

Tests (tests/lessons/test_pruning_measured.py) check kept values against the pruned model's own count, that a
stored plan covers what the lesson asks for, that a point is measured once however many threads ask, that a
kept point is found without pruning or copying anything, and `curve`, `read_off` and `recalibrated` against counts
and interpolation by hand.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from explorer.core import agreement, data, evaluate, measurements, zoo
from explorer.core.data import EvalSet, eval_set
from explorer.lessons.pruning import math as pm

WHAT = "pruning"
CURVE_AMOUNTS = (0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
SENSITIVITY_AMOUNTS = (0.4, 0.5, 0.8)  # the slider's default and the guided tour's stops
SCOPES = tuple(pm.SCOPES)
CALIBRATION_IMAGES = 1000  # MNIST training digits used to re-estimate BatchNorm statistics


@functools.lru_cache(maxsize=4)
def held_out(model_name: str) -> EvalSet:
    """MNIST test set for MNIST models; otherwise the agreement photos (core/agreement.py), labelled by the dense
    model (accuracy on it is agreement with the dense model)."""
    model = zoo.load(model_name)
    if model.card.preprocess == "mnist":
        return eval_set("test", model.card.mean, model.card.std)
    return agreement.agreement_set(model.module, model.card)


def quantity(model: zoo.ZooModel) -> str:
    """What a point measures, in a word: accuracy on MNIST's test digits, else agreement with the dense model."""
    return "accuracy" if model.card.preprocess == "mnist" else "agreement"


def dataset_name(model: zoo.ZooModel) -> str:
    """The images the accuracy (or agreement) is measured on, in words, for the student."""
    return held_out(model.name).name if model.card.preprocess == "mnist" else agreement.description()


def sample_size(model: zoo.ZooModel) -> int:
    """How many images a point is measured on (the n of its confidence interval), without labelling the photos."""
    return len(held_out(model.name)) if model.card.preprocess == "mnist" else agreement.count()


def dataset_id(model: zoo.ZooModel) -> str:
    """held_out(model).name, the dataset of the measurements' keys, without labelling the photos (no forward pass)."""
    return dataset_name(model) if model.card.preprocess == "mnist" else agreement.name(model.card)


@dataclass(frozen=True)
class Point:
    """One measurement: `method` at `amount` ranked within each layer or globally (`scope`), all layers or
    `only` one."""

    method: str
    amount: float
    scope: str = "layer"
    only: str | None = None

    def setting(self) -> dict[str, object]:
        if self.amount == 0:  # nothing pruned: the dense model, whatever the method
            return {"method": "none", "amount": 0.0, "scope": "layer", "only": None}
        return {"method": self.method, "amount": round(self.amount, 4), "scope": self.scope, "only": self.only}

    @property
    def key(self) -> str:
        """The same text for points that measure the same thing (every method and scope at 0 %)."""
        return measurements.Key.of(WHAT, self.setting(), "").setting


def curve_points(scope: str) -> tuple[Point, ...]:
    return tuple(Point(method, amount, scope) for method in pm.METHODS for amount in CURVE_AMOUNTS)


def sensitivity_points(model: zoo.ZooModel, method: str, amount: float) -> tuple[Point, ...]:
    return tuple(Point(method, amount, "layer", name) for name in pm.sensitivity_layers(model.module, method))


def kept(model: zoo.ZooModel, point: Point) -> float | None:
    """The kept value of `point` (stored beside the card or in the on-disk cache), or None: never measures."""
    return measurements.Measurer.of(model.name, model.module).get(WHAT, point.setting(), dataset_id(model))


def accuracy(model: zoo.ZooModel, point: Point,
             turn: Callable[[], AbstractContextManager[object]] = nullcontext) -> float:
    """The kept value of `point`, or measured now (inside `turn()`, e.g. a share of the CPU) and kept for every
    session and process. Threads that ask for a point being measured wait for it rather than measure it again."""
    measurer = measurements.Measurer.of(model.name, model.module)
    setting, dataset = point.setting(), dataset_id(model)
    value = measurer.get(WHAT, setting, dataset)
    if value is not None:
        return value
    key = (measurer.sha, measurements.Key.of(WHAT, setting, dataset))
    with _measuring_lock:
        lock = _measuring.setdefault(key, threading.Lock())
    try:
        with lock:
            def measure() -> float:
                with turn():
                    return _measure(model, point)

            return measurer.measured(WHAT, setting, dataset, measure)
    finally:
        with _measuring_lock:
            if _measuring.get(key) is lock:
                del _measuring[key]


_measuring: dict[tuple[str, measurements.Key], threading.Lock] = {}  # points being measured now, in this process
_measuring_lock = threading.Lock()


def _measure(model: zoo.ZooModel, point: Point) -> float:
    return pm.measure(model.module, point.method, point.amount, held_out(model.name), point.scope, point.only).top1


def plan(model: zoo.ZooModel) -> list[measurements.Planned]:
    """What `explorer measure NAME` stores beside the card: both scopes' curves and the sensitivities."""
    points = [p for scope in SCOPES for p in curve_points(scope)]
    points += [p for method in pm.METHODS for amount in SENSITIVITY_AMOUNTS
               for p in sensitivity_points(model, method, amount)]
    dataset = dataset_id(model)
    unique: dict[str, Point] = {}
    for p in points:  # amount 0 is one setting for every method and scope
        unique.setdefault(p.key, p)
    return [measurements.Planned(WHAT, p.setting(), dataset, functools.partial(_measure, model, p))
            for p in unique.values()]


@dataclass(frozen=True)
class Curve:
    """One accuracy-vs-sparsity curve as far as it is known, in %: the points and their 95 % Wilson intervals."""

    sparsity: list[float]
    value: list[float]
    low: list[float]
    high: list[float]


def curve(known: dict[str, float], method: str, scope: str, n: int) -> Curve:
    """The points of one curve that `known` (Point.key -> value, each measured on n images) holds, by sparsity."""
    c = Curve([], [], [], [])
    for point in curve_points(scope):
        if point.method == method and point.key in known:
            value = known[point.key]
            low, high = evaluate.interval_of(value, n)
            for column, v in zip((c.sparsity, c.value, c.low, c.high), (point.amount, value, low, high), strict=True):
                column.append(100 * v)
    return c


def read_off(xs: list[float], ys: list[float], at: float) -> float | None:
    """The curve's value at `at`, interpolated linearly between its two neighbouring points; None outside them."""
    if len(xs) < 2 or not xs[0] <= at <= xs[-1]:
        return None
    return float(np.interp(at, xs, ys))


def calibration_batches(model: zoo.ZooModel) -> list[torch.Tensor]:
    """Images for re-estimating BatchNorm statistics: MNIST training digits, or the agreement photos (the only
    photos here; the lesson says so)."""
    if model.card.preprocess == "mnist":
        digits = data.mnist("train")
        x = data.normalize_digits(digits.images[:CALIBRATION_IMAGES], model.card.mean, model.card.std)
        return list(x.split(250))  # (250, 1, 28, 28) each
    return list(held_out(model.name).inputs.split(8))


def recalibrated(model: zoo.ZooModel, point: Point,
                 turn: Callable[[], AbstractContextManager[object]] = nullcontext) -> tuple[float, float]:
    """The kept value of `point` (measured if missing), and the value once the pruned copy's BatchNorm statistics
    are re-estimated on `calibration_batches` (measured now: it depends on nothing the student can keep). Raises
    InputError for a model without BatchNorm."""
    pruned = pm.prune(model.module, point.method, point.amount, point.scope, point.only)
    fixed = pm.recalibrate_batchnorm(pruned, calibration_batches(model))
    before = accuracy(model, point, turn)
    with turn():
        after = evaluate.uncached_accuracy(fixed, held_out(model.name)).top1
    return before, after
