"""The saliency lesson, headless: its figures hold exactly the numbers of math.py, faithfulness.py and sanity.py for a
fresh random input (the maps' gradients also against torch.autograd directly), a switch of model or input redraws
everything for the new one, every control only patches existing Bokeh models, and the tour's texts are true for
the states it sets.

Outside a served page the lesson's slow work runs at once (explorer/session/work.py), so every answer is shown when
a setting returns; one test serves the lesson with its workers queued until the test runs them.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from panel.io.state import set_curdoc

from explorer.core import zoo
from explorer.lessons import plots
from explorer.lessons.saliency import faithfulness as fm
from explorer.lessons.saliency import math as sm
from explorer.lessons.saliency import sanity as sn
from explorer.lessons.saliency.view import READS, SaliencyLesson
from explorer.session import background
from explorer.session.later import InView
from explorer.session.state import ExplorerState
from explorer.session.tags import MODEL_TAG
from tests.ui.doc_events import Page
from tests.ui.test_quantization_update_paths import Queued

needs_vit = pytest.mark.skipif(not zoo.is_available("mnist-vit"), reason="mnist-vit is not trained here")


def progress_shown(lesson) -> bool:
    """The progress bar is shown (kept in its place when hidden: plots.show_in_place)."""
    return lesson.progress.styles.get("visibility") == "visible"


def random_digit(rng: torch.Generator) -> np.ndarray:
    """A random stroke-like blob on black: a bar of random brightness at a random place (uint8, 28 × 28)."""
    picture = np.zeros((28, 28), np.uint8)
    top, left = (int(v) for v in torch.randint(3, 12, (2,), generator=rng))
    height, width = (int(v) for v in torch.randint(8, 14, (2,), generator=rng))
    picture[top:top + height, left:left + width] = torch.randint(90, 256, (height, width), generator=rng).numpy()
    return picture


@pytest.fixture
def lesson(rng) -> SaliencyLesson:
    state = ExplorerState(model="mnist-cnn")
    assert state.set_input(random_digit(rng), "a random blob"), state.error
    return SaliencyLesson(state=state)


def shown_map(lesson: SaliencyLesson, method: str) -> np.ndarray | None:
    images = lesson.maps.figures[method].source.data["image"]
    return images[0] if images else None


def input_gradient(model: torch.nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    """∂ logit_target / ∂x by plain autograd, (1, C, H, W)."""
    x = x.detach().clone().requires_grad_()
    with torch.enable_grad():
        model(x)[0, target].backward()
    return x.grad


def test_each_map_is_the_maths_attribution_drawn_on_a_scale_centred_on_zero(lesson):
    inference, settings = lesson.state.inference, lesson.settings()
    assert settings.target == int(inference.model.module(inference.x).argmax())  # the predicted class by default
    for method in sm.METHODS:
        expected = sm.attribute(inference.model.module, inference.x, method, settings).heat
        np.testing.assert_array_equal(shown_map(lesson, method), expected.astype(np.float32))
        mapper = lesson.maps.figures[method].mapper
        limit = float(np.abs(expected.astype(np.float32)).max())
        assert (mapper.low, mapper.high) == (-limit, limit)  # symmetric: white is exactly 0
        assert mapper.palette == list(plots.DIVERGING)


def test_the_gradient_maps_match_autograd(lesson):
    inference = lesson.state.inference
    grad = input_gradient(inference.model.module, inference.x, lesson.explained)
    # summing float32 gradients over one channel: the same numbers, to float32 rounding
    np.testing.assert_allclose(shown_map(lesson, "gradient"), grad[0].sum(0).numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(shown_map(lesson, "gradient_x_input"), (inference.x * grad)[0].sum(0).numpy(),
                               rtol=1e-5, atol=1e-7)


def test_the_completeness_gap_shown_is_the_sum_of_attributions_minus_the_score_difference(lesson):
    inference, settings = lesson.state.inference, lesson.settings()
    ig = lesson.attributions["integrated_gradients"]
    card = inference.model.card
    black = ((0 - torch.tensor(card.mean)) / torch.tensor(card.std)).reshape(1, -1, 1, 1).expand_as(inference.x)
    model, t = inference.model.module, settings.target
    with torch.no_grad():
        rise = model(inference.x)[0, t] - model(black)[0, t]
    gap = float(ig.values.double().sum() - rise.double())
    assert ig.completeness_gap == pytest.approx(gap, abs=1e-4)  # float32 logits: about 1e-6 of their size
    assert f"completeness gap: {plots.format_value(ig.completeness_gap)}" in lesson.maps.gap_text.object


def test_the_curves_and_their_areas_are_faithfulness_pys(lesson):
    inference, target = lesson.state.inference, lesson.explained
    deletion, insertion = lesson.faithfulness.deletion.data, lesson.faithfulness.insertion.data
    areas = {}
    for k, method in enumerate(sm.METHODS):
        heat = sm.attribute(inference.model.module, inference.x, method, lesson.settings()).heat
        model, x, black = inference.model.module, inference.x, lesson.settings().black
        for data, curve in ((deletion, fm.deletion_curve(model, x, heat, target, black=black)),
                            (insertion, fm.insertion_curve(model, x, heat, target, black=black))):
            np.testing.assert_array_equal(data["xs"][k], curve.fractions)
            np.testing.assert_array_equal(data["ys"][k], curve.probabilities)
            assert data["method"][k] == f"{sm.METHODS[method]}: area {curve.area:.3f}"
            areas.setdefault(method, []).append(curve.area)
    # the best by each test, at the three decimals the table shows (equal there: a tie, every one named)
    shown = {m: (round(d, 3), round(i, 3)) for m, (d, i) in areas.items()}
    best_deletion = {m for m in shown if shown[m][0] == min(v[0] for v in shown.values())}
    best_insertion = {m for m in shown if shown[m][1] == max(v[1] for v in shown.values())}
    text = lesson.faithfulness.text.object
    words = text.split("\n\n")[-1]
    named = {m for m in sm.METHODS if f"**{sm.METHODS[m]}**" in words}
    assert named == best_deletion | best_insertion
    assert ("by both tests" in words) == (best_deletion == best_insertion)


def test_the_sanity_check_shows_sanity_pys_correlations_and_flags_the_survivors(lesson):
    inference, settings = lesson.state.inference, lesson.settings()
    assert not lesson.sanity.button.disabled
    lesson.sanity.run()
    check = sn.randomisation_check(inference.model.module, inference.x, settings)
    data = lesson.sanity.source.data
    assert len(data["ys"]) == len(sm.METHODS)
    for k, method in enumerate(sm.METHODS):
        correlations = np.asarray(data["ys"][k])
        assert correlations[0] == 1.0 and len(correlations) == len(check.layers) + 1
        np.testing.assert_allclose(correlations[1:], check.correlation[method], atol=1e-12)
        flagged = lesson.maps.figures[method].fig.title.text.endswith("⚠ survives")
        assert flagged == check.survives[method] == data["method"][k].endswith("⚠ survives")
    assert lesson.sanity.button.disabled  # done: nothing to run again until a map changes
    lesson.noise = 0.25
    assert lesson.sanity.source.data["ys"] == [] and not lesson.sanity.button.disabled


def test_a_setting_recomputes_only_the_maps_that_read_it(lesson):
    before = {m: shown_map(lesson, m) for m in sm.METHODS}
    lesson.ig_steps = 8
    changed = {m for m in sm.METHODS if not np.array_equal(shown_map(lesson, m), before[m])}
    assert changed == {"integrated_gradients"} and "steps" in READS["integrated_gradients"]
    lesson.target = (lesson.explained + 1) % 10
    assert all(not np.array_equal(shown_map(lesson, m), before[m]) for m in ("gradient", "smoothgrad"))
    assert lesson.settings().target == lesson.target
    assert lesson._class_menu.value == lesson.target


def test_served_an_answer_for_settings_the_student_left_is_dropped(monkeypatch, rng):
    state = ExplorerState(model="mnist-cnn")
    assert state.set_input(random_digit(rng), "a random blob"), state.error
    session = Queued()  # a served session whose workers wait until the test runs them
    monkeypatch.setattr(background, "submit", session)
    with set_curdoc(session.doc):
        lesson = SaliencyLesson(state=state)
        assert shown_map(lesson, "gradient") is None and progress_shown(lesson)
        session.run()
        ig = lesson.maps.figures["integrated_gradients"]
        before = shown_map(lesson, "integrated_gradients")
        lesson.ig_steps = 8
        assert ig.fig.title.text == "Integrated Gradients (computing …)" and progress_shown(lesson)
        lesson.ig_steps = 32  # back where the map shown was computed, before the worker ran
        assert ig.fig.title.text == "Integrated Gradients" and not progress_shown(lesson)
        session.run()  # the map for 8 steps: not computed, and never shown
        np.testing.assert_array_equal(shown_map(lesson, "integrated_gradients"), before)
        lesson.noise = 0.3
        session.run()
        expected = sm.attribute(state.inference.model.module, state.inference.x, "smoothgrad", lesson.settings())
        np.testing.assert_array_equal(shown_map(lesson, "smoothgrad"), expected.heat.astype(np.float32))
        assert not progress_shown(lesson)


def test_a_second_student_on_the_same_input_is_shown_the_maps_and_curves_computed_for_the_first(monkeypatch, rng):
    model = zoo.load("mnist-cnn").module
    calls = []  # what was computed for the model itself (the sanity check's randomized copies aside)
    for name, module in (("attribute", sm), ("deletion_curve", fm), ("insertion_curve", fm)):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda m, *a, _real=real, _name=name, **k:
                            (calls.append(_name) if m is model else None, _real(m, *a, **k))[1])
    digit, lessons, counts = random_digit(rng), [], []
    for student in range(2):
        state = ExplorerState(model="mnist-cnn")
        assert state.set_input(digit.copy(), f"student {student}'s copy of one digit"), state.error
        calls.clear()
        lessons.append(SaliencyLesson(state=state))
        counts.append(Counter(calls))
    assert counts[0] == {"attribute": len(sm.METHODS), "deletion_curve": len(sm.METHODS),
                         "insertion_curve": len(sm.METHODS)}
    assert counts[1] == {}  # nothing computed again
    for m in sm.METHODS:
        np.testing.assert_array_equal(shown_map(lessons[1], m), shown_map(lessons[0], m))
    lessons[1].noise = 0.3  # a setting no one asked for yet: computed
    assert calls.count("attribute") == 1


def test_served_what_the_class_computed_already_is_shown_at_once_without_a_worker(monkeypatch, rng):
    digit = random_digit(rng)
    first = ExplorerState(model="mnist-cnn")
    assert first.set_input(digit.copy(), "one digit"), first.error
    shown = SaliencyLesson(state=first)  # not served: computes every map and curve at once
    state = ExplorerState(model="mnist-cnn")
    assert state.set_input(digit.copy(), "the same digit"), state.error
    session = Queued()
    monkeypatch.setattr(background, "submit", session)
    with set_curdoc(session.doc):
        lesson = SaliencyLesson(state=state)
        assert session.names() == [] and not progress_shown(lesson)
        for m in sm.METHODS:
            np.testing.assert_array_equal(shown_map(lesson, m), shown_map(shown, m))
        lesson.noise = 0.3  # SmoothGrad's map and curves for a new setting: to a worker
        assert len(session.names()) == 1 and progress_shown(lesson)
        session.run()
        assert not progress_shown(lesson)


def scroll_to_the_curves(lesson: SaliencyLesson) -> None:
    """What the page does when the student scrolls to the lesson's parts below the first screen."""
    for mark in lesson.__panel__().select(InView):
        mark.seen = True


