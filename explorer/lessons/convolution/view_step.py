"""The convolution lesson's step-through: the kernel window stepping over the layer's real input.

Pick a convolution (every Conv2d of the model, depthwise and pointwise included) and an output channel. All
window positions of that channel are computed once (math.channel_steps, off the event loop when served:
MobileNetV2's large maps take a while) and sent to the page; play, pause, step, the scrubber and the speed run
in the browser (view_step_figures.RENDER), so a step costs no server round trip. A change of layer, channel or
input replaces the sources' data inside one `one_update()`; no Bokeh model is made after the figures are built.
Every number is formatted here, by plots.format_value, and sent as text: the page only picks a position's strings.
"""

from __future__ import annotations

import numpy as np
import panel as pn
import param

from explorer.core import names
from explorer.lessons import plots
from explorer.lessons.convolution import math
from explorer.lessons.convolution.view_step_figures import CELLS_FRAME, STRINGS, StepFigures
from explorer.session.tags import tag_results

MAX_LABELLED_BLOCKS = 16    # name the input channel above each block of the patch up to this many
NUMBERS_FROM_PX = 44        # write the numbers in the cells when a cell is at least this wide (a 12-px '−0.123')
ZOOM_FROM, ZOOM_SIDE = 48, 32  # an input wider than ZOOM_FROM px is shown ZOOM_SIDE px around the window


def texts(values: np.ndarray) -> list[str]:
    """Each value as the page writes it."""
    return plots.format_values(np.asarray(values, dtype=np.float64).ravel().tolist())


def joined(strings: list[str]) -> str:
    """Strings as the one text the page splits back into them (view_step_figures.STRINGS); a formatted number
    spans no lines."""
    return "\n".join(strings)


def labelled(*arrays: np.ndarray) -> tuple[list[str], list[np.ndarray]]:
    """The distinct values' texts, and each array as indices into them: a few hundred distinct input values
    stand for 300 000 cells (MobileNetV2's first layer), so that each is formatted and sent once."""
    bits = np.concatenate([np.asarray(a, dtype=np.float32).ravel() for a in arrays]).view(np.int32)
    distinct, index = np.unique(bits, return_inverse=True)  # by bits: −0 is written as such, as Python writes it
    ends = np.cumsum([a.size for a in arrays])[:-1]
    return texts(distinct.view(np.float32)), [part.astype(np.int32) for part in np.split(index.ravel(), ends)]


