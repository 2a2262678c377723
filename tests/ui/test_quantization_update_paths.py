"""The quantization lesson: every control patches existing Bokeh models, sessions never share changes, kept
accuracies are shown at once, the others are measured in the background and kept, and after a model switch nothing
of the previous model stays on screen.

Deterministic where it can be: outside a served page the lesson's slow work runs at once; inside one (a document
with a session context, as the server gives) its workers are queued until the test runs them. The held-out set is
cut to its first 300 images and the on-disk cache is a private one. The sweep is a short one
(tests/lessons/test_quantization_math.py checks the real sweep's settings), except where a test says otherwise.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import replace

import pytest
import torch
from bokeh.document import Document
from panel.io.state import set_curdoc
from scipy.stats import binomtest

from explorer.core import agreement, evaluate, measurements, zoo
from explorer.core.data import EvalSet
from explorer.core.gallery import mnist_gallery
from explorer.lessons import plots
from explorer.lessons.quantization import math as qm
from explorer.lessons.quantization import measured, view
from explorer.session import background
from explorer.session.state import ExplorerState
from tests.measurements_cache import empty_measurements_cache
from tests.ui.doc_events import Page, ServedContext, as_served

SMALL = 300  # held-out images: enough to tell settings apart, quick enough for a test


def wilson(fraction: float, n: int) -> str:
    """The 95 % interval of `fraction` of n images as the lesson writes it, computed by SciPy."""
    ci = binomtest(round(fraction * n), n).proportion_ci(method="wilson")
    return f"95 % CI {100 * ci.low:.1f}–{100 * ci.high:.1f} %, n = {n:,}"


def served_document(next_tick) -> tuple[Document, ServedContext]:
    """A document as a served session has one; `next_tick(doc, callback)` gets what workers hand to the session's
    loop. Keep the context: the document holds it weakly."""
    doc = Document()
    context = as_served(doc)
    doc.add_next_tick_callback = lambda callback: next_tick(doc, callback)
    return doc, context


class Queued:
    """A served session whose slow work is kept until the test runs it (a student who is quicker than the workers):
    `background.submit` queues each worker, and what a worker hands to the session's loop runs at once."""

    def __init__(self):
        self.work: list[tuple[str, object]] = []
        self.background: dict[str, bool] = {}  # strand name -> whether its workers run at background priority
        self.doc, self._context = served_document(lambda _doc, callback: callback())

    def __call__(self, work, name: str, background: bool = True) -> Future:
        self.work.append((name, work))
        self.background[name] = background
        return Future()

    def names(self) -> list[str]:
        return [name for name, _ in self.work]

    def run(self, strand: str = "") -> None:
        """Run the queued workers whose strand name ends with `strand` (all by default), and those they queue."""
        while any(name.endswith(strand) for name in self.names()):
            i = next(i for i, name in enumerate(self.names()) if name.endswith(strand))
            self.work.pop(i)[1]()


full_heldout, full_calibration, full_dataset_name = measured.heldout, measured.calibration, measured.dataset_name


def small_heldout(name: str) -> EvalSet:
    evalset = full_heldout(name)
    return EvalSet(f"{evalset.name}, first {SMALL}", evalset.inputs[:SMALL], evalset.labels[:SMALL])


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    """A fresh, empty on-disk cache of measurements (MNIST, the models and the int8 files stay where they are), and
    a small held-out set."""
    empty_measurements_cache(tmp_path, monkeypatch)
    monkeypatch.setattr(measured, "heldout", small_heldout)
    monkeypatch.setattr(measured, "calibration", lambda name: full_calibration(name)[:64])
    monkeypatch.setattr(measured, "dataset_name", lambda model: f"{full_dataset_name(model)}, first {SMALL}")


@pytest.fixture
def synchronous(private_cache, monkeypatch):
    """Outside a served page: the lesson's slow work runs at once (explorer/session/work.py)."""
    monkeypatch.setattr(background, "submit", lambda *_: pytest.fail("outside a server nothing goes to a worker"))
    monkeypatch.setattr(qm, "sweep_settings", lambda base: [replace(base, weight_bits=b) for b in (8, 2)])