def test_served_a_chain_whose_first_results_are_kept_shows_them_and_counts_on_from_there(monkeypatch, rng):
    digit = random_digit(rng)
    first = ExplorerState(model="mnist-cnn")
    assert first.set_input(digit.copy(), "one digit"), first.error
    SaliencyLesson(state=first)  # computes the maps and curves of the default settings
    state = ExplorerState(model="mnist-cnn")
    assert state.set_input(digit.copy(), "the same digit"), state.error
    session = Queued()
    monkeypatch.setattr(background, "submit", session)
    with set_curdoc(session.doc):
        lesson = SaliencyLesson(state=state, noise=0.45)  # SmoothGrad at a noise no one asked for
        kept = list(sm.METHODS).index("smoothgrad")  # the maps before it in the chain are kept
        # the curves are not asked for: the student has not scrolled to them
        assert kept >= 2 and lesson.progress.value == kept and lesson.progress.max == len(sm.METHODS)
        assert shown_map(lesson, "gradient") is not None and shown_map(lesson, "smoothgrad") is None
        session.run()
        assert shown_map(lesson, "smoothgrad") is not None and not progress_shown(lesson)


def test_served_maps_run_at_the_servers_priority_and_curves_at_background_priority_once_scrolled_to(
        monkeypatch, rng):
    state = ExplorerState(model="mnist-cnn")
    assert state.set_input(random_digit(rng), "a random blob"), state.error
    session = Queued()
    monkeypatch.setattr(background, "submit", session)
    with set_curdoc(session.doc):
        lesson = SaliencyLesson(state=state)
        asked = []  # (strand, what the progress said) for each worker, in the order of the chain

        def drain() -> None:
            while session.work:
                asked.append((session.work[0][0], lesson.progress_text.object))
                session.work.pop(0)[1]()

        drain()
        maps, curves = "SaliencyLesson.maps", "SaliencyLesson.curves"
        assert [strand for strand, _ in asked] == [maps] * len(sm.METHODS)  # the curves' part is not placed
        assert all(curve.data["xs"] == [] for curve in (lesson.faithfulness.deletion, lesson.faithfulness.insertion))
        scroll_to_the_curves(lesson)
        assert lesson.faithfulness.text.object == f"Computing the curves: 0 of {len(sm.METHODS)} methods …"
        drain()
    assert [strand for strand, _ in asked] == [maps] * len(sm.METHODS) + [curves] * len(sm.METHODS)
    assert all(" map (" in text for strand, text in asked if strand == maps)
    assert all("curves (" in text for strand, text in asked if strand == curves)
    assert session.background == {maps: False, curves: True}
    assert not progress_shown(lesson) and all(shown_map(lesson, m) is not None for m in sm.METHODS)
    curves_shown = (lesson.faithfulness.deletion, lesson.faithfulness.insertion)
    assert all(len(curve.data["xs"]) == len(sm.METHODS) for curve in curves_shown)
    assert "Computing" not in lesson.faithfulness.text.object and "deletion area" in lesson.faithfulness.text.object


