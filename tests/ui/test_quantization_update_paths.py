"""The quantization lesson: every control patches existing Bokeh models, and sessions never share changes.

Deterministic: worker threads are replaced by an inline executor, and the accuracy-vs-bits sweep by a
short one (tests/lessons/test_quantization_math.py checks the real sweep's settings).
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import replace

import pytest
import torch

from explorer.core import zoo
from explorer.core.data import EvalSet
from explorer.lessons.quantization import math as qm
from explorer.lessons.quantization import view
from explorer.ui.gallery import mnist_gallery
from explorer.ui.state import ExplorerState
from tests.ui.doc_events import Page


def inline(work) -> Future:
    """Run the lesson's background work at once, on the calling thread."""
    future: Future = Future()
    future.set_result(work())
    return future


def small_heldout(name: str):
    """The first 300 test images: enough to tell settings apart, quick enough for a test."""
    evalset, calibration, meaning = full_heldout(name)
    return EvalSet(f"{evalset.name}, first 300", evalset.inputs[:300], evalset.labels[:300]), calibration[:64], meaning


full_heldout = view.heldout


@pytest.fixture
def synchronous(monkeypatch):
    monkeypatch.setattr(view, "_submit", inline)
    monkeypatch.setattr(view, "heldout", small_heldout)
    monkeypatch.setattr(qm, "sweep_settings", lambda base: [replace(base, weight_bits=b) for b in (8, 2)])


def shown(page: Page, lesson: view.QuantizationLesson, part: str) -> object:
    if part.startswith("md:"):
        return getattr(lesson, part[3:]).object
    return page.data(part)


def interactions(lesson: view.QuantizationLesson, round_: int):
    """(name, action, the part of the page it must change)"""
    state, digits = lesson.state, mnist_gallery()
    layers = lesson.param.layer.objects
    yield "layer", lambda: setattr(lesson, "layer", layers[1 + round_]), "quantization-histogram"
    yield "bits", lambda: setattr(lesson, "bits", (3, 5)[round_]), "quantization-dequantized"
    yield "binary", lambda: setattr(lesson, "bits", 1), "quantization-dequantized"
    yield "bits back", lambda: setattr(lesson, "bits", 4), "quantization-dequantized"
    yield "granularity", lambda: setattr(lesson, "granularity", ("per-channel", "per-tensor")[round_]), \
        "quantization-grid"
    yield "scheme", lambda: setattr(lesson, "scheme", ("affine", "symmetric")[round_]), "quantization-grid"
    yield "clip", lambda: setattr(lesson, "clip", ("percentile", "mse")[round_]), "quantization-clip"
    yield "activation bits", lambda: setattr(lesson, "act_bits", (4, 0)[round_]), "quantization-sqnr"
    yield "channel", lambda: setattr(lesson, "channel", 2 + round_), "md:_arithmetic"
    yield "input", lambda: state.set_input(digits[7 + round_].source, digits[7 + round_].description), \
        "quantization-predictions"


def test_every_control_only_patches_existing_models(synchronous):
    lesson = view.QuantizationLesson()
    lesson.granularity = "per-tensor"  # so that the first granularity change shows in the grid
    page = Page(lesson)
    for round_ in (0, 1):
        for name, act, part in interactions(lesson, round_):
            page.check(name, act, lambda part=part: shown(page, lesson, part), round_)


def test_switching_model_keeps_the_figures_and_offers_the_new_layers(synchronous):
    lesson = view.QuantizationLesson()
    page = Page(lesson)
    figures = {m.id for m in page.doc.models if type(m).__name__ == "figure"}
    created = page.act(lambda: setattr(lesson.state, "model", "mnist-vit"))
    assert [kind for kind in created if kind != "ImportedStyleSheet"] == []
    assert figures == {m.id for m in page.doc.models if type(m).__name__ == "figure"}
    assert lesson.param.layer.objects == qm.quantizable_layers(zoo.load("mnist-vit").module)
    assert "blocks.0.attn.qkv" in lesson.param.layer.objects


def test_the_accuracy_and_the_curves_show_what_was_measured(synchronous):
    lesson = view.QuantizationLesson(model="mnist-cnn")
    lesson.bits = 2
    evalset = view.heldout("mnist-cnn")[0]
    model = zoo.load("mnist-cnn").module
    expected = qm.accuracy(model, "mnist-cnn", evalset, lesson.setting)
    assert f"quantized **{expected.top1:.2%}**" in lesson._accuracy.object
    assert "first 300" in lesson._accuracy.object
    assert lesson._current_source.data["y"] == [pytest.approx(100 * expected.top1)]
    points = dict(zip(lesson._point_source.data["label"], lesson._point_source.data["y"], strict=True))
    assert points[lesson.setting.describe()] == pytest.approx(100 * expected.top1)


def test_another_session_quantizing_leaves_the_shared_model_and_this_session_alone(synchronous):
    model = zoo.load("mnist-cnn").module
    before = {k: v.clone() for k, v in model.state_dict().items()}
    mine = view.QuantizationLesson(state=ExplorerState(model="mnist-cnn"))
    theirs = view.QuantizationLesson(state=ExplorerState(model="mnist-cnn"))
    my_probs = mine.result["probs"].clone()
    theirs.param.update(bits=2, act_bits=3, granularity="per-tensor", scheme="affine", clip="mse")
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"the shared model's {k} changed"
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())
    mine.channel = 1  # recompute this session: still 8-bit weights, float activations
    assert torch.allclose(mine.result["probs"], my_probs)
    assert not torch.allclose(theirs.result["probs"], my_probs, atol=1e-3)


def test_the_narrative_steps_drive_the_controls(synchronous):
    lesson = view.QuantizationLesson()
    steps = view.steps()
    assert len(steps) >= 5
    titles = [s.title for s in steps]
    assert {"A ruler with 256 marks", "Where to put the ends", "One scale per channel", "The cliff below 4 bits",
            "Real integers"} <= set(titles)
    narrative = lesson._narrative
    for i, step in enumerate(steps):
        narrative.index = i
        for name, value in step.settings.items():
            assert getattr(lesson, name) == value, f"step {step.title!r}: {name}"


@pytest.mark.skipif(not zoo.is_available("mobilenet_v2"), reason="MobileNetV2 is not fetched here")
def test_mobilenet_measures_agreement_with_float_on_the_gallery_photos(synchronous):
    lesson = view.QuantizationLesson(model="mobilenet_v2")
    text = lesson._accuracy.object
    assert text.startswith("**Agreement** on 8 gallery photos, labelled with the float32 model's answers")
    assert "float32 **100.00%**" in text
    lesson.granularity = "per-channel"
    assert lesson.layer == "features.0.0" and "float32 **100.00%**" in lesson._accuracy.object


def test_the_arithmetic_counts_the_clipped_weights(synchronous):
    lesson = view.QuantizationLesson()
    lesson.param.update(bits=4, clip="percentile", granularity="per-channel", layer="features.8")
    weight = zoo.load("mnist-cnn").module.get_submodule("features.8").weight.detach().cpu().float()
    lo, hi = qm.clip_range(weight, "percentile", 0, 4, "symmetric")
    outside = int(((weight < lo[:, None, None, None]) | (weight > hi[:, None, None, None])).sum())
    assert outside > 0
    assert f"**{outside:,}** of the layer's {weight.numel():,} weights" in lesson._arithmetic.object