@pytest.fixture
def queued(private_cache, monkeypatch) -> Queued:
    session = Queued()
    monkeypatch.setattr(background, "submit", session)
    with set_curdoc(session.doc):
        yield session


def shown(page: Page, lesson: view.QuantizationLesson, part: str) -> object:
    if part.startswith("md:"):
        return getattr(lesson, part[3:]).object
    return page.data(part)


def interactions(lesson: view.QuantizationLesson, round_: int):
    """(name, action, the part of the page it must change)"""
    state, digits = lesson.state, mnist_gallery()
    layers = lesson.layers
    yield "layer", lambda: setattr(lesson, "layer", layers[1 + round_]), "quantization-histogram"
    yield "bits", lambda: setattr(lesson, "bits", (3, 5)[round_]), "quantization-dequantized"
    yield "binary", lambda: setattr(lesson, "bits", 1), "quantization-dequantized"
    yield "bits back", lambda: setattr(lesson, "bits", 4), "quantization-dequantized"
    yield "granularity", lambda: setattr(lesson, "granularity", ("per-channel", "per-tensor")[round_]), \
        "quantization-grid"
    yield "scheme", lambda: setattr(lesson, "scheme", ("affine", "symmetric")[round_]), "quantization-grid"
    yield "clip", lambda: setattr(lesson, "clip", ("percentile", "mse")[round_]), "quantization-clip"
    yield "activation bits", lambda: setattr(lesson, "act_bits", (4, 0)[round_]), "quantization-sqnr"
    yield "channel", lambda: setattr(lesson.state, "channel", 2 + round_), "md:arithmetic"
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
    assert lesson.layers == qm.quantizable_layers(zoo.load("mnist-vit").module)
    assert "blocks.0.attn.qkv" in lesson.layers


def test_the_accuracy_and_the_curves_show_what_was_measured(synchronous):
    lesson = view.QuantizationLesson(model="mnist-cnn")
    lesson.bits = 2
    model = zoo.load("mnist-cnn")
    evalset = measured.heldout("mnist-cnn")
    expected = evaluate.uncached_accuracy(qm.fold_batchnorm(qm.fake_quant_model(model.module, lesson.setting)),
                                          evalset).top1
    assert f"quantized **{expected:.2%}**" in lesson.accuracy.object
    assert f"on {evalset.name}:" in lesson.accuracy.object
    assert lesson.curves.current.data["y"] == [pytest.approx(100 * expected)]
    points = dict(zip(lesson.curves.points.data["label"], lesson.curves.points.data["y"], strict=True))
    assert points[lesson.setting.describe()] == pytest.approx(100 * expected)
    assert measured.known(model, lesson.setting) == expected  # kept for every session and process


def test_a_new_input_leaves_the_accuracies_and_curves_as_they_are(synchronous, monkeypatch):
    """No accuracy depends on the input: a class's most frequent click does not draw them again."""
    lesson = view.QuantizationLesson(model="mnist-cnn")
    drawn = []
    monkeypatch.setattr(lesson.curves, "show", lambda *a, **k: drawn.append(a))
    digits = mnist_gallery()
    for digit in digits[3:6]:
        assert lesson.state.set_input(digit.source, digit.description), lesson.state.error
    assert drawn == []
    lesson.bits = 3  # another setting: its accuracy (measured here at once) is drawn
    assert drawn


def test_the_lesson_opens_on_the_settings_that_are_stored(queued):
    assert view.QuantizationLesson.param.bits.default == measured.DEFAULT.weight_bits
    lesson = view.QuantizationLesson(state=ExplorerState(model="mnist-cnn"))
    assert lesson.setting == measured.DEFAULT


def kept_at_random(model: zoo.ZooModel, rng: torch.Generator) -> dict:
    """Fresh random accuracies for float32 and every point of the default curves, put in the on-disk cache."""
    measurer = measurements.Measurer.of(model.name, model.module)
    values = {}
    for item in measured.plan(model):
        value = float(torch.rand((), generator=rng, dtype=torch.float64))
        values[None if item.setting == measured.FLOAT32 else qm.Setting(**item.setting)] = value
        measurer.measured(item.what, item.setting, item.dataset, lambda v=value: v)
    return values