class StepThrough(param.Parameterized):
    """The step-through of the convolution lesson (a part of ConvolutionLesson, which gives `layer`, `channel`)."""

    shown_input = param.Selector(default=0, objects=[0], doc="Input channel drawn under the window.")

    def _build_step_through(self, controls: pn.Row) -> pn.Column:
        self.figures = StepFigures()
        self._numbers = False
        self._layer_text = pn.pane.Markdown("", sizing_mode="stretch_width", margin=(0, 10),
                                            css_classes=["convolution-layer"])
        # widgets only (figures in a FlexBox were laid out without end): on two lines on a phone
        self._step_controls = pn.FlexBox(*controls, pn.widgets.Select.from_param(
            self.param.shown_input, name="Input channel drawn", width=150), sizing_mode="stretch_width")
        self._board = pn.pane.Bokeh(self.figures.layout, sizing_mode="stretch_width")
        self._arithmetic_pane = pn.pane.Bokeh(self.figures.arithmetic)
        return pn.Column(
            pn.pane.Markdown(
                "The window (orange) slides over the layer's real input: your image at the first layer, the feature "
                "maps of the layer before deeper in. At each position the input values under it are multiplied by "
                "the kernel's weights, the products are added up, the bias is added: one output value. Press "
                "**Play**, or step with the buttons or the slider; the output map fills in as the window moves. "
                + plots.COLOUR_LEGEND, sizing_mode="stretch_width", margin=(0, 10), css_classes=["explanation"]),
            # the text is a root of its own: a change of it does not lay out the figures again
            self._step_controls, self._layer_text, self._board, self._arithmetic_pane, sizing_mode="stretch_width")

    @param.depends("shown_input", watch=True)
    def _show_steps(self) -> None:
        """Derive the chosen channel's positions (slow work), then show them."""
        if self.layer is None:
            return
        inference = self.state.inference
        model = inference.model.module
        conv = math.conv_module(model, self.layer)
        group = math.group_channels(conv, self.channel)
        if self.shown_input not in group:
            self.param.shown_input.objects = list(group)
            self.shown_input = group[0]  # its watcher shows
            return
        key = (inference, self.layer, self.channel, self.shown_input)
        if not self.changed("steps", key):
            return
        layer, channel, record = self.layer, self.channel, inference.trace[self.layer]

        def derive():
            steps = math.channel_steps(conv, record.input, channel)
            after = math.after(model, math.following(inference.trace, layer), channel, steps.output)
            return steps, after, self._position_texts(steps, after)

        def show(result) -> None:
            steps, after, position_texts = result
            self.param.shown_input.objects = list(group)
            self._show_layer_text(conv, record, steps)
            self._show_cells(steps, record.params["weight"].numpy())
            self._show_input(steps, record.input.shape[2:], group.index(self.shown_input))
            self._show_output(steps)
            self._show_positions(steps, after, position_texts)
            tag_results(inference.model.name, self._layer_text, self.figures.arithmetic, *self.figures.figures,
                        *self.figures.sources)

        self.slow("steps").request(key, derive, show)

    def _position_texts(self, steps: math.ChannelSteps, after: tuple[math.After, ...]) -> dict:
        """Every number the page writes for every position, formatted once (off the event loop when served)."""
        following = (np.stack([a.values.flatten().numpy() for a in after], axis=1).ravel() if after
                     else np.zeros(0, dtype=np.float32))  # (L·F,) position-major
        out = dict(sum=texts(steps.sums.numpy()), value=texts(steps.output.numpy()), following=following,
                   following_text=texts(following))
        if self._cell_px(steps) >= NUMBERS_FROM_PX:
            out["labels"] = labelled(steps.patches.numpy(), steps.products.numpy())
        return out

    def _show_layer_text(self, conv, record, steps: math.ChannelSteps) -> None:
        c = math.cost(record)
        h, w = record.input.shape[2:]
        rows, cols = math.conv_output_sizes(conv, h, w)
        dense = ("" if c.dense_macs == c.macs else
                 f" (with groups = 1 it would be {plots.format_si(c.dense_macs, 'MACs')})")
        kh, kw = conv.kernel_size
        padding = conv.padding if isinstance(conv.padding, str) else "×".join(map(str, conv.padding))
        why = ("the input channels it reads are all zeros here" if not steps.padded.any() else
               "its kernel weights are all zero" if not steps.kernel.any() else "its sums and bias cancel out")
        zeros = ("" if steps.output.any() else
                 f"\n\n**Output channel {self.channel} is all zeros** for this input ({why}): choose another channel.")
        self._layer_text.object = (
            f"**{names.readable_name(conv)}** ({self.layer}): {conv.in_channels} → {conv.out_channels} channels, "
            f"kernel {kh}×{kw}, stride "
            f"{conv.stride[0]}×{conv.stride[1]}, padding {padding} "
            f"({conv.padding_mode}), dilation {conv.dilation[0]}×{conv.dilation[1]}, groups {conv.groups}, "
            f"{'a bias' if conv.bias is not None else 'no bias'}. {math.describe_groups(conv, self.channel)}\n\n"
            f"Output rows {rows.formula}; columns {cols.formula}.\n\n"
            f"**Cost**: {c.params:,} parameters · {plots.format_si(c.macs, 'MACs')}{dense} · output "
            f"{plots.format_shape(c.output_shape)} · {plots.format_bytes(c.activation_bytes)} of activations "
            f"(per image).{zeros}")

    @staticmethod
    def _blocks(steps: math.ChannelSteps) -> tuple[int, int, int]:
        """(blocks per row, rows of blocks, extent in cells) of the patch's input channels, a square of blocks."""
        n_in, kh, kw = steps.kernel.shape
        per_row = int(np.ceil(np.sqrt(n_in)))  # a square of blocks fills the square frame best
        block_rows = -(-n_in // per_row)
        return per_row, block_rows, max(per_row * (kw + 1) - 1, block_rows * (kh + 1) - 1)

    def _cell_px(self, steps: math.ChannelSteps) -> float:
        return CELLS_FRAME / self._blocks(steps)[2]

    def _show_cells(self, steps: math.ChannelSteps, layer_weights: np.ndarray) -> None:
        """The patch, kernel and product cells of position 0; the kernel is coloured against the layer's largest
        |weight| (plots.kernel_limit), so kernels of one layer compare and a constant one is not stretched."""
        f = self.figures
        n_in, kh, kw = steps.kernel.shape
        per_row, _, extent = self._blocks(steps)
        c, u, v = np.meshgrid(np.arange(n_in), np.arange(kh), np.arange(kw), indexing="ij")  # (C_g, k_h, k_w) each
        x = (c % per_row) * (kw + 1) + v
        y = (c // per_row) * (kh + 1) + u
        cell_px = CELLS_FRAME / extent
        numbers = self._numbers = cell_px >= NUMBERS_FROM_PX
        kernel = steps.kernel.numpy().ravel()
        patch, product = steps.patches[0].numpy().ravel(), steps.products[0].numpy().ravel()
        layout = dict(left=x.ravel(), right=x.ravel() + 1, top=y.ravel(), bottom=y.ravel() + 1, cx=x.ravel() + 0.5,
                      cy=y.ravel() + 0.5, channel=np.array(steps.in_channels)[c.ravel()], row=u.ravel(), col=v.ravel(),
                      kernel=kernel)
        blank = [""] * len(kernel)
        # the kernel has a source of its own: it stays while the window moves, so its figure is not repainted
        plots.set_data(f.kernel_cells, dict(layout, kernel_text=texts(kernel) if numbers else blank))
        f.taps.data = dict(layout, patch=patch.copy(), product=product.copy(),
                           patch_text=texts(patch) if numbers else blank,
                           product_text=texts(product) if numbers else blank)
        labels = [(int(ch), (i % per_row) * (kw + 1) + kw / 2, (i // per_row) * (kh + 1))
                  for i, ch in enumerate(steps.in_channels)] if n_in <= MAX_LABELLED_BLOCKS else []
        plots.set_data(f.block_labels, dict(text=[f"in {ch}" for ch, _, _ in labels], x=[lx for _, lx, _ in labels],
                                            y=[ly for _, _, ly in labels]))
        top_margin = 0.6 if labels else 0
        shown = steps.in_channels.index(self.shown_input)  # the block of the channel drawn on the left
        bx, by = (shown % per_row) * (kw + 1), (shown // per_row) * (kh + 1)
        edges = dict(left=bx - 0.15, right=bx + kw + 0.15, top=by - 0.15, bottom=by + kh + 0.15)
        plots.set_data(f.shown_block, {k: [v] if n_in > 1 else [] for k, v in edges.items()})
        font = f"{int(np.clip(cell_px * 0.28, 12, 16))}px"
        patch_limit = plots.max_abs(steps.patches.numpy())
        signed = bool((steps.padded < 0).any())
        for fig, bar, limit, kind in ((f.patch_fig, f.patch_bar, patch_limit, signed),
                                      (f.kernel_fig, f.kernel_bar, plots.kernel_limit(layer_weights), True),
                                      (f.product_fig, f.product_bar, plots.max_abs(steps.products.numpy()), True)):
            fig.x_range.update(start=-0.2, end=extent + 0.2)
            fig.y_range.update(start=extent + 0.2, end=-0.2 - top_margin)
            plots.set_colour_scale(bar, kind, limit)
        for text in f.cell_texts:
            text.glyph.update(text_font_size=font, background_fill_alpha=0.75 if numbers else 0)  # no empty boxes
        f.patch_fig.title.text = (f"Input patch: {n_in} input channel{'s' * (n_in > 1)} × {kh}×{kw}"
                                  if n_in > 1 else f"Input patch ({kh}×{kw})")
        f.kernel_fig.title.text = f"Kernel weights of output channel {self.channel}"
        f.product_fig.title.text = "Patch × kernel, element by element"

    # The sources the page changes as the window moves (taps, window, span, output, cursor: RENDER) are always set,
    # to bring the page back to position 0; the others only when they changed (plots.set_data).

    def _show_input(self, steps: math.ChannelSteps, size: tuple[int, int], shown: int) -> None:
        f = self.figures
        left, right, top, bottom = steps.pads
        h, w = size
        values = steps.padded[shown].numpy()
        signed = bool((steps.padded < 0).any())
        f.input_source.data = dict(image=[values.astype(np.float32)], x=[-left], y=[-top], dw=[w + left + right],
                                   dh=[h + top + bottom])
        plots.set_colour_scale(f.input_bar, signed, plots.max_abs(steps.padded.numpy()))
        plots.set_data(f.input_frame, dict(left=[0], right=[w], top=[0], bottom=[h]))
        dy, dx = np.meshgrid(steps.tap_rows.numpy() + 0.5, steps.tap_cols.numpy() + 0.5, indexing="ij")  # tap centres
        # positions hold each window's top-left in input coordinates (padding is negative); taps are offsets from it
        f.window.data = dict(dx=dx.ravel(), dy=dy.ravel(), x=dx.ravel() - left + int(steps.lefts[0]),
                             y=dy.ravel() - top + int(steps.tops[0]))
        span_w, span_h = int(steps.tap_cols[-1]) + 1, int(steps.tap_rows[-1]) + 1
        f.span.data = dict(width=[span_w], height=[span_h],
                           left=[int(steps.lefts[0]) - left], right=[int(steps.lefts[0]) - left + span_w],
                           top=[int(steps.tops[0]) - top], bottom=[int(steps.tops[0]) - top + span_h])
        extent = max(h + top + bottom, w + left + right)
        zoom = ZOOM_SIDE if extent > ZOOM_FROM else 0
        side = zoom or extent  # zoomed: around the first window, which is at the top left
        f.input_fig.x_range.update(start=-left, end=-left + side)
        f.input_fig.y_range.update(start=-top + side, end=-top)
        plots.set_data(f.meta, dict(numbers=[self._numbers], bias=[steps.bias],
                                    bias_text=[plots.format_value(steps.bias)], out_w=[steps.output.shape[1]],
                                    zoom=[zoom], bounds=[[-left, w + right, -top, h + bottom]]))
        what = "your image" if self.layer == self.layers[0] else f"input channel {self.shown_input}"
        f.input_fig.title.text = f"The window on {what}{', zoomed in' if zoom else ''}"
        f.input_fig.xaxis.axis_label = ("x (input pixel; padding outside the dashed box)" if any(steps.pads)
                                        else "x (input pixel)")

    def _show_output(self, steps: math.ChannelSteps) -> None:
        f = self.figures
        out_h, out_w = steps.output.shape
        image = np.full((out_h, out_w), np.nan, dtype=np.float32)
        image.flat[0] = float(steps.output.flatten()[0])
        f.output_source.data = dict(image=[image], dw=[out_w], dh=[out_h])
        plots.set_colour_scale(f.output_bar, True, plots.max_abs(steps.output.numpy()))
        extent = max(out_h, out_w)
        f.output_fig.x_range.update(start=0, end=extent)
        f.output_fig.y_range.update(start=extent, end=0)
        f.cursor.data = dict(left=[0], right=[1], top=[0], bottom=[1])
        f.output_fig.title.text = f"Output channel {self.channel} ({out_h}×{out_w}), filling in"

    def _show_positions(self, steps: math.ChannelSteps, after: tuple[math.After, ...], text: dict) -> None:
        f = self.figures
        plots.set_data(f.after, dict(name=[a.name for a in after], module_type=[a.module_type for a in after],
                                     formula=[a.formula for a in after]))
        f.following.data = dict(value=text["following"])
        f.patches.data = dict(patch=steps.patches.flatten().numpy(), product=steps.products.flatten().numpy())
        strings, (patch, product) = text.get("labels", ([], [np.zeros(0, np.int32)] * 2))
        f.labels.data = dict(patch=patch, product=product)
        f.strings.data = {name: [joined(lines)] for name, lines in
                          zip(STRINGS, (strings, text["sum"], text["value"], text["following_text"]), strict=True)}
        f.slider.update(end=max(steps.positions - 1, 1), value=0)
        # last: the page renders position 0 when the positions arrive (view_step_figures.RENDER)
        f.positions.data = dict(top=steps.tops.numpy() - steps.pads[2], left=steps.lefts.numpy() - steps.pads[0],
                                sum=steps.sums.numpy(), value=steps.output.flatten().numpy(),
                                index=np.arange(steps.positions))
        f.arithmetic.text = self._arithmetic_text(steps, after, text, 0)

    @staticmethod
    def _arithmetic_text(steps: math.ChannelSteps, after: tuple[math.After, ...], text: dict, k: int) -> str:
        """The arithmetic of position k as the page writes it (RENDER, from the same strings): position 0's."""
        i, j = divmod(k, steps.output.shape[1])
        value = text["value"][k]
        html = (f'<div class="conv-arithmetic"><b>Window position {k}</b> (of 0–{steps.positions - 1}): '
                f"output row {i}, column {j}"
                f"<br>Σ of {steps.kernel.numel()} products = {text['sum'][k]} &nbsp;+ bias "
                f'{plots.format_value(steps.bias)} &nbsp;= <b class="conv-value">{value}</b>')
        v = value
        for n, a in enumerate(after):
            nxt = text["following_text"][k * len(after) + n]
            html += f"<br>→ {a.module_type} ({a.name}): {a.formula.replace('{v}', v)} = " \
                    f'<b class="conv-after">{nxt}</b>'
            v = nxt
        return html + "</div>"
