"""The pruning lesson patches existing Bokeh models on every control; two sessions never see each other's pruning;
kept measurements are shown at once, missing ones arrive from workers, and never onto another model.

Deterministic: outside a served page the lesson's slow work runs at once; the tests that need measurements on
worker threads (a sweep still running when the student moves on) serve the lesson on a loop of their own (`served`)
and wait for what they started (lesson.wait()). The MNIST held-out set is cut to 300 test digits so that curves
and sensitivity run fast (what is painted is the same code path as with the full set), and measurements are
kept in a temporary cache of each test.
"""

from __future__ import annotations

import threading
from contextlib import nullcontext

import numpy as np
import pytest
import torch
from bokeh.document import Document
from panel.io.state import set_curdoc
from scipy.stats import binomtest

from explorer.core import agreement, data, evaluate, measurements, zoo
from explorer.core.data import EvalSet
from explorer.core.gallery import mnist_gallery
from explorer.lessons import plots
from explorer.lessons.pruning import math as pm
from explorer.lessons.pruning import measured
from explorer.lessons.pruning.measured import Point
from explorer.lessons.pruning.view import PruningLesson, speed_words
from explorer.session.state import ExplorerState
from tests.ui.doc_events import Page, as_served

SMALL = "first 300 MNIST test digits"


@pytest.fixture(autouse=True)
def small_held_out(monkeypatch, tmp_path):
    full_held_out = measured.held_out

    def held_out(name: str) -> EvalSet:
        card = zoo.load(name).card
        if card.preprocess != "mnist":
            return full_held_out(name)
        full = data.eval_set("test", card.mean, card.std)
        return EvalSet(SMALL, full.inputs[:300], full.labels[:300])

    monkeypatch.setattr(measured, "held_out", held_out)
    monkeypatch.setattr(measurements, "cache_dir", lambda: tmp_path)  # MNIST and weights stay where they are


class ServedLoop:
    """A served session's loop as the lesson's slow work sees it (explorer/session/work.py): a document with a
    session, whose next-tick callbacks run at once on the worker that hands them over, one at a time under `lock`
    (the server runs them one at a time, under the document's lock). A test holds `lock` to keep answers out."""

    def __init__(self):
        # the session's context (the document holds a weak reference), as much of it as Panel reads
        self.doc = Document()
        self._context = as_served(self.doc)
        self.doc.add_next_tick_callback = self._run
        self.doc.on_session_destroyed = lambda callback: None
        self.lock = threading.RLock()

    def _run(self, callback) -> None:
        with self.lock, set_curdoc(self.doc):
            callback()


@pytest.fixture
def served():
    """Slow work on worker threads, as in a served page; the test's own actions take `served.lock`."""
    loop = ServedLoop()
    with set_curdoc(loop.doc):
        yield loop


@pytest.fixture
def lessons(request):
    """Lessons made by a test; their workers are done before the next test starts."""
    made: list[PruningLesson] = []

    def make(**params) -> PruningLesson:
        lesson = PruningLesson(state=ExplorerState(**params))
        made.append(lesson)
        return lesson

    yield make
    loop = request.node.funcargs.get("served")
    for lesson in made:
        if lesson.state.model == "mobilenet_v2":
            with loop.lock if loop else nullcontext():
                lesson.state.model = "mnist-cnn"  # its sweep stops after the point it is measuring
        lesson.wait(timeout=300)


def reference_top1(model: zoo.ZooModel, point: Point) -> float:
    """The pruned copy's correct answers on the 300 digits, counted here."""
    dataset = measured.held_out(model.name)
    shown = model.module if point.amount == 0 else pm.prune(model.module, point.method, point.amount, point.scope,
                                                            point.only)
    with torch.no_grad():
        return int((shown(dataset.inputs).argmax(-1) == dataset.labels).sum()) / len(dataset)


