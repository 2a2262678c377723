"""The pruning lesson's kept measurements: the plan `explorer measure` stores, measuring each point once, and
looking a kept point up without building anything; photo models' keys follow their agreement set.

Every test keeps its measurements in its own temporary cache and stores into its own folder (never models/);
the held-out set is replaced by fresh random images with random labels, so that a whole plan runs in seconds.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import threading
import time

import numpy as np
import pytest
import torch

from explorer.core import agreement, evaluate, measurements, zoo
from explorer.core.data import EvalSet
from explorer.lessons.pruning import math as pm
from explorer.lessons.pruning import measured
from explorer.lessons.pruning.measured import Point


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(measurements, "cache_dir", lambda: tmp_path)  # MNIST and weights stay where they are


@pytest.fixture
def random_digits(monkeypatch, rng) -> EvalSet:
    """24 random images with random labels in place of the MNIST test set (named by the seed: a fresh key)."""
    dataset = EvalSet(f"24 random images, seed {rng.initial_seed()}", torch.randn(24, 1, 28, 28, generator=rng),
                      torch.randint(0, 10, (24,), generator=rng))
    monkeypatch.setattr(measured, "held_out", lambda name: dataset)
    return dataset


def shown_count(model: torch.nn.Module, point: Point, dataset: EvalSet) -> int:
    """Images the lesson's own pruned copy gets right (the dense model itself at 0 %)."""
    shown = model if point.amount == 0 else pm.prune(model, point.method, point.amount, point.scope, point.only)
    with torch.no_grad():
        return int((shown(dataset.inputs).argmax(-1) == dataset.labels).sum())


@pytest.mark.parametrize("name", ["mnist-cnn", "mnist-vit"])
def test_the_plan_holds_every_point_the_lesson_shows_once(name, random_digits):
    model = zoo.load(name)
    plan = measured.plan(model)
    settings = [json.dumps(item.setting, sort_keys=True) for item in plan]
    assert len(settings) == len(set(settings))
    assert {item.what for item in plan} == {measured.WHAT}
    assert {item.dataset for item in plan} == {random_digits.name}
    wanted = [p for scope in pm.SCOPES for p in measured.curve_points(scope)]
    wanted += [p for method in pm.METHODS for amount in measured.SENSITIVITY_AMOUNTS
               for p in measured.sensitivity_points(model, method, amount)]
    assert {json.dumps(p.setting(), sort_keys=True) for p in wanted} == set(settings)
    layers = {"magnitude": pm.prunable_layers(model.module), "filters-l1": pm.structured_layers(model.module)}
    for method, names in layers.items():
        assert [p.only for p in measured.sensitivity_points(model, method, 0.5)] == list(names)


def test_a_stored_plan_holds_the_pruned_models_measured_accuracies(random_digits, tmp_path):
    model = zoo.load("mnist-cnn")
    plan = measured.plan(model)
    measurer = measurements.Measurer.of(model.name, model.module)
    for item in plan:
        measurer.measured(item.what, item.setting, item.dataset, item.measure)
    path = measurer.store([(i.what, i.setting, i.dataset) for i in plan], command="test", folder=tmp_path)
    stored = measurements.Stored.read(path)
    assert stored.weights_sha256 == measurements.weights_sha256(model.module) and len(stored.values) == len(plan)
    for item in plan:
        s = item.setting
        point = Point(s["method"], s["amount"], s["scope"], s["only"]) if s["amount"] else Point("magnitude", 0.0)
        expected = shown_count(model.module, point, random_digits) / len(random_digits)
        assert stored.values[measurements.Key.of(item.what, s, item.dataset)] == expected, s


