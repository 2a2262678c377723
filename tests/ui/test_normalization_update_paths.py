"""Every control of the normalization lesson patches data and properties of existing Bokeh models; none makes new ones.

Deterministic (no timing): the lesson is attached to a Bokeh document as a served session's would be.
"""

from __future__ import annotations

import pytest
import torch

from explorer.core import zoo
from explorer.core.gallery import mnist_gallery
from explorer.lessons.normalization.view import NormalizationLesson
from tests.ui.doc_events import Page


def interactions(lesson: NormalizationLesson, round_: int):
    """(name, action, the named source it must change)"""
    digits = mnist_gallery()
    layers = lesson.layers
    yield "kind", lambda: setattr(lesson, "kind", ("layer", "instance")[round_]), "normalization-axes"
    yield "groups", lambda: lesson.param.update(kind="group", groups=(2, 8)[round_]), "normalization-whatif"
    yield "batch", lambda: setattr(lesson, "batch", (64, 2)[round_]), "normalization-batch-now"
    # a CNN's maps show the selected channel; a ViT's show all features, and the axes picture the selected one
    yield "channel", lambda: setattr(lesson.state, "channel", 3 + round_), (
        "normalization-maps" if lesson.state.model == "mnist-cnn" else "normalization-axes")
    yield "layer", lambda: setattr(lesson.layer_menu, "value", layers[1 - round_]), "normalization-stats"
    yield "input", lambda: lesson.state.set_input(digits[4 + round_].source, digits[4 + round_].description), \
        "normalization-hist"


@pytest.mark.parametrize("model", ["mnist-cnn", "mnist-vit"])
def test_lesson_controls_only_patch_existing_models(model):
    lesson = NormalizationLesson(model=model)
    page = Page(lesson)
    for round_ in (0, 1):
        for name, act, part in interactions(lesson, round_):
            page.check(name, act, lambda part=part: page.data(part), round_)
            assert not lesson.errors.visible, lesson.errors.object


def test_narrative_steps_drive_the_lesson():
    lesson = NormalizationLesson()
    narrative = lesson.tour
    kinds = []
    for index in range(len(narrative._steps)):
        narrative.index = index
        kinds.append((lesson.kind, lesson.batch))
        assert not lesson.errors.visible, lesson.errors.object
    assert len(narrative._steps) >= 5
    assert ("layer", 8) in kinds and ("batch", 1) in kinds and ("batch", 256) in kinds
    # without a server the slow prediction is answered at once: no "running" text is left behind
    assert "train mode, batch of 256:** the model gives" in lesson._batch_part.prediction.object


@pytest.mark.skipif(not zoo.is_available("mobilenet_v2"), reason="`make test` fetches it")
def test_a_model_without_mnist_batches_takes_batches_of_one():
    lesson = NormalizationLesson(model="mobilenet_v2")
    assert not lesson.errors.visible, lesson.errors.object
    assert lesson.layers and lesson._size() == 1
    study = lesson._layer_study()
    mean, var = study.batch_statistics(1)
    x = study.record.input[0].double()  # (C, H, W): a batch of one is the image itself
    torch.testing.assert_close(mean.flatten().double(), x.mean((1, 2)), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(var.flatten().double(), x.var((1, 2), correction=0), atol=1e-5, rtol=1e-4)
