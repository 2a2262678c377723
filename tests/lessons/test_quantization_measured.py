"""What the quantization lesson keeps: the plan `explorer measure` stores, checked against accuracies counted by hand
with independently quantized weights on fresh random test digits; storing, reading back, a second process; one
measurement for two threads asking at once; MobileNetV2's agreement images; what the tour says about the curves,
for the scheme it sets, against the stored curves.

Nothing is written into models/: the stored file goes to tmp_path, the on-disk cache to EXPLORER_CACHE=tmp_path.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import subprocess
import sys
import threading

import pytest
import torch
from torch import nn

from explorer.core import agreement, data, evaluate, images, measurements, zoo
from explorer.core.data import EvalSet
from explorer.core.gallery import photo_gallery
from explorer.lessons.quantization import math as qm
from explorer.lessons.quantization import measured, view_text
from explorer.session.narrative import Step
from tests.measurements_cache import empty_measurements_cache

MNIST_MODELS = ["mnist-cnn", "mnist-vit"]
SAMPLE = 300  # random test digits: enough to tell the settings apart, quick enough for a test
CHECKED = 6  # planned settings checked by hand per run, drawn afresh (all of them take minutes on a busy machine)


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    """A fresh, empty on-disk cache of measurements in tmp_path (MNIST and the models stay where they are)."""
    empty_measurements_cache(tmp_path, monkeypatch)
    return tmp_path


@pytest.fixture
def random_digits(monkeypatch, rng):
    """measured.heldout: SAMPLE test digits drawn afresh, under a name of their own (so no cache answers)."""
    def sample(name: str) -> EvalSet:
        card = zoo.load(name).card
        full = data.eval_set("test", card.mean, card.std)
        picked = torch.randperm(len(full), generator=rng)[:SAMPLE]
        return EvalSet(f"{SAMPLE} random MNIST test digits (seed {rng.initial_seed()})", full.inputs[picked],
                       full.labels[picked])

    chosen = {name: sample(name) for name in MNIST_MODELS}
    monkeypatch.setattr(measured, "heldout", chosen.__getitem__)
    monkeypatch.setattr(measured, "dataset_name", lambda model: chosen[model.name].name)
    return chosen


def reference_weight(w: torch.Tensor, setting: qm.Setting) -> torch.Tensor:
    """The dequantized weights, written out from the formulas (min-max range containing 0; XNOR-Net; BitNet b1.58)."""
    if setting.format == "binary":
        alpha = w.abs().mean(dim=tuple(range(1, w.dim())), keepdim=True)  # one per output channel
        return torch.where(w >= 0, alpha, -alpha)
    if setting.format == "ternary":
        gamma = w.abs().mean()
        return torch.clamp(torch.round(w / gamma), -1, 1) * gamma
    qmin, qmax = -(2 ** (setting.weight_bits - 1)), 2 ** (setting.weight_bits - 1) - 1
    rows = w.reshape(w.shape[0], -1) if setting.granularity == "per-channel" else w.reshape(1, -1)
    lo = rows.min(1, keepdim=True).values.clamp(max=0)
    hi = rows.max(1, keepdim=True).values.clamp(min=0)
    if setting.scheme == "symmetric":
        scale, zero = torch.maximum(-lo, hi) / qmax, torch.zeros_like(lo)
    else:
        scale = (hi - lo) / (qmax - qmin)
        zero = torch.clamp(qmin - torch.round(lo / scale), qmin, qmax)
    q = torch.clamp(torch.round(rows / scale) + zero, qmin, qmax)
    return ((q - zero) * scale).reshape(w.shape)


def counted_by_hand(module: nn.Module, setting: qm.Setting | None, dataset: EvalSet) -> tuple[int, int]:
    """(correct, ambiguous): correct answers of a plain copy with reference weights (BatchNorm not folded), and how
    many images have their two best logits within 1e-4 of the largest logit: folding BatchNorm changes float32
    rounding by about 1e-6 of the logits (test_folding_batchnorm_keeps_the_outputs...), so only those may flip."""
    plain = copy.deepcopy(module)
    with torch.no_grad():
        for layer in plain.modules():
            if setting is not None and isinstance(layer, (nn.Conv2d, nn.Linear)):
                layer.weight.copy_(reference_weight(layer.weight, setting))
        logits = plain(dataset.inputs)
    top2 = logits.topk(2, dim=1).values
    ambiguous = int((top2[:, 0] - top2[:, 1] < 1e-4 * logits.abs().max()).sum())
    return int((logits.argmax(1) == dataset.labels).sum()), ambiguous


def expected_settings() -> list[dict]:
    """float32, then 2 to 8 bits for each scheme × granularity, then binary and ternary: min-max, float activations."""
    common = dict(clip="min-max", act_bits=None)
    curves = [dict(weight_bits=b, scheme=s, granularity=g, format="integer", **common)
              for s in ("symmetric", "affine") for g in ("per-tensor", "per-channel") for b in range(2, 9)]
    others = [dict(weight_bits=8, scheme="symmetric", granularity="per-tensor", format=f, **common)
              for f in ("binary", "ternary")]
    return [{"format": "float32"}, *curves, *others]


@pytest.mark.parametrize("name", MNIST_MODELS)
def test_the_plan_is_float32_and_every_point_of_the_default_curves(name):
    model = zoo.load(name)
    planned = measured.plan(model)
    assert [p.setting for p in planned] == expected_settings()
    assert {p.what for p in planned} == {"quantization"}
    assert {p.dataset for p in planned} == {"MNIST test set, 10,000 images"}
    json.dumps([p.setting for p in planned])  # what the stored file holds
    default = dataclasses.asdict(measured.DEFAULT)
    assert default in [p.setting for p in planned]  # the accuracy shown on opening is one of them


@pytest.mark.parametrize("name", MNIST_MODELS)
def test_planned_accuracies_match_counting_by_hand(name, random_digits, rng):
    model = zoo.load(name)
    dataset = random_digits[name]
    planned = measured.plan(model)
    picked = torch.randperm(len(planned) - 1, generator=rng)[:CHECKED].add(1).tolist()  # besides float32
    for item in [planned[0], *(planned[i] for i in picked)]:
        setting = None if item.setting == {"format": "float32"} else qm.Setting(**item.setting)
        correct, ambiguous = counted_by_hand(model.module, setting, dataset)
        assert abs(round(item.measure() * len(dataset)) - correct) <= ambiguous, item.setting


def test_the_plan_is_stored_and_read_back_by_this_and_another_process(private_cache, random_digits, rng):
    """The keys of the plan are the keys the lesson looks up (values drawn at random: the test above checks them)."""
    model = zoo.load("mnist-cnn")
    planned = measured.plan(model)
    measurer = measurements.Measurer.of(model.name, model.module)
    drawn = torch.rand(len(planned), generator=rng, dtype=torch.float64).tolist()
    values = [measurer.measured(p.what, p.setting, p.dataset, lambda v=v: v)
              for p, v in zip(planned, drawn, strict=True)]
    assert values == drawn
    folder = private_cache / "models"
    folder.mkdir()
    path = measurer.store([(p.what, p.setting, p.dataset) for p in planned], "test", folder=folder)
    stored = measurements.Stored.read(path)
    assert stored.weights_sha256 == measurements.weights_sha256(model.module)
    for p, value in zip(planned, values, strict=True):
        assert stored.values[measurements.Key.of(p.what, p.setting, p.dataset)] == value
    settings = [None, *qm.sweep_settings(measured.DEFAULT)]
    assert [measured.known(model, s) for s in settings] == values
    dataset = random_digits["mnist-cnn"].name
    code = ("import json; from explorer.core import zoo;"
            "from explorer.lessons.quantization import math as qm, measured;"
            f"measured.dataset_name = lambda model: {dataset!r}; m = zoo.load('mnist-cnn');"
            "print(json.dumps([measured.known(m, s) for s in [None, *qm.sweep_settings(measured.DEFAULT)]]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == values


def test_a_setting_with_activation_bits_names_its_calibration_images():
    model = zoo.load("mnist-cnn")
    key = measured.stored_setting(model, qm.Setting(act_bits=4))
    assert key == {**dataclasses.asdict(qm.Setting(act_bits=4)), "calibration": "the first 512 MNIST training images"}
    assert measured.stored_setting(model, qm.Setting()) == dataclasses.asdict(qm.Setting())
    assert measured.calibration("mnist-cnn").shape == (measured.CALIBRATION_IMAGES, 1, 28, 28)


class Counted:
    """A context manager that counts how often it was entered (the lesson's CPU slot)."""

    def __init__(self, entered: list[int]):
        self.entered = entered

    def __enter__(self) -> None:
        self.entered.append(1)

    def __exit__(self, *_exc) -> None:
        return None


def test_two_threads_asking_for_one_setting_measure_it_once(private_cache, monkeypatch):
    model, setting = zoo.load("mnist-cnn"), qm.Setting(weight_bits=3, clip="mse")
    calls: list[int] = []
    slots: list[int] = []
    release = threading.Event()

    def slow_top1(_model, _setting) -> float:
        calls.append(1)
        release.wait(timeout=60)
        return 0.625

    monkeypatch.setattr(measured, "top1", slow_top1)
    results: list[float] = []
    first = threading.Thread(target=lambda: results.append(measured.measure(model, setting, Counted(slots))))
    second = threading.Thread(target=lambda: results.append(measured.measure(model, setting, Counted(slots))))
    first.start()
    while not calls:
        release.wait(0.01)
    second.start()
    second.join(timeout=0.3)
    assert len(calls) == 1 and len(slots) == 1  # the second waits for the first, without a slot, instead of measuring
    release.set()
    first.join(timeout=60)
    second.join(timeout=60)
    assert results == [0.625, 0.625] and len(calls) == 1 and len(slots) == 1
    assert measured.known(model, setting) == 0.625


@pytest.mark.skipif(not zoo.is_available("mobilenet_v2"), reason="MobileNetV2 is not fetched here")
def test_mobilenet_agreement_is_on_the_versions_of_the_gallery_photos():
    model = zoo.load("mobilenet_v2")
    photos = [item.source for item in photo_gallery()]
    pictures = [agreement.version(p, recipe) for recipe in agreement.RECIPES for p in photos]
    inputs = torch.cat([images.to_input(p, model.card) for p in pictures])
    evalset = measured.heldout("mobilenet_v2")
    words = measured.dataset_name(model)
    digest = hashlib.sha256(inputs.numpy().tobytes()).hexdigest()[:16]  # the set's identity in the keys
    assert words == agreement.description() and words.startswith(f"{len(pictures)} images: 8 gallery photos")
    assert measured.sample_size(model) == len(pictures) >= 100
    assert evalset.name == measured.dataset_id(model) == f"{words}, inputs sha256 {digest}"
    assert torch.equal(evalset.inputs, inputs)
    with torch.no_grad():
        assert torch.equal(evalset.labels, model.module(inputs).argmax(-1))
    assert measured.meaning(model) == "agreement"
    assert torch.equal(measured.calibration("mobilenet_v2"), inputs)


@pytest.mark.skipif(not zoo.is_available("mobilenet_v2"), reason="MobileNetV2 is not fetched here")
def test_mobilenet_agreement_uses_the_images_of_the_pruning_lesson():
    from explorer.lessons.pruning import measured as pruning

    model = zoo.load("mobilenet_v2")
    ours, theirs = measured.heldout("mobilenet_v2"), pruning.held_out("mobilenet_v2")
    assert ours is theirs  # one set, labelled once
    assert measured.dataset_id(model) == pruning.dataset_id(model) == ours.name
    assert measured.dataset_name(model) == pruning.dataset_name(model)


def test_a_photo_models_key_is_the_agreement_set_and_changes_with_the_photos(private_cache, rng, monkeypatch,
                                                                             other_photos):
    module = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
    card = dataclasses.replace(zoo.card("mnist-cnn"), name=f"photo-cnn-{rng.initial_seed()}", preprocess="resize",
                               input_shape=(3, 24, 32), mean=(0.5,) * 3, std=(0.25,) * 3, labels=tuple("abcde"))
    model = zoo.ZooModel(module.eval().requires_grad_(False), card)
    setting = qm.Setting(weight_bits=4)
    assert measured.dataset_id(model) == agreement.name(card)
    assert measured.dataset_name(model) == agreement.description()
    assert measured.meaning(model) == "agreement"
    measurements.Measurer.of(model.name, module).measured(
        measured.WHAT, measured.stored_setting(model, setting), measured.dataset_id(model), lambda: 0.625)
    with monkeypatch.context() as patched:  # a lookup labels no photos and quantizes nothing
        patched.setattr(evaluate, "predictions", lambda *a, **k: pytest.fail("a lookup ran a model"))
        patched.setattr(measured, "top1", lambda *a, **k: pytest.fail("a lookup measured"))
        assert measured.measure(model, setting) == measured.known(model, setting) == 0.625
    other_photos()
    assert measured.known(model, setting) is None  # other photos: the value kept for the old ones is not theirs


def tour_step(title: str) -> Step:
    return next(step for step in view_text.steps() if step.title == title)


def stored_accuracy(name: str) -> dict[tuple[str, str, int] | str, float]:
    """Top-1 as the lesson shows it (measured.known): "float32", and (scheme, granularity, bits) for 2 to 4 bits."""
    model = zoo.load(name)
    values: dict[tuple[str, str, int] | str, float | None] = {"float32": measured.known(model, None)}
    for scheme, granularity, bits in itertools.product(qm.SCHEMES, qm.GRANULARITIES, (2, 3, 4)):
        setting = dataclasses.replace(measured.DEFAULT, weight_bits=bits, scheme=scheme, granularity=granularity)
        values[(scheme, granularity, bits)] = measured.known(model, setting)
    # shipped models ship their curves (models/NAME.measurements.json): a missing one is a defect, not a skip
    assert None not in values.values(), f"the stored curves of {name} are incomplete (run `explorer measure {name}`)"
    return values


@pytest.mark.parametrize("name", MNIST_MODELS)
def test_the_per_channel_tour_step_says_what_the_stored_curves_show_for_its_scheme(name):
    step = tour_step("One scale per channel")
    scheme = step.settings["scheme"]
    assert scheme == "symmetric" and f"**{scheme}** grid set here" in step.text
    top1 = stored_accuracy(name)
    gain = {(s, b): top1[(s, "per-channel", b)] - top1[(s, "per-tensor", b)] for s in qm.SCHEMES for b in (3, 4)}
    # "per-tensor falls behind at 4 bits and by more than a point at 3"
    assert gain[(scheme, 4)] > 0 and gain[(scheme, 3)] > 0.01
    # "the affine pair stays closer together at 3 bits"
    assert gain[("affine", 3)] < gain[(scheme, 3)]


@pytest.mark.parametrize("name", MNIST_MODELS)
def test_the_cliff_tour_step_says_what_the_stored_curves_show(name):
    top1 = stored_accuracy(name)
    # "down to 4 bits the accuracy barely moves": within half a point of float32 with every scheme and granularity
    assert all(top1["float32"] - top1[(s, g, 4)] < 0.005 for s in qm.SCHEMES for g in qm.GRANULARITIES)
    for bits in (2, 3):
        # "most steeply per-tensor with either scheme, and symmetric per-tensor most of all"
        assert all(top1[(s, "per-tensor", bits)] < top1[(s, "per-channel", bits)] for s in qm.SCHEMES)
        assert top1[("symmetric", "per-tensor", bits)] == min(top1[(s, g, bits)] for s in qm.SCHEMES
                                                              for g in qm.GRANULARITIES)
    assert "most steeply per-tensor with either scheme" in tour_step("The cliff below 4 bits").text
