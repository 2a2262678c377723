"""The agreement set: the gallery photos in several versions each (mirrored, cropped, rotated, brighter, ...), labelled
by the unchanged model; its name carries the digest of its inputs, so that kept measurements never outlive a change of
photos. Each version is checked against its recipe done again with NumPy (crops, mirror, tone) or SciPy (rotation)."""

from __future__ import annotations

import dataclasses
import functools
import hashlib

import numpy as np
import pytest
import scipy.ndimage
import torch
from torch import nn

from explorer.core import agreement, evaluate, gallery, images
from explorer.core.card import ModelCard

CARD = ModelCard(
    name="test-photos", family="cnn", task="test", architecture="custom", input_shape=(3, 24, 32), preprocess="resize",
    mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), labels=tuple("abcde"), n_params=0, macs=0, top1=None,
    evaluated_on="", evaluated_date="", evaluated_by="", source="", license="", weights="", sha256="")


@pytest.fixture(autouse=True)
def fresh_caches():
    """Sets built by another test (or with patched photos) are forgotten before and after each test."""
    agreement.inputs.cache_clear()
    agreement.name.cache_clear()
    yield
    agreement.inputs.cache_clear()
    agreement.name.cache_clear()


def random_model(rng: torch.Generator) -> nn.Module:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=rng))
    return model.eval().requires_grad_(False)