@pytest.mark.parametrize("name", ["mnist-cnn", "mnist-vit"])
def test_opening_shows_the_kept_curves_and_accuracy_at_once(name, queued, monkeypatch, rng):
    model = zoo.load(name)
    values = kept_at_random(model, rng)
    monkeypatch.setattr(measured, "top1", lambda *_: pytest.fail("nothing should be measured"))
    lesson = view.QuantizationLesson(state=ExplorerState(model=name))
    assert queued.names() == ["QuantizationLesson.result"]  # nothing to measure: only the input's explanation
    float_top1, top1 = values[None], values[measured.DEFAULT]
    n = len(measured.heldout(name))
    assert lesson.accuracy.object.startswith(
        f"**Accuracy** on {measured.dataset_name(model)}: float32 **{float_top1:.2%}** ({wilson(float_top1, n)}), "
        f"quantized **{top1:.2%}** ({wilson(top1, n)}) (")
    settings = qm.sweep_settings(measured.DEFAULT)
    points = lesson.curves.points.data
    assert points["label"] == [s.describe() for s in settings]
    assert points["y"] == pytest.approx([100 * values[s] for s in settings])
    assert points["text"] == [f"{values[s]:.2%} ({wilson(values[s], n)})" for s in settings]
    for s, low, high in zip(settings, points["low"], points["high"], strict=True):  # error bars: SciPy's interval
        ref = binomtest(round(values[s] * n), n).proportion_ci(method="wilson")
        assert (low, high) == pytest.approx((100 * ref.low, 100 * ref.high))
    assert lesson.curves.fig.yaxis.axis_label == "accuracy (%)"
    curves = dict(zip(lesson.curves.lines.data["label"], lesson.curves.lines.data["ys"], strict=True))
    for scheme in qm.SCHEMES:
        for granularity in qm.GRANULARITIES:
            line = [s for s in settings if (s.format, s.scheme, s.granularity) == ("integer", scheme, granularity)]
            assert curves[f"{scheme}, {granularity}"] == pytest.approx([100 * values[s] for s in line])
    assert lesson.curves.float_line.location == pytest.approx(100 * float_top1) and lesson.curves.float_line.visible
    assert lesson.curves.current.data["y"] == [pytest.approx(100 * top1)]
    assert not lesson.progress.visible and "30 settings, each measured on" in lesson.progress_text.object


def test_a_setting_not_kept_is_measured_in_the_background_and_kept(queued):
    lesson = view.QuantizationLesson(state=ExplorerState(model="mnist-cnn"))
    model = zoo.load("mnist-cnn")
    assert "float32 ◔ measuring … quantized ◔ measuring …" in lesson.accuracy.object  # no number yet
    assert lesson.progress.visible and lesson.curves.points.data["y"] == []
    assert "0 of 30 settings done" in lesson.progress_text.object
    queued.run()
    settings = qm.sweep_settings(measured.DEFAULT)
    expected = [measured.known(model, s) for s in settings]
    assert None not in expected  # each point was kept on disk as it was measured
    assert lesson.curves.points.data["y"] == pytest.approx([100 * v for v in expected])
    assert f"quantized **{measured.known(model, measured.DEFAULT):.2%}**" in lesson.accuracy.object
    assert not lesson.progress.visible
    other = view.QuantizationLesson(state=ExplorerState(model="mnist-cnn"))  # another session: everything at once
    assert queued.names() == ["QuantizationLesson.result"]
    assert other.curves.points.data["y"] == lesson.curves.points.data["y"]


def tagged(page: Page) -> dict[str, list]:
    """Bokeh models of the page by the model name their tags carry."""
    found: dict[str, list] = {}
    for m in page.doc.models:
        for tag in m.tags:
            if isinstance(tag, str) and tag.startswith(plots.MODEL_TAG):
                found.setdefault(tag.removeprefix(plots.MODEL_TAG), []).append(m)
    return found