@needs_vit
def test_a_model_or_input_switch_redraws_everything_for_the_new_one(lesson, rng):
    page = Page(lesson)
    state = lesson.state
    state.model = "mnist-vit"
    vit = state.inference.model.module
    assert lesson.param.cam_layer.objects == list(sm.grad_cam_layers(vit))
    assert lesson.cam_layer == sm.default_grad_cam_layer(vit)
    settings = lesson.settings()
    for method in sm.METHODS:
        np.testing.assert_array_equal(shown_map(lesson, method),
                                      sm.attribute(vit, state.inference.x, method, settings).heat.astype(np.float32))
    assert {name for name, _ in page.model_tags()} == {"mnist-vit"}
    assert state.set_input(random_digit(rng), "another random blob")
    np.testing.assert_array_equal(lesson.maps.picture.data["image"][0],
                                  plots.picture_to_rgba(state.inference.view))
    np.testing.assert_array_equal(shown_map(lesson, "gradient"),
                                  sm.attribute(vit, state.inference.x, "gradient", lesson.settings()).heat
                                  .astype(np.float32))
    state.model = "mnist-cnn"
    assert {name for name, _ in page.model_tags()} == {"mnist-cnn"}
    assert all(tag == MODEL_TAG + "mnist-cnn" for tag in lesson.maps.figures["grad_cam"].source.tags)


