"""The pruning lesson patches existing Bokeh models on every control; two sessions never see each other's pruning.

Deterministic (no timing). The held-out set is cut to 300 test digits so that curves and sensitivity run fast;
what is painted is the same code path as with the full set.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from explorer.core import data, zoo
from explorer.core.data import EvalSet
from explorer.lessons.pruning import math as pm
from explorer.lessons.pruning import view
from explorer.lessons.pruning.view import PruningLesson
from explorer.ui.gallery import mnist_gallery
from explorer.ui.state import ExplorerState
from tests.ui.doc_events import Page


@pytest.fixture(autouse=True)
def small_held_out(monkeypatch):
    def held_out(name: str) -> EvalSet:
        card = zoo.load(name).card
        full = data.eval_set("test", card.mean, card.std)
        return EvalSet("first 300 MNIST test digits", full.inputs[:300], full.labels[:300])

    monkeypatch.setattr(view, "held_out", held_out)


def interactions(lesson: PruningLesson, round_: int):
    """(name, action, the named source or pane text it must change)"""
    digits = mnist_gallery()
    yield "sparsity", lambda: setattr(lesson, "sparsity", (80, 30)[round_]), "pruning-pruned"
    yield "method", lambda: setattr(lesson, "method", "random"), "pruning-weights-after"
    yield "scope", lambda: setattr(lesson, "scope", ("global", "layer")[round_]), "pruning-sparsity"
    yield "layer", lambda: setattr(lesson, "layer", ("features.0", "classifier")[round_]), "pruning-weights-before"
    yield "input", lambda: lesson.state.set_input(digits[7 + round_].source, digits[7 + round_].description), \
        "pruning-dense"
    yield "curves", lesson.measure_curves_now, "pruning-curves"
    yield "sensitivity", lesson.measure_sensitivity_now, "pruning-sensitivity"
    yield "structured", lambda: setattr(lesson, "method", "filters-l2"), "pruning-weights-after"


def shown(page: Page, source: str) -> dict:
    """A copy of a named source's columns (repr would elide the middle of large arrays)."""
    return {k: [np.array(v, copy=True) for v in col] if isinstance(col, list) else np.array(col, copy=True)
            for k, col in page.model_named(source).data.items()}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        len(a[k]) == len(b[k]) and all(np.array_equal(x, y) for x, y in zip(a[k], b[k], strict=True)) for k in a)


def test_pruning_controls_only_patch_existing_models():
    lesson = PruningLesson(state=ExplorerState())
    page = Page(lesson)
    for round_ in (0, 1):
        for name, act, part in interactions(lesson, round_):
            page.check(name, act, lambda part=part: shown(page, part), round_, differs=lambda a, b: not same(a, b))
        lesson.method = "magnitude"


def test_measured_accuracy_and_reports_are_shown():
    lesson = PruningLesson(state=ExplorerState())
    lesson.sparsity = 90
    acc = lesson.measure_now()
    assert f"**{acc.top1:.2%}**" in lesson._accuracy_text.object
    lesson.method = "filters-l1"
    assert "physically smaller model" in lesson.speed_report()
    assert "→" in lesson.recalibration_report()
    lesson.method = "magnitude"
    assert "does not drop" in lesson.speed_report()


def test_switching_to_the_vit_keeps_the_figures_and_lists_its_layers():
    state = ExplorerState()
    lesson = PruningLesson(state=state)
    page = Page(lesson)
    figures = {m.id for m in page.doc.models if type(m).__name__ == "figure"}
    created = page.act(lambda: setattr(state, "model", "mnist-vit"), allow_new=("ImportedStyleSheet",))
    assert created == []
    assert figures == {m.id for m in page.doc.models if type(m).__name__ == "figure"}
    assert "blocks.0.attn.qkv" in lesson.param.layer.objects
    bars = shown(page, "pruning-sparsity")
    assert page.act(lambda: setattr(lesson, "method", "filters-l1")) == []  # heads and MLP neurons
    assert not same(shown(page, "pruning-sparsity"), bars)


def test_another_session_pruning_leaves_the_shared_model_and_this_session_unchanged():
    shared = zoo.load("mnist-cnn").module
    before = {k: v.clone() for k, v in shared.state_dict().items()}
    mine, theirs = PruningLesson(state=ExplorerState()), PruningLesson(state=ExplorerState())
    mine.sparsity = 0
    my_prediction = mine._pruned_source.data["prob"]
    for method in pm.METHODS:
        theirs.param.update(method=method, scope="global", sparsity=95)
        pm.shrink(theirs._pruned)
    after = shared.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(m._forward_pre_hooks for m in shared.modules())  # no pruning hooks on the shared model
    assert mine._pruned_source.data["prob"] == my_prediction
    assert mine.sparsity == 0 and pm.global_sparsity(mine._pruned) == 0.0


def test_bad_setting_is_shown_not_raised():
    lesson = PruningLesson(state=ExplorerState())
    lesson.param.sparsity.bounds = (0, 100)  # a tampered URL could ask for this
    lesson.sparsity = 100
    assert lesson._error.visible and "outside 0 % to 99%" in lesson._error.object
