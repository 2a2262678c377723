"""The convolution lesson's playground: one 2-D kernel on the student's image or a photo.

Presets or typed numbers, with stride, padding, padding mode, dilation and groups (math.playground), the
output-size formula with its numbers, and impossible settings explained as text (math's InputError).
"""

from __future__ import annotations

import numpy as np
import panel as pn
import param
import torch
from bokeh.layouts import row
from bokeh.models import LinearColorMapper
from bokeh.plotting import figure

from explorer.core.gallery import photo_gallery
from explorer.errors import InputError
from explorer.lessons import plots
from explorer.lessons.convolution import math
from explorer.lessons.convolution.view_step_figures import CELLS_FRAME, cells_figure, picture_figure
from explorer.session.state import follows, one_update
from explorer.session.tags import tag_results

NUMBERS_FROM_PX = 44        # write the numbers in the cells when a cell is at least this wide (a 12-px '−0.123')
YOUR_INPUT = "your input"
PLAYGROUND_PHOTOS = ("camera", "coins", "astronaut", "chelsea")  # scikit-image samples (explorer.core.gallery)
PLAYGROUND_SIDE = 128       # photos are shrunk (block means) to at most this many pixels a side


class Playground(param.Parameterized):
    """The playground of the convolution lesson (a part of ConvolutionLesson, which gives `state`)."""

    picture = param.Selector(default=YOUR_INPUT, objects=[YOUR_INPUT, *PLAYGROUND_PHOTOS],
                             doc="The image the playground filters.")
    preset = param.Selector(default="Sobel x", objects=list(math.PRESETS), doc="Kernel preset.")
    size = param.Integer(default=3, bounds=(1, 9), step=2, doc="Preset size (identity, blur, Gaussian, Gabor).")
    angle = param.Number(default=0.0, bounds=(0, 180), step=15, doc="Gabor angle (degrees).")
    frequency = param.Number(default=0.25, bounds=(0.05, 0.5), step=0.05, doc="Gabor frequency (cycles per pixel).")
    kernel_text = param.String(default="", doc="The kernel, one row per line.")
    stride = param.Integer(default=1, bounds=(1, 8))
    padding = param.Integer(default=1, bounds=(0, 16))
    padding_mode = param.Selector(default="zeros", objects=list(math.PADDING_MODES))
    dilation = param.Integer(default=1, bounds=(1, 8))
    groups = param.Integer(default=1, bounds=(1, 3))

    _play_layout: pn.Column | None = None  # made by _build_playground, when the tab first opens

    @param.depends("preset", "size", "angle", "frequency", watch=True)
    def _apply_preset(self) -> None:
        size = self.size if self.preset in math.SIZED_PRESETS else 3
        self.kernel_text = math.format_kernel(math.preset(self.preset, size if size % 2 else size + 1, self.angle,
                                                          self.frequency))

    def playground_picture(self) -> np.ndarray:
        """The picture the playground filters, uint8 (H, W) or (H, W, 3): the student's input or a photo."""
        if self.picture == YOUR_INPUT:
            return self.state.inference.view
        photo = next(item.source for item in photo_gallery() if item.key == self.picture)
        return np.rint(plots.downsample(photo.astype(np.float64), PLAYGROUND_SIDE)).astype(np.uint8)

    @property
    def playground_built(self) -> bool:
        """Whether the playground's figures exist: they are made when its tab first opens (ConvolutionLesson)."""
        return self._play_layout is not None

    @follows("kernel_text", "stride", "padding", "padding_mode", "dilation", "groups", "picture", "state.inference")
    def _update_playground(self) -> None:
        if not self.playground_built:
            return  # drawn with the settings of the moment when the tab opens
        picture = self.playground_picture()
        image = picture.astype(np.float64) / 255
        image = image[None] if image.ndim == 2 else image.transpose(2, 0, 1)  # (C, H, W) in [0, 1]
        self.param.groups.bounds = (1, image.shape[0])
        # the student's input is what this model sees (its preprocessing); a photo is the same for every model
        model = self.state.inference.model.name if self.picture == YOUR_INPUT else None
        with one_update():
            self._tag_playground(model)
            self._play_picture.data = dict(image=[plots.picture_to_rgba(picture)], dw=[image.shape[2]],
                                           dh=[image.shape[1]])
            self._fit(self._play_input_fig, image.shape[1], image.shape[2])
            try:
                kernel = math.parse_kernel(self.kernel_text)
                self._show_kernel(kernel)
                result = math.playground(torch.from_numpy(image), kernel, self.stride, self.padding,
                                         self.padding_mode, self.dilation, self.groups)
            except InputError as e:
                self._play_error.param.update(object=str(e), visible=True)
                self._play_formula.object = ""
                self._play_output.data = dict(image=[], x=[], dw=[], dh=[])
                return
            self._play_error.param.update(object="", visible=False)
            out = result.output.numpy()
            groups, out_h, out_w = out.shape
            gap = max(1, out_w // 10)
            self._play_output.data = dict(image=list(out.astype(np.float32)),
                                          x=[g * (out_w + gap) for g in range(groups)], dw=[out_w] * groups,
                                          dh=[out_h] * groups)
            plots.set_colour_scale(self._play_bar, True, plots.max_abs(out))
            self._fit(self._play_output_fig, out_h, groups * out_w + (groups - 1) * gap)
            channels = image.shape[0]
            what = (", the sum over the 3 colour channels" if groups == 1 and channels > 1 else
                    ", one per colour channel (red, green, blue)" if groups == 3 else "")
            self._play_output_fig.title.text = f"Output: {out_h}×{out_w}{what}"
            self._play_formula.object = (f"**Output size** (rows): {result.rows.formula}  \n"
                                         f"**Output size** (columns): {result.cols.formula}")

    def _tag_playground(self, model: str | None) -> None:
        results = (self._play_picture, self._play_input_fig, self._play_output, self._play_output_fig,
                   self._play_formula)
        if model is not None:
            tag_results(model, *results)
        else:
            for result in results:
                result.tags = []

    @staticmethod
    def _fit(fig: figure, height: int, width: int) -> None:
        extent = max(height, width)
        fig.x_range.update(start=0, end=extent)
        fig.y_range.update(start=extent, end=0)

    def _show_kernel(self, kernel) -> None:
        kh, kw = kernel.shape
        u, v = np.meshgrid(np.arange(kh), np.arange(kw), indexing="ij")
        values = kernel.numpy().ravel()
        cell_px = CELLS_FRAME / max(kh, kw)
        numbers = cell_px >= NUMBERS_FROM_PX
        self._play_kernel.data = dict(left=v.ravel(), right=v.ravel() + 1, top=u.ravel(), bottom=u.ravel() + 1,
                                      cx=v.ravel() + 0.5, cy=u.ravel() + 0.5, value=values,
                                      text=[plots.format_value(w) if numbers else "" for w in values])
        # a weight of 1 copies a pixel: the scale reaches at least that far, so a blur's small weights look small
        plots.set_colour_scale(self._play_kernel_bar, True, plots.kernel_limit(values, plots.PLAYGROUND_UNIT_WEIGHT))
        self._play_kernel_text.glyph.text_font_size = f"{int(np.clip(cell_px * 0.28, 12, 16))}px"
        self._fit(self._play_kernel_fig, kh, kw)

    def _build_playground(self) -> pn.Column:
        self._play_picture = plots.source("image", "dw", "dh", name="convolution-playground-input")
        self._play_output = plots.source("image", "x", "dw", "dh", name="convolution-playground-output")
        self._play_kernel = plots.source("left", "right", "top", "bottom", "cx", "cy", "value", "text",
                                         name="convolution-playground-kernel")
        self._play_input_fig = picture_figure("Your image", "x (pixel)", "y (pixel)")
        self._play_input_fig.image_rgba(image="image", x=0, y=0, dw="dw", dh="dh", source=self._play_picture)
        self._play_mapper = LinearColorMapper(palette=list(plots.DIVERGING), low=-1, high=1, nan_color="#00000000")
        self._play_output_fig = picture_figure("Output", "x (output pixel)", "y (output pixel)")
        self._play_output_fig.image(image="image", x="x", y=0, dw="dw", dh="dh", color_mapper=self._play_mapper,
                                    source=self._play_output)
        self._play_bar = plots.colour_bar(self._play_mapper, "output value")
        self._play_output_fig.add_layout(self._play_bar, "right")
        self._play_kernel_mapper = LinearColorMapper(palette=list(plots.DIVERGING), low=-1, high=1)
        self._play_kernel_fig = cells_figure("The kernel")
        self._play_kernel_bar = plots.colour_bar(self._play_kernel_mapper, "weight")
        self._play_kernel_fig.add_layout(self._play_kernel_bar, "right")
        self._play_kernel_fig.quad(left="left", right="right", top="top", bottom="bottom", source=self._play_kernel,
                                   fill_color={"field": "value", "transform": self._play_kernel_mapper},
                                   line_color="#94a3b8", line_width=0.5)
        self._play_kernel_text = self._play_kernel_fig.text(x="cx", y="cy", text="text", source=self._play_kernel,
                                                            text_align="center", text_baseline="middle",
                                                            text_color="#111827")
        self._play_error = pn.pane.Alert("", alert_type="warning", visible=False, css_classes=["playground-error"])
        self._play_formula = pn.pane.Markdown("", css_classes=["playground-formula"], margin=(0, 10))
        editor = pn.widgets.TextAreaInput.from_param(self.param.kernel_text, name="Kernel (one row per line)",
                                                     height=150, width=250, stylesheets=[
                                                         "textarea { font-family: monospace; }"])
        gabor = pn.Row(pn.widgets.FloatSlider.from_param(self.param.angle, name="Gabor angle (°)", width=150),
                       pn.widgets.FloatSlider.from_param(self.param.frequency, name="Gabor frequency (cycles/px)",
                                                         width=170))
        kernel_controls = pn.Column(
            pn.widgets.Select.from_param(self.param.picture, name="Image", width=150),
            pn.widgets.Select.from_param(self.param.preset, name="Preset", width=150),
            pn.widgets.IntSlider.from_param(self.param.size, name="Preset size", width=150), gabor, editor)
        settings = pn.Column(
            pn.widgets.IntSlider.from_param(self.param.stride, name="Stride", width=200),
            pn.widgets.IntSlider.from_param(self.param.padding, name="Padding", width=200),
            pn.widgets.RadioButtonGroup.from_param(self.param.padding_mode, width=300),
            pn.widgets.IntSlider.from_param(self.param.dilation, name="Dilation", width=200),
            pn.widgets.IntInput.from_param(self.param.groups, name="Groups", width=120))
        self._play_layout = pn.Column(
            pn.pane.Markdown(
                "Choose a kernel (a preset, or type your own numbers) and slide it over your image. The same "
                "numbers slide over every position: a convolution looks for one pattern everywhere. Sobel x is "
                "positive where the image gets brighter to the right, Sobel y where it gets brighter downward. "
                "With an RGB image, groups = 1 adds up the three colour channels; groups = 3 filters each alone. "
                "The kernel's colours are darkest at a weight of ±1 (a weight that copies a pixel unchanged), or "
                "at its largest |weight| where that is larger: a blur's small weights look small.",
                sizing_mode="stretch_width", margin=(0, 10), css_classes=["explanation"]),
            pn.Row(kernel_controls, pn.pane.Bokeh(self._play_kernel_fig), settings, stylesheets=[plots.WRAPS]),
            self._play_formula, self._play_error,
            pn.pane.Bokeh(row(self._play_input_fig, self._play_output_fig, sizing_mode="stretch_width",
                              stylesheets=[plots.WRAPS]), sizing_mode="stretch_width"),
            sizing_mode="stretch_width")
        return self._play_layout