def interactions(lesson: SaliencyLesson, round_: int):
    """(name, action, the method whose map it must change)"""
    classes = [c for c in range(10) if c != lesson.explained]  # each a change from the predicted class
    yield "class", lambda: setattr(lesson._class_menu, "value", classes[round_]), "gradient"
    yield "noise", lambda: setattr(lesson, "noise", (0.3, 0.05)[round_]), "smoothgrad"
    yield "samples", lambda: setattr(lesson, "samples", (8, 24)[round_]), "smoothgrad"
    yield "baseline", lambda: setattr(lesson, "baseline", ("blurred", "noise")[round_]), "integrated_gradients"
    yield "steps", lambda: setattr(lesson, "ig_steps", (8, 64)[round_]), "integrated_gradients"
    yield "layer", lambda: setattr(lesson, "cam_layer", ("features.4", "features.0")[round_]), "grad_cam"


def test_every_control_only_patches_existing_models(lesson):
    page = Page(lesson)
    for round_ in (0, 1):
        for name, action, method in interactions(lesson, round_):
            page.check(name, action, lambda method=method: repr(lesson.maps.figures[method].source.data), round_)


def test_the_tour_sets_what_its_texts_say(lesson):
    tour = lesson.tour
    tour.index = 1
    runner_up = int(lesson.state.inference.probs.topk(2).indices[1])
    assert lesson.target == runner_up == lesson.settings().target
    assert "not the predicted class" in lesson.maps.target_text.object
    assert "second most likely class" in tour._text.object
    tour.index = 2
    assert (lesson.target, lesson.noise, lesson.samples) == (None, 0.3, 48)
    assert "30 %" in tour._text.object and "48 copies" in tour._text.object
    assert "(the predicted class)" in lesson.maps.target_text.object
    tour.index = 3
    assert (lesson.ig_steps, lesson.baseline) == (4, "black")
    assert "only 4 steps" in tour._text.object
    assert lesson.attributions["integrated_gradients"].completeness_gap is not None
    assert "completeness gap" in lesson.maps.gap_text.object
    tour.index = 5
    assert "Run the sanity check" in tour._text.object and lesson.sanity.button.label == "Run the sanity check"


def test_the_lesson_stands_alone_in_a_notebook():
    lesson = SaliencyLesson(model="mnist-cnn")
    assert lesson.state.model == "mnist-cnn"
    assert all(len(f.source.data["image"]) == 1 for f in lesson.maps.figures.values())
    assert len(lesson.faithfulness.deletion.data["xs"]) == len(sm.METHODS)
