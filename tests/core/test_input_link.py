"""The input as a link names it: gallery keys, and drawings as compact codes that survive the round trip."""

from __future__ import annotations

import base64
import zlib

import numpy as np
import pytest
import scipy.spatial
import torch

from explorer.core import images, input_link, zoo
from explorer.core.gallery import mnist_gallery, photo_gallery
from explorer.errors import InputError


def random_drawing(rng: torch.Generator, strokes: int, points: int, side: int = 280) -> images.Strokes:
    """A hand-like drawing: random walks in 0.1-px steps (what the canvas sends), some points off the canvas."""
    lines = []
    for _ in range(strokes):
        n = int(torch.randint(1, points + 1, (1,), generator=rng))
        start = torch.rand(2, generator=rng) * side
        walk = start + torch.cumsum(torch.randn(n, 2, generator=rng) * 4, 0)  # (n, 2)
        lines.append((walk.clamp(-10, side + 10) * 10).round().div(10).tolist())
    return images.Strokes(lines, side, side)


def rounded_without_repeats(line: list[tuple[float, float]]) -> list[tuple[int, int]]:
    """The reference: NumPy's rounding (half to even, as Python's), consecutive repeats dropped."""
    points = np.round(np.asarray(line)).astype(int)
    keep = np.ones(len(points), bool)
    keep[1:] = (points[1:] != points[:-1]).any(axis=1)
    return [tuple(p) for p in points[keep].tolist()]


def distance_to_nearest(points: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """Each point's distance to the nearest kept point (at least its distance to the line through them)."""
    return scipy.spatial.cKDTree(kept).query(points)[0]


@pytest.mark.parametrize("repeat", range(5))
def test_a_drawing_survives_its_code_rounded_to_whole_pixels(repeat, rng):
    drawing = random_drawing(rng, strokes=4, points=200)
    code = input_link.drawing_code(drawing)
    back = input_link.strokes_from_code(code)
    assert (back.width, back.height, back.line_width) == (drawing.width, drawing.height, drawing.line_width)
    assert [list(s) for s in back.strokes] == [rounded_without_repeats(s) for s in drawing.strokes]
    assert set(code) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")  # no URL escapes


def test_the_drawing_is_painted_nearly_the_same_after_the_round_trip(rng):
    drawing = random_drawing(rng, strokes=3, points=150)
    before = np.asarray(images.rasterize(drawing)) > 127
    after = np.asarray(images.rasterize(input_link.strokes_from_code(input_link.drawing_code(drawing)))) > 127
    # rounding moves a 20-px line's edges by at most half a pixel: at least 95 % of the ink stays where it was
    assert (before & after).sum() / (before | after).sum() > 0.95


def test_a_digit_drawn_with_a_mouse_takes_a_few_hundred_characters(rng):
    # a "7": two strokes of points 3 px apart, as the canvas sends a steady hand
    top = [(60 + 3 * i, 60 + 0.1 * i) for i in range(54)]
    down = [(222 - 1.5 * i, 66 + 3 * i) for i in range(60)]
    assert len(input_link.drawing_code(images.Strokes([top, down], 280, 280))) < 400


def test_a_long_drawing_is_simplified_within_the_tolerance_to_fit(rng):
    # a scribble of 20,000 points, as a student who never lifts the pen: over the limit as it is
    walk = (140 + torch.cumsum(torch.randn(20_000, 2, generator=rng) * 1.5, 0)).remainder(280)  # (20000, 2)
    drawing = images.Strokes([walk.tolist()], 280, 280)
    assert len(input_link._encode([input_link._rounded(drawing.strokes[0])], drawing)) > input_link.MAX_CODE_CHARS
    code = input_link.drawing_code(drawing)
    assert code is not None and len(code) <= input_link.MAX_CODE_CHARS
    kept = np.asarray(input_link.strokes_from_code(code).strokes[0], float)
    # every point of the drawing lies within the largest tolerance (plus the rounding) of a point the link keeps
    assert distance_to_nearest(walk.numpy(), kept).max() <= input_link.SIMPLIFY_TOLERANCES[-1] + 0.75


@pytest.mark.parametrize("tolerance", [0.5, 2, 8])
def test_simplified_keeps_every_point_within_the_tolerance(tolerance, rng):
    walk = torch.cumsum(torch.randn(500, 2, generator=rng) * 3, 0).round().int().tolist()  # (500, 2)
    line = [tuple(p) for p in walk]
    kept = input_link.simplified(line, tolerance)
    assert kept[0] == line[0] and kept[-1] == line[-1] and set(kept) <= set(line)
    assert distance_to_nearest(np.asarray(line, float), np.asarray(kept, float)).max() <= tolerance + 1e-9
    gaps = np.linalg.norm(np.diff(np.asarray(kept[:-1], float), axis=0), axis=1)
    assert (gaps >= tolerance).all()  # and no point is kept that the tolerance allowed to drop


def test_a_drawing_that_cannot_fit_has_no_name(rng):
    noise = (torch.rand(6000, 2, generator=rng) * 280).tolist()  # no line to simplify: random points
    drawing = images.Strokes([noise], 280, 280)
    assert input_link.drawing_code(drawing) is None
    assert input_link.name_of(drawing, zoo.card("mnist-cnn")) == ""


@pytest.mark.parametrize("card_name, items", [("mnist-cnn", mnist_gallery), ("mobilenet_v2", photo_gallery)])
def test_every_gallery_image_is_named_by_its_key_and_found_again(card_name, items):
    card = zoo.card(card_name)
    for item in items():
        name = input_link.name_of(item.source, card)
        assert name == f"gallery:{item.key}"
        assert input_link.input_named(name, card) == (item.source, item.description)


def test_an_upload_has_no_name():
    assert input_link.name_of(b"\x89PNG...", zoo.card("mnist-cnn")) == ""
    assert input_link.name_of(mnist_gallery()[0].source.copy(), zoo.card("mnist-cnn")) == ""  # not the gallery's


def payload_code(payload: bytes) -> str:
    return base64.urlsafe_b64encode(zlib.compress(payload)).decode().rstrip("=")


@pytest.mark.parametrize("name, expected", [
    ("gallery:chelsea", "no gallery image named 'chelsea'; choose one of: 'mnist-"),
    ("photo:chelsea", "is neither a gallery image nor a drawing; expected 'gallery:<image>' or 'drawing:<code>'"),
    ("drawing:not*base64", "the drawing in the link is damaged"),
    ("drawing:" + payload_code(bytes([9, 1, 2, 3])), "format 09, expected 1"),
    ("drawing:" + payload_code(bytes([1, 0x98, 2, 0x98, 2, 200, 1, 1, 5, 0])), "ends in the middle of a stroke"),
    ("drawing:" + "A" * 20_000, "is 20,000 characters long; a link's drawing has at most 6,000"),
])
def test_a_bad_name_is_refused_with_what_was_expected(name, expected):
    with pytest.raises(InputError) as caught:
        input_link.input_named(name, zoo.card("mnist-cnn"))
    assert expected in str(caught.value)


def test_a_code_cut_short_is_refused(rng):
    code = input_link.drawing_code(random_drawing(rng, strokes=2, points=100))
    with pytest.raises(InputError, match="damaged .* cut short when the link was copied"):
        input_link.strokes_from_code(code[: len(code) // 2])