def test_two_sessions_sweeping_at_once_both_complete(private_cache, monkeypatch, rng):
    """Real worker threads: two served sessions sweep the same shared model at once (one with another clipping rule)
    while a third thread keeps tracing it (adding and removing hooks); both curves complete, with the kept values."""
    monkeypatch.setattr(qm, "sweep_settings", lambda base: [replace(base, weight_bits=b) for b in (8, 4, 3, 2)])
    model = zoo.load("mnist-cnn")
    tracing = threading.Event()

    def keep_tracing() -> None:
        x = torch.randn(4, 1, 28, 28, generator=rng)
        while not tracing.is_set():
            model.trace(x)

    loop: queue.Queue = queue.Queue()  # what the workers hand to either session's loop, with that session's document
    sessions = []
    for clip in ("min-max", "percentile"):
        doc, context = served_document(lambda doc, callback: loop.put((doc, callback)))
        with set_curdoc(doc):
            lesson = view.QuantizationLesson(state=ExplorerState(model="mnist-cnn"))
            lesson.clip = clip
        sessions.append((lesson, context))
    lessons = [lesson for lesson, _ in sessions]
    tracer = threading.Thread(target=keep_tracing)
    tracer.start()
    try:
        deadline = time.monotonic() + 600
        while any(lesson.slow(strand).busy for lesson in lessons for strand in ("result", "accuracy", "sweep")):
            assert time.monotonic() < deadline, "the sweeps did not complete"
            try:
                doc, callback = loop.get(timeout=1)
            except queue.Empty:
                continue
            with set_curdoc(doc):  # the session's loop: the answer is shown, and the next point asked for
                callback()
    finally:
        tracing.set()
        tracer.join()
    for lesson in lessons:
        assert not lesson.errors.visible, lesson.errors.object  # no worker failed
        expected = [100 * measured.known(model, s) for s in qm.sweep_settings(lesson.setting)]
        assert lesson.curves.points.data["y"] == pytest.approx(expected) and len(expected) == 4
        assert not lesson.progress.visible
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.module.modules())


SWITCHES = ["mnist-vit"] + (["mobilenet_v2"] if zoo.is_available("mobilenet_v2") else [])


@pytest.mark.parametrize("new", SWITCHES)
def test_after_a_model_switch_nothing_of_the_previous_model_is_shown(new, queued, monkeypatch):
    monkeypatch.setattr(qm, "sweep_settings", lambda base: [replace(base, weight_bits=b) for b in (8, 2)])
    lesson = view.QuantizationLesson(state=ExplorerState(model="mnist-cnn"))
    page = Page(lesson)
    lesson.build_int8()
    queued.run()  # mnist-cnn's accuracy, curves and real int8 table are on screen
    assert "float32 **" in lesson.accuracy.object and "int8 ONNX" in lesson.int8_text.object
    files = view.int8.files_for("mnist-cnn", zoo.load("mnist-cnn").card.sha256)
    for private in (files.float_path.name, files.int8_path.name, str(files.int8_path.parent)):
        assert private not in lesson.int8_text.object  # the server's cache folder and file names stay private
    assert lesson.curves.points.data["y"] and set(tagged(page)) == {"mnist-cnn"}
    lesson.bits = 4  # an accuracy, a sweep and an int8 build for mnist-cnn are under way when the student switches
    lesson.build_int8()
    under_way = len(queued.work)
    lesson.state.layer = "features.4"
    lesson.state.model = new
    model = zoo.load(new)
    previous, queued.work[:under_way] = queued.work[:under_way], []
    queued.run("result")  # the new model's explanation of the input comes first

    def nothing_of_the_previous_model() -> None:
        assert set(tagged(page)) == {new}
        assert len(tagged(page)[new]) >= 15  # every figure, source and pane that shows a result
        layer_menu = next(m for m in page.doc.models if type(m).__name__ == "CustomSelect" and m.title == "Layer")
        options = [o if isinstance(o, str) else o[0] for o in layer_menu.options]  # plain, or (value, label)
        assert options == qm.quantizable_layers(model.module)
        assert layer_menu.value == lesson.layer
        assert lesson.histogram.fig.title.text.startswith(f"{lesson.layer}: ")
        assert lesson.arithmetic.object.startswith(f"### The arithmetic of `{lesson.layer}` ")
        assert lesson.int8_text.object == view.INT8_INTRO and not lesson.int8_button.disabled
        described = f"**{lesson.setting.describe()}.** On {lesson.state.inference.description}"
        assert lesson.summary.object.startswith(described)

    nothing_of_the_previous_model()
    waiting = f"**{measured.meaning(model).capitalize()}** on {measured.dataset_name(model)}: float32 ◔ measuring"
    assert lesson.accuracy.object.startswith(waiting) and "%" not in lesson.accuracy.object
    assert lesson.curves.points.data["y"] == [] and not lesson.curves.float_line.visible
    for _strand, work in previous:  # mnist-cnn's results arrive after the switch: none is shown
        work()
    nothing_of_the_previous_model()
    assert lesson.accuracy.object.startswith(waiting) and lesson.curves.points.data["y"] == []
    queued.run()  # the new model's own
    nothing_of_the_previous_model()
    float_top1, top1 = measured.known(model, None), measured.known(model, lesson.setting)
    n = measured.sample_size(model)
    assert (f"float32 **{float_top1:.2%}** ({wilson(float_top1, n)}), quantized **{top1:.2%}** ({wilson(top1, n)})"
            in lesson.accuracy.object)
    assert lesson.curves.points.data["y"] == pytest.approx(
        [100 * measured.known(model, s) for s in qm.sweep_settings(lesson.setting)])


