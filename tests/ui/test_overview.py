"""The overview, headless: what its sources hold against the trace, complexity and NumPy, and what clicks do."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from bokeh.events import Tap

from explorer.core import complexity, names, zoo
from explorer.lessons import plots
from explorer.session.state import ExplorerState
from explorer.ui import overview as ov
from explorer.ui.overview import CELL, GRID_H, GRID_W, PAGE, Overview
from tests.bokeh_images import read_back

MODELS = [m for m in ("mnist-cnn", "mnist-vit", "mobilenet_v2") if zoo.is_available(m)]


def make_view(model: str) -> Overview:
    state = ExplorerState()  # its model choices are filled in __init__, so the model is set afterwards
    state.model = model
    return Overview(state=state)


@pytest.fixture
def view() -> Overview:
    return make_view("mnist-cnn")


def strip(view: Overview) -> dict:
    return view._strip_source.data


def strip_picture(view: Overview, name: str) -> np.ndarray:
    """The layer's thumbnail, read back from the strip's pictures at its own resolution."""
    i = strip(view)["name"].index(name) + 1
    thumb = ov.strip_thumbnails(view.state.inference.trace.records)[i - 1]
    shape = plots.downsample(thumb.values, ov.THUMB).shape
    dw, dh = ov._fit(*shape, ov.THUMB)
    return read_back(view._strip_pictures.data, shape, i * CELL + (CELL - dw) / 2, ov.BAND + 4 + (ov.THUMB - dh) / 2,
                     dw, dh)


def grid_picture(view: Overview, index: int) -> np.ndarray:
    """Thumbnail `index` of the channel grid, read back from its pictures at its own resolution."""
    shape = plots.downsample(ov.layer_maps(view.state.inference.trace[view.state.layer]).maps[0], ov.GRID_THUMB).shape
    dw, dh = ov._fit(*shape, ov.GRID_THUMB, least=6)
    left, top = index % ov.GRID_COLS * GRID_W, index // ov.GRID_COLS * GRID_H
    return read_back(view._grid_pictures.data, shape, left + (GRID_W - dw) / 2, top + 2 + (ov.GRID_THUMB - dh) / 2,
                     dw, dh)


def tap(figure, x: float, y: float) -> None:
    """What a click on the canvas sends: a Tap event in data coordinates."""
    figure._trigger_event(Tap(figure, x=x, y=y))


def column_of(view: Overview, name: str) -> float:
    """x of the middle of a layer's column (column 0 holds the input picture)."""
    return (view.state.inference.trace.names.index(name) + 1.5) * CELL


def model_ids(view: Overview) -> set[str]:
    return {m.id for fig in (view._strip_fig, view._grid_fig, view._big_fig) for m in fig.references()}


def output(view: Overview, name: str) -> np.ndarray:
    return view.state.inference.trace[name].output.numpy()


@pytest.mark.parametrize("model", MODELS)
def test_strip_has_one_column_per_trace_record_in_order(model):
    view = make_view(model)
    trace = view.state.inference.trace
    assert strip(view)["name"] == list(trace.names)
    assert strip(view)["kind"] == [r.kind for r in trace.records]
    assert view._strip_fig.x_range.end == view._strip_fig.width == (len(trace) + 1) * CELL
    assert len(view._input_source.data["image"]) == 1


def test_strip_follows_a_model_change_in_the_same_figure(view):
    ids = model_ids(view)
    for model in MODELS[1:] + MODELS[:1]:
        view.state.model = model
        assert strip(view)["name"] == list(view.state.inference.trace.names)
        assert view._strip_fig.x_range.end == (len(view.state.inference.trace) + 1) * CELL
        assert view.state.layer in view.state.inference.trace.names
    assert model_ids(view) == ids


@pytest.mark.parametrize("model", MODELS)
def test_every_strip_thumbnail_reads_back_from_pictures_at_its_own_resolution(model):
    view = make_view(model)
    records = view.state.inference.trace.records
    for record, thumb in zip(records, ov.strip_thumbnails(records), strict=True):
        values = plots.downsample(thumb.values, ov.THUMB)
        expected = plots.to_rgba(values, thumb.signed, thumb.limit)
        np.testing.assert_array_equal(strip_picture(view, record.name), expected, err_msg=record.name)
    sent = sum(image.size for image in view._strip_pictures.data["image"])
    assert sent < 0.3 * len(records) * CELL * ov.THUMB  # the thumbnails drawn one unit a pixel


