"""The attention lesson: patches, where every head looks, one head step by step, rollout, attention distance, and
what attention filters (the feature maps' spectra, beside a CNN's).

Every number comes from explorer/lessons/attention/math.py on the session's traced input; the step-by-step
probabilities at temperature 1 are the model's own (the view says how far they are from the traced ones).

The layer and head shown are the session's layer and channel (explorer/session/state.py), the one source of
truth that the overview shares: the layer menu and head slider show them, with this model's attention layers and
heads as their choices, and a change of either sets the state. The lesson keeps only its own settings (query,
temperature, head fusion, discard ratio).

Performance (a new Bokeh model costs far more to send and lay out than new data in one already on the
page; docs/performance.md): every Bokeh figure and source is built once, when the first model with attention is
analysed (`_build_content`: on a CNN the lesson is one message, not some 700 Bokeh models); a change of a
control only replaces sources' data and a few properties, inside one `one_update()`, and each part is
redrawn only when what it shows changed (`changed`). A model whose attention cannot be read hides the
figures and says why. Each section is a view_<section>.py module.

Section 6 (view_frequency.py) is the exception: it compares the session's model with the shipped CNN and ViT,
so it is made at once and shown for any model, a CNN included (two figures, not the 700 Bokeh models of the rest).
"""

from __future__ import annotations

from types import SimpleNamespace

import panel as pn
import param
from bokeh.models import CustomJSHover

from explorer.errors import InputError
from explorer.lessons import plots
from explorer.lessons.attention import math as am
from explorer.lessons.attention.view_distance import Distance
from explorer.lessons.attention.view_figures import CELL_CODE, Shown
from explorer.lessons.attention.view_frequency import Frequency
from explorer.lessons.attention.view_heads import Heads
from explorer.lessons.attention.view_patches import Patches
from explorer.lessons.attention.view_rollout import Rollout
from explorer.lessons.attention.view_step import StepByStep
from explorer.session.in_step import keep_in_step
from explorer.session.later import heading_then_later
from explorer.session.lesson import Lesson
from explorer.session.narrative import Narrative, Step, input_noun
from explorer.session.state import Inference, follows, making_models, one_update

INTRO = (
    "### Attention: how a vision transformer looks at your image\n"
    "A ViT cuts the image into square **patches**, turns each into a vector (a *token*), adds a learned "
    "**position** vector, and puts a **class token** in front. In every layer each token asks every other token "
    "how relevant it is (**attention**), in several **heads** at once, and takes a weighted mix of their values. "
    "The class token's final vector decides the class.")  # no colour legend: the overview gives it, each map its bar


