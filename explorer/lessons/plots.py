"""Colour maps, colour scales and number labels: the one place that picks them (STYLE C13).

Signed values (convolution outputs, normalized activations, weights) use a diverging map centred on
zero: colorcet's CET_D9 (blue-white-red, lightness 55-98-55 %, readable with red-green colour-vision
deficiencies), resampled to an odd number of colours so that one colour sits exactly at zero, and
that colour set to pure white (it is #f7f6f7 in CET_D9, 98 % lightness). Non-negative values (ReLU
outputs, vector lengths, attention probabilities) use viridis, perceptually uniform and colour-blind
safe, from dark purple at 0 to yellow at the limit.

Scales: a colour limit L maps [-L, L] (signed) or [0, L] (non-negative) onto the palette, exactly as
Bokeh's LinearColorMapper does, so an image coloured here and a colour bar drawn by Bokeh agree. The
scope of L is a visible choice (SCOPES): the largest |value| of this channel alone, or of the whole
layer, so that channels can be compared.

Orientation: arrays keep row 0 first. Figures draw them on `pixel_range`s, whose y axis points down
as in image coordinates, so row 0 is at the top (Bokeh's image glyphs follow the range's direction;
tests/browser/test_overview.py pins this on a rendered page).
"""

from __future__ import annotations

import math
import warnings

import colorcet
import numpy as np
from bokeh.models import ColorBar, ColumnDataSource, LinearColorMapper, Range1d
from bokeh.palettes import Viridis256

from explorer.session.tags import MODEL_TAG, model_tag  # noqa: F401  (the views tag their results: plots.model_tag)

SCOPES = ("this channel", "this layer")  # the colour limit is the largest |value| of ...
COLOUR_LEGEND = ("Values that can be negative run **blue** (negative) → **white** (exactly 0) → **red** "
                 "(positive); values that cannot be negative run **dark purple** (0) → **yellow** (largest).")


def _hex_to_rgb(colours: list[str]) -> np.ndarray:
    return np.array([[int(c[i:i + 2], 16) for i in (1, 3, 5)] for c in colours], dtype=np.float64)


