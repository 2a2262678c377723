"""The quantization lesson's accuracies, which do not depend on the student: measured once and kept.

`plan(model)` lists what `explorer measure NAME` stores beside the card (explorer/core/measurements.py): the float32
accuracy and every point of the accuracy-vs-bits curves for the setting the lesson opens on (DEFAULT; the accuracy
the lesson shows on opening is one of those points). The lesson shows them at once; any other setting is measured
in the background, once per machine, and kept in the on-disk cache for every session and server process.

Keys: what = "quantization"; the setting is every field of math.Setting (the float32 model: FLOAT32), plus, with
quantized activations, which images calibrated their ranges; the dataset is EvalSet.name (`dataset_id`: for the
photos it holds the digest of their inputs, so other photos never find these values).

Accuracy is top-1 on the MNIST test set for MNIST models. Other models (MobileNetV2) have no labelled set here: their
"accuracy" is agreement with the float32 model (its own top-1 as the label) on the agreement photos of
core/agreement.py, the one set the pruning lesson measures agreement on too. `sample_size` is the number of images
either is measured on: the n of the 95 % Wilson interval the views show (core/evaluate.py). Activation ranges are
calibrated on the first CALIBRATION_IMAGES MNIST training digits, or on those photos.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import threading
from contextlib import AbstractContextManager

import torch

from explorer.core import agreement, data, measurements, zoo
from explorer.core.data import EvalSet
from explorer.lessons.quantization import math as qm

WHAT = "quantization"
DEFAULT = qm.Setting(granularity="per-tensor")  # what the lesson opens on: 8-bit symmetric min-max, float activations
FLOAT32: dict[str, object] = {"format": "float32"}  # the stored setting of the model as it is
CALIBRATION_IMAGES = 512  # MNIST training digits that set the activation ranges


def meaning(model: zoo.ZooModel) -> str:
    """What the measured fraction is: "accuracy" (true labels) or "agreement" (with the float32 model)."""
    return "accuracy" if model.card.preprocess == "mnist" else "agreement"


def dataset_name(model: zoo.ZooModel) -> str:
    """The images the accuracy (or agreement) is measured on, in words, for the student."""
    if model.card.preprocess == "mnist":
        return data.mnist("test").name
    return agreement.description()


def sample_size(model: zoo.ZooModel) -> int:
    """How many images an accuracy is measured on (the n of its confidence interval), without labelling the photos."""
    return len(heldout(model.name)) if model.card.preprocess == "mnist" else agreement.count()


def dataset_id(model: zoo.ZooModel) -> str:
    """heldout(model).name, the dataset of the measurements' keys, without labelling the photos (no forward pass)."""
    return dataset_name(model) if model.card.preprocess == "mnist" else agreement.name(model.card)


def calibration_name(model: zoo.ZooModel) -> str:
    if model.card.preprocess == "mnist":
        return f"the first {CALIBRATION_IMAGES} MNIST training images"
    return f"the {dataset_name(model)}"


@functools.lru_cache(maxsize=4)
def heldout(model_name: str) -> EvalSet:
    """The images (and labels) accuracy is measured on, built once per process and model."""
    model = zoo.load(model_name)
    if model.card.preprocess == "mnist":
        return data.eval_set("test", model.card.mean, model.card.std)
    return agreement.agreement_set(model.module, model.card)


@functools.lru_cache(maxsize=4)
def calibration(model_name: str) -> torch.Tensor:
    """The images whose float activations set the ranges of quantized activations (see calibration_name)."""
    model = zoo.load(model_name)
    if model.card.preprocess == "mnist":
        digits = data.mnist("train").images[:CALIBRATION_IMAGES]
        return data.normalize_digits(digits, model.card.mean, model.card.std)
    return heldout(model_name).inputs


def stored_setting(model: zoo.ZooModel, setting: qm.Setting | None) -> dict[str, object]:
    """The setting as a measurement key: every field of `setting` (None: the float32 model, FLOAT32), and with
    quantized activations also the calibration images, which change the answer too."""
    if setting is None:
        return dict(FLOAT32)
    fields = dataclasses.asdict(setting)
    if setting.act_bits is not None:
        fields["calibration"] = calibration_name(model)
    return fields


def known(model: zoo.ZooModel, setting: qm.Setting | None) -> float | None:
    """The kept top-1 of `setting` (None: float32), from the stored file or the on-disk cache, or None."""
    measurer = measurements.Measurer.of(model.name, model.module)
    return measurer.get(WHAT, stored_setting(model, setting), dataset_id(model))


def measure(model: zoo.ZooModel, setting: qm.Setting | None,
            running: AbstractContextManager | None = None) -> float:
    """The kept top-1 of `setting`, measured now if nobody has yet, and kept for every session and process.
    Two threads asking for one setting at once measure it once: the second waits and reads the kept value.
    `running` is entered around the evaluation only, not while looking up or waiting (the lesson's CPU slot)."""
    measurer = measurements.Measurer.of(model.name, model.module)
    what, stored, dataset = WHAT, stored_setting(model, setting), dataset_id(model)
    with _MEASURING[hash((model.name, setting)) % len(_MEASURING)]:
        value = measurer.get(what, stored, dataset)
        if value is not None:
            return value
        with running or contextlib.nullcontext():
            return measurer.measured(what, stored, dataset, functools.partial(top1, model, setting))


_MEASURING = tuple(threading.Lock() for _ in range(32))  # one per group of settings: bounded, never nested


def top1(model: zoo.ZooModel, setting: qm.Setting | None) -> float:
    """Top-1 of the model quantized with `setting` on `heldout`, measured now (cached in memory per process)."""
    images_ = calibration(model.name) if setting is not None and setting.act_bits is not None else None
    return qm.accuracy(model.module, model.name, heldout(model.name), setting, images_).top1


def plan(model: zoo.ZooModel) -> list[measurements.Planned]:
    """What `explorer measure` stores for this lesson: float32, then every point of the curves for DEFAULT."""
    return [measurements.Planned(WHAT, stored_setting(model, s), dataset_id(model), functools.partial(top1, model, s))
            for s in (None, *qm.sweep_settings(DEFAULT))]
