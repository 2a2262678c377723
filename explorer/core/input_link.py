"""The input as a link names it: "gallery:<key>" for a gallery image, "drawing:<code>" for a drawing.

A drawing's code is compact enough for a URL: every point rounded to a whole canvas pixel (the model sees the
280-px canvas at 28 px, so half a pixel is 1/20 of one of its pixels), each point stored as its step from the
previous one (zigzag varints), the bytes deflated (zlib) and written in URL-safe base64 without padding. A digit
drawn with a mouse takes a few hundred characters.

Browsers and servers accept URLs of about 8 kB. A code longer than MAX_CODE_CHARS is drawn again with fewer points
(a point closer than a tolerance to the point kept before it is dropped, the tolerance doubled until the code
fits); a drawing that does not fit even at SIMPLIFY_TOLERANCES[-1] px has no code,
and the link then says nothing about the input. An upload or a camera picture is an image file: it never fits a
URL, so it has no name either (the empty string), and a link opens on the model's default input.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Iterator, Sequence

from explorer.core import images, zoo
from explorer.core.gallery import find, gallery_for
from explorer.errors import InputError

GALLERY = "gallery:"
DRAWING = "drawing:"
DRAWING_DESCRIPTION = "your drawing"
VERSION = 1                               # first byte of every code: a later format can still read old links
MAX_CODE_CHARS = 6000                     # leaves 2 kB of an 8 kB URL for the address and the other settings
SIMPLIFY_TOLERANCES = (0.5, 1, 2, 4, 8)   # px on the canvas, tried in turn while a code is too long
MAX_PAYLOAD_BYTES = 1 << 20               # a code never inflates to more than this (a hostile link cannot either)

Point = tuple[int, int]


def name_of(source: object, card: zoo.ModelCard) -> str:
    """The link's name for an input: "gallery:<key>", "drawing:<code>", or "" when a link cannot hold it."""
    if isinstance(source, images.Strokes):
        code = drawing_code(source)
        return "" if code is None else DRAWING + code
    key = next((item.key for item in gallery_for(card) if item.source is source), None)
    return "" if key is None else GALLERY + key


def input_named(name: str, card: zoo.ModelCard) -> tuple[object, str]:
    """(source, description) of the input a link names; InputError, saying what was expected, if there is none."""
    if name.startswith(GALLERY):
        item = find(card, name.removeprefix(GALLERY))
        return item.source, item.description
    if name.startswith(DRAWING):
        return strokes_from_code(name.removeprefix(DRAWING)), DRAWING_DESCRIPTION
    raise InputError(f"the input {_short(name)} is neither a gallery image nor a drawing; expected "
                     f"'{GALLERY}<image>' or '{DRAWING}<code>'.")


def drawing_code(strokes: images.Strokes, max_chars: int = MAX_CODE_CHARS) -> str | None:
    """The drawing as URL-safe text of at most `max_chars`, simplified as needed; None if it cannot fit."""
    lines = [_rounded(stroke) for stroke in strokes.strokes if stroke]
    code = _encode(lines, strokes)
    for tolerance in SIMPLIFY_TOLERANCES:
        if len(code) <= max_chars:
            return code
        code = _encode([simplified(line, tolerance) for line in lines], strokes)
    return code if len(code) <= max_chars else None


def strokes_from_code(code: str) -> images.Strokes:
    """The drawing a code holds (points in whole canvas pixels); InputError if the code is damaged."""
    if len(code) > 2 * MAX_CODE_CHARS:
        raise InputError(f"the drawing in the link is {len(code):,} characters long; a link's drawing has at most "
                         f"{MAX_CODE_CHARS:,}. Draw it again and share a new link.")
    try:
        packed = base64.urlsafe_b64decode(code + "=" * (-len(code) % 4))
        inflate = zlib.decompressobj()
        payload = inflate.decompress(packed, MAX_PAYLOAD_BYTES)
        if inflate.unconsumed_tail or not inflate.eof:
            raise ValueError("it does not end where expected")
        return _decode(payload)
    except (binascii.Error, zlib.error, ValueError, IndexError) as e:
        raise InputError(f"the drawing in the link is damaged ({e}); it was probably cut short when the link was "
                         "copied. Copy the whole link again, or draw the digit anew.") from None


def simplified(line: Sequence[Point], tolerance: float) -> list[Point]:
    """The points of `line` at least `tolerance` px from the point kept before them, and its last point: every point
    dropped lies within `tolerance` of a kept one, so of the line drawn through them. One pass, O(n)."""
    kept = list(line[:1])
    for x, y in line[1:-1]:
        x0, y0 = kept[-1]
        if (x - x0) ** 2 + (y - y0) ** 2 >= tolerance ** 2:
            kept.append((x, y))
    return kept + list(line[-1:]) if len(line) > 1 else kept


def _rounded(stroke: Sequence[tuple[float, float]]) -> list[Point]:
    """Whole pixels, without the repeats that rounding makes."""
    line: list[Point] = []
    for x, y in stroke:
        point = (round(x), round(y))
        if not line or point != line[-1]:
            line.append(point)
    return line


def _encode(lines: list[list[Point]], strokes: images.Strokes) -> str:
    numbers = [strokes.width, strokes.height, round(strokes.line_width * 10), len(lines)]
    previous = (0, 0)
    for line in lines:
        numbers.append(len(line))
        for point in line:
            numbers += [_zigzag(point[0] - previous[0]), _zigzag(point[1] - previous[1])]
            previous = point
    payload = bytes([VERSION]) + b"".join(_varint(n) for n in numbers)
    return base64.urlsafe_b64encode(zlib.compress(payload, 9)).decode("ascii").rstrip("=")


def _decode(payload: bytes) -> images.Strokes:
    if not payload or payload[0] != VERSION:
        raise ValueError(f"format {payload[:1].hex() or 'none'}, expected {VERSION}")
    numbers = _varints(payload, 1)

    def take() -> int:
        value = next(numbers, None)
        if value is None:
            raise ValueError("it ends in the middle of a stroke")
        return value

    width, height, line_width, count = take(), take(), take(), take()
    lines, x, y = [], 0, 0
    for _ in range(count):
        line = []
        for _ in range(take()):
            x, y = x + _unzigzag(take()), y + _unzigzag(take())
            line.append((x, y))
            if len(line) > images.MAX_POINTS:
                raise ValueError(f"a stroke has more than {images.MAX_POINTS:,} points")
        lines.append(line)
    if next(numbers, None) is not None:
        raise ValueError("bytes are left after the last stroke")
    return images.Strokes(lines, width, height, line_width / 10)


def _zigzag(n: int) -> int:
    return 2 * n if n >= 0 else -2 * n - 1


def _unzigzag(n: int) -> int:
    return n // 2 if n % 2 == 0 else -(n + 1) // 2


def _varint(n: int) -> bytes:
    """LEB128: seven bits a byte, the high bit set on every byte but the last."""
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _varints(payload: bytes, start: int) -> Iterator[int]:
    value, shift = 0, 0
    for byte in payload[start:]:
        value |= (byte & 0x7F) << shift
        shift += 7
        if shift > 35:
            raise ValueError("a number is too long")
        if not byte & 0x80:
            yield value
            value, shift = 0, 0
    if shift:
        raise ValueError("the last number is cut short")


def _short(text: str) -> str:
    return repr(text) if len(text) <= 40 else repr(text[:37] + "...")
