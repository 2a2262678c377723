"""The pruning lesson's kept measurements on screen: the slider's accuracy, the accuracy-vs-sparsity curves and the
per-layer sensitivity.

What is kept (measured.py: stored beside the card, or in the on-disk cache) is looked up and shown at once. What is
missing is measured through the lesson's slow work (Lesson.slow, explorer/session/work.py): off the event loop in a
served page, one evaluation per request inside a turn of explorer/session/background.py (the student's own accuracy
before any sweep step), the newest answer only. A sweep (the curves, the sensitivity) is a chain of requests, one
point each: each answer paints its point and the progress, then asks for the next point, so that every point shows
as soon as it is measured. An answer is painted only while the part still shows what it was asked for (`_wanted`):
the student may have moved on to a model or setting whose results are all kept, which asks for nothing new.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Hashable

import panel as pn

from explorer.core import evaluate, zoo
from explorer.lessons import plots
from explorer.lessons.pruning import math as pm
from explorer.lessons.pruning import measured
from explorer.lessons.pruning.measured import Point
from explorer.lessons.pruning.view_figures import Figures
from explorer.session import background
from explorer.session.lesson import Lesson

SETTLE_S = 0.25  # served: the slider must rest this long before the accuracy of its position is measured


def served() -> bool:
    """Whether this runs in a served page (slow work then runs on worker threads, explorer/session/work.py)."""
    doc = pn.state.curdoc
    return doc is not None and doc.session_context is not None


class Measurements:
    """The measured parts of a PruningLesson (see the module); the lesson owns the settings and the slow work."""

    def __init__(self, lesson: Lesson, figures: Figures):
        self.lesson, self.figures = lesson, figures
        md = functools.partial(pn.pane.Markdown, sizing_mode="stretch_width", margin=(0, 10))
        self.accuracy_text = md("", css_classes=["pruning-accuracy"])
        self.curve_text = md("", css_classes=["pruning-curve-progress"])
        self.sensitivity_text = md("", css_classes=["pruning-sensitivity-progress"])
        self.curve_progress = pn.indicators.Progress(value=0, max=1, visible=False, width=360)
        self.sensitivity_progress = pn.indicators.Progress(value=0, max=1, visible=False, width=360)
        self.known: dict[str, float] = {}  # Point.key -> kept value for the current model, looked up or measured
        self._wanted: dict[str, Hashable] = {}  # part -> what it shows now (answers for anything else are dropped)

    def new_model(self, model: zoo.ZooModel) -> None:
        self.known = {}
        self._wanted = {}
        tag = plots.model_tag(model.name)
        for pane in (self.curve_text, self.sensitivity_text):
            pane.param.update(object="", tags=tag)
        self.curve_progress.visible = self.sensitivity_progress.visible = False

    def kept(self, model: zoo.ZooModel, point: Point) -> float | None:
        if point.key not in self.known:
            value = measured.kept(model, point)
            if value is None:
                return None
            self.known[point.key] = value
        return self.known[point.key]

    def _settings(self) -> tuple[zoo.ZooModel, str, str, int]:
        lesson = self.lesson
        return lesson.state.inference.model, lesson.method, lesson.scope, lesson.sparsity

    # --- the slider's accuracy ---

    def show_accuracy(self) -> None:
        """The kept accuracy of this exact setting at once; else the value read off the curve, while the slow work
        measures it (once the slider has rested)."""
        model, method, scope, sparsity = self._settings()
        point, dense = Point(method, sparsity / 100, scope), Point(method, 0.0, scope)
        key = (model.name, point)
        top1, dense_top1 = self.kept(model, point), self.kept(model, dense)
        if top1 is not None and dense_top1 is not None:
            self._wanted["accuracy"] = key
            self._show_measured(model, point, top1, dense_top1)
            return
        self._show_estimate(model, method, scope, sparsity)
        if self._wanted.get("accuracy") != key:  # else it is being measured
            self._wanted["accuracy"] = key
            settle = served()  # a dragged slider: only a position the student stays on is measured

            def compute() -> tuple[float, float] | None:
                if settle:
                    time.sleep(SETTLE_S)
                if self._wanted.get("accuracy") != key or background.exiting():
                    return None
                # the dense point first: while another thread measures it, this one waits without holding a turn
                dense_top1 = measured.accuracy(model, dense, background.request_turn)
                return measured.accuracy(model, point, background.request_turn), dense_top1

            self.lesson.slow("accuracy", background=True).request(key, compute,
                                                                  functools.partial(self._measured, key, point))

    def _measured(self, key: tuple, point: Point, result: tuple[float, float] | None) -> None:
        if result is None or self._wanted.get("accuracy") != key:
            return
        top1, dense_top1 = result
        self.known[point.key] = top1
        self.known[Point(point.method, 0.0, point.scope).key] = dense_top1
        self._show_measured(self.lesson.state.inference.model, point, top1, dense_top1)

    def _show_estimate(self, model: zoo.ZooModel, method: str, scope: str, sparsity: int) -> None:
        what = measured.quantity(model)
        points = measured.curve(self.known, method, scope, measured.sample_size(model))
        estimate = measured.read_off(points.sparsity, points.value, sparsity)
        text = (f"Measuring the {what} at {sparsity} % …" if estimate is None else
                f"{what.capitalize()} ≈ **{estimate:.1f} %** (read off the curve; measuring this exact setting …)")
        self.accuracy_text.param.update(object=text, tags=plots.model_tag(model.name))

    def _show_measured(self, model: zoo.ZooModel, point: Point, top1: float, dense_top1: float) -> None:
        what, n = measured.quantity(model), measured.sample_size(model)
        self.accuracy_text.param.update(tags=plots.model_tag(model.name), object=(
            f"{what.capitalize()} at {round(100 * point.amount)} %: **{top1:.2%}** "
            f"({evaluate.interval_text(top1, n)}; measured on {measured.dataset_name(model)}); dense model: "
            f"{dense_top1:.2%}."
            + ("" if what == "accuracy" else " Agreement = the pruned model's top class equals the dense model's; "
               "there is no ImageNet test set here, so this is not accuracy.")))

    # --- the curves ---

    def show_curves(self) -> None:
        """Every kept point of this scope's curves at once; the slow work measures the missing ones, one by one."""
        model, _, scope, _ = self._settings()
        key = (model.name, scope)
        if self._wanted.get("curves") == key:
            return
        self._wanted["curves"] = key
        missing = list({p.key: p for p in measured.curve_points(scope) if self.kept(model, p) is None}.values())
        self._paint_curves(model, scope)
        tag = plots.model_tag(model.name)
        if not missing:
            self.curve_progress.visible = False
            self.curve_text.param.update(object=_curves_source(model), tags=tag)
            return
        self.curve_progress.param.update(max=len(missing), value=0, visible=True)
        self.curve_text.param.update(tags=tag, object=(
            f"Measuring the curves: {len(missing)} points on {measured.dataset_name(model)} (kept for every later "
            "visit) …"))
        self._sweep("curves", key, model, missing, 0)

    def _paint_curves(self, model: zoo.ZooModel, scope: str) -> None:
        n = measured.sample_size(model)
        curves = {method: measured.curve(self.known, method, scope, n) for method in pm.METHODS}
        title = f"{measured.quantity(model).capitalize()} against sparsity ({pm.SCOPES[scope]})"
        self.figures.show_curves(curves, title, plots.model_tag(model.name))

    def _curve_point(self, model: zoo.ZooModel, done: int, total: int) -> None:
        self._paint_curves(model, self._wanted["curves"][1])
        self.curve_progress.value = done
        if done == total:
            self.curve_progress.visible = False
            self.curve_text.param.update(object=_curves_source(model), tags=plots.model_tag(model.name))
        if not self.lesson.errors.visible:  # (a setting that could not be pruned has no accuracy to show)
            self.show_accuracy()  # the estimate read off the curve, or this very point

    # --- the per-layer sensitivity ---

    def show_sensitivity(self) -> None:
        """The kept per-layer sensitivity at the slider's setting, or a placeholder that says what to press."""
        model, method, _, sparsity = self._settings()
        amount = sparsity / 100
        key = (model.name, method, round(amount, 4))
        if not self.lesson.changed("sensitivity", (key, self._wanted.get("sensitivity") == key)):
            return
        what, label = measured.quantity(model), pm.METHODS[method].label
        points = measured.sensitivity_points(model, method, amount) if amount > 0 else ()
        values = [self.kept(model, p) for p in points]
        if points and None not in values:
            rows = [(p.only, v) for p, v in zip(points, values, strict=True)]
            title = f"{what.capitalize()} when only this layer loses {sparsity} % ({label})"
        else:
            rows = []
            title = ("Per-layer sensitivity at 0 %: nothing is pruned" if not points else
                     f"Per-layer sensitivity at {sparsity} % ({label}): "
                     + ("measuring …" if self._wanted.get("sensitivity") == key else "press Measure"))
        self.figures.show_sensitivity(rows, title, what, measured.sample_size(model), plots.model_tag(model.name))

    def measure_sensitivity(self) -> None:
        """Measure the missing per-layer points at the slider's setting (the button)."""
        model, method, _, sparsity = self._settings()
        amount = sparsity / 100
        key = (model.name, method, round(amount, 4))
        points = measured.sensitivity_points(model, method, amount) if amount > 0 else ()
        missing = [p for p in points if self.kept(model, p) is None]
        if not missing or self._wanted.get("sensitivity") == key or self.lesson.errors.visible:
            return
        self._wanted["sensitivity"] = key
        self.sensitivity_progress.param.update(max=len(missing), value=0, visible=True)
        self.sensitivity_text.param.update(object=f"Pruning one layer at a time: {len(missing)} to measure …",
                                           tags=plots.model_tag(model.name))
        self.show_sensitivity()
        self._sweep("sensitivity", key, model, missing, 0)

    def _sensitivity_point(self, model: zoo.ZooModel, point: Point, done: int, total: int) -> None:
        self.sensitivity_progress.value = done
        self.sensitivity_text.param.update(tags=plots.model_tag(model.name), object=(
            f"Pruning only {point.only} ({done} of {total}) …" if done < total else ""))
        if done == total:
            self._wanted.pop("sensitivity")
            self.sensitivity_progress.visible = False
            self.show_sensitivity()

    # --- sweeps ---

    def _sweep(self, part: str, key: Hashable, model: zoo.ZooModel, missing: list[Point], done: int) -> None:
        """Measure missing[done] (a sweep's turn), paint it, then go on with the next point while `part` still
        shows `key`."""
        point = missing[done]

        def compute() -> float | None:
            if self._wanted.get(part) != key or background.exiting():
                return None
            return measured.accuracy(model, point, background.sweep_turn)

        def show(value: float | None) -> None:
            if value is None or self._wanted.get(part) != key:
                return  # the student has left this model or setting: the point is kept, not shown
            self.known[point.key] = value
            if part == "curves":
                self._curve_point(model, done + 1, len(missing))
            else:
                self._sensitivity_point(model, point, done + 1, len(missing))
            if done + 1 < len(missing):
                self._sweep(part, key, model, missing, done + 1)

        self.lesson.slow(part, background=True).request((key, done), compute, show)


def _curves_source(model: zoo.ZooModel) -> str:
    return (f"Each point: the pruned model's {measured.quantity(model)} on {measured.dataset_name(model)}; "
            f"the bars span its 95 % confidence interval (Wilson, n = {measured.sample_size(model):,}): "
            "differences inside them may be chance.")