def interactions(lesson: PruningLesson, round_: int):
    """(name, action, the named sources or pane texts it must change)"""
    digits = mnist_gallery()
    yield "sparsity", lambda: setattr(lesson, "sparsity", (80, 30)[round_]), ("pruning-pruned", "accuracy")
    yield "method", lambda: setattr(lesson, "method", "random"), ("pruning-weights-after",)
    yield "scope", lambda: setattr(lesson, "scope", ("global", "layer")[round_]), ("pruning-sparsity",
                                                                                    "pruning-curves")
    yield "layer", lambda: setattr(lesson._layer_input, "value", ("features.4", "classifier")[round_]), \
        ("pruning-weights-before",)
    yield "input", lambda: lesson.state.set_input(digits[7 + round_].source, digits[7 + round_].description), \
        ("pruning-dense",)
    yield "sensitivity", lambda: setattr(lesson._sensitivity_button, "clicks", lesson._sensitivity_button.clicks + 1), \
        ("pruning-sensitivity",)
    yield "structured", lambda: setattr(lesson, "method", "filters-l2"), ("pruning-weights-after",)


def shown(page: Page, lesson: PruningLesson, part: str) -> object:
    """A copy of a named source's columns (repr would elide the middle of large arrays), or the accuracy text."""
    if part == "accuracy":
        return lesson.measurements.accuracy_text.object
    return {k: [np.array(v, copy=True) for v in col] if isinstance(col, list) else np.array(col, copy=True)
            for k, col in page.model_named(part).data.items()}


def same(a: object, b: object) -> bool:
    if not isinstance(a, dict):
        return a == b
    return a.keys() == b.keys() and all(
        len(a[k]) == len(b[k]) and all(np.array_equal(x, y) for x, y in zip(a[k], b[k], strict=True)) for k in a)


def test_pruning_controls_only_patch_existing_models(lessons):
    lesson = lessons()
    page = Page(lesson)
    lesson.wait()
    for round_ in (0, 1):
        for name, act, parts in interactions(lesson, round_):
            def done(act=act) -> None:
                act()
                lesson.wait()

            page.check(name, done, lambda parts=parts: [shown(page, lesson, p) for p in parts], round_,
                       differs=lambda a, b: not any(same(x, y) for x, y in zip(a, b, strict=True)))
        lesson.method = "magnitude"
        lesson.wait()


def test_a_layer_change_draws_the_weights_and_leaves_the_predictions_alone(lessons):
    """The predictions depend on the input and the pruned copy, not on the layer drawn: a layer change sends
    neither prediction figure (each sent figure is drawn again in the page)."""
    lesson = lessons()
    page = Page(lesson)
    lesson.wait()
    f = lesson.figures
    predictions = {f.dense_source, f.pruned_source, f.dense_fig, f.pruned_fig, f.dense_fig.y_range,
                   f.pruned_fig.y_range}
    for layer in ("classifier", "features.4"):
        page.events.clear()
        lesson._layer_input.value = layer
        lesson.wait()
        changed = {e.model for e in page.events if hasattr(e, "model")}
        assert f.before_source in changed and not changed & predictions
    page.events.clear()
    lesson.sparsity = 90  # a new pruned copy: its prediction is drawn again, the dense model's is not
    lesson.wait()
    changed = {e.model for e in page.events if hasattr(e, "model")}
    assert f.pruned_source in changed and f.dense_source not in changed


def test_switching_to_the_vit_keeps_the_figures_and_lists_its_layers(lessons):
    lesson = lessons()
    page = Page(lesson)
    lesson.wait()
    figures = {m.id for m in page.doc.models if type(m).__name__ == "figure"}

    def switch() -> None:
        lesson.state.model = "mnist-vit"
        lesson.wait()

    assert page.act(switch, allow_new=("ImportedStyleSheet",)) == []
    assert figures == {m.id for m in page.doc.models if type(m).__name__ == "figure"}
    assert "blocks.0.attn.qkv" in lesson._layer_input.values
    bars = shown(page, lesson, "pruning-sparsity")

    def structured() -> None:
        lesson.method = "filters-l1"  # heads and MLP neurons
        lesson.wait()

    assert page.act(structured) == []
    assert not same(shown(page, lesson, "pruning-sparsity"), bars)