@pytest.mark.parametrize("model", MODELS)
def test_hover_parameters_macs_and_memory_equal_complexity(model):
    view = make_view(model)
    for i, record in enumerate(view.state.inference.trace.records):
        assert strip(view)["params"][i] == record.n_params
        assert strip(view)["macs"][i] == complexity.layer_macs(record)
        assert strip(view)["memory"][i] == complexity.activation_bytes(record)
        assert strip(view)["macs_text"][i] == plots.format_si(complexity.layer_macs(record), "MACs")


def test_conv_parameters_and_macs_match_a_hand_count(view):
    record = view.state.inference.trace["features.4"]
    c_out, c_in, kh, kw = record.params["weight"].shape
    bias = c_out if "bias" in record.params else 0
    _, _, h, w = record.output.shape
    i = strip(view)["name"].index("features.4")
    assert strip(view)["params"][i] == c_out * c_in * kh * kw + bias
    assert strip(view)["macs"][i] == c_out * h * w * c_in * kh * kw  # one MAC per weight per output pixel
    assert strip(view)["memory"][i] == c_out * h * w * 4  # float32
    assert strip(view)["params_text"][i] == f"{c_out * c_in * kh * kw + bias:,}"


def test_conv_thumbnail_is_the_channel_that_varies_most_coloured_by_to_rgba(view):
    out = output(view, "features.0")[0]  # (16, 28, 28)
    c = int(out.reshape(len(out), -1).std(axis=1).argmax())
    i = strip(view)["name"].index("features.0")
    expected = plots.to_rgba(out[c], signed=bool((out < 0).any()), limit=np.abs(out[c]).max())
    np.testing.assert_array_equal(strip_picture(view, "features.0"), expected)
    assert strip(view)["shows"][i] == f"channel {c} of 16, the one that varies most"


def test_norm_activation_and_pool_show_the_channel_of_the_layer_before(view):
    c = int(output(view, "features.4")[0].reshape(32, -1).std(axis=1).argmax())
    for name in ("features.5", "features.6", "features.7"):
        values = output(view, name)[0, c]
        i = strip(view)["name"].index(name)
        signed = bool((output(view, name) < 0).any())
        np.testing.assert_array_equal(strip_picture(view, name), plots.to_rgba(values, signed, np.abs(values).max()))
        assert strip(view)["shows"][i] == f"channel {c} of 32, the same as in the layer before"


def test_this_layer_scope_colours_thumbnails_by_the_layers_largest_value(view):
    view.scope = "this layer"
    out = output(view, "features.0")[0]
    c = int(out.reshape(len(out), -1).std(axis=1).argmax())
    np.testing.assert_array_equal(strip_picture(view, "features.0"), plots.to_rgba(out[c], True, np.abs(out).max()))


def test_vectors_are_drawn_whole_in_rows_of_32(view):
    logits = output(view, "classifier")[0]
    signed = bool((logits < 0).any())
    expected = plots.to_rgba(logits[None, :], signed, np.abs(logits).max())
    np.testing.assert_array_equal(strip_picture(view, "classifier"), expected)
    flat = ov.layer_maps(view.state.inference.trace["flatten"])
    assert flat.maps.shape == (1, 18, 32)  # 576 values
    np.testing.assert_array_equal(flat.maps[0].ravel(), output(view, "flatten")[0])


@pytest.mark.skipif("mnist-vit" not in MODELS, reason="mnist-vit weights are not installed")
def test_vit_attention_thumbnail_is_the_class_tokens_attention_mean_over_heads():
    view = make_view("mnist-vit")
    record = view.state.inference.trace["blocks.0.attn"]
    probs = record.extras["probs"].numpy()[0]  # (heads, 17, 17)
    side = int(np.sqrt(probs.shape[-1] - 1))
    expected = probs[:, 0, 1:].mean(axis=0).reshape(side, side)  # class-token row, patch columns
    np.testing.assert_array_equal(strip_picture(view, "blocks.0.attn"), plots.to_rgba(expected, False, expected.max()))
    view.state.layer = "blocks.0.attn"
    assert len(view._grid_source.data["channel"]) == probs.shape[0]  # one map per head
    big = view._big_source.data["image"][0]
    np.testing.assert_allclose(big, probs[view.state.channel, 0, 1:].reshape(side, side), rtol=1e-6)


@pytest.mark.skipif("mnist-vit" not in MODELS, reason="mnist-vit weights are not installed")
def test_vit_token_outputs_become_feature_maps_on_the_patch_grid():
    view = make_view("mnist-vit")
    tokens = output(view, "blocks.1.mlp.0")[0]  # (17, 128): class token + 4×4 patches
    maps = ov.layer_maps(view.state.inference.trace["blocks.1.mlp.0"]).maps
    assert maps.shape == (128, 4, 4)
    np.testing.assert_array_equal(maps[5], tokens[1:, 5].reshape(4, 4))  # feature 5 of patches row by row
    assert view._band_source.data["label"] == ["blocks.0", "blocks.1", "blocks.2", "blocks.3"]