def with_the_first_photo_changed(monkeypatch) -> None:
    """The same number of photos, names and descriptions, but the first photo's top half in negative."""
    items = gallery.photo_gallery()
    first = items[0].source.copy()
    first[: len(first) // 2] = 255 - first[: len(first) // 2]
    changed = (dataclasses.replace(items[0], source=first), *items[1:])
    monkeypatch.setattr(gallery, "photo_gallery", lambda: changed)
    agreement.inputs.cache_clear()
    agreement.name.cache_clear()


def crop(photo: np.ndarray, where: str, side: float = agreement.CROP_SIDE) -> np.ndarray:
    """A crop by slicing: `side` of each side, at a corner or centred (the centre rounded down, as halves go)."""
    h, w = photo.shape[:2]
    ch, cw = round(side * h), round(side * w)
    top = {"top": 0, "bottom": h - ch}.get(where.split("-")[0], (h - ch) // 2)
    left = {"left": 0, "right": w - cw}.get(where.split("-")[-1], (w - cw) // 2)
    return photo[top:top + ch, left:left + cw]


def tone(photo: np.ndarray, factor: float, around: float) -> np.ndarray:
    return np.clip(np.round(around + factor * (photo.astype(float) - around)), 0, 255)


def luma_mean(photo: np.ndarray) -> int:
    """The mean grey level (ITU-R 601 luma for colour), rounded: what contrast is stretched around."""
    grey = photo.astype(float) @ [0.299, 0.587, 0.114] if photo.ndim == 3 else photo.astype(float)
    return round(grey.mean())


def rotated(photo: np.ndarray, degrees: float) -> np.ndarray:
    """SciPy's cubic-spline rotation about the centre (counter-clockwise as drawn), cut to the largest rectangle of
    the photo's shape that the rotation fills: s = min(w / (w cos θ + h sin θ), h / (w sin θ + h cos θ))."""
    h, w = photo.shape[:2]
    c, s = np.cos(np.radians(abs(degrees))), np.sin(np.radians(abs(degrees)))
    scale = min(w / (w * c + h * s), h / (w * s + h * c))
    turned = scipy.ndimage.rotate(photo.astype(float), degrees, axes=(1, 0), reshape=False, order=3)
    return np.clip(crop(turned, "centre", scale), 0, 255)


REFERENCES = {  # recipe -> the same change done again with NumPy or SciPy
    "as is": lambda p: p,
    "mirrored": lambda p: p[:, ::-1],
    **{f"{where} crop": functools.partial(crop, where=where)
       for where in ("top-left", "top-right", "bottom-left", "bottom-right", "centre")},
    "rotated 10° left": lambda p: rotated(p, 10),
    "rotated 10° right": lambda p: rotated(p, -10),
    "darker": lambda p: tone(p, 0.7, 0),
    "brighter": lambda p: tone(p, 1.3, 0),
    "less contrast": lambda p: tone(p, 0.7, luma_mean(p)),
    "more contrast": lambda p: tone(p, 1.3, luma_mean(p)),
}


def test_the_set_holds_over_a_hundred_images_and_its_words_say_so():
    assert set(REFERENCES) == set(agreement.RECIPES)
    assert agreement.count() == len(gallery.PHOTOS) * len(agreement.RECIPES) >= 100
    assert len(agreement.photos()) == agreement.count()
    assert agreement.description().startswith(f"{agreement.count()} images: {len(gallery.PHOTOS)} gallery photos in "
                                              f"{len(agreement.RECIPES)} versions each")


@pytest.mark.parametrize("recipe", list(REFERENCES))
def test_each_version_matches_its_recipe_done_with_numpy_or_scipy(recipe):
    for item in gallery.photo_gallery():
        ours = agreement.version(item.source, recipe)
        ref = REFERENCES[recipe](item.source)
        assert ours.dtype == np.uint8 and ours.shape == ref.shape, item.key
        diff = np.abs(ours.astype(float) - ref)
        if recipe.startswith("rotated"):
            # Pillow's bicubic and SciPy's cubic spline differ at sharp edges, by a grey level on average; the
            # opposite rotation differs by about 30
            assert diff.mean() < 2.5, item.key
        else:
            assert diff.max() <= 1, item.key  # Pillow's blend truncates where round() rounds: one grey level


def test_the_inputs_are_every_version_prepared_one_by_one_recipe_by_recipe():
    photos = [item.source for item in gallery.photo_gallery()]
    expected = [images.to_input(agreement.version(p, recipe), CARD) for recipe in agreement.RECIPES for p in photos]
    x = agreement.inputs(CARD)
    assert x.shape == (agreement.count(), *CARD.input_shape)
    assert torch.equal(x, torch.cat(expected))
    assert torch.equal(x[len(photos):2 * len(photos)], torch.cat([images.to_input(p[:, ::-1].copy(), CARD)
                                                                   for p in photos]))  # mirrored: NumPy's flip


def test_building_the_set_twice_gives_the_same_digest():
    first = agreement.name(CARD)
    agreement.inputs.cache_clear()
    agreement.name.cache_clear()
    assert agreement.name(CARD) == first


def test_the_labels_are_the_models_own_top1_and_it_agrees_with_itself(rng, monkeypatch):
    model = random_model(rng)
    calls = []
    predictions = evaluate.predictions
    monkeypatch.setattr(evaluate, "predictions", lambda *a, **k: calls.append(1) or predictions(*a, **k))
    labelled = agreement.agreement_set(model, CARD)
    assert agreement.agreement_set(model, CARD) is labelled and len(calls) == 1  # labelled once per model
    with torch.no_grad():
        assert torch.equal(labelled.labels, model(agreement.inputs(CARD)).argmax(-1))
    assert evaluate.uncached_accuracy(model, labelled).top1 == 1.0


def test_the_name_is_the_description_and_the_digest_of_the_inputs_known_without_running_a_model(monkeypatch):
    monkeypatch.setattr(evaluate, "predictions", lambda *a, **k: pytest.fail("naming the set ran a model"))
    digest = hashlib.sha256(agreement.inputs(CARD).numpy().tobytes()).hexdigest()
    assert agreement.name(CARD) == f"{agreement.description()}, inputs sha256 {digest[:agreement.DIGEST_CHARS]}"


def test_other_photos_or_another_preprocessing_give_another_name(rng, monkeypatch):
    before = agreement.name(CARD)
    assert agreement.name(dataclasses.replace(CARD, std=(0.2, 0.25, 0.31))) != before  # another normalization
    model = random_model(rng)
    old = agreement.agreement_set(model, CARD)
    with_the_first_photo_changed(monkeypatch)
    assert agreement.description() in agreement.name(CARD) and agreement.name(CARD) != before
    new = agreement.agreement_set(model, CARD)
    assert new is not old and new.name == agreement.name(CARD)  # labelled afresh, under the new name