def test_curves_accuracy_and_sensitivity_are_the_pruned_models_measured_on_the_digits(lessons):
    model = zoo.load("mnist-cnn")
    lesson = lessons()
    lesson.param.update(sparsity=60, method="filters-l1")
    lesson._sensitivity_button.clicks += 1
    lesson.wait()
    top1, dense = reference_top1(model, Point("filters-l1", 0.6)), reference_top1(model, Point("magnitude", 0.0))
    accuracy = lesson.measurements.accuracy_text.object
    n = len(measured.held_out(model.name))
    assert f"at 60 %: **{top1:.2%}** ({wilson_text(top1, n)}; measured on {SMALL}); dense model: {dense:.2%}." \
        in accuracy
    curves = lesson.figures.curve_source.data
    for method, xs, ys in zip(pm.METHODS, curves["xs"], curves["ys"], strict=True):
        assert xs == [100 * a for a in measured.CURVE_AMOUNTS]
        assert ys == [100 * reference_top1(model, Point(method, a)) for a in measured.CURVE_AMOUNTS], method
    points = lesson.figures.curve_points.data  # each point's error bar: its Wilson interval, from SciPy
    for y, low, high in zip(points["y"], points["low"], points["high"], strict=True):
        ref = binomtest(round(y * n / 100), n).proportion_ci(method="wilson")
        assert (low, high) == pytest.approx((100 * ref.low, 100 * ref.high))
    assert lesson.figures.curve_fig.yaxis.axis_label == "accuracy (%)"
    bars = lesson.figures.sensitivity_source.data
    assert bars["layer"] == list(pm.structured_layers(model.module))
    assert bars["top1"] == [100 * reference_top1(model, Point("filters-l1", 0.6, "layer", name))
                            for name in bars["layer"]]
    for top1_, low, high in zip(bars["top1"], bars["low"], bars["high"], strict=True):  # whiskers: SciPy's interval
        ref = binomtest(round(top1_ * n / 100), n).proportion_ci(method="wilson")
        assert (low, high) == pytest.approx((100 * ref.low, 100 * ref.high))
    title = lesson.figures.sensitivity_fig.title.text
    assert title == "Accuracy when only this layer loses 60 % (whole units, L1 norm)"
    lesson.method = "magnitude"
    assert "does not drop" in lesson.speed_report()
    lesson.method = "filters-l1"
    assert "physically smaller model" in lesson.speed_report()
    assert f"**{top1:.2%} →" in lesson.recalibration_report()
    assert f"before: {wilson_text(top1, n)}; after: " in lesson.recalibration_report()


def wilson_text(fraction: float, n: int) -> str:
    """The interval as the lesson writes it, computed by SciPy."""
    ci = binomtest(round(fraction * n), n).proportion_ci(method="wilson")
    return f"95 % CI {100 * ci.low:.1f}–{100 * ci.high:.1f} %, n = {n:,}"


def speed_of(dense_ms: list[float], pruned_ms: list[float], structured: bool = False) -> pm.Speed:
    counts = (pm.Counts(1000, 500, 9000, 4000), pm.Counts(600, 600, 5000, 5000)) if structured else (None, None)
    return pm.Speed(256, evaluate.Timing(tuple(dense_ms)), evaluate.Timing(tuple(pruned_ms)), *counts)