def test_another_session_quantizing_leaves_the_shared_model_and_this_session_alone(synchronous):
    model = zoo.load("mnist-cnn").module
    before = {k: v.clone() for k, v in model.state_dict().items()}
    mine = view.QuantizationLesson(state=ExplorerState(model="mnist-cnn"))
    theirs = view.QuantizationLesson(state=ExplorerState(model="mnist-cnn"))
    my_probs = mine.result.probs.clone()
    theirs.param.update(bits=2, act_bits=3, granularity="per-tensor", scheme="affine", clip="mse")
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"the shared model's {k} changed"
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())
    mine.channel = 1  # recompute this session: still 8-bit weights, float activations
    assert torch.allclose(mine.result.probs, my_probs)
    assert not torch.allclose(theirs.result.probs, my_probs, atol=1e-3)


def test_the_narrative_steps_drive_the_controls(synchronous):
    lesson = view.QuantizationLesson()
    steps = lesson.steps()
    assert len(steps) >= 5
    titles = [s.title for s in steps]
    assert {"A ruler with 256 marks", "Where to put the ends", "One scale per channel", "The cliff below 4 bits",
            "Real integers"} <= set(titles)
    narrative = lesson.tour
    for i, step in enumerate(steps):
        narrative.index = i
        for name, value in step.settings.items():
            assert getattr(lesson, name) == value, f"step {step.title!r}: {name}"


@pytest.mark.skipif(not zoo.is_available("mobilenet_v2"), reason="MobileNetV2 is not fetched here")
def test_mobilenet_measures_agreement_with_float_on_the_gallery_photos(synchronous):
    lesson = view.QuantizationLesson(model="mobilenet_v2")
    text = lesson.accuracy.object
    assert text.startswith(f"**Agreement** on {agreement.description()}, first 300: float32 **100.00%** "
                           f"({wilson(1.0, agreement.count())}), quantized")
    assert lesson.curves.fig.yaxis.axis_label == "agreement with the unchanged model (%)"
    assert "how often the quantized model's top class is the float32 model's" in text
    lesson.granularity = "per-channel"
    assert lesson.layer == "features.0.0" and "float32 **100.00%**" in lesson.accuracy.object


def test_the_arithmetic_counts_the_clipped_weights(synchronous):
    lesson = view.QuantizationLesson()
    lesson.param.update(bits=4, clip="percentile", granularity="per-channel")
    lesson.layer = "features.8"
    weight = zoo.load("mnist-cnn").module.get_submodule("features.8").weight.detach().cpu().float()
    lo, hi = qm.clip_range(weight, "percentile", 0, 4, "symmetric")
    outside = int(((weight < lo[:, None, None, None]) | (weight > hi[:, None, None, None])).sum())
    assert outside > 0
    assert f"**{outside:,}** of the layer's {weight.numel():,} weights" in lesson.arithmetic.object
