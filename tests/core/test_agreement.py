"""The agreement set: the gallery photos and their mirror images, labelled by the unchanged model; its name carries
the digest of its inputs, so that kept measurements never outlive a change of photos."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
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


def test_the_inputs_are_the_gallery_photos_then_their_mirror_images():
    photos = [item.source for item in gallery.photo_gallery()]
    expected = [images.to_input(p, CARD) for p in photos] + [images.to_input(p[:, ::-1].copy(), CARD) for p in photos]
    x = agreement.inputs(CARD)
    assert x.shape == (2 * len(gallery.PHOTOS), *CARD.input_shape)
    assert torch.equal(x, torch.cat(expected))
    assert agreement.description() == f"{len(gallery.PHOTOS)} gallery photos and their mirror images"


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
