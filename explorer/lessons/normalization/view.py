"""The normalization lesson: which values share one mean and variance, and what a norm layer does to yours.

Parts, top to bottom: the N × C × (H·W) picture of the activation (tokens × features for a ViT) with the
values that share the selected value's statistics highlighted; the live statistics of one norm layer of
the model on the student's input (per channel or token, before / normalized / after γ, β, histograms,
running versus batch statistics) (view_input.py); the batch-size experiment (BatchNorm with the statistics of a
batch of MNIST digits, the student's first, against eval mode and against LayerNorm/GroupNorm); what the other
kinds would make of the same activations; folding BatchNorm into the convolution before it; |γ| of every
norm layer with the switched-off channels (view_batch.py). Every number comes from math.py (InputStudy).

Performance (a new Bokeh model costs far more to send and lay out than new data in one already on the
page; docs/performance.md): every figure and source is built once in __init__; a change updates
source data and model properties inside one one_update(), and only the parts whose inputs changed. The whole
network's prediction in train mode (a forward of the batch) is slow work, off the event loop.
"""

from __future__ import annotations

import functools

import panel as pn
import param

from explorer.errors import InputError
from explorer.lessons import plots
from explorer.lessons.normalization import math as nm
from explorer.lessons.normalization.view_batch import RUNNING, BatchSize, Fold, Gamma, WhatIf
from explorer.lessons.normalization.view_figures import Shown, clear
from explorer.lessons.normalization.view_input import Axes, Histogram, Statistics
from explorer.session.in_step import keep_in_step
from explorer.session.later import Later
from explorer.session.layer_lesson import OneLayerLesson
from explorer.session.narrative import Step
from explorer.session.state import follows, one_update
from explorer.session.tags import tag_results

KIND_LABELS = {label: kind for kind, label in nm.KINDS.items()}  # "BatchNorm" -> "batch", for the buttons


