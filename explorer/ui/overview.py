"""The overview: every layer of the network in one strip, and inside the selected layer, every channel.

Like CNN Explainer's overview. The strip shows one column per Trace record, in the order the layers
ran, after the input picture; records of one block (same first two name parts, "blocks.0",
"features.3") sit on a shared band. Each column holds a thumbnail of what the layer produced for the
current input (see `thumbnail`), its kind and output shape; hovering gives the parameters, MACs and
activation memory. Clicking a layer selects it (`state.layer`) and opens the lesson that explains
it. Below, the layer detail shows all its channels (64 per page) and the selected channel large,
with a colour bar and axes.

Performance (a new Bokeh model costs far more to send and lay out than new data in one already on the
page; docs/performance.md): the three Bokeh figures and their ColumnDataSources are built
once; the strip's thumbnails and the grid's are a few pictures, one per thumbnail size, each at the
thumbnails' own resolution (`plots.pictures`: a few buffers to send and canvases to paint, not 143).
A change of input or model replaces the sources' data (of the strip's per-layer columns, only on a
model change), a layer change only the detail grid, the big view and the highlights, a channel change
only the big view and the channel highlight, each inside `one_update()`. No Bokeh model is created
after __init__.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import panel as pn
import param
import torch
from bokeh.events import DoubleTap, Tap
from bokeh.models import ColumnDataSource, CustomJSHover, HoverTool, LinearColorMapper, Range1d
from bokeh.plotting import figure

from explorer.core import complexity, names
from explorer.core.trace import LayerRecord
from explorer.lessons import plots
from explorer.session.in_step import keep_in_step
from explorer.session.state import ExplorerState, Inference, SessionView, one_update
from explorer.session.tags import tag_results
from explorer.ui.saving import make_savable

LESSON_FOR_KIND = {"conv": "convolution", "norm": "normalization", "attention": "attention"}
CHANNEL_KEEPING = ("norm", "activation", "pool")  # kinds whose output channel c comes from input channel c

WRAP = 32                           # a long vector is drawn in rows of this many values
CELL, THUMB, BAND = 68, 56, 18      # strip: column width, thumbnail side, block band height (px)
STRIP_HEIGHT = BAND + 4 + THUMB + 4 + 32  # under the thumbnail: the kind (12 px) and the shape (11 px)
PAGE, GRID_COLS = 64, 8             # detail: channels per page, per row
# Thumbnails 56 units, large enough to read on a projector: MNIST's 28×28 maps and MobileNetV2's block means
# are drawn two units a pixel, 14×14 maps 4, 7×7 maps 8, the ViT's 4×4 patch grids 14. The cells (64 × 80 =
# 32×2 × 40×2 = 8×8 × 10×8) are whole numbers of those pixels, so the grid's picture is sent at about the maps'
# resolution (plots.pictures); the ViT's 14-unit pixels need half pixels.
GRID_W, GRID_H, GRID_THUMB = 64, 80, 56
LABELLED_CLASSES = 5                # of more classes than a row holds (ImageNet's 1000), the top ones are marked
BIG, BIG_MAX_SIDE = 280, 128        # big view: frame width (px), largest map side sent
BIG_MIN_HEIGHT = 100                # a flat map (a row of logits) is drawn this tall: room for its colour bar's labels


# --- What to draw for a record: display reductions of its output, no colours yet ---------------------------


@dataclass(frozen=True)
class LayerMaps:
    """A layer's output as a stack of 2-D maps, the unit the detail grid shows one of per thumbnail."""

    maps: np.ndarray         # (n, h, w) float32: one map per channel, attention head or token feature
    noun: str                # what one map is: "channel", "head", "feature" or "vector"
    axes: tuple[str, str]    # x and y label of a map, with units
    quantity: str            # what a value is, for the colour bar
    about: str               # what one map shows, in words

    @functools.cached_property
    def extent(self) -> tuple[float, float]:
        """Smallest and largest finite value of the whole layer (NaN: padding, left out)."""
        low, high = plots.min_max_each(self.maps[None])  # two passes over the layer, not 2n short ones
        return float(low[0]), float(high[0])

    @functools.cached_property
    def signed(self) -> bool:
        """Holds values below zero: diverging colours."""
        return plots.any_below_zero(self.maps)

    @property
    def limit(self) -> float:
        """The layer's colour limit under the "this layer" scope: its largest finite |value|."""
        return plots.max_abs(np.array(self.extent))

    @functools.cached_property
    def extremes(self) -> tuple[np.ndarray, np.ndarray]:
        """Smallest and largest finite value of each map."""
        return plots.min_max_each(self.maps)

    @functools.cached_property
    def limits(self) -> np.ndarray:
        """Each map's colour limit under the "this channel" scope: its largest finite |value|."""
        return plots.max_abs_each(self.maps, self.extremes)