def test_the_latency_report_gives_medians_middle_halves_and_no_difference_where_they_overlap(rng):
    dense = (torch.rand(15, generator=rng) * 4 + 20).tolist()  # 20-24 ms
    close = [t + 0.5 for t in dense]
    text = speed_words(speed_of(dense, close))
    q1, q3 = np.percentile(dense, [25, 75])
    assert "timed 15 times, alternating, after a warm-up" in text
    assert f"dense **{np.median(dense):.2f} ms** (middle half {q1:.2f}–{q3:.2f} ms)" in text
    assert f"pruned **{np.median(close):.2f} ms**" in text and "**no measurable difference**" in text
    far = [2 * t for t in dense]  # 40-48 ms: slower, and clearly so
    text = speed_words(speed_of(far, dense, structured=True))
    assert "no measurable difference" not in text
    assert f"**×{np.median(far) / np.median(dense):.2f}** (faster when pruned)" in text
    assert "600 instead of 1,000 parameters" in text


def test_kept_measurements_are_shown_at_once_on_opening(lessons, monkeypatch):
    first = lessons()
    first._sensitivity_button.clicks += 1
    first.wait()  # every curve point, the slider's accuracy and the sensitivity at 50 % are kept now

    def refuse(model: zoo.ZooModel, point: Point) -> float:
        raise AssertionError(f"measured {point} again")

    monkeypatch.setattr(measured, "_measure", refuse)
    second = lessons()
    assert second._slow == {}  # nothing asked of the slow work: everything was shown while it was built
    for part in ("curve_source", "curve_points", "sensitivity_source"):
        assert same(getattr(second.figures, part).data, getattr(first.figures, part).data), part
    assert second.measurements.accuracy_text.object == first.measurements.accuracy_text.object
    assert "**" in second.measurements.accuracy_text.object and "≈" not in second.measurements.accuracy_text.object


def test_a_sweep_for_a_model_left_behind_never_paints_onto_the_new_one(served, lessons, monkeypatch):
    measure, measuring, release = measured._measure, threading.Event(), threading.Event()

    def slow_for_the_cnn(model: zoo.ZooModel, point: Point) -> float:
        if model.name == "mnist-cnn":
            measuring.set()
            release.wait(timeout=300)  # still measuring when the student switches, done after the ViT's results
        return measure(model, point)

    monkeypatch.setattr(measured, "_measure", slow_for_the_cnn)
    lesson = lessons()
    page = Page(lesson)
    assert measuring.wait(timeout=60)
    cnn_jobs = {work.job for work in lesson._slow.values()}
    with served.lock:
        lesson.state.model = "mnist-vit"
    wait_for_new_work(lesson, cnn_jobs)
    release.set()  # the CNN's results arrive last
    lesson.wait()
    vit = zoo.load("mnist-vit")
    curves = lesson.figures.curve_source.data
    for method, ys in zip(pm.METHODS, curves["ys"], strict=True):
        assert ys == [100 * measured.kept(vit, Point(method, a)) for a in measured.CURVE_AMOUNTS], method
    assert measured.kept(zoo.load("mnist-cnn"), Point("magnitude", 0.0)) is not None  # measured, kept, not shown
    assert_only_the_current_model_is_shown(page, lesson, "mnist-vit", old=("features.", "classifier"))


@pytest.mark.skipif(not zoo.is_available("mobilenet_v2"), reason="MobileNetV2 is not fetched here")
def test_after_a_model_switch_every_tagged_result_names_the_new_model(served, lessons):
    lesson = lessons()
    page = Page(lesson)
    with served.lock:
        lesson._sensitivity_button.clicks += 1
    lesson.wait()
    assert lesson.figures.sensitivity_fig.title.text.startswith("Accuracy when only this layer")
    with served.lock:  # workers wait: what the switch itself shows, with nothing kept for MobileNetV2
        lesson.state.model = "mobilenet_v2"
        assert_only_the_current_model_is_shown(page, lesson, "mobilenet_v2", old=("Accuracy", "accuracy", SMALL))
        assert lesson.figures.sensitivity_fig.title.text == ("Per-layer sensitivity at 50 % (smallest |w|): "
                                                             "press Measure")
        assert lesson.figures.sensitivity_source.data["layer"] == []
        assert lesson.measurements.accuracy_text.object == "Measuring the agreement at 50 % …"
        assert lesson.measurements.curve_text.object.startswith(
            f"Measuring the curves: 37 points on {agreement.description()}")
        assert lesson.figures.curve_source.data["ys"] == [[], [], [], []]