class NormalizationLesson(OneLayerLesson):
    """Which values share a mean and variance, live statistics, batch size, train vs eval, folding, γ; one norm layer
    at a time, the session's (see OneLayerLesson)."""

    kind = param.Selector(default="batch", objects=list(nm.KINDS), doc="The normalization drawn and compared.")
    groups = param.Selector(default=4, objects=[1, 2, 4], doc="GroupNorm's number of groups (divides the channels).")
    batch = param.Selector(default=8, objects=list(nm.BATCH_SIZES), doc="Images per batch for BatchNorm's statistics.")

    tour_title = "Guided tour: normalization"
    url_settings = {"norm": "kind", "groups": "groups", "batch": "batch"}
    layer_label = "Norm layer"

    def __init__(self, model: str | None = None, **params):
        super().__init__(model=model, **params)
        self._input: nm.InputStudy | None = None  # the numbers of the current input, see _study
        self._axes, self._stats, self._hist = Axes(), Statistics(), Histogram()
        self._batch_part, self._whatif, self._fold, self._gamma = BatchSize(), WhatIf(), Fold(), Gamma()
        self._sections = (self._axes, self._stats, self._hist, self._batch_part, self._whatif, self._fold,
                          self._gamma)
        self._axes.text.object = "*Computing the statistics of your input…*"
        # as wide as the lesson, up to their own width; their buttons go on under themselves on a phone
        choice = dict(sizing_mode="stretch_width", stylesheets=[".bk-btn-group { flex-wrap: wrap; }"])
        self._kind_input = pn.widgets.RadioButtonGroup.from_param(self.param.kind, options=KIND_LABELS, name="Kind",
                                                                  max_width=520, **choice)
        self._groups_input = pn.widgets.Select.from_param(self.param.groups, name="GroupNorm: number of groups",
                                                          width=200)
        self._batch_input = pn.widgets.RadioButtonGroup.from_param(self.param.batch, name="Batch size",
                                                                   max_width=400, **choice)
        self._channel_input = keep_in_step(pn.widgets.IntInput.from_param(self.state.param.channel,
                                                                          name="Channel shown", width=130))
        self._layout = self._build_layout()
        # Served, the numbers are computed once the page has loaded, so that it opens quickly; elsewhere now.
        pn.state.onload(self._model_changed)

    def steps(self) -> tuple[Step, ...]:
        return STEPS

    def __panel__(self) -> pn.viewable.Viewable:
        return self._layout

    # --- what the controls drive ---

    @follows("state.inference")
    def _model_changed(self) -> None:
        with one_update():
            self._choose_layer(list(self._study().records))
            self._show_layer()

    def _show_layer(self) -> None:
        record = self._study().records.get(self.layer)
        channels = 0 if record is None else nm.feature_count(record.input)
        with one_update():
            divisors = nm.divisors_of(channels) if channels else [1]
            self.param.groups.objects = divisors
            if self.groups not in divisors:
                self.groups = min(divisors, key=lambda g: abs(g - 4))  # 4 groups where possible: a clear picture
            if self.state.channel >= max(channels, 1):
                self.state.channel = 0
            tokens = record is not None and nm.layout_of(record.input) == "tokens"
            noun = "Feature" if tokens else "Channel"
            self._channel_input.param.update(end=max(channels - 1, 0), name=f"{noun} shown")
            self._update()

    @follows("kind", "groups", "batch", "state.channel")
    def _update(self) -> None:
        self._refresh()

    def _refresh(self) -> None:
        """Show what changed, in every part on the page (at once, also when a part has just been placed)."""
        if not self.layers and self._study().records:
            return  # not started yet: _model_changed runs once the page has loaded
        with one_update():
            try:
                self.clear_error()
                self._show_all()
            except InputError as e:
                self.show_error(str(e))

    # --- the numbers (math.py) ---

    def _study(self) -> nm.InputStudy:
        """The numbers of the session's current input, made anew when the input or the model changes."""
        inference = self.state.inference
        if self._input is None or self._input.trace is not inference.trace:
            self._input = nm.InputStudy(inference.model, inference.x, inference.trace)
        return self._input

    def _layer_study(self) -> nm.LayerStudy:
        return self._study().layer(self.layer)

    def _size(self) -> int:
        return self.batch if self._study().batchable else 1

    # --- showing them ---

    def _show_all(self) -> None:
        inference, study = self.state.inference, self._study()
        if self.layer not in study.records:
            self._show_nothing()
            return
        layer, size, channel = study.layer(self.layer), self._size(), self.state.channel
        shown = Shown(inference.model.name, layer, self.kind, self.groups, size, channel)
        self._batch_input.disabled = not study.batchable
        key = (inference, self.layer)
        # the axes picture and its text depend on the layer's shape, not on the input's values
        if self.changed("axes", (inference.model, self.layer, self.kind, self.groups, size, channel)):
            self._axes.show(shown)
        if self.changed("stats", key + (size, channel)):
            self._stats.show(shown)
        if self.changed("hist", key):
            self._hist.show(shown)
        # sections 3-6 once the student has scrolled to them (their batches and a forward in train mode are costly)
        placed = {name: later.placed for name, later in self._later.items()}
        if placed["batch"] and self.changed("batch", key + (self.groups, size)):
            self._batch_part.show(shown, study.batchable)
            self._predict(size if study.batchable else None)  # not for a change of groups
        if placed["whatif"] and self.changed("whatif", key + (self.kind, self.groups, size, channel)):
            self._whatif.show(shown)
        if placed["fold"] and self.changed("fold", key + (channel,)):
            self._fold.show(shown, layer.folding())
        if placed["gamma"] and self.changed("gamma", (inference.model,)):
            self._gamma.show(inference.model.name, nm.gamma_summaries(inference.model.module))

    def _show_nothing(self) -> None:
        """A model with no norm layer on feature maps or tokens: nothing of the previous model's layers stays."""
        self.forget()
        for section in self._sections:
            clear(*section.sources)
        for part in self._texts():
            part.object = ""
        self._axes.text.object = "This model has no normalization layer that works on feature maps or tokens."
        tag_results(self.state.inference.model.name, *(r for section in self._sections for r in section.results))
        self._predict(None)

    def _texts(self) -> list[pn.pane.Markdown]:
        return [self._axes.text, self._stats.text, self._batch_part.text, self._batch_part.prediction,
                self._whatif.text, self._fold.text, self._gamma.text]

    def _predict(self, size: int | None) -> None:
        """The whole network with every BatchNorm in train mode on a batch of `size` (None: no batches): a forward of
        the whole batch, so slow work; the text says it is running until the answer comes."""
        study, inference = self._study(), self.state.inference
        if not self.changed("prediction", (study, size)):
            return
        prediction = self._batch_part.prediction
        if size is None:
            prediction.object = ""  # now, and the request below drops any answer still on its way
        elif not study.knows_probabilities(size):
            prediction.object = RUNNING
        tag_results(inference.model.name, prediction)
        show = functools.partial(self._batch_part.show_prediction, inference.model.name, inference.model.labels,
                                 inference.probs, size)
        self.slow("prediction").request((study, size), lambda: None if size is None else study.probabilities(size),
                                        show)

    def _build_layout(self) -> pn.viewable.Viewable:
        self._later: dict[str, Later] = {}

        def section(title: str, *items, later: tuple[str, int] | None = None) -> pn.Column:
            """A numbered section; `later`: (its part's name in _show_all, about its height) for one below the first
            screen, placed when scrolled to (explorer/session/later.py) and shown from then on."""
            number = title.split(".")[0]  # "normalization-part-3": where a tour step about section 3 scrolls to
            body = items
            if later is not None:
                name, height = later
                self._later[name] = Later(*items, height=height)
                self._later[name].param.watch(lambda _: self._refresh(), "placed")
                body = (self._later[name],)
            return pn.Column(pn.pane.Markdown(f"#### {title}", margin=(10, 10, 0, 10)), *body,
                             sizing_mode="stretch_width", css_classes=[f"normalization-part-{number}"])

        bokeh = pn.pane.Bokeh
        stats, batch, fold = self._stats, self._batch_part, self._fold
        return pn.Column(
            pn.pane.Markdown(INTRO, sizing_mode="stretch_width", margin=(0, 10), css_classes=["explanation"]),
            # a row that goes on under itself on a phone (plots.WRAPS)
            pn.Row(self.layer_menu, self._channel_input, self._groups_input, stylesheets=[plots.WRAPS]),
            pn.Row(pn.pane.Markdown("Kind:", margin=(12, 5)), self._kind_input),
            pn.Row(pn.pane.Markdown("Batch size:", margin=(12, 5)), self._batch_input),
            self.errors,
            section("1. Which values share one mean and variance",
                    pn.Row(bokeh(self._axes.fig), self._axes.text, stylesheets=[plots.WRAPS])),
            section("2. Live statistics on your input",
                    pn.Row(bokeh(stats.figs[0]), bokeh(stats.figs[1]), stylesheets=[plots.WRAPS]), stats.text,
                    pn.Row(bokeh(stats.maps.fig), bokeh(self._hist.fig), stylesheets=[plots.WRAPS])),
            section("3. Batch size: train mode vs eval mode", bokeh(batch.fig), batch.text, batch.prediction,
                    later=("batch", 450)),
            section("4. What if the layer were another kind?", bokeh(self._whatif.tiles.fig), self._whatif.text,
                    later=("whatif", 400)),
            section("5. Folding BatchNorm into the convolution",
                    pn.Row(bokeh(fold.tiles.fig), bokeh(fold.bias_fig), stylesheets=[plots.WRAPS]), fold.text,
                    later=("fold", 400)),
            section("6. Switched-off channels: |γ| near zero", bokeh(self._gamma.fig, sizing_mode="stretch_width"),
                    self._gamma.text, later=("gamma", 350)),
            sizing_mode="stretch_width")