class AttentionLesson(Lesson):
    """Patches, attention per layer and head, one head step by step, rollout and attention distance."""

    tour_title = "Guided tour: attention"
    url_settings = {"query": "query", "temperature": "temperature", "fusion": "head_fusion", "discard": "discard_ratio"}

    query = param.Selector(default=0, objects={"class token": 0}, doc="Token whose attention is shown.")
    temperature = param.Number(default=1.0, bounds=(0.1, 5.0), step=0.05,
                               doc="Softmax temperature τ of the step-by-step head; 1 is the model's own.")
    head_fusion = param.Selector(default="mean", objects=list(am.HEAD_FUSIONS), doc="How rollout fuses the heads.")
    discard_ratio = param.Number(default=0.0, bounds=(0.0, 0.95), step=0.05,
                                 doc="Share of the weakest attention weights rollout drops in each layer.")
    frequency_layer = param.String(default="", doc="Layer whose spectrum section 6 draws thick; '' for the last "
                                                   "attention layer (else the last convolution).")

    def __init__(self, model: str | None = None, **params):
        super().__init__(model=model, **params)
        # the tour's steps set the lesson's settings, and its layer and head as the session's (TourTarget)
        self.tour = self.open_tour = Narrative(self.steps(), TourTarget(self), title=self.tour_title,
                                               state=self.state)
        self._analysis: am.Analysis | None = None
        self._analysed: Inference | None = None
        self._widgets = dict(
            layer=keep_in_step(pn.widgets.Select(label="Layer", options=[], width=170)),
            head=pn.widgets.IntSlider(label="Head", start=0, end=1, value=0, width=170),
            query=pn.widgets.Select.from_param(self.param.query, name="Query token", width=190),
            temperature=pn.widgets.FloatSlider.from_param(self.param.temperature, name="Temperature τ", width=220),
            head_fusion=pn.widgets.RadioButtonGroup.from_param(self.param.head_fusion, name="Head fusion"),
            discard_ratio=pn.widgets.FloatSlider.from_param(self.param.discard_ratio, name="Discard ratio", width=220,
                                                            format="0%"),
        )
        self._widgets["layer"].param.watch(self._layer_chosen, "value")
        self._widgets["head"].param.watch(self._head_chosen, "value")
        # The sections' figures are made, and join the page, once a model with attention is analysed: on a CNN the
        # lesson is its message alone, and opening it there costs a student's server no 700 Bokeh models.
        self._sections: tuple | None = None
        self._content: pn.Column | None = None
        with making_models():
            self._frequency = Frequency(self.changed, self.slow("frequency"),
                                        lambda layer: setattr(self, "frequency_layer", layer))
        self._page = pn.Column(pn.pane.Markdown(INTRO, sizing_mode="stretch_width", margin=(0, 10),
                                                css_classes=["explanation"]), self.errors,
                               pn.Column(*self._frequency.layout(), sizing_mode="stretch_width", margin=(10, 0)),
                               sizing_mode="stretch_width")
        self._update()

    def __panel__(self) -> pn.viewable.Viewable:
        return self._page

    # --- the session's layer and head, the lesson's own settings ---

    @property
    def layer(self) -> str | None:
        """The attention layer shown: the session's layer, or the attention of its block, else the first."""
        a = self._analysis
        return None if a is None else am.attention_record_for(self.state.layer, a.records) or a.records[0]

    @property
    def head(self) -> int:
        """The head shown: the session's channel, within this layer's heads."""
        a = self._analysis
        return 0 if a is None else min(self.state.channel, a.maps.shape[1] - 1)

    def select(self, layer: str | None = None, head: int | None = None, **settings) -> None:
        """Show `layer` and `head` (set as the session's layer and channel: the overview follows) and the lesson's
        own `settings`. The lesson answers at once; the state's other followers after the page has painted."""
        chosen = {k: v for k, v in (("layer", layer), ("channel", head)) if v is not None}
        with one_update():
            self.state.param.update(**chosen)
            self.param.update(**settings)
            if self.shown:
                self._show()

    def _layer_chosen(self, event: param.parameterized.Event) -> None:
        if event.new != self.layer:  # not the menu showing the state's layer (or a layer of its block)
            self.select(layer=event.new)

    def _head_chosen(self, event: param.parameterized.Event) -> None:
        if event.new != self.head:  # not the slider showing the state's channel (within this layer's heads)
            self.select(head=event.new)

    def inkiest_patch(self) -> int:
        """The patch token whose pixels hold the most ink (the brightest mean), a good query to start from."""
        return 0 if self._analysis is None else am.inkiest_token(self._analysed.view, self._analysis.grid)

    def attention_layers(self) -> tuple[str, ...]:
        return () if self._analysis is None else self._analysis.records

    def steps(self) -> tuple[Step, ...]:
        first = lambda tour: (tour.lesson.attention_layers() or (None,))[0]  # noqa: E731
        last = lambda tour: (tour.lesson.attention_layers() or (None,))[-1]  # noqa: E731
        return (
            Step("Your image as a sequence of patches",
                 "Section 1: the grid cuts the image into patches; each row of the middle picture is one patch's "
                 "embedding. On the right, each small square belongs to one patch and shows how similar its learned "
                 "position vector is to every other patch's: nearby patches have similar positions, although the "
                 "model was never told the image is 2-D.",
                 {"query": 0, "layer": first, "head": 0, "temperature": 1.0}, section="attention-part-1"),
            Step("Where the class token looks",
                 lambda tour: "Section 2: each small picture is one head of one layer, the class token's attention "
                 f"over the patches, drawn over your {input_noun(tour.lesson.state)} (bright = much attention). "
                 "Heads of one layer look at different places; the last column averages them.",
                 {"query": 0, "layer": last, "head": 0}, section="attention-part-2"),
            Step("Any patch can ask",
                 "Click a patch (in any picture of section 1 or 2) to see where *that* token looks instead of the "
                 "class token. Here the query is the brightest patch (on a digit, the most ink): see which "
                 "heads look at its neighbours and which look far away.",
                 {"query": lambda tour: tour.lesson.inkiest_patch(), "layer": first}, section="attention-part-2"),
            Step("One head, step by step",
                 "Section 3 computes one head from the block's input: LayerNorm, then the query, key and value "
                 "matrices, the dot products Q·Kᵀ, the division by √d, the softmax of each row and finally P·V. "
                 "Hover any cell for its value: these are the model's own numbers.",
                 {"layer": first, "head": 0, "temperature": 1.0, "query": 0}, section="attention-part-3"),
            Step("Temperature: sharp and flat attention",
                 "A temperature below 1 divides the scores by a small number before the softmax: the largest score "
                 "takes almost everything (sharp attention). Above 1 the weights flatten towards equal. Drag τ and "
                 "watch the bars and matrix 8; τ = 1 is what the model really does.",
                 {"temperature": 0.3}, section="attention-part-3"),
            Step("Rollout: following attention through all layers",
                 "Section 4: each layer mixes tokens, and the residual connection keeps a copy of each token. "
                 "Rollout multiplies the layers' attention (plus that identity) to estimate which patches reach the "
                 "class token in the end, compared with the last layer alone. Try max fusion and a discard ratio.",
                 {"temperature": 1.0, "query": 0, "head_fusion": "mean", "discard_ratio": 0.0},
                 section="attention-part-4"),
            Step("Local and global heads",
                 "Section 5: for every head, the average distance between a patch and the patches it attends to. "
                 "Small values are local heads (like a convolution), large ones global; the dashed line is a head "
                 "that looks everywhere equally: see whether this model mixes both already in its first layer.",
                 {"layer": first, "head_fusion": "mean"}, section="attention-part-5"),
            Step("What attention filters",
                 "Section 6: the Fourier transform of each layer's output, averaged over its channels, from the zero "
                 "frequency to the highest. Park & Kim found attention lowers the high frequencies and convolutions "
                 "raise them; the text under the figure says what your input shows in these small models, beside "
                 "the CNN's.",
                 {"frequency_layer": last}, section="attention-part-6"),
        )

    # --- updates: data only, inside one_update() ---

    @follows("state.inference", "state.layer", "state.channel", "query", "temperature", "head_fusion",
             "discard_ratio", "frequency_layer")
    def _update(self) -> None:
        inference = self.state.inference
        self._frequency.draw(inference, self.frequency_layer)  # any model: a CNN is half the comparison
        if inference is not self._analysed:
            self._analysed = inference
            try:
                analysis = am.analyse(inference.model.module, inference.trace, inference.view.shape[:2])
            except InputError as e:
                self._cannot_show(inference, str(e))
                return
            self._build_content()
            with one_update():
                self._adopt(inference, analysis)
        self._show()

    def _show(self) -> None:
        a = self._analysis
        if a is None:
            return
        layer = self.layer
        s = Shown(self._analysed, a, layer, a.records.index(layer), self.head, self.query, self.temperature,
                  self.head_fusion, self.discard_ratio)
        with one_update():
            self._widgets["layer"].value, self._widgets["head"].value = s.layer, s.head  # the state, shown
            for section in self._sections:
                section.draw(s)

    def _cannot_show(self, inference: Inference, why: str) -> None:
        """Say why this model's attention cannot be shown, in place of the sections."""
        self._analysis = None
        with one_update():
            self.show_error(f"**{inference.model.name}**: {why} Section 6 below, *what attention filters*, works on "
                            "any model: it compares this one with the shipped ViT and CNN.")
            if self._content is not None:
                self._content.visible = False
            self.open_tour = None  # its steps would point at hidden figures

    def _adopt(self, inference: Inference, analysis: am.Analysis) -> None:
        """Show a new analysis: the lesson's choices (layers, heads, queries) and figure sizes for its model."""
        self._analysis = analysis
        self.clear_error()
        self._content.visible = True
        self.open_tour = self.tour
        heads, grid = analysis.maps.shape[1], analysis.grid
        self._heads.resize(inference, analysis)
        self._stepper.resize(inference, analysis)
        # the menus' choices and values together: a menu never holds a value outside its choices (which it would
        # replace by its first choice, and so set the state to a layer nobody chose)
        self._widgets["layer"].param.update(options=list(analysis.records), value=self.layer)
        self._widgets["head"].param.update(end=heads - 1, value=self.head)
        queries = ({"class token": 0} if grid.first else {}) | {
            f"patch (row {r}, column {c})": grid.token(r, c) for r in range(grid.rows) for c in range(grid.cols)}
        self.param.query.objects = queries
        self.query = self.query if self.query in queries.values() else next(iter(queries.values()))

    # --- layout ---

    def _build_content(self) -> None:
        """The sections, once."""
        if self._content is not None:
            return
        with making_models():
            hover = CustomJSHover(code=CELL_CODE)  # one per lesson: a Bokeh model belongs to one document
            patches = Patches(self.changed, self.select, hover)
            heads = Heads(self.changed, self.select, patches.picture_source, patches.query_source,
                          patches.picture_tapped)
            stepper, rollout, distance = StepByStep(self.changed, hover), Rollout(self.changed), Distance(self.changed)
            self._sections = (patches, heads, stepper, rollout, distance)
            self._patches, self._heads, self._stepper = patches, heads, stepper
            w = self._widgets
            self._content = pn.Column(
                *patches.layout(),
                # the controls' rows go on under themselves on a phone
                *heads.layout(pn.Row(w["layer"], w["head"], w["query"], stylesheets=[plots.WRAPS])),
                # below the first screen: placed when the student scrolls to it (explorer/session/later.py)
                *heading_then_later(stepper.layout(w["temperature"]), height=900),
                *heading_then_later(rollout.layout(pn.Row(
                    pn.Column(pn.pane.Markdown("Head fusion", margin=(0, 10)), w["head_fusion"]), w["discard_ratio"],
                    stylesheets=[plots.WRAPS])), height=450),
                *heading_then_later(distance.layout(), height=400), sizing_mode="stretch_width", margin=(10, 0))
            self._page.insert(2, self._content)  # after the intro and the errors, before section 6


class TourTarget:
    """What the tour's steps set (the narrative applies a step with `target.param.update(**settings)`): `layer` and
    `head` go to the session's state, through the lesson's `select`, the rest to the lesson's own settings. A step's
    callable setting is called with this target: `tour.lesson` is the lesson."""

    def __init__(self, lesson: AttentionLesson):
        self.lesson = lesson
        self.param = SimpleNamespace(update=lesson.select)
