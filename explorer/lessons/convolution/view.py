"""The convolution lesson: the kernel window stepping over the layer's real input, and a kernel playground.

Its parts, each a tab: the step-through (view_step.py), the playground (view_playground.py), and the
receptive-field and filter-atlas tabs (view_receptive.py, view_atlas.py), built when first opened (`parts=()`
leaves those two out).

The convolution and the output channel are the session's (state.layer, state.channel): the layer menu and the
channel box show them, among this model's convolutions, and a choice there is set on the state, which the lesson
(and the overview) then follow. A layer of the state that is no convolution (a BatchNorm picked in the overview)
leaves the convolution shown before on screen.
"""

from __future__ import annotations

import panel as pn
import param

from explorer.core.names import labelled_name
from explorer.lessons import plots
from explorer.lessons.convolution import math
from explorer.lessons.convolution.view_atlas import FilterAtlas
from explorer.lessons.convolution.view_playground import Playground
from explorer.lessons.convolution.view_receptive import ReceptiveFieldPanel
from explorer.lessons.convolution.view_step import StepThrough
from explorer.session.in_step import keep_in_step
from explorer.session.lesson import Lesson
from explorer.session.narrative import Step
from explorer.session.state import follows, making_models, one_update
from explorer.session.tags import tag_results

STEP_TABS = ("Step through", "Playground")
# The lesson's other parts, each in its own tab, built when the tab first opens.
OPTIONAL_TABS = {"Receptive field": ReceptiveFieldPanel, "Filter atlas": FilterAtlas}


class ConvolutionLesson(StepThrough, Playground, Lesson):
    """One convolution, one window at a time, on the student's input; and a kernel playground."""

    tab = param.Selector(default=STEP_TABS[0], objects=list(STEP_TABS), doc="Open part of the lesson.")
    tour_title = "Convolution, step by step"
    url_settings = {"tab": "tab", "kernel": "preset", "size": "size", "stride": "stride", "padding": "padding",
                    "dilation": "dilation"}

    def __init__(self, model: str | None = None, parts: tuple[str, ...] | None = None, **params):
        """`parts`: the optional tabs to include (see OPTIONAL_TABS); all by default."""
        super().__init__(model=model, **params)
        self._layers: list[str] = []     # this model's convolutions
        self._layer: str | None = None   # the convolution shown: the state's, or the one before a non-convolution
        self._channel = 0
        self._opened: tuple | None = None  # (model, convolution) last opened: the default channel is chosen then
        self.layer_menu = keep_in_step(pn.widgets.Select(label="Convolution", width=220))
        self.channel_input = keep_in_step(pn.widgets.IntInput(label="Output channel", start=0, width=130))
        self.layer_menu.param.watch(self._picked, "value")
        self.channel_input.param.watch(self._picked, "value")
        step_layout = self._build_step_through(pn.Row(self.layer_menu, self.channel_input))
        # The playground's figures are made when its tab first opens: a student who never opens it (the lesson
        # opens on the step-through, for every student of a class) costs the server none of them.
        self._play_body = pn.Column(sizing_mode="stretch_width")
        self._pending: dict[str, type] = {title: cls for title, cls in OPTIONAL_TABS.items()
                                          if parts is None or title in parts}
        self._built: dict[str, Lesson] = {}  # the optional parts opened so far
        self._extra_tabs = [(title, pn.Column(sizing_mode="stretch_width")) for title in self._pending]
        self.param.tab.objects = list(STEP_TABS) + [title for title, _ in self._extra_tabs]
        self._follow_state()
        self.kernel_text = math.format_kernel(math.preset(self.preset, self.size, self.angle, self.frequency))
        self._update_playground()
        self._tabs = keep_in_step(pn.Tabs(("Step through", step_layout), ("Playground", self._play_body),
                                          *self._extra_tabs, dynamic=False, sizing_mode="stretch_width",
                                          stylesheets=[plots.WRAPPING_TAB_HEADERS]), "active")
        self._tabs.param.watch(lambda e: setattr(self, "tab", self.param.tab.objects[e.new]), "active")

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(self.errors, self._tabs, sizing_mode="stretch_width")

    def steps(self) -> tuple[Step, ...]:
        return narrative_steps()

    @property
    def layer(self) -> str | None:
        """The convolution the step-through shows (None: the model has none)."""
        return self._layer

    @property
    def channel(self) -> int:
        """The output channel the step-through shows."""
        return self._channel

    @property
    def layers(self) -> list[str]:
        """The model's convolutions: the layer menu's choices."""
        return self._layers

    @property
    def titles(self) -> list[str]:
        """The lesson's tabs."""
        return self.param.tab.objects

    @param.depends("tab", "shown", watch=True)
    def _show_tab(self) -> None:
        self._tabs.active = self.param.tab.objects.index(self.tab)
        # A tab is built on its first opening, which may come inside one_update() (a tour step, a link): its
        # models are made with Bokeh's conversions on
        if self.tab == "Playground" and not self.playground_built:
            with making_models():
                self._play_body.objects = [self._build_playground()]
            self._update_playground()
        if self.tab in self._pending:
            body = dict(self._extra_tabs)[self.tab]
            with making_models():
                self._built[self.tab] = self._pending.pop(self.tab)(state=self.state)
                body.objects = [self._built[self.tab]]
        for title, part in self._built.items():  # a part in a closed tab does not follow the state
            part.shown = self.shown and title == self.tab
        # the open part's tour, else the lesson's own, whose steps stay on the step-through and playground tabs
        self.open_tour = self._built[self.tab].tour if self.tab in self._built else self.tour

    # --- the session's layer and channel ---

    @follows("state.inference", "state.layer", "state.channel")
    def _follow_state(self) -> None:
        inference = self.state.inference
        model = inference.model.module
        names = list(math.conv_layers(model, inference.trace))
        # a model without convolutions hides the step-through, which shows the previous model's
        self._board.visible = self._arithmetic_pane.visible = self._step_controls.visible = bool(names)
        state = self.state
        layer = state.layer if state.layer in names else self._layer if self._layer in names else None
        layer = layer or (names[0] if names else None)
        if layer is None:
            self._layers, self._layer = [], None
            with one_update():
                self.layer_menu.options = []
                self._layer_text.object = f"{inference.model.name} has no 2-D convolution; the playground still works."
                tag_results(inference.model.name, self._layer_text)
            return
        out_channels = math.conv_module(model, layer).out_channels
        channel = state.channel if state.channel < out_channels else min(self._channel, out_channels - 1)
        opened = (inference.model, layer) != self._opened  # a layer newly on screen, not a new channel or input
        self._opened = (inference.model, layer)
        chosen = False
        if opened and state.channel == 0:  # the default, not a choice: open on a channel with something to show
            channel, chosen = math.first_live_channel(inference.trace[layer].output), True
        self._layers, self._layer, self._channel = names, layer, channel  # before the widgets: they show it
        with one_update():
            self.layer_menu.param.update(options={labelled_name(model, n): n for n in names}, value=layer)
            self.channel_input.param.update(end=out_channels - 1, value=channel)
            self._show_steps()
        if chosen and channel != state.channel and state.layer == layer:
            state.channel = channel  # the session shows it too (the overview); this lesson already does

    def _picked(self, _event) -> None:
        """The student chose a convolution or channel here: the state takes it, and the lesson follows the state."""
        layer, channel = self.layer_menu.value, self.channel_input.value
        if layer not in self._layers or channel is None or (layer, channel) == (self._layer, self._channel):
            return  # what is shown: the widgets follow the state
        out_channels = math.conv_module(self.state.inference.model.module, layer).out_channels
        self.state.param.update(layer=layer, channel=min(max(channel, 0), out_channels - 1))


