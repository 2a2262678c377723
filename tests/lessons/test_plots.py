"""plots.py: colours against the palettes and Bokeh's LinearColorMapper rule, orientation, scales, labels.

The rendered orientation (row 0 at the top on a page) is pinned in tests/browser/test_overview.py.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from explorer.lessons import plots
from tests.bokeh_images import read_back


@pytest.fixture
def rng() -> np.random.Generator:
    seed = int.from_bytes(os.urandom(4), "little")
    print(f"numpy seed {seed}")  # pytest shows it on failure; reproduce with default_rng(seed)
    return np.random.default_rng(seed)


def rgba(packed: np.ndarray) -> np.ndarray:
    """(H, W) packed uint32 -> (H, W, 4) uint8 RGBA, as Bokeh reads the bytes."""
    return np.ascontiguousarray(packed).view(np.uint8).reshape(*packed.shape, 4)


def hex_rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def test_zero_is_pure_white_for_signed_values():
    out = rgba(plots.to_rgba(np.zeros((3, 5)), signed=True, limit=2.0))
    assert (out == 255).all()


def test_plus_and_minus_limit_take_the_end_colours_and_beyond_them_clip():
    values = np.array([[-3.0, -2.0, 2.0, 7.0]])
    out = rgba(plots.to_rgba(values, signed=True, limit=2.0))
    blue, red = hex_rgb(plots.DIVERGING[0]), hex_rgb(plots.DIVERGING[-1])
    assert [tuple(p[:3]) for p in out[0]] == [blue, blue, red, red]
    assert blue[2] > blue[0] and red[0] > red[2]  # negative is blue, positive red
    assert (out[..., 3] == 255).all()


def test_sequential_map_runs_from_its_first_colour_at_zero_to_its_last_at_the_limit():
    out = rgba(plots.to_rgba(np.array([[0.0, 0.5, 1.0]]), signed=False, limit=1.0))
    assert tuple(out[0, 0, :3]) == hex_rgb(plots.SEQUENTIAL[0])
    assert tuple(out[0, 2, :3]) == hex_rgb(plots.SEQUENTIAL[-1])
    assert tuple(out[0, 1, :3]) == hex_rgb(plots.SEQUENTIAL[128])  # floor(0.5 · 256)


@pytest.mark.parametrize("signed", [True, False])
def test_colours_match_bokehs_linear_color_mapper_rule(signed, rng):
    # BokehJS LinearColorMapper: d = (v - low) / (high - low); key = floor(d · N), with v == high -> N - 1
    values = rng.normal(size=(9, 11)) * 3
    if not signed:
        values = np.abs(values)
    limit = float(np.abs(values).max()) * 0.8  # some values beyond the limit: they clip
    palette = plots.palette(signed)
    low, high = (-limit, limit) if signed else (0.0, limit)
    keys = [min(max(int(np.floor((v - low) / (high - low) * len(palette))), 0), len(palette) - 1)
            for v in values.ravel()]
    expected = np.array([hex_rgb(palette[k]) for k in keys]).reshape(9, 11, 3)
    assert (rgba(plots.to_rgba(values, signed, limit))[..., :3] == expected).all()


def test_default_limit_is_the_largest_absolute_value(rng):
    values = rng.normal(size=(4, 4))
    assert (plots.to_rgba(values, True) == plots.to_rgba(values, True, np.abs(values).max())).all()


def test_an_asymmetric_pattern_keeps_row_zero_first_and_column_zero_left():
    values = np.zeros((4, 6))
    values[0, :] = 1.0   # top row positive
    values[:, 0] = -1.0  # left column negative
    out = rgba(plots.to_rgba(values, signed=True, limit=1.0))
    red, blue = hex_rgb(plots.DIVERGING[-1]), hex_rgb(plots.DIVERGING[0])
    assert tuple(out[0, 3, :3]) == red and tuple(out[3, 0, :3]) == blue and tuple(out[3, 3, :3]) == (255, 255, 255)
    assert plots.pixel_range(4).start == 4 and plots.pixel_range(4).end == 0  # y points down: row 0 on top


def test_nan_is_transparent():
    out = rgba(plots.to_rgba(np.array([[np.nan, 1.0]]), signed=False))
    assert out[0, 0, 3] == 0 and out[0, 1, 3] == 255


def test_diverging_palette_has_one_centre_colour_and_it_is_white():
    assert len(plots.DIVERGING) % 2 == 1
    assert plots.DIVERGING[plots.CENTRE] == "#ffffff"
    # the neighbours of the centre are near-white (CET_D9 peaks at 98 % lightness): no visible jump
    assert min(hex_rgb(plots.DIVERGING[plots.CENTRE - 1]) + hex_rgb(plots.DIVERGING[plots.CENTRE + 1])) > 235


def test_bad_input_is_refused_with_a_message():
    with pytest.raises(ValueError, match="to_rgba colours one 2-D map, got shape"):
        plots.to_rgba(np.zeros(3), True)
    with pytest.raises(ValueError, match="the colour limit must be above zero, got 0.0"):
        plots.to_rgba(np.zeros((2, 2)), True, 0.0)


def test_an_all_zero_map_still_gets_a_usable_limit():
    assert plots.max_abs(np.zeros(3)) == 1.0


@pytest.mark.parametrize("seed", range(5))
def test_max_abs_is_the_largest_finite_magnitude(seed):
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(3, 7, 9)).astype(np.float32) * rng.uniform(0.1, 100)
    assert plots.max_abs(values) == pytest.approx(float(np.max(np.abs(values))))
    holes = values.copy()
    holes.flat[rng.choice(holes.size, 20, replace=False)] = rng.choice([np.nan, np.inf, -np.inf], 20)
    finite = holes[np.isfinite(holes)]
    assert plots.max_abs(holes) == pytest.approx(float(np.max(np.abs(finite))))
    assert plots.max_abs(np.full(4, np.nan)) == 1.0 and plots.max_abs(np.zeros((0, 3))) == 1.0


@pytest.mark.parametrize("seed", range(5))
def test_any_below_zero_matches_numpy_wherever_the_first_negative_is(seed):
    rng = np.random.default_rng(seed)
    relu = np.maximum(rng.normal(size=(3 * plots.CHUNK_VALUES + 17,)), 0).astype(np.float32)
    assert not plots.any_below_zero(relu) and not plots.any_below_zero(np.zeros(0, np.float32))
    for where in (0, plots.CHUNK_VALUES - 1, plots.CHUNK_VALUES, relu.size - 1, int(rng.integers(relu.size))):
        one = relu.copy()
        one[where] = -rng.uniform(1e-6, 1)
        assert plots.any_below_zero(one) == bool((one < 0).any()) is True
    channels_last = np.moveaxis(one.reshape(-1, 1, 1)[: 40 * 30 * 50].reshape(30, 50, 40), -1, 0)  # (C, H, W)
    assert plots.any_below_zero(channels_last) == bool((channels_last < 0).any())
    holes = relu.copy()
    holes[rng.choice(holes.size, 100, replace=False)] = np.nan
    assert not plots.any_below_zero(holes) and not plots.any_below_zero(np.full(5, np.nan, np.float32))


def test_picture_to_rgba_packs_grey_and_colour_pictures():
    grey = np.array([[0, 128], [255, 7]], dtype=np.uint8)
    out = rgba(plots.picture_to_rgba(grey))
    assert (out[..., 0] == grey).all() and (out[..., 1] == grey).all() and (out[..., 3] == 255).all()
    colour = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    assert (rgba(plots.picture_to_rgba(colour))[..., :3] == colour).all()


def test_downsample_matches_block_means(rng):
    values = rng.normal(size=(112, 112))
    ref = values.reshape(56, 2, 56, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(plots.downsample(values, 56), ref, rtol=1e-12)
    assert plots.downsample(values, 112) is not None and plots.downsample(values, 112).shape == (112, 112)
    odd = plots.downsample(np.arange(25.0).reshape(5, 5), 2)  # factor 3: blocks of 3, the last one partial
    assert odd.shape == (2, 2) and odd[1, 1] == np.mean([18, 19, 23, 24])


@pytest.mark.parametrize("seed", range(4))
def test_per_map_max_abs_min_max_and_mean_match_numpy(seed):
    rng = np.random.default_rng(seed)
    maps = rng.normal(size=(9, 5, 7)).astype(np.float32) * rng.uniform(0.1, 10, size=(9, 1, 1)).astype(np.float32)
    maps[2] = 0.0  # an all-zero map still gets a usable limit
    np.testing.assert_array_equal(plots.max_abs_each(maps), [plots.max_abs(m) for m in maps])
    low, high = plots.min_max_each(maps)
    np.testing.assert_array_equal(low, maps.min(axis=(1, 2)))
    np.testing.assert_array_equal(high, maps.max(axis=(1, 2)))
    np.testing.assert_allclose(plots.mean_each(maps), maps.astype(np.float64).mean(axis=(1, 2)), rtol=1e-12)
    holes = maps.copy()
    holes[:, 4, 3:] = np.nan  # a wrapped vector's transparent padding
    holes[7] = np.nan  # a map with no value at all
    holes[3, 0, 0], holes[5, 1, 1] = np.inf, -np.inf  # an overflow: left out, as NaN is
    finite = np.where(np.isfinite(holes), holes, np.nan)
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        expected = (np.nanmin(finite, axis=(1, 2)), np.nanmax(finite, axis=(1, 2)), np.nanmean(finite, axis=(1, 2)))
    for got, want in zip((*plots.min_max_each(holes), plots.mean_each(holes)), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_array_equal(plots.max_abs_each(holes), [plots.max_abs(m) for m in holes])


def test_compose_draws_each_tile_nearest_neighbour_into_its_rectangle(rng):
    height, width = 40, 300
    tiles = []
    for k in range(5):  # side by side, at fractional positions and sizes, shrunk and enlarged
        h, w = rng.integers(1, 30, size=2)
        tile = rng.integers(1, 2**32, size=(h, w), dtype=np.uint32)
        tiles.append((tile, k * 60 + rng.uniform(0, 5), rng.uniform(0, 5), rng.uniform(1, 50), rng.uniform(1, 34)))
    canvas = plots.compose(height, width, tiles)
    covered = np.zeros(canvas.shape, bool)
    for tile, x, y, dw, dh in tiles:
        h, w = tile.shape
        left, top = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
        right, bottom = max(left + 1, int(np.floor(x + dw + 0.5))), max(top + 1, int(np.floor(y + dh + 0.5)))
        covered[top:bottom, left:right] = True
        for r in range(top, bottom):  # each pixel takes the cell under its centre (either one on an exact edge)
            rows = {int((r - top + 0.5) * h / (bottom - top) - e) for e in (0, 1e-9)}
            for c in range(left, right):
                cols = {int((c - left + 0.5) * w / (right - left) - e) for e in (0, 1e-9)}
                assert canvas[r, c] in {tile[i, j] for i in rows for j in cols}, (r, c)
    assert (canvas[~covered] == 0).all()  # transparent between the tiles
    with pytest.raises(ValueError, match="does not fit"):
        plots.compose(10, 10, [(np.ones((2, 2), np.uint32), 5, 0, 8, 4)])


def _tile(rng, h: int, w: int) -> np.ndarray:
    return rng.integers(1, 2**32, size=(h, w), dtype=np.uint32)  # never 0: 0 is transparent


def _read_back(data: dict, tiles) -> None:
    for tile, x, y, dw, dh in tiles:
        np.testing.assert_array_equal(read_back(data, tile.shape, x, y, dw, dh), tile)


def test_pictures_of_mixed_strip_thumbnails_read_back_exactly(rng):
    shapes = [(7, 7), (14, 14), (28, 28), (56, 56), (40, 32), (1, 20)]
    tiles = []
    for k in range(24):  # a strip: one tile per 68-unit column, the longer side drawn 56 units, sizes mixed
        h, w = shapes[rng.integers(len(shapes))]
        scale = 56 / max(h, w)
        dw, dh = w * scale, max(h * scale, 10)
        tiles.append((_tile(rng, h, w), k * 68 + (68 - dw) / 2, 20 + (56 - dh) / 2, dw, dh))
    _read_back(plots.pictures(tiles), tiles)


def test_pictures_cut_tiles_of_one_size_far_apart(rng):
    near = [(_tile(rng, 4, 4), x, 0, 32, 32) for x in (0, 40, 80)]
    far = (_tile(rng, 4, 4), 80 + 32 + 2 * plots.GAP_PIXELS + 8, 0, 32, 32)  # 4 rows: GAP_PIXELS + 4 apart
    data = plots.pictures([*near, far])
    _read_back(data, [*near, far])
    assert [image.shape for image in data["image"]] == [(4, 14), (4, 4)]  # 40 units = 5 pixels apart


def test_pictures_of_evenly_spaced_tiles_have_the_tiles_pixels(rng):
    tiles = [(_tile(rng, 7, 7), 3 + k * 64, 5, 56, 56) for k in range(10)]  # 64 units = 8 tile pixels apart
    data = plots.pictures(tiles)
    _read_back(data, tiles)
    assert [image.shape for image in data["image"]] == [(7, 8 * 9 + 7)]
    assert (data["x"], data["y"], data["dw"], data["dh"]) == ([3], [5], [(8 * 9 + 7) * 8], [56])


def test_pictures_of_unevenly_placed_tiles_sit_within_half_a_unit(rng):
    tiles = []
    for k in range(12):  # tile pixels 2-8 units, at fractional positions that share no pixel grid
        h, w = rng.integers(2, 9, size=2)
        px = rng.uniform(2, 8)
        tiles.append((_tile(rng, h, w), k * 150 + rng.uniform(0, 20), rng.uniform(0, 20), w * px, h * px))
    tiles.append((_tile(rng, *tiles[0][0].shape), 1900, 3.3, *tiles[0][3:]))  # the same size as the first
    data = plots.pictures(tiles)
    _read_back(data, tiles)
    tile_pixels = [dw / rgba.shape[1] for rgba, _, _, dw, _ in tiles]
    for image, dw in zip(data["image"], data["dw"], strict=True):
        pixel = dw / image.shape[1]
        # never finer than needed: the first split of a tile pixel that is at most one unit is more than half one
        assert pixel > 0.5
        assert any(abs(t / pixel - round(t / pixel)) < 1e-6 for t in tile_pixels)  # a whole split of a tile pixel


@pytest.mark.parametrize(("n", "text"), [(0, "0 MACs"), (640, "640 MACs"), (112_896, "113 K MACs"),
                                         (1_920_000, "1.92 M MACs"), (10_838_016, "10.8 M MACs"),
                                         (3_000_000_000, "3.00 G MACs")])
def test_format_si(n, text):
    assert plots.format_si(n, "MACs") == text


@pytest.mark.parametrize(("n", "text"), [(40, "40 B"), (12_544, "12.5 kB"), (1_605_632, "1.61 MB")])
def test_format_bytes(n, text):
    assert plots.format_bytes(n) == text


def test_format_shape_and_value():
    assert plots.format_shape((1, 32, 14, 14)) == "1×32×14×14"
    assert plots.format_value(-0.012345) == "−0.0123"


@pytest.mark.parametrize("seed", range(3))
def test_format_values_writes_each_as_pythons_format_with_a_real_minus(seed):
    rng = np.random.default_rng(seed)
    values = np.concatenate([rng.normal(0, 10.0 ** rng.integers(-6, 7), 500), [0.0, -0.0, np.nan, np.inf, -np.inf,
                                                                                 1e-300, -123456789.0]])
    values = rng.permutation(values).tolist() + [7]  # an int, as a caller may pass
    expected = [f"{v:.3g}".replace("-", "\u2212") for v in values]  # Python's own format, independently
    assert plots.format_values(values) == expected == [plots.format_value(v) for v in values]
    assert plots.format_values([]) == []


def data_events(source, data) -> list:
    """The change events `plots.set_data(source, data)` sends the page of a document holding `source`."""
    from bokeh.document import Document

    doc = source.document or Document()
    if source.document is None:
        doc.add_root(source)
    events: list = []
    record = events.append
    doc.on_change(record)
    plots.set_data(source, data)
    doc.remove_on_change(record)
    return events


def random_columns(rng: np.random.Generator) -> dict:
    n = int(rng.integers(1, 40))
    values = rng.normal(size=n)
    values[rng.random(n) < 0.2] = np.nan  # missing values, as figures use them
    return dict(x=values, n=rng.integers(0, 9, size=n), colour=[str(c) for c in rng.choice(["#fff", "#000"], n)],
                xs=[[float(v) for v in rng.normal(size=3)] for _ in range(n)])


def test_set_data_sends_changed_data_and_nothing_when_it_is_the_same(rng):
    from bokeh.models import ColumnDataSource

    source = ColumnDataSource(data=dict(x=[], n=[], colour=[], xs=[]))
    first = random_columns(rng)
    assert len(data_events(source, first)) == 1
    again = {k: v.copy() if isinstance(v, np.ndarray) else [list(i) if isinstance(i, list) else i for i in v]
             for k, v in first.items()}  # equal values, other objects, NaN where NaN was
    assert data_events(source, again) == [] and source.data["x"] is first["x"]
    column = str(rng.choice(["x", "n", "colour", "xs"]))
    changes = {"x": lambda v: v + 1e-6, "n": lambda v: v.astype(np.float64),  # same values, another dtype: sent
               "colour": lambda v: v[:-1] + ["#123"], "xs": lambda v: v[:-1] + [[0.5, 0.5, 0.5]]}
    changed = dict(again, **{column: changes[column](again[column])})
    assert len(data_events(source, changed)) == 1
    assert plots.same_column(source.data[column], changed[column])
    assert len(data_events(source, dict(changed, extra=list(range(len(changed["n"])))))) == 1  # a new column
    assert not plots.same_column([1.0], np.array([1.0])) and not plots.same_column(np.zeros(2), np.zeros(3))