INTRO = ("### Normalization\n"
         "A norm layer subtracts a mean and divides by a standard deviation, then scales by a learned γ and shifts "
         "by a learned β: y = γ·(x − μ)/√(σ² + ε) + β. The kinds differ only in **which numbers share one μ and σ²**. "
         "Below, everything is computed live on your input at the chosen layer. " + plots.COLOUR_LEGEND)


def large_batches_text(lesson: NormalizationLesson) -> str:
    """What section 3's BatchNorm curve shows at the largest batch, read from the same numbers the curve draws."""
    study, largest = lesson._study(), nm.BATCH_SIZES[-1]
    flat = "LayerNorm's and GroupNorm's curves stay flat: they never depend on the batch."
    if lesson.layer not in study.records:
        return f"This model has no norm layer, so there is no curve to read. {flat}"
    if not study.batchable:
        return ("Batches of other images need the MNIST sample, which this model does not read: section 3 shows "
                f"your image alone, whatever the batch size. {flat}")
    layer = study.layer(lesson.layer)
    if not nm.is_batch_norm(layer.module):
        return (f"{lesson.layer} is a {layer.record.module_type}: it never looks at the other images, so its "
                f"curve is flat at every batch size. {flat}")
    curve = {n: layer.difference("batch", n, lesson.groups) for n in nm.BATCH_SIZES}
    lowest = min(curve, key=curve.get)
    value = plots.format_value
    said = (f"With **{largest}** images, BatchNorm's batch statistics give a mean difference of "
            f"{value(curve[largest])} from eval mode (the orange curve), against {value(curve[1])} with your image "
            "alone. ")
    if lowest == largest:
        said += "The curve is lowest here: a large batch's statistics come close to the running statistics. "
    else:
        said += (f"The curve is lowest at batch {lowest} ({value(curve[lowest])}), not at the largest batch: the "
                 "running statistics average the training batches, and these are a few test digits, so more of "
                 "them need not come closer. ")
    return said + ("It never reaches zero: the running statistics are not any one batch's. " if curve[lowest] > 0
                   else "") + flat