def _first_conv(lesson: ConvolutionLesson) -> str:
    return lesson.layers[0]


def _deepest_conv(lesson: ConvolutionLesson) -> str:
    """The last convolution whose output is still a map of more than one pixel."""
    trace = lesson.state.inference.trace
    spatial = [n for n in lesson.layers if trace[n].output.shape[-1] > 1]
    return (spatial or lesson.layers)[-1]


def _grouped_or_deepest(lesson: ConvolutionLesson) -> str:
    model = lesson.state.inference.model.module
    grouped = [n for n in lesson.layers if math.conv_module(model, n).groups > 1]
    return grouped[0] if grouped else _deepest_conv(lesson)


def narrative_steps() -> tuple[Step, ...]:
    """A step's `layer` and `channel` are the session's (Lesson.shared_settings); callables name layers of the loaded
    model. The steps stay on the step-through and playground tabs: the other tabs have tours of their own."""
    return (
        Step("One window, one number",
             "The orange window covers a few pixels of your image. Each pixel is multiplied by the weight at the "
             "same place in the kernel, the products are added up and the bias is added: that is **one** output "
             "value. Press *Step ▶* a few times and check the sum under the pictures; then press *Play*.",
             {"tab": "Step through", "layer": _first_conv, "channel": 0}, section="convolution-layer"),
        Step("Padding keeps the size",
             "With a 3×3 kernel and no padding the window cannot be centred on the border pixels, so the output "
             "is one pixel smaller on every side. Padding adds one pixel all round and the output keeps the "
             "input's size: the formula below says it with your image's numbers. Set padding to 0 and read it "
             "again; try the padding modes to see what fills the border.",
             {"tab": "Playground", "preset": "box blur", "size": 3, "stride": 1, "padding": 1, "dilation": 1,
              "groups": 1}, section="playground-formula"),
        Step("Stride skips",
             "Stride 2 moves the window two pixels at a time: only every second position is computed, and the "
             "output is half as wide and half as high (a quarter of the work).",
             {"tab": "Playground", "preset": "Sobel x", "stride": 2, "padding": 1, "dilation": 1},
             section="playground-formula"),
        Step("Dilation spreads the taps",
             "Dilation 2 leaves a gap between the kernel's taps: the same 9 weights now cover a 5×5 area, with no "
             "extra parameters or work.",
             {"tab": "Playground", "preset": "Laplacian", "stride": 1, "padding": 2, "dilation": 2},
             section="playground-formula"),
        Step("Deeper units see more",
             "Deeper in, the window slides over feature maps, not pixels: each input value is already a summary "
             "of a patch of the image, so one output value here depends on a much larger part of your image. "
             "In a grouped or depthwise convolution (MobileNetV2) each output channel sees only its own group of "
             "input channels: look at the patch. The *Receptive field* and *Filter atlas* tabs go further, each "
             "with its own tour.",
             {"tab": "Step through", "layer": _grouped_or_deepest, "channel": 0}, section="convolution-layer"),
    )