@pytest.mark.skipif(not zoo.is_available("mobilenet_v2"), reason="MobileNetV2 is not fetched here")
def test_mobilenet_switching_from_whole_units_to_smallest_weights_while_measuring(served, lessons, monkeypatch):
    """The reported failure: NameError from torch.fx in the accuracy measurement, after this switch."""
    monkeypatch.setattr(measured, "CURVE_AMOUNTS", (0.0, 0.5))  # a short sweep beside the slider's measurement
    measure, measuring = measured._measure, threading.Event()
    structured = Point("filters-l1", 0.5)

    def signalled(model: zoo.ZooModel, point: Point) -> float:
        if point == structured:
            measuring.set()
        return measure(model, point)

    monkeypatch.setattr(measured, "_measure", signalled)
    lesson = lessons(model="mobilenet_v2")
    with served.lock:
        lesson.method = "filters-l1"
    assert measuring.wait(timeout=300)
    with served.lock:  # answers wait; the worker measures on
        lesson.method = "magnitude"  # prunes and runs MobileNetV2 on this thread while a worker measures
    lesson.wait(timeout=300)
    model = zoo.load("mobilenet_v2")
    for point in (structured, Point("magnitude", 0.5), Point("random", 0.0)):
        assert measured.kept(model, point) == reference_top1(model, point)
    top1, dense = reference_top1(model, Point("magnitude", 0.5)), reference_top1(model, Point("magnitude", 0.0))
    assert lesson.measurements.accuracy_text.object.startswith(
        f"Agreement at 50 %: **{top1:.2%}** ({evaluate.interval_text(top1, agreement.count())}; measured on "
        f"{agreement.description()}); dense model: {dense:.2%}.")


def wait_for_new_work(lesson: PruningLesson, old_jobs: set, timeout: float = 300) -> None:
    """Until the slow work asked for after `old_jobs` (still running, say) is shown: a sweep asks for its next point
    while it shows one, so its newest request is done only once the whole sweep is."""
    while pending := [w.job for w in lesson._slow.values()
                      if w.job is not None and w.job not in old_jobs and not w.job.done()]:
        for job in pending:
            job.result(timeout)


def assert_only_the_current_model_is_shown(page: Page, lesson: PruningLesson, name: str, old: tuple[str, ...]):
    """Every tagged Bokeh model names `name`; every result is tagged; no text of a result, its title, axes or
    labels holds a word of the old model."""
    tagged = [m for m in page.doc.models if any(t.startswith(plots.MODEL_TAG) for t in m.tags)]
    assert {t for m in tagged for t in m.tags} == set(plots.model_tag(name))
    f = lesson.figures
    results = (f.curve_fig, f.curve_source, f.curve_points, f.sensitivity_fig, f.sensitivity_source, f.sparsity_fig,
               f.sparsity_source, f.dense_fig, f.dense_source, f.pruned_fig, f.pruned_source, f.before_fig,
               f.before_source, f.after_fig, f.after_source)
    assert set(results) == set(f.results())
    assert {m.id for m in results} <= {m.id for m in tagged}
    m = lesson.measurements
    panes = (lesson._prediction_text, m.accuracy_text, lesson._counts_text, lesson._weights_text, m.curve_text,
             m.sensitivity_text, lesson._bn_text, lesson._speed_text)
    assert all(p.tags == plots.model_tag(name) for p in panes)
    shown = {m.id: m for t in tagged for m in t.references()}  # with their titles, axes, ranges, labels
    stale = [(text, word) for m in shown.values() for text in _strings(m) for word in old if word in text]
    assert stale == [], stale