@pytest.mark.parametrize("amount", [0.3, 0.8])
def test_a_kept_magnitude_point_matches_numpy_smallest_weights(amount, random_digits):
    model = zoo.load("mnist-cnn")
    point = Point("magnitude", amount, "layer")
    assert measured.kept(model, point) is None
    value = measured.accuracy(model, point)
    reference = copy.deepcopy(model.module)  # the same layout: the same float rounding as the shared model
    with torch.no_grad():
        for name in pm.prunable_layers(reference):  # NumPy: zero the round(amount · n) smallest |w| of each layer
            w = reference.get_submodule(name).weight
            mask = np.ones(w.numel(), np.float32)
            mask[np.argsort(np.abs(w.numpy()).ravel(), kind="stable")[:round(amount * w.numel())]] = 0
            w.mul_(torch.from_numpy(mask.reshape(w.shape)))
        correct = int((reference(random_digits.inputs).argmax(-1) == random_digits.labels).sum())
    assert value == correct / len(random_digits) == measured.kept(model, point)


def test_amount_zero_is_the_dense_model_whatever_the_method(random_digits):
    model = zoo.load("mnist-vit")
    value = measured.accuracy(model, Point("filters-l2", 0.0, "global"))
    assert measured.kept(model, Point("random", 0.0, "layer")) == value
    assert value == shown_count(model.module, Point("magnitude", 0.0), random_digits) / len(random_digits)


def test_a_point_asked_for_by_many_threads_is_measured_once(random_digits, monkeypatch):
    model = zoo.load("mnist-cnn")
    calls: list[Point] = []
    measuring, release = threading.Event(), threading.Event()
    measure = measured._measure

    def counted(m, point):
        calls.append(point)
        measuring.set()
        release.wait(timeout=60)
        return measure(m, point)

    monkeypatch.setattr(measured, "_measure", counted)
    point = Point("filters-l1", 0.4, "global")
    got: list[float] = []
    threads = [threading.Thread(target=lambda: got.append(measured.accuracy(model, point))) for _ in range(4)]
    threads[0].start()
    assert measuring.wait(timeout=60)
    for t in threads[1:]:  # they ask while the first is measuring
        t.start()
    time.sleep(0.2)  # time to reach the point's lock; later arrivals find the kept value, also without a measurement
    release.set()
    for t in threads:
        t.join()
    assert calls == [point]
    assert got == [shown_count(model.module, point, random_digits) / len(random_digits)] * 4


def nothing_may_be_built(monkeypatch) -> None:
    """From now on, pruning, copying a model, measuring or running a model fails the test."""
    def refuse(what: str):
        return lambda *args, **kwargs: pytest.fail(f"a lookup of a kept point {what}")

    monkeypatch.setattr(pm, "prune", refuse("pruned a copy"))
    monkeypatch.setattr(pm, "private_copy", refuse("copied the model"))
    monkeypatch.setattr(copy, "deepcopy", refuse("deep-copied something"))
    monkeypatch.setattr(measured, "_measure", refuse("measured"))
    monkeypatch.setattr(evaluate, "predictions", refuse("ran a model"))


def test_a_point_stored_beside_the_card_is_looked_up_without_building_anything(monkeypatch):
    model = zoo.load("mnist-cnn")
    point = Point("filters-l1", 0.5, "global")
    setting = measurements.Key.of(measured.WHAT, point.setting(), measured.dataset_id(model))
    stored = measurements.Stored.read(measurements.stored_path(model.name)).values[setting]
    nothing_may_be_built(monkeypatch)
    assert measured.accuracy(model, point) == measured.kept(model, point) == stored


def test_a_point_kept_in_the_disk_cache_is_looked_up_without_building_anything(random_digits, monkeypatch):
    model = zoo.load("mnist-cnn")
    point = Point("random", 0.37, "global")  # off the stored grid
    value = measured.accuracy(model, point)
    nothing_may_be_built(monkeypatch)
    assert measured.accuracy(model, point) == measured.kept(model, point) == value