@dataclass(frozen=True)
class Thumbnail:
    """The one picture the strip shows for a layer."""

    values: np.ndarray       # (h, w)
    signed: bool
    limit: float             # its largest |value|: the colour limit of the "this channel" scope
    shows: str               # what the picture is, in words
    channel: int | None      # which map of the layer it is, if it is one
    layer: LayerMaps | None = None  # the layer it is one map of; None: the picture is all the scope covers

    @property
    def layer_limit(self) -> float:
        """The largest |value| the "this layer" scope covers: looked at only in that scope (a pass over the layer)."""
        return self.limit if self.layer is None else self.layer.limit


def patch_grid(tokens: int) -> tuple[int, int] | None:
    """(first patch token, grid side) when the tokens are a square patch grid, after one class token or not."""
    for first in (1, 0):
        side = math.isqrt(tokens - first)
        if tokens - first > 1 and side * side == tokens - first:
            return first, side
    return None


def layer_maps(record: LayerRecord) -> LayerMaps:
    """Split a record's output (batch item 0) into the maps a student can look at one by one.

    (1, C, H, W) -> C channel maps; attention -> one class-token attention map per head over the patch
    grid; (1, T, D) tokens on a square patch grid -> D feature maps over the patches (class token
    left out); anything else -> the flattened output as one vector, wrapped in rows of WRAP.
    """
    out = record.output.detach().float()[0] if record.output.dim() > 1 else record.output.detach().float()
    probs = record.extras.get("probs")
    if record.kind == "attention" and probs is not None and probs.dim() == 4:
        grid = patch_grid(probs.shape[-1])
        p = probs[0].float()  # (heads, T, T): query rows, key columns
        if grid is not None:
            first, side = grid
            maps = p[:, 0, first:].reshape(-1, side, side)  # row 0: what the class (first) token attends to
            return LayerMaps(maps.numpy(), "head", ("patch column", "patch row"), "attention weight",
                             "how much the class token attends to each patch (its row of the attention "
                             "matrix; what it keeps for itself is not drawn)")
        return LayerMaps(p.numpy(), "head", ("key token", "query token"), "attention weight",
                         "the attention matrix: each query token's row sums to 1")
    if out.dim() == 3 and out.shape[1] * out.shape[2] > 1:  # (C, H, W)
        return LayerMaps(out.numpy(), "channel", ("x (feature-map pixel)", "y (feature-map pixel)"), "activation",
                     "one value per position of the feature map")
    if out.dim() == 2 and record.kind == "conv":  # (C, L) of a 1-D convolution
        return LayerMaps(out[:, None, :].numpy(), "channel", ("position", ""), "activation", "one value per position")
    if out.dim() == 2 and (grid := patch_grid(out.shape[0])) is not None:  # (T, D) tokens
        first, side = grid
        maps = out[first:].T.reshape(-1, side, side)  # (D, side, side): feature d of every patch token
        return LayerMaps(maps.numpy(), "feature", ("patch column", "patch row"), "feature value",
                     "this feature in every patch token, on the patch grid (the class token is not drawn)")
    flat = out.flatten().numpy()
    if flat.size <= WRAP:
        return LayerMaps(flat[None, None, :], "vector", ("index", ""), "value", "all values, left to right")
    rows = -(-flat.size // WRAP)
    wrapped = np.full(rows * WRAP, np.nan, dtype=np.float32)  # NaN: transparent padding after the last value
    wrapped[:flat.size] = flat
    return LayerMaps(wrapped.reshape(1, rows, WRAP), "vector", (f"index mod {WRAP}", f"index ÷ {WRAP}"), "value",
                 f"all values, read left to right and top to bottom, {WRAP} to a row")


def varies_most(maps: np.ndarray) -> int:
    """The map whose values vary most (largest standard deviation): the most structured picture.

    One pass over the maps, a chunk of positions at a time (its temporaries stay in the CPU's cache):
    per map, the sum of its values and of their squares, after subtracting its first value, so that a
    map whose values sit far from zero keeps its small variance, and a constant map has none. The sums
    over a chunk's positions are a product with a row of ones: BLAS, 20-45 % faster than `sum(axis=0)`.
    """
    n = len(maps)
    by_position = maps.reshape(n, -1).T  # (positions, maps): no copy when the maps are channels-last, as models run
    first = by_position[0]
    sums, squares = np.zeros(n), np.zeros(n)
    step = max(1, plots.CHUNK_VALUES // n)
    ones = np.ones(min(step, len(by_position)), dtype=by_position.dtype)
    for start in range(0, len(by_position), step):
        chunk = by_position[start:start + step] - first
        sums += ones[:len(chunk)] @ chunk
        chunk *= chunk
        squares += ones[:len(chunk)] @ chunk
    spread = squares - sums * sums / len(by_position)  # positions × variance: the same order as std
    if np.isnan(spread).any():  # NaN padding of a wrapped vector: the finite values only
        return int(np.nanstd(maps.reshape(n, -1), axis=1).argmax())
    return int(spread.argmax())


def thumbnail(lm: LayerMaps, channel: int | None = None) -> Thumbnail:
    """The strip's picture of a layer.

    Channels and token features: `channel` (the one shown for the layer before, so that one feature
    map can be followed through norm, activation and pooling), else the one that varies most.
    Attention: the class token's attention averaged over heads. Vectors: all values, row by row.
    """
    n = len(lm.maps)
    if lm.noun in ("channel", "feature"):
        followed = channel is not None and 0 <= channel < n
        c = channel if followed else varies_most(lm.maps)
        why = "the same as in the layer before" if followed else "the one that varies most"
        values = lm.maps[c]
        return Thumbnail(values, lm.signed, plots.max_abs(values), f"{lm.noun} {c} of {n}, {why}", c, lm)
    if lm.noun == "head":
        mean = lm.maps.mean(axis=0)
        limit = plots.max_abs(mean)
        return Thumbnail(mean, False, limit, f"where the class token looks, mean of {n} heads", None)
    values = lm.maps[0]
    return Thumbnail(values, lm.signed, lm.limit, f"all {np.isfinite(values).sum():,} values, "
                     "row by row", None)


def strip_thumbnails(records: tuple[LayerRecord, ...]) -> list[Thumbnail]:
    """One thumbnail per record; layers that keep channels (norm, activation, pool) show the channel shown before."""
    thumbs: list[Thumbnail] = []
    previous: tuple[str, int, int | None] = ("", 0, None)  # noun, count, channel of the last thumbnail
    for record in records:
        lm = layer_maps(record)
        keeps = record.kind in CHANNEL_KEEPING and previous[:2] == (lm.noun, len(lm.maps))
        thumb = thumbnail(lm, previous[2] if keeps else None)
        thumbs.append(thumb)
        previous = (lm.noun, len(lm.maps), thumb.channel)
    return thumbs


def block_of(name: str) -> str | None:
    """The block a record belongs to: its first two name parts when it has more ("blocks.0.attn" -> "blocks.0")."""
    parts = name.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 else None


def lesson_for(record: LayerRecord, current: str) -> str:
    """The lesson that explains this kind of layer; other kinds keep the open lesson."""
    return LESSON_FOR_KIND.get(record.kind, current)


def describe(record: LayerRecord, inference: Inference) -> str:
    """The selected layer in one line: '**conv 3×3, 16→32** (features.4) · Conv2d · output 1×32×14×14 · 4,608
    parameters · ...', and why a count is 0 where it is (complexity.cost_note)."""
    note = complexity.cost_note(record, inference.trace)
    return (f"**{names.readable_name(module_of(record, inference))}** ({record.name}) · {record.module_type} · "
            f"output {plots.format_shape(record.output_shape)} · {record.n_params:,} parameters · "
            f"{plots.format_si(complexity.layer_macs(record), 'MACs')} · "
            f"{plots.format_bytes(complexity.activation_bytes(record))} of activations{f'. {note}.' if note else ''}")


def module_of(record: LayerRecord, inference: Inference) -> torch.nn.Module:
    """The module that made a record ("blocks.0:1", a repeated call, was made by "blocks.0")."""
    return inference.model.module.get_submodule(record.name.split(":")[0])


def class_marks(record: LayerRecord, inference: Inference) -> list[tuple[int, str]]:
    """(value index, text) of the cells to label on a layer's map: for the model's logits, each class by name when
    all fit in one row of the map (at most WRAP), else the top LABELLED_CLASSES by rank ("1" the most likely);
    no marks for any other layer."""
    labels = inference.model.labels
    if record.output.shape != inference.trace.logits.shape or not torch.equal(record.output, inference.trace.logits):
        return []
    if len(labels) <= WRAP:
        return list(enumerate(labels))
    top = inference.probs.topk(min(LABELLED_CLASSES, len(labels))).indices.tolist()  # softmax keeps the order
    return [(index, str(rank)) for rank, index in enumerate(top, start=1)]


def _fit(h: int, w: int, side: float, least: float = 10.0) -> tuple[float, float]:
    """(dw, dh) of a picture of h×w cells drawn with its longer side `side` px, never thinner than `least`."""
    scale = side / max(h, w)
    return max(w * scale, least), max(h * scale, least)


def _classes_text(marks: list[tuple[int, str]], inference: Inference) -> str:
    """What the labelled cells of the logits map are, with the top classes and their logits."""
    labels, logits = inference.model.labels, inference.trace.logits[0]
    top = inference.probs.topk(min(LABELLED_CLASSES, len(labels))).indices.tolist()
    ranked = ", ".join(f"**{labels[i]}** {plots.format_value(float(logits[i]))}" for i in top)
    if len(marks) == len(labels):
        return (f"These are the model's **{len(labels)} logits**, one per class, each cell labelled with its class "
                f"(the largest wins). Largest first: {ranked}.\n\n")
    return (f"These are the model's **{len(labels):,} logits**, one per class, row by row; the numbers 1–{len(top)} "
            f"mark the largest: {ranked} (in that order).\n\n")


# --- The view ----------------------------------------------------------------------------------------------


class Overview(SessionView):
    """The whole network in one strip; click a layer to see its channels, click a channel to enlarge it."""

    scope = param.Selector(default=plots.SCOPES[0], objects=list(plots.SCOPES),
                           doc="The colour limit is the largest |value| of this layer or of this channel.")

    def __init__(self, **params):
        if params.get("state") is None:
            params["state"] = ExplorerState()
        params["state"].ensure()  # before the watchers exist: the figures below are not built yet
        super().__init__(**params)
        self._shown: dict[str, object] = {}  # part -> the key it was last drawn for (skips repeated work)
        self._maps_cache: tuple[object, LayerMaps] | None = None
        self._grid_model, self._grid_rows = None, 0  # the channel grid's height, see _show_layer
        self._build_strip()
        self._build_grid()
        self._build_big()
        self._intro = pn.pane.Markdown(self._intro_text(), sizing_mode="stretch_width", margin=(0, 10),
                                       css_classes=["explanation"])
        self._summary = pn.pane.Markdown("", sizing_mode="stretch_width", margin=(0, 10), css_classes=["layer-summary"])
        self._grid_note = pn.pane.Markdown("", margin=(0, 10))
        self._channel_text = pn.pane.Markdown("", width=BIG + 120, margin=(0, 10))
        # One label for channels, heads and features: a new label made the page lay out again on each such
        # layer click; the grid's and the big view's titles say which of them the number is.
        self._channel_input = keep_in_step(pn.widgets.IntInput.from_param(
            self.state.param.channel, label="Number", width=110,
            description="Which map of the layer to show large: a channel, an attention head or a token feature"))
        self._scope_input = pn.widgets.RadioButtonGroup.from_param(self.param.scope)
        # A sideways-scrolling box as wide as its parent. Panel would give a stretching Row the fixed
        # width of its content as min_width (the whole strip, up to ~10,000 px, which widens the page),
        # so the Row is nominally of fixed width (a width policy: Bokeh's "fixed" sizing mode wants a height too,
        # warning W-1005) and a stylesheet stretches it.
        self._strip_scroller = pn.Row(pn.pane.Bokeh(self._strip_fig), scroll="x-auto", width=320,
                                      width_policy="fixed", stylesheets=[":host { width: 100% !important; }"])
        self._update_all()
        self._layout = pn.Column(
            self._intro,
            self._strip_scroller,
            self._summary,
            pn.Row(
                pn.Column(self._grid_note, pn.pane.Bokeh(self._grid_fig)),
                pn.Column(pn.Row(self._channel_input, pn.Column(pn.pane.Markdown("Colour limit: largest |value| of",
                                                                               margin=(0, 5)), self._scope_input)),
                          pn.pane.Bokeh(self._big_fig), self._channel_text),
            ),
            sizing_mode="stretch_width",
        )
        make_savable(self._layout, "overview")

    def __panel__(self) -> pn.viewable.Viewable:
        return self._layout

    # --- selection (what a click does) ---

    def select_layer(self, name: str) -> None:
        """Select a layer by record name and open the lesson that explains its kind."""
        record = self.state.inference.trace[name]
        # lesson first: the lesson tabs hide the old lesson before the lessons' watchers see the new layer
        self.state.param.update(lesson=lesson_for(record, self.state.lesson), layer=name)

    def select_channel(self, channel: int) -> None:
        self.state.channel = channel

    def _strip_tapped(self, event: Tap | DoubleTap) -> None:
        if event.x is None:
            return
        index = math.floor(event.x / CELL) - 1  # column 0 is the input picture
        records = self.state.inference.trace.records
        if 0 <= index < len(records):
            self.select_layer(records[index].name)

    def _grid_tapped(self, event: Tap | DoubleTap) -> None:
        if event.x is None or event.y is None:
            return
        col, row = math.floor(event.x / GRID_W), math.floor(event.y / GRID_H)
        index = row * GRID_COLS + col
        if 0 <= col < GRID_COLS and 0 <= index < len(self._grid_source.data["channel"]):
            self.select_channel(int(self._grid_source.data["channel"][index]))

    # --- updates: data only, inside hold() ---

    @param.depends("state.inference", "scope", watch=True)
    def _update_all(self) -> None:
        with one_update():
            self._show_strip()
            self._show_layer()
            self._show_channel()

    @param.depends("state.layer", watch=True)
    def _update_layer(self) -> None:
        with one_update():
            self._show_layer()
            self._show_channel()

    @param.depends("state.channel", watch=True)
    def _update_channel(self) -> None:
        with one_update():
            self._show_layer()  # only redraws when the channel moved to another page of the grid
            self._show_channel()

    def _changed(self, part: str, key: tuple) -> bool:
        if self._shown.get(part) == key:
            return False
        self._shown[part] = key
        return True

    def _record(self) -> LayerRecord | None:
        t = self.state.inference.trace
        return t[self.state.layer] if self.state.layer in t.names else None

    def _layer_maps(self) -> LayerMaps | None:
        record = self._record()
        if record is None:
            return None
        key = (self.state.inference, record.name)
        if self._maps_cache is None or self._maps_cache[0] != key:
            self._maps_cache = (key, layer_maps(record))
        return self._maps_cache[1]

    def _show_strip(self) -> None:
        inference: Inference = self.state.inference
        records = inference.trace.records
        if self._changed("strip layers", (inference.model, tuple(r.output_shape for r in records))):
            self._show_strip_layers(inference)
        if not self._changed("strip", (inference, self.scope)):
            return
        tiles, shows = [], []
        for i, thumb in enumerate(strip_thumbnails(records), start=1):
            values = plots.downsample(thumb.values, THUMB)
            limit = thumb.layer_limit if self.scope == "this layer" else thumb.limit
            dw, dh = _fit(*values.shape, THUMB)
            tiles.append((plots.to_rgba(values, thumb.signed, limit), i * CELL + (CELL - dw) / 2,
                          BAND + 4 + (THUMB - dh) / 2, dw, dh))
            shows.append(thumb.shows)
        self._strip_pictures.data = plots.pictures(tiles)
        self._strip_source.data["shows"] = shows  # the rest of the columns only change with the model

        picture = plots.downsample(inference.view.astype(np.float64), THUMB)
        dw, dh = _fit(*picture.shape[:2], THUMB)
        self._input_source.data = dict(
            image=[plots.picture_to_rgba(np.rint(picture).astype(np.uint8))], x=[(CELL - dw) / 2],
            y=[BAND + 4 + (THUMB - dh) / 2], dw=[dw], dh=[dh], cx=[CELL / 2], kind_label=["input"],
            shape_label=[plots.format_shape(tuple(inference.x.shape[1:]))], description=[inference.description])
        tag_results(inference.model.name, self._strip_fig, self._strip_source, self._band_source, self._strip_pictures,
                    self._input_source)

    def _show_strip_layers(self, inference: Inference) -> None:
        """What the strip shows of each layer that does not depend on the input: names, shapes, costs, blocks."""
        records = inference.trace.records
        cols: dict[str, list] = {k: [] for k in self._strip_source.data}
        for i, record in enumerate(records, start=1):
            left = i * CELL
            row = dict(
                cx=left + CELL / 2, left=left, right=left + CELL, name=record.name,
                label=names.labelled_name(inference.model.module, record.name),
                note=complexity.cost_note(record, inference.trace) or "–", kind=record.kind,
                module_type=record.module_type,
                kind_label=record.kind if record.kind != "other" else record.module_type.lower(),
                shape=plots.format_shape(record.output_shape), shape_label=plots.format_shape(record.output_shape[1:]),
                params=record.n_params, params_text=f"{record.n_params:,}",
                macs=complexity.layer_macs(record), macs_text=plots.format_si(complexity.layer_macs(record), "MACs"),
                memory=complexity.activation_bytes(record),
                memory_text=plots.format_bytes(complexity.activation_bytes(record)), shows="")
            for k, v in row.items():
                cols[k].append(v)
        self._strip_source.data = cols

        bands: dict[str, list] = {k: [] for k in self._band_source.data}
        blocks = [block_of(r.name) for r in records]
        start = 0
        for i in range(1, len(blocks) + 1):
            if i == len(blocks) or blocks[i] != blocks[start]:
                if blocks[start] is not None:
                    bands["left"].append((start + 1) * CELL + 1)
                    bands["right"].append((i + 1) * CELL - 1)
                    bands["label"].append(blocks[start])
                    bands["colour"].append(("#e3e8f0", "#cfd8e6")[len(bands["label"]) % 2])
                start = i
        self._band_source.data = bands

        width = (len(records) + 1) * CELL
        self._strip_fig.width = width
        self._strip_fig.x_range.end = width
        self._strip_fig.title.text = (f"{inference.model.card.name}: {len(records)} layers, in the order they run "
                                      "(click one to look inside)")

    def _show_layer(self) -> None:
        record, lm = self._record(), self._layer_maps()
        page = self.state.channel // PAGE
        if record is not None and lm is not None and self.state.channel >= len(lm.maps):
            self.state.channel = 0  # this layer has fewer channels; its watcher redraws the rest
            return
        if self._changed("highlight", (self.state.inference, self.state.layer)):
            self._show_strip_highlight(record)
        if not self._changed("layer", (self.state.inference, self.state.layer, self.scope, page)):
            return
        self._summary.object = (describe(record, self.state.inference) if record is not None
                                else f"No layer named {self.state.layer!r} in this model; click one in the strip.")
        tag_results(self.state.inference.model.name, self._summary, self._grid_fig, self._grid_source,
                    self._grid_pictures, self._grid_note)
        cols: dict[str, list] = {k: [] for k in self._grid_source.data}
        if lm is None:
            self._grid_source.data = cols
            self._grid_pictures.data = dict(image=[], x=[], y=[], dw=[], dh=[])
            self._grid_note.object = ""
            return
        n = len(lm.maps)
        shown = range(page * PAGE, min(n, (page + 1) * PAGE))
        maps = lm.maps[shown.start:shown.stop]
        small = np.moveaxis(plots.downsample(np.moveaxis(maps, 0, -1), GRID_THUMB), -1, 0)  # all at once: block means
        limits = np.full(len(maps), lm.limit) if self.scope == "this layer" else lm.limits[shown.start:shown.stop]
        low, high = (extreme[shown.start:shown.stop] for extreme in lm.extremes)
        mean = plots.mean_each(maps)
        dw, dh = _fit(*small.shape[1:], GRID_THUMB, least=6)
        needed = max(1, -(-len(shown) // GRID_COLS))
        tiles = []
        for i, c in enumerate(shown):
            col, row = i % GRID_COLS, i // GRID_COLS
            left, top = col * GRID_W, row * GRID_H
            tiles.append((plots.to_rgba(small[i], lm.signed, limits[i]), left + (GRID_W - dw) / 2,
                          top + 2 + (GRID_THUMB - dh) / 2, dw, dh))
            entry = dict(channel=c, label=str(c), cx=left + GRID_W / 2, label_y=top + GRID_THUMB + 5, left=left,
                         right=left + GRID_W, top=top, bottom=top + GRID_H, min_text=plots.format_value(low[i]),
                         max_text=plots.format_value(high[i]), mean_text=plots.format_value(mean[i]))
            for k, v in entry.items():
                cols[k].append(v)
        self._grid_source.data = cols
        self._grid_pictures.data = plots.pictures(tiles)
        # Rows only grow while the model stays: a new figure height makes the browser lay out the whole
        # page again, which measured 100-250 ms per layer click (benchmarks/ui_latency.py).
        model = self.state.inference.model
        rows = max(needed, self._grid_rows) if model is self._grid_model else needed
        if (model, rows) != (self._grid_model, self._grid_rows):
            self._grid_model, self._grid_rows = model, rows
            self._grid_fig.height = rows * GRID_H + 30
            self._grid_fig.y_range.start = rows * GRID_H
        noun = f"{lm.noun}s"
        name = names.labelled_name(self.state.inference.model.module, record.name)
        self._grid_fig.title.text = f"{name}: {n:,} {noun} (click one)" if n > 1 else name
        self._grid_note.object = (f"**{name}** makes one {lm.noun}." if n == 1 else
                                  f"All {n:,} {noun} of **{name}**." if n <= PAGE else
                                  f"{noun.capitalize()} {shown.start}–{shown.stop - 1} of {n:,}; type a number "
                                  f"in *Number* to see the others.")
        self._channel_input.end = n - 1

    def _show_strip_highlight(self, record: LayerRecord | None) -> None:
        tag_results(self.state.inference.model.name, self._highlight_source)
        if record is None:
            self._highlight_source.data = dict(left=[], right=[])
            return
        index = self.state.inference.trace.names.index(record.name) + 1
        self._highlight_source.data = dict(left=[index * CELL + 1], right=[(index + 1) * CELL - 1])

    def _show_channel(self) -> None:
        lm, channel = self._layer_maps(), self.state.channel
        if not self._changed("channel", (self.state.inference, self.state.layer, channel, self.scope)):
            return
        tag_results(self.state.inference.model.name, self._big_fig, self._big_source, self._grid_highlight_source,
                    self._channel_text)
        if lm is None or channel >= len(lm.maps):
            self._big_source.data = dict(image=[], dw=[], dh=[])
            plots.set_data(self._class_source, dict(x=[], y=[], text=[]))  # already empty: nothing sent
            self._grid_highlight_source.data = dict(left=[], right=[], top=[], bottom=[])
            self._channel_text.object = ""
            return
        values = lm.maps[channel]
        limit = lm.limit if self.scope == "this layer" else float(lm.limits[channel])
        big = plots.downsample(values, BIG_MAX_SIDE)
        h, w = big.shape
        self._big_source.data = dict(image=[big.astype(np.float32)], dw=[w], dh=[h])
        self._big_fig.x_range.end = w
        self._big_fig.y_range.start = h
        self._big_fig.frame_height = int(np.clip(BIG * h / w, BIG_MIN_HEIGHT, BIG))
        self._big_fig.xaxis.axis_label, self._big_fig.yaxis.axis_label = lm.axes
        self._colour_bar.title = lm.quantity
        plots.set_colour_scale(self._colour_bar, lm.signed, limit)
        record = self._record()
        name = names.labelled_name(self.state.inference.model.module, record.name)
        self._big_fig.title.text = (f"{name}, {lm.noun} {channel} of {len(lm.maps):,}" if len(lm.maps) > 1
                                    else name)
        shrunk = "" if big.shape == values.shape else f" (drawn at {w}×{h}, block means)"
        marks = class_marks(record, self.state.inference) if big.shape == values.shape else []
        row_length = values.shape[1]
        self._class_source.data = dict(x=[i % row_length + 0.5 for i, _ in marks],
                                       y=[i // row_length + 0.5 for i, _ in marks], text=[t for _, t in marks])
        self._channel_text.object = (_classes_text(marks, self.state.inference) if marks else "") + (
            f"{lm.noun.capitalize()} {channel}: {lm.about}. {values.shape[0]}×{values.shape[1]} values{shrunk}, "
            f"min {plots.format_value(np.nanmin(values))}, max {plots.format_value(np.nanmax(values))}, "
            f"mean {plots.format_value(np.nanmean(values))}; colours span "
            f"{plots.format_value(self._colour_mapper.low)} to {plots.format_value(self._colour_mapper.high)}.")
        i = channel - (channel // PAGE) * PAGE
        left, top = (i % GRID_COLS) * GRID_W, (i // GRID_COLS) * GRID_H
        self._grid_highlight_source.data = dict(left=[left + 1], right=[left + GRID_W - 1], top=[top + 1],
                                                bottom=[top + GRID_H - 1])

    # --- figures, built once ---

    def _build_strip(self) -> None:
        # No colour bar on the strip's 22-36 px thumbnails nor the channel grid's 56 px ones (_build_grid): a map each,
        # too small for a bar to be read; the channel view (_build_big) shows the chosen map with its bar.
        self._strip_pictures = _source("image", "x", "y", "dw", "dh", name="overview-strip-pictures")
        self._strip_source = _source("cx", "left", "right", "name", "label", "note", "kind",
                                     "module_type", "kind_label", "shape", "shape_label", "params", "params_text",
                                     "macs", "macs_text", "memory", "memory_text", "shows", name="overview-strip")
        self._input_source = _source("image", "x", "y", "dw", "dh", "cx", "kind_label", "shape_label", "description")
        self._band_source = _source("left", "right", "label", "colour")
        self._highlight_source = _source("left", "right")
        fig = figure(width=CELL * 2, height=STRIP_HEIGHT + 30, x_range=Range1d(0, CELL * 2),
                     y_range=plots.pixel_range(STRIP_HEIGHT), tools="", toolbar_location=None, min_border=0,
                     outline_line_color=None, title="layers",
                     styles={"flex-shrink": "0", "max-width": "none"})  # keep its full width inside the scroller
        fig.axis.visible = False
        fig.grid.visible = False
        fig.title.text_font_size = "13px"
        fig.quad(left="left", right="right", top=0, bottom=BAND, fill_color="colour", line_color=None,
                 source=self._band_source)
        fig.text(x="left", y=BAND / 2, text="label", x_offset=4, text_baseline="middle", text_font_size="12px",
                 text_color="#334155", source=self._band_source)
        _selection_frame(fig, self._highlight_source, top=BAND + 1, bottom=STRIP_HEIGHT - 1)
        fig.image_rgba(image="image", x="x", y="y", dw="dw", dh="dh", source=self._input_source)
        fig.image_rgba(image="image", x="x", y="y", dw="dw", dh="dh", source=self._strip_pictures)
        for source in (self._input_source, self._strip_source):
            fig.text(x="cx", y=BAND + THUMB + 8, text="kind_label", text_align="center", text_baseline="top",
                     text_font_size="12px", text_color="#1e293b", source=source)
            fig.text(x="cx", y=BAND + THUMB + 23, text="shape_label", text_align="center", text_baseline="top",
                     text_font_size="12px", text_color="#475569", source=source)
        hit = fig.quad(left="left", right="right", top=BAND, bottom=STRIP_HEIGHT, fill_alpha=0, line_alpha=0,
                       source=self._strip_source)
        fig.add_tools(HoverTool(renderers=[hit], tooltips=[
            ("layer", "@label"), ("type", "@module_type"), ("output", "@shape"), ("parameters", "@params_text"),
            ("MACs", "@macs_text"), ("activation memory", "@memory_text"), ("picture", "@shows"),
            ("counts", "@note")]))
        inp = fig.quad(left=0, right=CELL, top=BAND, bottom=STRIP_HEIGHT, fill_alpha=0, line_alpha=0,
                       source=self._input_source)
        fig.add_tools(HoverTool(renderers=[inp], tooltips=[("input", "@description"), ("model input", "@shape_label")]))
        # Bokeh reports a second tap within 300 ms on the same canvas as a DoubleTap instead of a Tap:
        # a student clicking two layers quickly means two selections.
        fig.on_event(Tap, self._strip_tapped)
        fig.on_event(DoubleTap, self._strip_tapped)
        self._strip_fig = fig

    def _build_grid(self) -> None:
        self._grid_pictures = _source("image", "x", "y", "dw", "dh", name="overview-grid-pictures")
        self._grid_source = _source("channel", "label", "cx", "label_y", "left", "right", "top", "bottom", "min_text",
                                    "max_text", "mean_text", name="overview-grid")
        self._grid_highlight_source = _source("left", "right", "top", "bottom")
        fig = figure(width=GRID_COLS * GRID_W, height=GRID_H + 30, x_range=Range1d(0, GRID_COLS * GRID_W),
                     y_range=plots.pixel_range(GRID_H), tools="", toolbar_location=None, min_border=0,
                     outline_line_color=None, title="channels")
        fig.axis.visible = False
        fig.grid.visible = False
        fig.title.text_font_size = "13px"
        _selection_frame(fig, self._grid_highlight_source, top="top", bottom="bottom")
        fig.image_rgba(image="image", x="x", y="y", dw="dw", dh="dh", source=self._grid_pictures)
        fig.text(x="cx", y="label_y", text="label", text_align="center", text_baseline="top", text_font_size="12px",
                 text_color="#475569", source=self._grid_source)
        hit = fig.quad(left="left", right="right", top="top", bottom="bottom", fill_alpha=0, line_alpha=0,
                       source=self._grid_source)
        fig.add_tools(HoverTool(renderers=[hit], tooltips=[("number", "@channel"), ("min", "@min_text"),
                                                           ("max", "@max_text"), ("mean", "@mean_text")]))
        fig.on_event(Tap, self._grid_tapped)
        fig.on_event(DoubleTap, self._grid_tapped)
        self._grid_fig = fig

    def _build_big(self) -> None:
        self._big_source = _source("image", "dw", "dh", name="overview-channel")
        self._colour_mapper = LinearColorMapper(palette=list(plots.DIVERGING), low=-1, high=1, nan_color="#00000000")
        fig = figure(frame_width=BIG, frame_height=BIG, x_range=Range1d(0, 1), y_range=plots.pixel_range(1),
                     tools="", toolbar_location=None, title="channel", x_axis_location="above")
        fig.title.text_font_size = "13px"
        fig.grid.visible = False
        image = fig.image(image="image", x=0, y=0, dw="dw", dh="dh", color_mapper=self._colour_mapper,
                          source=self._big_source)
        cell = CustomJSHover(code="return Math.floor(value).toString()")  # the cell under the pointer, not rounded
        fig.add_tools(HoverTool(renderers=[image], tooltips=[("column", "$x{custom}"), ("row", "$y{custom}"),
                                                             ("value", "@image{0.000}")],
                                formatters={"$x": cell, "$y": cell}))
        self._colour_bar = plots.colour_bar(self._colour_mapper, "activation")
        fig.add_layout(self._colour_bar, "right")
        # the model's classes written on the cells of its logits (class_marks)
        self._class_source = _source("x", "y", "text", name="overview-classes")
        fig.text(x="x", y="y", text="text", source=self._class_source, text_align="center", text_baseline="middle",
                 text_font_size="13px", text_font_style="bold", text_color="#111827", background_fill_color="white",
                 background_fill_alpha=0.7, padding=1)
        for axis in (fig.xaxis[0], fig.yaxis[0]):
            axis.ticker.min_interval = 1  # pixel edges: no ticks between two pixels
            axis.minor_tick_line_color = None
        self._big_fig = fig

    def _intro_text(self) -> str:
        return ("### The network, layer by layer\n"
                "Each column is one layer, left to right in the order the network runs it, after the input "
                "(scroll sideways for more). Its picture is what the layer made of this input: one channel for "
                "feature maps and token features (the one that varies most; norm, activation and pooling layers "
                "show the same channel as the layer before, so you can follow it), where the class token looks "
                "for attention (mean over heads), or all values row by row for vectors. Hover a layer for its "
                "size and cost; click it to see all its channels below. " + plots.COLOUR_LEGEND)


def _selection_frame(fig: figure, source: ColumnDataSource, top: float | str, bottom: float | str) -> None:
    """The frame around the selected layer or channel, an outline on the overlay level: moving it repaints only
    the figure's overlay canvas, not its pictures and labels (a ViT strip took 20-25 ms to repaint)."""
    fig.quad(left="left", right="right", top=top, bottom=bottom, fill_color=None, line_color="#b45309", line_width=3,
             level="overlay", source=source)


def _source(*columns: str, name: str | None = None) -> ColumnDataSource:
    """An empty source; named ones are found by benchmarks/ui_latency.py in the page."""
    return ColumnDataSource(data={c: [] for c in columns}, name=name)