def test_setting_the_layer_redraws_the_detail_grid_with_its_channels(view):
    for name, channels in (("features.8", 64), ("features.4", 32), ("features.0", 16), ("classifier", 1)):
        view.state.layer = name
        grid = view._grid_source.data
        assert grid["channel"] == list(range(channels))
        readable = names.readable_name(view.state.inference.model.module.get_submodule(name))
        assert view._summary.object.startswith(f"**{readable}** ({name})")
    view.state.layer = "features.8"
    index = view.state.inference.trace.names.index("features.8") + 1
    assert view._highlight_source.data["left"] == [index * CELL + 1]
    c = 7
    values = output(view, "features.8")[0, c]
    signed = bool((output(view, "features.8") < 0).any())
    expected = plots.to_rgba(values, signed, np.abs(values).max())
    np.testing.assert_array_equal(grid_picture(view, c), expected)


def test_setting_the_channel_redraws_the_big_view_and_its_colour_bar(view):
    view.state.layer = "features.4"
    grid_before = view._grid_source.data
    view.state.channel = 5
    values = output(view, "features.4")[0, 5]
    np.testing.assert_array_equal(view._big_source.data["image"][0], values)
    limit = np.abs(values).max()
    assert (view._colour_mapper.low, view._colour_mapper.high) == pytest.approx((-limit, limit))
    assert list(view._colour_mapper.palette) == list(plots.DIVERGING)
    assert view._grid_highlight_source.data["left"] == [5 * GRID_W + 1]
    assert view._grid_source.data is grid_before  # the grid was not redrawn
    view.scope = "this layer"
    assert view._colour_mapper.high == pytest.approx(np.abs(output(view, "features.4")).max())


def test_a_channel_beyond_the_new_layers_count_falls_back_to_zero(view):
    view.state.layer = "features.8"
    view.state.channel = 40
    view.state.layer = "features.0"  # 16 channels
    assert view.state.channel == 0
    np.testing.assert_array_equal(view._big_source.data["image"][0], output(view, "features.0")[0, 0])
    view.state.channel = 3
    view.state.layer = "features.1"  # batch norm keeps the channels: keep following channel 3
    assert view.state.channel == 3


@pytest.mark.parametrize(("name", "lesson"), [("features.0", "convolution"), ("features.1", "normalization"),
                                              ("features.2", "pruning"), ("classifier", "pruning")])
def test_a_click_on_a_layer_selects_it_and_its_lesson(view, name, lesson):
    view.state.lesson = "pruning"
    tap(view._strip_fig, column_of(view, name), 50)
    assert view.state.layer == name
    assert view.state.lesson == lesson  # conv and norm open their lessons; other kinds keep the open one


def test_a_click_on_the_input_or_beside_the_strip_changes_nothing(view):
    view.state.layer = "features.4"
    tap(view._strip_fig, CELL / 2, 50)
    tap(view._strip_fig, 10_000, 50)
    assert (view.state.layer, view.state.lesson) == ("features.4", "convolution")