def photo_model(rng: torch.Generator) -> zoo.ZooModel:
    """A small random CNN for 3 × 24 × 32 photos: its "accuracy" is agreement on the agreement photos."""
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                 torch.nn.Flatten(), torch.nn.Linear(4, 5))
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=rng))
    card = dataclasses.replace(zoo.card("mnist-cnn"), name=f"photo-cnn-{rng.initial_seed()}", preprocess="resize",
                               input_shape=(3, 24, 32), mean=(0.5,) * 3, std=(0.25,) * 3, labels=tuple("abcde"))
    return zoo.ZooModel(module.eval().requires_grad_(False), card)


def test_a_photo_models_key_is_its_agreement_set_and_changes_with_the_photos(rng, monkeypatch,
                                                                             other_photos):
    model = photo_model(rng)
    point = Point("magnitude", 0.5, "layer")
    assert measured.dataset_id(model) == agreement.name(model.card)
    assert measured.dataset_name(model) == agreement.description()
    measurer = measurements.Measurer.of(model.name, model.module)
    measurer.measured(measured.WHAT, point.setting(), measured.dataset_id(model), lambda: 0.75)
    with monkeypatch.context() as patched:
        nothing_may_be_built(patched)  # neither a pruned copy nor the photos' labels
        assert measured.accuracy(model, point) == measured.kept(model, point) == 0.75
    other_photos()
    assert measured.dataset_name(model) == agreement.description()
    assert measured.kept(model, point) is None  # other photos: the value kept for the old ones is not theirs


def test_a_curve_holds_the_known_points_of_its_method_and_scope_in_percent_with_scipys_wilson_interval(rng):
    from scipy.stats import binomtest

    n = int(torch.randint(20, 2000, (1,), generator=rng))
    correct = torch.randint(0, n + 1, (4,), generator=rng).tolist()
    known = {Point("magnitude", a).key: k / n for a, k in zip(measured.CURVE_AMOUNTS[:4], correct, strict=True)}
    known[Point("random", 0.5).key] = 0.1  # another method
    known[Point("magnitude", 0.5, "global").key] = 0.2  # another scope
    c = measured.curve(known, "magnitude", "layer", n)
    assert c.sparsity == [100 * a for a in measured.CURVE_AMOUNTS[:4]]
    assert c.value == pytest.approx([100 * k / n for k in correct])
    ref = [binomtest(k, n).proportion_ci(method="wilson") for k in correct]
    assert c.low == pytest.approx([100 * r.low for r in ref]) and c.high == pytest.approx([100 * r.high for r in ref])


def test_the_sample_size_is_the_held_out_sets_or_the_agreement_sets(rng):
    assert measured.sample_size(zoo.load("mnist-cnn")) == len(measured.held_out("mnist-cnn")) == 10_000
    assert measured.sample_size(photo_model(rng)) == agreement.count() == len(agreement.photos())


def test_read_off_is_the_straight_line_between_the_neighbouring_points():
    xs, ys = [0.0, 20.0, 50.0], [99.0, 95.0, 35.0]
    assert measured.read_off(xs, ys, 30) == pytest.approx(95 + (30 - 20) / (50 - 20) * (35 - 95))
    assert measured.read_off(xs, ys, 20) == 95.0
    assert measured.read_off(xs, ys, 60) is None and measured.read_off(xs[:1], ys[:1], 0) is None


def test_recalibrated_is_the_kept_value_then_the_re_estimated_copys_count(random_digits):
    model = zoo.load("mnist-cnn")
    point = Point("filters-l1", 0.5)
    before, after = measured.recalibrated(model, point)
    assert before == measured.kept(model, point) == shown_count(model.module, point, random_digits) / 24
    fixed = pm.recalibrate_batchnorm(pm.prune(model.module, "filters-l1", 0.5), measured.calibration_batches(model))
    with torch.no_grad():
        assert after == int((fixed(random_digits.inputs).argmax(-1) == random_digits.labels).sum()) / 24
    batches = measured.calibration_batches(model)
    assert sum(len(b) for b in batches) == measured.CALIBRATION_IMAGES