def _strings(model) -> list[str]:
    """Every string a Bokeh model shows: text, titles, labels, category names, string data columns."""
    out: list[str] = []
    for prop in ("text", "axis_label", "factors", "label", "options", "value"):
        value = getattr(model, prop) if prop in model.properties() else None
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, list | tuple):
            out += [v for v in value if isinstance(v, str)]
    if type(model).__name__ == "ColumnDataSource":
        out += [v for col in model.data.values() for v in col if isinstance(v, str)]
    return out


def test_another_session_pruning_leaves_the_shared_model_and_this_session_unchanged(lessons):
    shared = zoo.load("mnist-cnn").module
    before = {k: v.clone() for k, v in shared.state_dict().items()}
    mine, theirs = lessons(), lessons()
    mine.sparsity = 0
    my_prediction = mine.figures.pruned_source.data["prob"]
    for method in pm.METHODS:
        theirs.param.update(method=method, scope="global", sparsity=95)
        pm.shrink(theirs._pruned)
    after = shared.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(m._forward_pre_hooks for m in shared.modules())  # no pruning hooks on the shared model
    assert mine.figures.pruned_source.data["prob"] == my_prediction
    assert mine.sparsity == 0 and pm.global_sparsity(mine._pruned) == 0.0


def test_bad_setting_is_shown_not_raised(lessons):
    lesson = lessons()
    lesson.param.sparsity.bounds = (0, 100)  # a tampered URL could ask for this
    lesson.sparsity = 100
    assert lesson.errors.visible and "outside 0 % to 99%" in lesson.errors.object


def test_the_drawn_layer_is_the_sessions_among_the_prunable_ones(lessons):
    lesson = lessons()
    layers = list(pm.prunable_layers(zoo.load("mnist-cnn").module))
    assert lesson._layer_input.values == layers
    lesson._layer_input.value = "classifier"  # the student picks a layer: it is the session's
    assert lesson.state.layer == "classifier" and lesson._weights_text.object.startswith("**classifier**")
    lesson.state.layer = "features.0"  # another view picks one
    assert lesson._layer_input.value == "features.0" and lesson._weights_text.object.startswith("**features.0**")
    lesson.state.layer = "features.1"  # a ReLU: no weights; the first full weight matrix is drawn
    assert lesson._weights_text.object.startswith("**features.4**")
    # the menu shows it, and does not write it back: the session's layer stays the ReLU the student chose
    assert lesson._layer_input.value == "features.4" and lesson.state.layer == "features.1"


def test_a_new_input_prunes_nothing_again_and_changes_only_the_prediction(lessons, monkeypatch):
    lesson = lessons()
    page = Page(lesson)
    lesson.wait()
    pruned = []
    real_prune = pm.prune
    monkeypatch.setattr(pm, "prune", lambda *a, **k: pruned.append(a[1:]) or real_prune(*a, **k))
    parts = ("pruning-dense", "pruning-pruned", "pruning-weights-after", "pruning-sparsity")
    before = [shown(page, lesson, p) for p in parts]
    digit = mnist_gallery()[3]
    lesson.state.set_input(digit.source, digit.description)
    lesson.wait()
    after = [shown(page, lesson, p) for p in parts]
    assert pruned == []
    assert [same(a, b) for a, b in zip(before, after, strict=True)] == [False, False, True, True]
    with torch.no_grad():  # the prediction shown is the pruned copy's on the new input
        x = lesson.state.inference.x
        want = real_prune(zoo.load("mnist-cnn").module, lesson.method, lesson.sparsity / 100, lesson.scope)(x)
    top = want.softmax(-1)[0].topk(len(page.model_named("pruning-pruned").data["prob"]))
    np.testing.assert_allclose(page.model_named("pruning-pruned").data["prob"], top.values.numpy(), atol=1e-6)
    lesson.sparsity = 70
    assert pruned == [(lesson.method, 0.7, lesson.scope)]