def test_a_click_on_a_channel_selects_it(view):
    view.state.layer = "features.8"
    tap(view._grid_fig, 3 * GRID_W + 5, 2 * GRID_H + 5)  # row 2, column 3
    assert view.state.channel == 2 * ov.GRID_COLS + 3
    tap(view._grid_fig, 3 * GRID_W + 5, (64 // ov.GRID_COLS + 1) * GRID_H)  # below the last row of 64 channels
    assert view.state.channel == 2 * ov.GRID_COLS + 3


def test_layer_channel_and_scope_changes_create_no_bokeh_models(view):
    ids = model_ids(view)
    view.state.layer = "features.8"
    view.state.channel = 12
    tap(view._strip_fig, column_of(view, "features.5"), 50)
    tap(view._grid_fig, GRID_W + 1, 1)
    view.scope = "this layer"
    assert model_ids(view) == ids


def test_text_fallback_describes_the_selected_layer_and_channel(view):
    view.state.layer = "features.4"
    view.state.channel = 2
    record = view.state.inference.trace["features.4"]
    macs = plots.format_si(complexity.layer_macs(record), "MACs")
    assert view._summary.object == (f"**conv 3×3, 16→32** (features.4) · Conv2d · output 1×32×14×14 · "
                                    f"{record.n_params:,} parameters · {macs} · 25.1 kB of activations")
    values = output(view, "features.4")[0, 2]
    assert view._channel_text.object.startswith(
        f"Channel 2: one value per position of the feature map. 14×14 values, min {plots.format_value(values.min())}, "
        f"max {plots.format_value(values.max())}")
    assert view._big_fig.title.text == "conv 3×3, 16→32 (features.4), channel 2 of 32"


@pytest.mark.skipif("mobilenet_v2" not in MODELS, reason="MobileNetV2 weights are not installed")
def test_a_wide_layer_shows_its_channels_a_page_at_a_time():
    view = make_view("mobilenet_v2")
    view.state.layer = "features.18.0"  # 1280 channels of 7×7
    assert view._grid_source.data["channel"] == list(range(PAGE))
    assert "0–63 of 1,280" in view._grid_note.object
    view.state.channel = 100
    assert view._grid_source.data["channel"] == list(range(64, 128))
    assert view._grid_highlight_source.data["left"] == [(100 - 64) % ov.GRID_COLS * GRID_W + 1]
    np.testing.assert_array_equal(view._big_source.data["image"][0], output(view, "features.18.0")[0, 100])
    view.state.layer = "features.0.0"  # a 112×112 map: thumbnails are block means, the big view keeps 112
    assert view._big_source.data["image"][0].shape == (112, 112)
    maps = output(view, "features.0.0")[0]  # 112 / 56: blocks of 2×2, 56×56 means
    expected = maps[5].reshape(56, 2, 56, 2).mean(axis=(1, 3))
    np.testing.assert_array_equal(grid_picture(view, 5), plots.to_rgba(expected, True, np.abs(maps[5]).max()))


def test_an_unknown_layer_name_is_said_in_words(view):
    view.state.layer = "features.99"
    assert view._summary.object == "No layer named 'features.99' in this model; click one in the strip."
    assert view._grid_source.data["channel"] == []


@pytest.mark.parametrize("seed", range(4))
def test_varies_most_is_the_map_with_the_largest_standard_deviation(seed):
    rng = np.random.default_rng(seed)
    maps = rng.normal(size=(12, 5, 6)).astype(np.float32) * rng.uniform(0.1, 3, size=(12, 1, 1)).astype(np.float32)
    assert ov.varies_most(maps) == int(np.std(maps.reshape(12, -1), axis=1).argmax())
    padded = maps.copy()
    padded[:, 4, 3:] = np.nan  # a wrapped vector's transparent padding
    assert ov.varies_most(padded) == int(np.nanstd(padded.reshape(12, -1), axis=1).argmax())
    channels_last = np.moveaxis(np.ascontiguousarray(np.moveaxis(maps, 0, -1)), -1, 0)  # C innermost, as models run
    assert not channels_last.flags.c_contiguous
    assert ov.varies_most(channels_last) == int(np.std(maps.reshape(12, -1), axis=1).argmax())
    far = 1e4 + maps  # values far from zero, as after a large bias: float32 sums of squares would lose them
    assert ov.varies_most(far) == int(np.std(far.astype(np.float64).reshape(12, -1), axis=1).argmax())
    constant = np.concatenate([np.full((3, 5, 6), 7e3, np.float32), maps[:1] * 1e-3])  # a faint map beats flat ones
    assert ov.varies_most(constant) == 3
    big = rng.normal(size=(8, 120, 130)).astype(np.float32) * np.arange(1, 9, dtype=np.float32)[::-1, None, None]
    assert ov.varies_most(big) == 0  # more positions than one chunk holds


@pytest.mark.parametrize("model", MODELS)
def test_each_layers_colour_limits_and_sign_match_numpy_on_a_random_input(model):
    card = zoo.card(model)
    records = zoo.load(model).trace(torch.randn(1, *card.input_shape)).records
    for record in records:
        lm = ov.layer_maps(record)
        finite = np.where(np.isfinite(lm.maps), lm.maps, np.nan)  # vectors are padded with NaN
        assert lm.signed == bool(np.nanmin(finite) < 0), record.name
        top = np.nanmax(np.abs(finite).reshape(len(finite), -1), axis=1)
        assert lm.limit == (top.max() or 1.0), record.name  # an all-zero layer or map still gets a usable limit
        np.testing.assert_array_equal(lm.limits, np.where(top > 0, top, 1.0))


def logits_of(view: Overview) -> torch.Tensor:
    """The model's logits recomputed by a plain forward call (no hooks), the reference for the labelled cells."""
    inference = view.state.inference
    with torch.no_grad():
        return inference.model.module(inference.x)[0]


@pytest.mark.parametrize("model", [m for m in MODELS if m != "mobilenet_v2"])
def test_logits_cells_are_labelled_with_the_models_classes(model):
    view = make_view(model)
    head = view.state.inference.trace.records[-1].name
    view.state.param.update(layer=head, channel=0)
    labels = view.state.inference.model.labels
    marks = view._class_source.data
    assert marks["text"] == list(labels) == [str(d) for d in range(10)]  # MNIST's classes are its digits
    assert marks["x"] == [i + 0.5 for i in range(10)] and marks["y"] == [0.5] * 10  # the 1×10 map's cells
    logits = logits_of(view)
    top = logits.argsort(descending=True)[:ov.LABELLED_CLASSES].tolist()
    ranked = ", ".join(f"**{labels[i]}** {plots.format_value(float(logits[i]))}" for i in top)
    assert f"Largest first: {ranked}." in view._channel_text.object
    np.testing.assert_allclose(view._big_source.data["image"][0][0], logits.numpy(), rtol=1e-5, atol=1e-5)
    view.state.layer = view.state.inference.trace.records[0].name
    assert view._class_source.data["text"] == []  # only the logits are labelled with classes


@pytest.mark.skipif("mobilenet_v2" not in MODELS, reason="MobileNetV2 weights are not installed")
def test_imagenet_logits_mark_the_top_classes_by_rank_and_name_them():
    view = make_view("mobilenet_v2")
    view.state.layer = "classifier.1"
    logits = logits_of(view)
    top = logits.topk(ov.LABELLED_CLASSES).indices.tolist()
    marks = view._class_source.data
    assert marks["text"] == [str(rank) for rank in range(1, ov.LABELLED_CLASSES + 1)]
    assert marks["x"] == [i % ov.WRAP + 0.5 for i in top] and marks["y"] == [i // ov.WRAP + 0.5 for i in top]
    labels = view.state.inference.model.labels
    for i in top:
        assert f"**{labels[i]}** {plots.format_value(float(logits[i]))}" in view._channel_text.object


def test_big_view_colour_bar_spans_the_channel_and_the_text_says_its_ends(view):
    view.state.layer = "features.4"
    view.state.channel = 9
    values = output(view, "features.4")[0, 9]
    limit = float(np.abs(values).max())
    bar = view._colour_bar
    assert bar in view._big_fig.right
    assert (bar.color_mapper.low, bar.color_mapper.high) == pytest.approx((-limit, limit))
    assert f"colours span {plots.format_value(-limit)} to {plots.format_value(limit)}" in view._channel_text.object
    view.state.layer = "features.6"  # a ReLU: no values below zero, a scale from 0 to the largest
    values = output(view, "features.6")[0, 9]
    assert (bar.color_mapper.low, bar.color_mapper.high) == pytest.approx((0.0, float(values.max())))


def test_strip_and_summary_name_layers_readably_and_explain_zero_counts(view):
    module, trace = view.state.inference.model.module, view.state.inference.trace
    assert strip(view)["label"] == [names.labelled_name(module, r.name) for r in trace.records]
    i = trace.names.index("features.1")
    assert strip(view)["macs"][i] == 0
    assert "BatchNorm is a fixed scale and shift per channel, which can be folded into the convolution before it" \
        in strip(view)["note"][i]
    view.state.layer = "features.1"
    assert view._summary.object.startswith("**batch norm, 16 channels** (features.1) · BatchNorm2d")
    assert "can be folded into the convolution before it" in view._summary.object
    assert strip(view)["note"][trace.names.index("features.0")] == "–"  # a convolution's counts need no note


@pytest.mark.skipif("mnist-vit" not in MODELS, reason="mnist-vit weights are not installed")
def test_attention_says_where_its_parameters_are_counted():
    view = make_view("mnist-vit")
    weights = view.state.inference.model.module.state_dict()
    inside = sum(w.numel() for k, w in weights.items() if k.startswith("blocks.0.attn."))  # qkv and proj
    view.state.layer = "blocks.0.attn"
    record = view.state.inference.trace["blocks.0.attn"]
    assert record.n_params == 0 and inside > 0
    assert (f"0 parameters of its own: its {inside:,} parameters are in blocks.0.attn.qkv, blocks.0.attn.proj, "
            "listed as layers of their own") in view._summary.object
    tokens, width = record.output.shape[1:]
    assert complexity.layer_macs(record) == 2 * tokens * tokens * width  # Q·Kᵀ and weights·V only, as the note says
    assert "the projections are counted in their own layers" in view._summary.object