def _some_groups(lesson: NormalizationLesson) -> int:
    """A group count between LayerNorm (1) and InstanceNorm (all channels): 4 where it divides the channels."""
    divisors = lesson.param.groups.objects
    middle = [g for g in divisors if 1 < g < divisors[-1]]
    return min(middle or divisors, key=lambda g: abs(g - 4))


def _first_batch_norm(lesson: NormalizationLesson) -> str | None:
    names = lesson.layers
    modules = lesson.state.inference.model.module
    bn = [n for n in names if nm.is_batch_norm(modules.get_submodule(n))]
    return (bn or names or [None])[0]


STEPS = (
    Step("BatchNorm shares across the batch",
         "Section 1: with **BatchNorm**, one mean and variance per channel is taken over every image of the batch "
         "and every position. Your image's statistics depend on the other images in its batch.",
         {"layer": _first_batch_norm, "kind": "batch", "batch": 8}, section="normalization-part-1"),
    Step("LayerNorm looks at one sample only",
         "Switch to **LayerNorm**: the highlighted values stay inside your sample (in a ViT, inside one token). "
         "Nothing from other images enters, so training and test time compute the same thing.",
         {"kind": "layer"}, section="normalization-part-1"),
    Step("GroupNorm and InstanceNorm sit in between",
         "**GroupNorm** splits the channels into groups, each with its own statistics; with one group it is "
         "LayerNorm, with one channel per group it is InstanceNorm. Change *Groups* and watch the highlight.",
         {"kind": "group", "groups": _some_groups}, section="normalization-part-1"),
    Step("One image is not a batch",
         "Section 3 with a batch of **1**: BatchNorm in train mode normalizes your image by its own statistics, "
         "far from the running statistics the model uses at test time. Read the train-vs-eval difference and the "
         "prediction.", {"kind": "batch", "batch": 1}, section="normalization-part-3"),
    Step("Large batches and eval mode", large_batches_text,
         {"batch": nm.BATCH_SIZES[-1]}, section="normalization-part-3"),
    Step("Folding: BatchNorm disappears at inference",
         "Section 5: in eval mode BatchNorm is a fixed scale and shift per channel, so it can be merged into the "
         "convolution before it. The folded layer gives the same output (differences near 1e-6: float rounding).",
         {"layer": _first_batch_norm}, section="normalization-part-5"),
    Step("Channels that γ switches off",
         "Section 6: a channel whose |γ| is near zero contributes almost only its β: the network has learned to "
         "switch it off.", {}, section="normalization-part-6"),
)