def _diverging(n: int = 255) -> tuple[str, ...]:
    """CET_D9 resampled to n (odd) colours, with the centre colour pure white."""
    source = _hex_to_rgb(colorcet.CET_D9)  # (256, 3)
    positions = np.linspace(0, len(source) - 1, n)
    rgb = np.stack([np.interp(positions, np.arange(len(source)), source[:, k]) for k in range(3)], axis=1)
    rgb = np.rint(rgb).astype(int)
    rgb[n // 2] = 255  # exactly zero reads as blank paper
    return tuple(f"#{r:02x}{g:02x}{b:02x}" for r, g, b in rgb)


DIVERGING: tuple[str, ...] = _diverging()        # 255 colours, DIVERGING[127] is white
SEQUENTIAL: tuple[str, ...] = tuple(Viridis256)  # 256 colours, dark purple at 0
CENTRE = len(DIVERGING) // 2


# Lines of several named things in one figure (methods, models): Okabe & Ito's colour-blind safe set, in its order,
# without its yellow (too light on white) and black (kept for marks and text).
CATEGORICAL: tuple[str, ...] = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#56B4E9", "#E69F00")


def palette(signed: bool) -> tuple[str, ...]:
    return DIVERGING if signed else SEQUENTIAL


def colour_range(signed: bool, limit: float) -> tuple[float, float]:
    """(low, high) that a colour mapper and `to_rgba` spread the palette over."""
    return (-limit, limit) if signed else (0.0, limit)


def max_abs(values: np.ndarray) -> float:
    """The largest finite |value|, or 1.0 where there is none above zero (an all-zero map stays at the low colour)."""
    values = np.asarray(values)
    top = float(np.abs(values).max()) if values.size else 0.0  # one pass: every value finite, the usual case
    if not math.isfinite(top):  # NaN padding or an overflow somewhere: look at the finite values only
        finite = np.abs(values[np.isfinite(values)])
        top = float(finite.max()) if finite.size else 0.0
    return top if top > 0 else 1.0


CHUNK_VALUES = 2**16  # values per step of a chunked pass: 256 kB of float32, its temporaries stay in cache


def any_below_zero(values: np.ndarray) -> bool:
    """Whether any value is below zero (NaN is not), reading the values in memory order, a chunk at a time,
    and stopping at the first chunk that has one: a convolution's output answers in its first chunk; only
    a layer that never goes below zero (ReLU) is read to the end."""
    flat = np.ravel(values, order="K")  # memory order: a view, also of a channels-last stack
    # fmin: the smallest value, leaving NaN out (a chunk of NaN only: NaN, not below zero)
    return any(np.fmin.reduce(flat[start:start + CHUNK_VALUES]) < 0 for start in range(0, flat.size, CHUNK_VALUES))


def min_max_each(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Smallest and largest finite value of each map of a stack (n, ...); NaN where a map has none.

    One pass each over the stack when every value is finite, the usual case: a NaN or an infinity
    shows in the per-map results, and only then are the maps looked at again value by value. The
    maps are reduced in place, whatever their strides: a model run channels-last gives (C, H, W)
    maps with C innermost, and flattening them would copy every value first.
    """
    maps = np.asarray(maps)
    if maps.size == 0:
        return np.full(len(maps), np.nan), np.full(len(maps), np.nan)
    axes = tuple(range(1, maps.ndim))
    low, high = maps.min(axis=axes), maps.max(axis=axes)
    if np.isfinite(low).all() and np.isfinite(high).all():
        return low, high
    finite = np.where(np.isfinite(maps), maps, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a map with no finite value: NaN
        return np.nanmin(finite, axis=axes), np.nanmax(finite, axis=axes)


def max_abs_each(maps: np.ndarray, extremes: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """`max_abs` of each map of a stack (n, ...); `extremes`: its `min_max_each`, when already known."""
    low, high = min_max_each(maps) if extremes is None else extremes
    top = np.nan_to_num(np.maximum(np.abs(low), np.abs(high)), nan=0.0)
    return np.where(top > 0, top, 1.0)


def mean_each(maps: np.ndarray) -> np.ndarray:
    """Mean finite value of each map of a stack (n, ...), in float64; NaN where a map has none."""
    maps = np.asarray(maps)
    axes = tuple(range(1, maps.ndim))
    mean = maps.mean(axis=axes, dtype=np.float64)
    if np.isfinite(mean).all():
        return mean
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(np.where(np.isfinite(maps), maps, np.nan), axis=axes, dtype=np.float64)


def _packed(colours: tuple[str, ...]) -> np.ndarray:
    rgb = _hex_to_rgb(list(colours)).astype(np.uint32)
    return rgb[:, 0] | rgb[:, 1] << 8 | rgb[:, 2] << 16 | np.uint32(255) << 24  # RGBA bytes, little-endian


_LUT = {True: _packed(DIVERGING), False: _packed(SEQUENTIAL)}


def to_rgba(values: np.ndarray, signed: bool, limit: float | None = None) -> np.ndarray:
    """Colour a 2-D array for Bokeh's image_rgba: uint32 (H, W), one packed RGBA pixel per value.

    Row 0 stays first (draw it on a `pixel_range`). `limit` defaults to the largest |value|; values
    beyond it take the end colours; NaN is transparent.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"to_rgba colours one 2-D map, got shape {values.shape}")
    limit = max_abs(values) if limit is None else float(limit)
    if not limit > 0:
        raise ValueError(f"the colour limit must be above zero, got {limit}")
    lut = _LUT[bool(signed)]
    low, high = colour_range(signed, limit)
    finite = np.isfinite(values)
    # Bokeh's LinearColorMapper: index = floor((v - low) / (high - low) * N), clipped to the palette
    index = np.floor((np.where(finite, values, low) - low) / (high - low) * len(lut))
    out = lut[np.clip(index, 0, len(lut) - 1).astype(np.intp)]
    out[~finite] = 0  # transparent
    return np.ascontiguousarray(out, dtype=np.uint32)


def picture_to_rgba(picture: np.ndarray) -> np.ndarray:
    """An input picture, uint8 (H, W) grey or (H, W, 3) colour, packed for image_rgba (row 0 first)."""
    picture = np.asarray(picture)
    if picture.ndim == 2:
        picture = np.repeat(picture[:, :, None], 3, axis=2)
    if picture.ndim != 3 or picture.shape[2] != 3:
        raise ValueError(f"a picture is (H, W) or (H, W, 3), got shape {picture.shape}")
    rgba = np.concatenate([picture.astype(np.uint8), np.full(picture.shape[:2] + (1,), 255, np.uint8)], axis=2)
    return np.ascontiguousarray(rgba).view(np.uint32)[:, :, 0]


def compose(height: int, width: int, tiles) -> np.ndarray:
    """Many image_rgba pictures as one: uint32 (height, width), transparent where no tile lies.

    `tiles` holds (rgba, x, y, dw, dh): a picture from `to_rgba` and the rectangle, in pixels, that it
    fills, edges rounded to whole pixels. Each is scaled nearest-neighbour, as Bokeh draws an image
    (no smoothing), so the result looks as the separate pictures did. Why: 143 thumbnails as a few
    pictures are a few buffers to send and canvases to paint instead of 143 (`pictures`;
    docs/performance.md, "Pictures in one piece").
    """
    canvas = np.zeros((height, width), np.uint32)
    for rgba, x, y, dw, dh in tiles:
        left, top = math.floor(x + 0.5), math.floor(y + 0.5)
        w, h = max(1, math.floor(x + dw + 0.5) - left), max(1, math.floor(y + dh + 0.5) - top)
        if left < 0 or top < 0 or left + w > width or top + h > height:
            raise ValueError(f"a tile at x={x}, y={y}, {dw}×{dh} does not fit a {width}×{height} picture")
        rows = ((np.arange(h) + 0.5) * (rgba.shape[0] / h)).astype(np.intp)  # the cell under each pixel's centre
        cols = ((np.arange(w) + 0.5) * (rgba.shape[1] / w)).astype(np.intp)
        canvas[top:top + h, left:left + w] = rgba[np.ix_(rows, cols)]
    return canvas


def pictures(tiles) -> dict[str, list]:
    """Tiles as few pictures at their own resolution: the data of an image_rgba source (image, x, y, dw, dh).

    `tiles` holds (rgba, x, y, dw, dh) in plot units, as `compose` takes them. Tiles of one shape drawn at
    one size become one picture whose pixel is as large as theirs allows, so that a 7×7 map drawn 56
    units wide is sent as 7×7 pixels, not 56×56: MobileNetV2's strip is 0.6 MB, not 2.2 MB. Each tile
    keeps all its pixels, each the same size; where the tiles' spacing is not a whole number of their
    pixels, the picture's pixels are a fraction of theirs and a tile may sit up to half a unit off.
    Tiles of one size far apart from left to right (other sizes between) make separate pictures.
    """
    groups: dict[tuple, list] = {}
    for tile in sorted(tiles, key=lambda t: t[1]):
        rgba, _, _, dw, dh = tile
        groups.setdefault((rgba.shape[:2], dw, dh), []).append(tile)
    data: dict[str, list] = dict(image=[], x=[], y=[], dw=[], dh=[])
    for group in groups.values():
        for run in _runs(group):
            for key, value in zip(data, _picture(run), strict=True):
                data[key].append(value)
    return data


GAP_PIXELS = 16_384  # empty pixels (64 KB) between two tiles of one size that make them separate pictures


def _runs(group: list) -> list[list]:
    """Tiles of one size, left to right, cut where the transparent gap between two would cost GAP_PIXELS."""
    rgba, _, _, dw, dh = group[0]
    h, w = rgba.shape[:2]
    pixels_per_unit = (w / dw) * h  # at the tiles' own resolution, over the tiles' height
    runs = [[group[0]]]
    for tile in group[1:]:
        if (tile[1] - runs[-1][-1][1] - dw) * pixels_per_unit > GAP_PIXELS:
            runs.append([])
        runs[-1].append(tile)
    return runs


def _picture(run: list) -> tuple[np.ndarray, float, float, float, float]:
    """Tiles of one size as one picture: (image, x, y, dw, dh)."""
    rgba, _, _, dw, dh = run[0]
    h, w = rgba.shape[:2]
    xs, ys = [t[1] for t in run], [t[2] for t in run]
    px, py = _pixel_size(dw / w, xs), _pixel_size(dh / h, ys)
    x0, y0 = min(xs), min(ys)
    width, height = round((max(xs) + dw - x0) / px), round((max(ys) + dh - y0) / py)
    placed = [(tile, round((x - x0) / px), round((y - y0) / py), dw / px, dh / py) for tile, x, y, _, _ in run]
    return compose(height, width, placed), x0, y0, width * px, height * py


def _pixel_size(tile_pixel: float, starts: list[float]) -> float:
    """The largest pixel, in plot units, that splits a tile pixel into whole parts (1, 2, 3, ...) and puts
    every tile start within half a unit of a pixel edge, counted from the first start: exactly on one where
    the tiles' spacing is a whole number of such pixels, as the overview lays its thumbnails out. Tiles at
    uneven positions may need a pixel below one unit, never below half one (the first split that is at
    most one unit is good enough)."""
    offsets = np.asarray(starts, dtype=np.float64) - min(starts)
    parts = 1
    while True:  # ends: a pixel of at most one unit is never more than half a unit off
        size = tile_pixel / parts
        steps = offsets / size
        if np.abs(steps - np.rint(steps)).max() * size <= 0.5:
            return size
        parts += 1


def downsample(values: np.ndarray, max_side: int) -> np.ndarray:
    """Block means so that neither side exceeds max_side (the last partial block averages what it has).

    Only for display: a 112×112 feature map shown in 56 screen pixels. NaN cells are ignored.
    """
    values = np.asarray(values, dtype=np.float64)
    factor = math.ceil(max(values.shape[:2]) / max_side)
    if factor <= 1:
        return values
    h, w = values.shape[:2]
    if h % factor == 0 and w % factor == 0:  # whole blocks: plain means, unless a NaN shows in them
        means = values.reshape(h // factor, factor, w // factor, factor, *values.shape[2:]).mean(axis=(1, 3))
        if not np.isnan(means).any():
            return means
    hp, wp = -(-h // factor) * factor, -(-w // factor) * factor
    padded = np.full((hp, wp) + values.shape[2:], np.nan)
    padded[:h, :w] = values
    blocks = padded.reshape(hp // factor, factor, wp // factor, factor, *values.shape[2:])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN block stays NaN (transparent)
        return np.nanmean(blocks, axis=(1, 3))


def source(*columns: str, name: str | None = None) -> ColumnDataSource:
    """An empty data source with these columns (a figure made once, fed data afterwards); `name` lets tests and
    benchmarks find it in the page."""
    return ColumnDataSource(data={column: [] for column in columns}, name=name)


def set_data(source: ColumnDataSource, data: dict) -> None:
    """`source.data = data`, unless the source holds these very columns and values already. Bokeh sends a source's
    data to the page each time it is set, changed or not, and the page draws its figure again: a figure that does
    not depend on what changed (the weights' histogram after a new input) costs nothing this way. Not for a source
    that the page changes in place (the convolution lesson's animation): the server's copy is not what is drawn."""
    if data.keys() != source.data.keys() or not all(same_column(source.data[k], v) for k, v in data.items()):
        source.data = data


def same_column(old: object, new: object) -> bool:
    """Whether source column `new` would send the page what `old` did: both lists of equal items, or both arrays of
    one dtype, shape and values (NaN where NaN was)."""
    if isinstance(old, np.ndarray) or isinstance(new, np.ndarray):
        if not (isinstance(old, np.ndarray) and isinstance(new, np.ndarray) and old.dtype == new.dtype):
            return False
        return np.array_equal(old, new, equal_nan=old.dtype.kind in "fc")
    return isinstance(old, list) and isinstance(new, list) and old == new  # a NaN in a list: never equal, sent


def pixel_range(extent: float) -> Range1d:
    """A y range that points down, as image rows do: row 0 of an image_rgba at y=0 is at the top."""
    return Range1d(start=extent, end=0)


# The stylesheet of a row of fixed-size figures or widgets that goes on under itself where its box is narrower (a
# phone, a tablet upright): Bokeh's (and Panel's) Row is a flex box that never wraps on its own. A Bokeh row with it
# stretches to its box's width; a Panel Row gets no sizing_mode (stretched, its minimum width would be the sum of its
# children's). Never around a figure that stretches: its width and the row's would wait on each other without end.
WRAPS = ":host { flex-wrap: wrap; }"
# A figure sized by its frame (`frame_width`) and what is around it, which a stretching row does not widen: BokehJS
# gives such a figure the policy "fit" and would widen its box, its canvas staying behind.
NATURAL_SIZE = dict(width=None, width_policy="fixed")
# A Tabs' headers on several lines where they do not fit on one (a phone)
WRAPPING_TAB_HEADERS = ".bk-headers-wrapper { flex-wrap: wrap; }"


def show_in_place(view, shown: bool) -> None:
    """Show or hide a Panel component (a progress bar shown while an input change computes) and keep its place.
    `visible` makes BokehJS lay out the page's root again, every figure in it: with the saliency lesson open, its
    progress bar shown and hidden on each gallery click cost the page 429-504 ms of CPU per click, 299-330 ms with
    this (benchmarks/page_cost.py). A style is the browser's alone, and nothing below the component moves."""
    view.styles = {**view.styles, "visibility": "visible" if shown else "hidden"}


def share_of_row(least_px: int) -> dict:
    """Keyword arguments for one item of a WRAPS row: an equal share of the row's width, never under `least_px`
    (where two such shares do not fit, each takes a line of its own)."""
    return dict(sizing_mode="stretch_width", styles={"flex": f"1 1 {least_px}px"})


def format_si(n: float, unit: str) -> str:
    """'640 MACs', '113 K MACs', '1.92 M MACs': three significant digits, decimal prefixes."""
    for size, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= size:
            return f"{_three_digits(n / size)} {prefix} {unit}"
    return f"{n:,.0f} {unit}"


def format_bytes(n: int) -> str:
    """'40 B', '12.5 kB', '1.61 MB' (decimal: 1 kB = 1000 bytes)."""
    for size, prefix in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if n >= size:
            return f"{_three_digits(n / size)} {prefix}"
    return f"{n} B"


def _three_digits(x: float) -> str:
    return f"{x:.2f}" if abs(x) < 10 else f"{x:.1f}" if abs(x) < 100 else f"{x:.0f}"


def format_shape(shape: tuple[int, ...]) -> str:
    """(1, 32, 14, 14) -> '1×32×14×14'."""
    return "×".join(str(s) for s in shape) or "scalar"


VALUE_FORMAT = "%.3g"  # a value for a label: 3 significant digits


def format_value(x: float) -> str:
    """A value for a label: 3 significant digits, with a real minus sign."""
    return (VALUE_FORMAT % x).replace("-", "−")


def format_values(values: list[float]) -> list[str]:
    """format_value of each value: one formatting of one text for them all, 2.4 times as fast as one call each
    (the convolution lesson writes 4,000 numbers per input change)."""
    if not values:
        return []
    return ("\n".join([VALUE_FORMAT] * len(values)) % tuple(values)).replace("-", "−").split("\n")


# --- Colour bars: a map's range, readable from the back of a room --------------------------------------------

COLOUR_BAR_FONT = "13px"     # tick labels and title of a colour bar
PLAYGROUND_UNIT_WEIGHT = 1.0  # the weight that copies a pixel of a [0, 1] image unchanged (the identity kernel)


def colour_bar(mapper: LinearColorMapper, title: str) -> ColorBar:
    """A colour bar for `mapper`, made once with its figure (`fig.add_layout(bar, "right")`); `set_colour_scale`
    sets its range. Its ticks are BokehJS's own, placed as the range changes: explicit ticks at the exact ends,
    relabelled on every update, made BokehJS lay the figure out again (a channel click in the overview went from
    20 to 42 ms, benchmarks/ui_latency.py). The texts beside the figures give the exact ends."""
    return ColorBar(color_mapper=mapper, title=title, width=14, padding=6, major_label_text_font_size=COLOUR_BAR_FONT,
                    title_text_font_size=COLOUR_BAR_FONT, title_text_font_style="normal",
                    major_tick_line_color="#1e293b", major_tick_out=4)


def set_colour_scale(bar: ColorBar, signed: bool, limit: float) -> None:
    """Spread the palette over `colour_range(signed, limit)`: only the bar's mapper changes (its palette, low and
    high), so an update sends no new Bokeh model and the page does not lay the figure out again."""
    low, high = colour_range(signed, limit)
    bar.color_mapper.update(palette=list(palette(signed)), low=low, high=high)


def kernel_limit(weights: np.ndarray, unit: float = 0.0) -> float:
    """The colour limit of kernel weights: their largest |w|, and never below `unit`.

    The scale is symmetric around 0, so a weight's colour says its sign and its size. Which weights `weights`
    holds is the choice: a learned layer's kernels all together (a kernel is coloured against the layer's largest
    weight, so a constant kernel is not stretched to the ends), or one kernel of the playground with `unit` =
    PLAYGROUND_UNIT_WEIGHT: a weight of 1 copies a pixel unchanged, and a box blur's 1/9 is drawn pale, not at the
    darkest red as a kernel stretched to its own largest |w| would be.
    """
    return max(max_abs(weights), unit)
