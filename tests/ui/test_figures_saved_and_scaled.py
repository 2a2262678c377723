"""Every figure can be saved and every map has a colour bar (issue 20, item 5).

Each lesson is built as the shell builds it (shell.build_lesson), its tabs opened (their figures are made then), and
put in a Bokeh document as a served session would: every plot in the document must have one named save tool, and
every map a colour bar. The new bars' ranges are checked against values recomputed here: the rollout against
jacobgil/vit-explain's rollout in NumPy (tests/lessons/test_attention_math.py), the step-through's matrices
against torch.nn.functional on the block's weights, the receptive-field map against F.conv2d, the normalization
tiles against block means made with a reshape.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from bokeh.models import ColorBar, CustomJS, GlyphRenderer, Image, ImageRGBA, Plot, SaveTool

from explorer.lessons import plots
from explorer.lessons.attention.view import AttentionLesson
from explorer.lessons.convolution.view_receptive import ReceptiveFieldPanel
from explorer.lessons.normalization.view_figures import TILE, Tiles
from explorer.session.state import LESSON_NAMES, ExplorerState
from explorer.ui import shell
from explorer.ui.overview import Overview
from explorer.ui.saving import NO_OVERFLOW, make_savable, slug
from tests.lessons.test_attention_math import vit_explain_rollout
from tests.ui.doc_events import Page

MODELS = ("mnist-cnn", "mnist-vit")
# Maps drawn as thumbnails, each on its own scale, with no room for a bar; each sits beside a larger view of one of
# them that has one: the overview's layer strip (22-36 px per layer) and channel grid (the big channel view), the
# attention lesson's layers × heads grid (the enlarged head).
THUMBNAILS = {"overview-strip-pictures", "overview-grid-pictures", "attention-grid"}
# Maps coloured on the scale of the figure beside them, whose bar serves both: pruning's weights before pruning (the
# weights after, on the same mapper, have the bar).
BESIDE = {"pruning-weights-before"}


def opened(view) -> None:
    """Open each tab of a lesson that has tabs: their figures are made when a tab first opens."""
    if "tab" in getattr(view, "param", {}):
        for tab in view.param.tab.objects:
            view.tab = tab


@pytest.fixture(scope="module", params=MODELS)
def pages(request) -> tuple[ExplorerState, dict[str, Page]]:
    state = ExplorerState(model=request.param)
    state.ensure()
    views = {name: shell.build_lesson(name, state) for name in LESSON_NAMES}
    views["overview"] = Overview(state=state)
    for view in views.values():
        opened(view)
    return state, {name: Page(view) for name, view in views.items()}


def plots_of(page: Page) -> list[Plot]:
    return [model for model in page.doc.models if isinstance(model, Plot)]


def save_tools(plot: Plot) -> list[SaveTool]:
    return [tool for tool in plot.toolbar.tools if isinstance(tool, SaveTool)]


def colour_bars(plot: Plot) -> list[ColorBar]:
    return [a for side in (plot.left, plot.right, plot.above, plot.below, plot.center) for a in side
            if isinstance(a, ColorBar)]


def test_every_figure_of_every_lesson_and_the_overview_has_one_save_tool_named_after_it(pages):
    _, by_name = pages
    for name, page in by_name.items():
        figures = plots_of(page)
        assert figures, f"{name}: no figure found"
        names = []
        for plot in figures:
            tools = save_tools(plot)
            assert len(tools) == 1, f"{name}: {plot.title.text!r} has {len(tools)} save tools"
            names.append(tools[0].filename)
            assert re.fullmatch(rf"{name}-[a-z0-9]+(-[a-z0-9]+)*", tools[0].filename), tools[0].filename
            # shown only under the pointer, inside the frame (or where the figure already had its toolbar)
            assert plot.toolbar.autohide and plot.toolbar_location is not None
            assert plot.toolbar.logo is None
            if plot.toolbar_inner:  # a toolbar that was hidden: it shows the save button alone, and never the
                assert [tool for tool in plot.toolbar.tools if tool.visible] == tools  # "more tools" button, which a
                assert NO_OVERFLOW in plot.toolbar.stylesheets  # browser showed past a narrow figure's edge
        assert len(set(names)) == len(names), f"{name}: two figures would save to one file name: {sorted(names)}"


def test_a_title_change_renames_the_file_in_the_page_without_a_message_to_the_server(pages):
    _, by_name = pages
    plot = next(p for p in plots_of(by_name["convolution"]) if p.title.text.startswith("Output channel"))
    callbacks = [c for c in plot.title.js_property_callbacks["change:text"] if isinstance(c, CustomJS)]
    assert len(callbacks) == 1 and callbacks[0].args["tool"] is save_tools(plot)[0]
    assert "silent: true" in callbacks[0].code  # the page keeps the new name to itself (tests/browser: the file)


def test_file_names_are_the_titles_in_lower_case_letters_digits_and_dashes():
    assert slug("effective field Σ|∂unit/∂pixel|, zoomed to the rectangle") == \
        "effective-field-unit-pixel-zoomed-to-the-rectangle"
    assert slug("Output channel 3 (28×28), filling in") == "output-channel-3-28-28-filling-in"
    assert slug("x" * 100) == "x" * 60
    assert slug("Σ∂") == ""


def test_figures_made_later_get_a_save_tool_when_they_arrive():
    """The attention lesson makes its sections for the first model with attention: built on a CNN, then shown a
    ViT, its new figures are saved too."""
    state = ExplorerState(model="mnist-cnn")
    lesson = shell.build_lesson("attention", state)
    page = Page(lesson)
    before = len(plots_of(page))
    state.model = "mnist-vit"
    state.ensure()
    figures = plots_of(page)
    assert len(figures) > before
    assert all(len(save_tools(plot)) == 1 for plot in figures)


def test_make_savable_twice_adds_nothing():
    state = ExplorerState(model="mnist-cnn")
    state.ensure()
    view = Overview(state=state)  # saved once by its constructor
    page = Page(view)
    count = len(page.doc.models)
    make_savable(view, "overview")
    assert len(page.doc.models) == count
    assert all(len(save_tools(plot)) == 1 for plot in plots_of(page))


def test_every_map_has_a_colour_bar_on_its_own_mapper_or_is_the_input_picture_or_a_thumbnail(pages):
    """An image glyph's bar holds the glyph's own mapper; a figure of pre-coloured maps (image_rgba) has a bar on the
    same palette as its colours. Exempt: the student's input picture (its colours are its pixels: the source holds
    exactly plots.picture_to_rgba of the input), the THUMBNAILS and the maps BESIDE a figure with their bar."""
    state, by_name = pages
    picture = plots.picture_to_rgba(state.inference.view)
    for name, page in by_name.items():
        for plot in plots_of(page):
            bars = colour_bars(plot)
            for renderer in (r for r in plot.renderers if isinstance(r, GlyphRenderer)):
                glyph, source = renderer.glyph, renderer.data_source
                if isinstance(glyph, Image):
                    assert any(bar.color_mapper is glyph.color_mapper for bar in bars), \
                        f"{name}: {plot.title.text!r} has no bar on its map's mapper"
                elif isinstance(glyph, ImageRGBA):
                    images = [np.asarray(image) for image in source.data["image"]]
                    if source.name in THUMBNAILS | BESIDE or (images and all(np.array_equal(i, picture)
                                                                          for i in images)):
                        continue
                    assert bars, f"{name}: {plot.title.text!r} draws a map ({source.name}) with no colour bar"
                    shown = [bar for bar in bars if bar.visible]
                    palettes = {tuple(plots._packed(tuple(bar.color_mapper.palette))) for bar in shown}
                    colours = set(np.concatenate([i.ravel() for i in images]).tolist()) - {0} if images else set()
                    assert any(colours <= set(p) for p in palettes), \
                        f"{name}: {plot.title.text!r} has colours that are not on its bars' palette"


def vit_state() -> tuple[ExplorerState, AttentionLesson]:
    state = ExplorerState(model="mnist-vit")
    return state, shell.build_lesson("attention", state)


@pytest.mark.parametrize("fusion", ["mean", "max", "min"])
def test_rollout_bars_span_zero_to_each_maps_largest_weight_as_vit_explain_computes_it(fusion, rng):
    state, lesson = vit_state()
    a = lesson._analysis
    query = int(torch.randint(a.maps.shape[-1], (1,), generator=rng))
    discard = float(torch.rand(1, generator=rng)) * 0.9
    lesson.param.update(query=query, head_fusion=fusion, discard_ratio=discard)
    maps = a.maps.double().numpy()  # (layers, heads, tokens, tokens), as the trace recorded them
    rows = [vit_explain_rollout(maps, fusion, discard)[query], maps[-1].mean(axis=0)[query]]
    left, right = lesson._sections[3].bars
    for bar, row in zip((left, right), rows, strict=True):
        patches = row[a.grid.first:]  # the maps show the patches, not the class token
        assert bar.color_mapper.low == 0
        assert bar.color_mapper.high == pytest.approx(patches.max(), rel=1e-5)  # float32 products in another order
        assert list(bar.color_mapper.palette) == list(plots.SEQUENTIAL)


def test_step_through_bars_span_each_matrix_from_the_blocks_weights(rng):
    state, lesson = vit_state()
    records = lesson._analysis.records
    layer = records[int(torch.randint(len(records), (1,), generator=rng))]  # "blocks.i.attn"
    heads = lesson._analysis.maps.shape[1]
    head = int(torch.randint(heads, (1,), generator=rng))
    lesson.temperature = 1.0
    state.param.update(layer=layer, channel=head)
    model, block = state.inference.model.module, layer.rpartition(".")[0]
    norm, qkv = model.get_submodule(f"{block}.norm1"), model.get_submodule(f"{layer}.qkv")
    x = state.inference.trace[f"{block}.norm1"].input[0].double()  # (T, D): the block's input
    normed = F.layer_norm(x, norm.normalized_shape, norm.weight.double(), norm.bias.double(), norm.eps)
    d = x.shape[-1] // heads
    packed = F.linear(normed, qkv.weight.double(), qkv.bias.double()).reshape(len(x), 3, heads, d)  # [Q | K | V]
    q, k, v = packed[:, :, head].unbind(1)
    scores = q @ k.T
    probs = F.softmax(scores / d**0.5, dim=-1)
    expected = {"x": x, "normed": normed, "q": q, "k": k, "v": v, "scores": scores, "scaled": scores / d**0.5,
                "probs": probs, "out": probs @ v}
    for key, values in expected.items():
        bar = colour_bars(lesson._stepper.figs[key])[0]
        limit = float(values.abs().max())
        low = 0.0 if key == "probs" else -limit
        # the lesson runs the block's LayerNorm and projection in float32, as the model does; here in float64
        assert (bar.color_mapper.low, bar.color_mapper.high) == pytest.approx((low, limit), rel=1e-5), key
        assert bar.color_mapper is lesson._stepper.figs[key].renderers[0].glyph.color_mapper


def test_normalization_tiles_each_have_a_bar_spanning_their_own_largest_value(rng):
    tiles = Tiles("tiles", 4, "test-tiles")
    maps = {"small": torch.randn(28, 28, generator=rng) * 3, "tall": torch.randn(2 * TILE, TILE, generator=rng),
            "odd": torch.randn(5, 7, generator=rng)}
    tiles.show(maps)
    for bar, values in zip(tiles.bars, maps.values(), strict=False):
        v = values.double().numpy()
        if max(v.shape) > TILE:  # drawn as 2×2 block means (plots.downsample), recomputed here with a reshape
            v = v.reshape(v.shape[0] // 2, 2, v.shape[1] // 2, 2).mean(axis=(1, 3))
        limit = np.abs(v).max()
        assert (bar.color_mapper.low, bar.color_mapper.high) == pytest.approx((-limit, limit), rel=1e-12)
        assert list(bar.color_mapper.palette) == list(plots.DIVERGING)
    assert [bar.visible for bar in tiles.bars] == [True, True, True, False]  # no tile, no bar


@pytest.mark.parametrize("layer", ["features.0", "features.4"])
def test_receptive_field_map_bar_spans_the_channels_output_from_conv2d(layer, rng):
    state = ExplorerState(model="mnist-cnn")
    view = ReceptiveFieldPanel(state=state)
    conv = state.inference.model.module.get_submodule(layer)
    channel = int(torch.randint(conv.out_channels, (1,), generator=rng))
    state.param.update(layer=layer, channel=channel)
    out = F.conv2d(state.inference.trace[layer].input, conv.weight, conv.bias, conv.stride, conv.padding,
                   conv.dilation, conv.groups)[0, channel]
    signed, limit = bool((out < 0).any()), float(out.abs().max())
    bar = colour_bars(view._map_fig)[0]
    assert (bar.color_mapper.low, bar.color_mapper.high) == pytest.approx((-limit if signed else 0.0, limit),
                                                                          rel=1e-5)  # float32 sums, another order
    assert list(bar.color_mapper.palette) == list(plots.palette(signed))
