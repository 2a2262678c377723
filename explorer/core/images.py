"""What a user gives (file bytes, PIL image, NumPy array, canvas strokes) as a model input, or an InputError.

Every input goes through one function, `model_view`: the image the model sees, as uint8, after
resizing and cropping but before normalization. `to_input` only scales it to [0, 1] and applies
the card's (x - mean) / std, so the picture the app shows and the tensor the model gets agree.

The card's `preprocess` picks the geometry:
- "mnist": MNIST's own preprocessing (LeCun et al., "Gradient-based learning applied to document
  recognition", 1998, and the MNIST page): the digit, white on black, is scaled so that its larger
  side fits a 20x20 box (aspect ratio kept, antialiased), then placed in a 28x28 field so that the
  centre of mass of its intensities lies at pixel (14, 14). (The shipped MNIST test digits all have
  their centre of mass within half a pixel of (14, 14) in array-index coordinates.) Uploads of dark
  ink on light paper are inverted first; on a transparent background the opaque strokes are the ink.
- "imagenet": torchvision's classic evaluation transform, Resize(256) then CenterCrop(224),
  with PIL's antialiased bilinear filter (the crop is resampled directly from the source, which
  agrees with resizing the whole image within one grey level).
- "resize": any other model: straight to the card's height x width, bilinear.
Transparency is composited over white for photos. Files are decoded by Pillow, upright (EXIF
orientation), first frame only, and refused when empty, damaged, truncated, too large or a
decompression bomb.

Tests (tests/core/test_images.py) check: re-preprocessed MNIST test digits against the originals
and against scipy.ndimage.center_of_mass; the ImageNet crop against resize-then-crop of the whole
image; every PIL mode against the same picture in RGB; EXIF orientation against a rotated copy;
the exact message for each file in a corpus of bad files; and that any array gives a finite tensor
or an InputError (hypothesis).
"""

from __future__ import annotations

import codecs
import io
import math
import numbers
import struct
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageOps
from torch import Tensor

from explorer.core.card import ModelCard
from explorer.errors import InputError, choice

MAX_BYTES = 10 * 1024 * 1024  # an uploaded file
MAX_SIDE = 8192               # px, any side of an image, array or canvas
MAX_POINTS = 100_000          # in one drawing
FORMATS = "PNG, JPEG, GIF, BMP, WebP or TIFF"
PILLOW_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")  # JPEG includes MPO, as phones save them

MNIST_SIDE = 28       # px, the field
MNIST_BOX = 20        # px, the box the digit's larger side is scaled to
MNIST_CENTRE = 14.0   # px, where the centre of mass goes (row and column index)
INK_FRACTION = 0.1    # of the brightest ink: fainter pixels are paper noise, outside the digit
MIN_CONTRAST = 0.1    # ink must be this much brighter than the paper (of 1.0), or the image is blank
WORK_SIDE = 1024      # px: larger uploads are shrunk before finding a 20 px digit in them
IMAGENET_RESIZE = 256 / 224  # Resize(256) before CenterCrop(224)
DEFAULT_LINE_WIDTH = 20.0    # px, on the app's 280x280 canvas: about MNIST's 2 px strokes at 28x28
SUPERSAMPLE = 4              # drawings on small canvases are drawn this much larger, then averaged down


@dataclass(frozen=True)
class Strokes:
    """A drawing from a browser canvas: polylines in canvas pixels, origin at the top-left corner.

    Lists (as in JSON) are accepted and stored as tuples; invalid data raises an InputError.
    """

    strokes: tuple[tuple[tuple[float, float], ...], ...]
    width: int
    height: int
    line_width: float = DEFAULT_LINE_WIDTH

    def __post_init__(self) -> None:
        width, height = _canvas_side("width", self.width), _canvas_side("height", self.height)
        object.__setattr__(self, "width", width)
        object.__setattr__(self, "height", height)
        object.__setattr__(self, "line_width", _line_width(self.line_width, max(width, height)))
        object.__setattr__(self, "strokes", _polylines(self.strokes, width, height))

    @classmethod
    def from_dict(cls, data: Mapping) -> Strokes:
        """`{"strokes": [[[x, y], ...], ...], "width": W, "height": H, "line_width": optional}`."""
        keys, required = set(data), {"strokes", "width", "height"}
        if not required <= keys or not keys <= required | {"line_width"}:
            raise InputError(f"a drawing has keys {sorted(map(str, keys))}; expected 'strokes', 'width', "
                             "'height' and optionally 'line_width'.")
        return cls(data["strokes"], data["width"], data["height"], data.get("line_width", DEFAULT_LINE_WIDTH))


def to_input(obj: object, card: ModelCard) -> Tensor:
    """The model input for `obj`: (1, C, H, W) float32, scaled to [0, 1] then (x - mean) / std."""
    return view_to_input(model_view(obj, card), card)


def view_to_input(view: np.ndarray, card: ModelCard) -> Tensor:
    """`to_input` from what `model_view` gave: for a caller that shows the view too and prepares it once."""
    channels = card.input_shape[0]
    if len(card.mean) != channels or len(card.std) != channels:
        raise InputError(f"{card.name} has {channels} input channels but mean {card.mean} and std {card.std}; "
                         "give one mean and one std per channel.")
    scaled = torch.from_numpy(view).float().div_(255)                    # (H, W) or (H, W, C)
    x = scaled.reshape(*scaled.shape[:2], channels).permute(2, 0, 1)    # (C, H, W)
    mean = torch.tensor(card.mean, dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(card.std, dtype=torch.float32).view(-1, 1, 1)
    return ((x - mean) / std).unsqueeze(0).contiguous()                # (1, C, H, W)


def model_view(obj: object, card: ModelCard) -> np.ndarray:
    """What the model sees, before normalization: uint8 (H, W) for one channel, (H, W, 3) for three."""
    choice(card.preprocess, PREPROCESSING, "preprocessing")
    channels, height, width = card.input_shape
    if channels not in (1, 3):
        raise InputError(f"{card.name} takes {channels} input channels; images can feed models with 1 "
                         "(grayscale) or 3 (RGB) channels.")
    return PREPROCESSING[card.preprocess](obj, channels, (height, width))


def _mnist_view(obj: object, channels: int, size: tuple[int, int]) -> np.ndarray:
    if isinstance(obj, (Strokes, Mapping)):
        drawing = _shrunk(rasterize(_as_strokes(obj)), WORK_SIDE)
        digit = mnist_digit(np.asarray(drawing, np.float32) / 255, "the drawing")
    else:
        image, subject = _as_image(obj)
        digit = mnist_digit(_digit_ink(image), subject)
    if size != digit.shape:  # a model of your own at another size: scale the 28x28 field
        digit = np.array(Image.fromarray(digit).resize(size[::-1], Image.Resampling.BILINEAR))
    return digit if channels == 1 else np.repeat(digit[:, :, None], 3, axis=2)


def _imagenet_view(obj: object, channels: int, size: tuple[int, int]) -> np.ndarray:
    return np.array(centre_crop(_photo(obj, channels), size))


def _resize_view(obj: object, channels: int, size: tuple[int, int]) -> np.ndarray:
    return np.array(_photo(obj, channels).resize(size[::-1], Image.Resampling.BILINEAR))


PREPROCESSING: dict[str, Callable[[object, int, tuple[int, int]], np.ndarray]] = {
    "mnist": _mnist_view, "imagenet": _imagenet_view, "resize": _resize_view}


def mnist_digit(ink: np.ndarray, subject: str = "the image") -> np.ndarray:
    """White-on-black ink (H, W) in [0, 1] -> a 28x28 uint8 digit placed the way MNIST's were.

    Crop to the ink's bounding box, scale its larger side to 20 px (area averaging, aspect kept), and
    put it in the 28x28 field with the centre of mass of the intensities at (14, 14), rounded to whole
    pixels and kept inside the field.
    """
    brightest = float(ink.max(initial=0.0))
    if brightest < MIN_CONTRAST:
        raise InputError(f"{subject} is blank: draw or upload a digit, dark on light or light on dark, "
                         "that fills a good part of the picture.")
    ink = np.where(ink > INK_FRACTION * brightest, ink / brightest, 0).astype(np.float32)  # strongest ink = 1
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    crop = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]  # (h, w), the bounding box of the ink
    scale = MNIST_BOX / max(crop.shape)
    h, w = (max(1, round(n * scale)) for n in crop.shape)
    area_or_bilinear = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR  # neither rings
    digit = np.asarray(Image.fromarray(crop).resize((w, h), area_or_bilinear)).clip(0, 1)
    # Moments in float64: float32 sums put a symmetric digit's exact half-pixel centre at 9.4999994, which rounds
    # the other way.
    weights = digit.astype(np.float64)
    total = float(weights.sum())
    assert total > 0, "area averaging and bilinear interpolation keep the crop's positive ink"
    centre_row = float(weights.sum(axis=1) @ np.arange(h)) / total
    centre_col = float(weights.sum(axis=0) @ np.arange(w)) / total
    top = min(max(round(MNIST_CENTRE - centre_row), 0), MNIST_SIDE - h)
    left = min(max(round(MNIST_CENTRE - centre_col), 0), MNIST_SIDE - w)
    field = np.zeros((MNIST_SIDE, MNIST_SIDE), np.float32)
    field[top:top + h, left:left + w] = digit
    return np.rint(field * 255).astype(np.uint8)


def centre_crop(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """torchvision's Resize(256) + CenterCrop(224), scaled to `size` (h, w), in one resampling.

    Only the crop's box of the source is resampled, with the same filter windows as resizing the
    whole image (PIL's filter reads past the box edges), so a thin panorama needs no huge
    intermediate. PIL rounds its two passes in another order then: values agree within one level.
    """
    crop_h, crop_w = size
    short_side = int(min(size) * IMAGENET_RESIZE)
    w, h = image.size
    if w <= h:
        new_w, new_h = short_side, int(short_side * h / w)
    else:
        new_w, new_h = int(short_side * w / h), short_side
    top, left = int(round((new_h - crop_h) / 2.0)), int(round((new_w - crop_w) / 2.0))
    sx, sy = w / new_w, h / new_h
    box = (left * sx, top * sy, (left + crop_w) * sx, (top + crop_h) * sy)
    return image.resize((crop_w, crop_h), Image.Resampling.BILINEAR, box=box)


def rasterize(strokes: Strokes) -> Image.Image:
    """The drawing at canvas size: white round-capped lines on black, mode "L", antialiased."""
    scale = SUPERSAMPLE if max(strokes.width, strokes.height) * SUPERSAMPLE <= 2048 else 1
    image = Image.new("L", (strokes.width * scale, strokes.height * scale), 0)
    draw = ImageDraw.Draw(image)
    radius = strokes.line_width * scale / 2
    for stroke in strokes.strokes:
        points = [(x * scale, y * scale) for x, y in stroke]
        if len(points) > 1:
            draw.line(points, fill=255, width=max(1, round(strokes.line_width * scale)), joint="curve")
        for x, y in points:  # round caps and joins, and a dot for a one-point stroke
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=255)
    return image.reduce(scale) if scale > 1 else image


def open_image(data: bytes, filename: str = "upload") -> Image.Image:
    """Decode an uploaded file: upright (EXIF orientation), first frame, fully loaded; or an InputError."""
    if len(data) == 0:
        raise InputError(f"{filename} is empty (0 bytes); expected an image file ({FORMATS}). "
                         "Choose the file again.")
    if len(data) > MAX_BYTES:
        raise InputError(f"{filename} is {len(data) / 2**20:.1f} MB; the limit is {MAX_BYTES // 2**20} MB. "
                         "Upload a smaller image, or save it as JPEG.")
    try:
        image = Image.open(io.BytesIO(data), formats=PILLOW_FORMATS)
    except Image.UnidentifiedImageError:
        raise InputError(f"{filename} is not an image: found {_describe(data)}; expected a {FORMATS} file. "
                         "Save or export it in one of these formats and try again.") from None
    except Image.DecompressionBombError as e:  # over twice Image.MAX_IMAGE_PIXELS
        raise _bomb(filename, str(e)) from None
    except _DECODE_ERRORS as e:
        raise _damaged(filename, "image", e) from None
    # Pillow only warns between MAX_IMAGE_PIXELS and twice that. Refused here rather than by turning the
    # warning into an error: warnings.catch_warnings() swaps process-wide filters, unsafe across threads.
    if image.width * image.height > Image.MAX_IMAGE_PIXELS:
        raise _bomb(filename, f"{image.width}×{image.height} = {image.width * image.height:,} pixels, over "
                              f"Pillow's limit of {Image.MAX_IMAGE_PIXELS:,}")
    _check_size(image.size, filename)
    try:
        image.load()  # ImageFile.LOAD_TRUNCATED_IMAGES stays False: a cut-off file is an error
        return ImageOps.exif_transpose(image)
    except _DECODE_ERRORS as e:
        raise _damaged(filename, image.format, e) from None


_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError, struct.error,
                  zlib.error)


def _bomb(filename: str, detail: str) -> InputError:
    return InputError(f"{filename} declares more pixels than can be decoded safely ({detail}); the largest side "
                      f"may be {MAX_SIDE} px. Shrink the image and try again.")


def _damaged(filename: str, kind: str | None, error: Exception) -> InputError:
    reason = str(error) or type(error).__name__
    return InputError(f"{filename} is a damaged or incomplete {kind or 'image'} file ({reason}); expected a "
                      f"complete {FORMATS} image. Upload it again, or open and re-save it in an image editor.")


def _describe(data: bytes) -> str:
    """What a file that is not an image seems to be, for the error message."""
    head = data[:1024]
    if head.startswith(b"%PDF"):
        return "a PDF document"
    if head[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypavif"):
        return "a HEIC/AVIF photo (as phones save them)"
    if head.startswith(b"PK\x03\x04"):
        return "a ZIP archive (or a Word, PowerPoint or notebook bundle)"
    try:  # an incremental decoder accepts a character cut at the 1 KB boundary
        text = codecs.getincrementaldecoder("utf-8")().decode(head)
    except UnicodeDecodeError:
        return f"unrecognised data starting with {data[:8].hex(' ')}"
    if "<svg" in text.lower():
        return "an SVG drawing (vector graphics)"
    if all(c.isprintable() or c.isspace() for c in text):
        return "text"
    return f"unrecognised data starting with {data[:8].hex(' ')}"


def _check_size(size: tuple[int, int], subject: str) -> None:
    w, h = size
    if w == 0 or h == 0:
        raise InputError(f"{subject} is {w}×{h} px and has no pixels; expected an image at least 1×1 px.")
    if max(w, h) > MAX_SIDE:
        raise InputError(f"{subject} is {w}×{h} px; the largest side may be {MAX_SIDE} px. "
                         "Shrink the image and try again.")


def _as_image(obj: object) -> tuple[Image.Image, str]:
    """Bytes, PIL image or array as an upright 8-bit PIL image ("L", "LA", "RGB" or "RGBA"), and its name."""
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return _standard_mode(open_image(bytes(obj)), "upload"), "upload"
    if isinstance(obj, Image.Image):
        _check_size(obj.size, "the image")
        try:
            obj.load()
            return _standard_mode(ImageOps.exif_transpose(obj), "the image"), "the image"
        except _DECODE_ERRORS as e:
            raise _damaged("the image", obj.format, e) from None
    if isinstance(obj, np.ndarray):
        return _array_image(obj, "the array"), "the array"
    raise InputError(
        f"cannot use a {type(obj).__module__}.{type(obj).__qualname__} as an image; expected the bytes of an "
        f"image file ({FORMATS}), a PIL image, a NumPy array (height × width, or height × width × 1, 3 or 4 "
        "channels) or canvas strokes. For a file on disk, pass Path(name).read_bytes().")


def _standard_mode(image: Image.Image, subject: str) -> Image.Image:
    """Any PIL mode as 8-bit "L", "LA", "RGB" or "RGBA"; 16- and 32-bit values are scaled, not clipped."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "F"):
        return _array_image(np.asarray(image), subject)
    if image.mode == "I":  # 32-bit integers: 8-bit values if they fit, else 16-bit ones
        values = np.asarray(image)
        is_16_bit = values.size and values.min() >= 0 and 255 < values.max() <= 65535
        return _array_image(values.astype(np.uint16) if is_16_bit else values, subject)
    if image.mode in ("LA", "La", "PA") or (image.mode == "L" and "transparency" in image.info):
        return image.convert("LA")
    if image.mode in ("RGBA", "RGBa") or "transparency" in image.info:
        return image.convert("RGBA")
    return image.convert("L" if image.mode in ("1", "L") else "RGB")


def _array_image(array: np.ndarray, subject: str) -> Image.Image:
    """An (H, W) or (H, W, 1|2|3|4) array as an 8-bit PIL image: uint8 as is, uint16 / 257, floats in [0, 1] * 255."""
    shape = array.shape
    if array.ndim not in (2, 3) or (array.ndim == 3 and shape[2] not in (1, 2, 3, 4)):
        hint = (" If the channels come first, use array.transpose(1, 2, 0)." if array.ndim == 3 and
                shape[0] in (1, 3, 4) else " Drop the batch axis: array[0]." if array.ndim == 4 else "")
        raise InputError(f"{subject} has shape {shape}; expected (height, width) for grayscale or "
                         f"(height, width, channels) with 1, 3 or 4 channels.{hint}")
    if array.size == 0:
        raise InputError(f"{subject} has shape {shape} and no pixels; expected at least 1×1 pixels.")
    _check_size((shape[1], shape[0]), subject)
    kind = array.dtype.kind
    if kind == "b":
        array = array.astype(np.uint8) * 255
    elif kind == "f":
        finite = np.isfinite(array)
        if not finite.all():
            raise InputError(f"{subject} contains {array.size - int(finite.sum())} NaN or infinite values; "
                             "expected finite values in [0, 1]. Replace them first, e.g. with np.nan_to_num.")
        lo, hi = float(array.min()), float(array.max())
        if lo < 0 or hi > 1:
            raise InputError(f"{subject} holds floats from {lo:g} to {hi:g}; expected floats in [0, 1]. "
                             "Divide by 255 if they are 0..255, or rescale with (a - a.min()) / (a.max() - a.min()).")
        array = np.rint(array.astype(np.float32) * 255).astype(np.uint8)
    elif kind == "u" and array.dtype.itemsize == 2:
        array = np.rint(array / 257).astype(np.uint8)  # 65535 / 255 = 257
    elif kind in "ui":
        lo, hi = int(array.min()), int(array.max())
        if lo < 0 or hi > 255:
            raise InputError(f"{subject} holds integers from {lo} to {hi} ({array.dtype}); expected 0..255 for "
                             "an 8-bit image. Use dtype uint16 for 16-bit images, or floats in [0, 1].")
        array = array.astype(np.uint8)
    else:
        raise InputError(f"{subject} has dtype {array.dtype}; expected uint8 (0..255), uint16 (0..65535), "
                         "bool, or floats in [0, 1].")
    channels = 1 if array.ndim == 2 else shape[2]
    array = array.reshape(shape[0], shape[1]) if channels == 1 else array  # (H, W) or (H, W, C)
    return Image.fromarray(np.ascontiguousarray(array))


def _photo(obj: object, channels: int) -> Image.Image:
    """The input as "L" (1 channel) or "RGB" (3), transparency over white; drawings as dark lines on white."""
    if isinstance(obj, (Strokes, Mapping)):
        image = ImageOps.invert(rasterize(_as_strokes(obj)))
    else:
        image, _ = _as_image(obj)
        if image.mode in ("LA", "RGBA"):
            white = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(white, image.convert("RGBA"))
    return image.convert("L" if channels == 1 else "RGB")


def _digit_ink(image: Image.Image) -> np.ndarray:
    """White-on-black ink (H, W) in [0, 1] above the paper's level, from an upload or array."""
    image = _shrunk(image, WORK_SIDE)
    if image.mode in ("LA", "RGBA"):
        alpha = np.asarray(image.getchannel("A"), np.float32) / 255
        clear = float(np.median(_border(alpha)))
        if clear < 0.5:  # a drawing on a transparent background: what is opaque is ink
            return np.clip(alpha - clear, 0, 1)
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, image.convert("RGBA"))
    gray = np.asarray(image.convert("L"), np.float32) / 255
    if np.median(_border(gray)) > 0.5:  # dark ink on light paper: MNIST digits are light on dark
        gray = 1 - gray
    return np.clip(gray - np.median(_border(gray)), 0, 1)


def _border(a: np.ndarray) -> np.ndarray:
    """The pixels of a frame about 5% of the smaller side wide: what the paper looks like."""
    t = max(1, min(a.shape) // 20)
    return np.concatenate([a[:t].ravel(), a[-t:].ravel(), a[:, :t].ravel(), a[:, -t:].ravel()])


def _shrunk(image: Image.Image, side: int) -> Image.Image:
    """The image with its larger side at most `side` px (area averaging: no ringing), or the image itself."""
    if max(image.size) <= side:
        return image
    scale = side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BOX)


def _as_strokes(obj: Strokes | Mapping) -> Strokes:
    return obj if isinstance(obj, Strokes) else Strokes.from_dict(obj)


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _canvas_side(name: str, value: object) -> int:
    if not (_is_number(value) and float(value) == int(value) and 1 <= value <= MAX_SIDE):
        raise InputError(f"the canvas {name} is {value!r}; expected a whole number of pixels from 1 to {MAX_SIDE}.")
    return int(value)


def _line_width(value: object, canvas_side: int) -> float:
    if not (_is_number(value) and 0 < value <= canvas_side):
        raise InputError(f"the line width is {value!r}; expected a number of pixels above 0 and at most the "
                         f"canvas size ({canvas_side}).")
    return float(value)


def _polylines(strokes: object, width: int, height: int) -> tuple[tuple[tuple[float, float], ...], ...]:
    """Strokes as tuples of (x, y) floats, checked: numbers, finite, near the canvas, not too many."""
    if not _is_sequence(strokes) or not all(_is_sequence(s) for s in strokes):
        raise InputError(f"the strokes are {_short(strokes)}; expected a list of strokes, each a list of [x, y] "
                         "points in canvas pixels.")
    if sum(len(s) for s in strokes) > MAX_POINTS:
        raise InputError(f"the drawing has {sum(len(s) for s in strokes):,} points; at most {MAX_POINTS:,} are "
                         "accepted. Simplify the strokes or send fewer points.")
    result = []
    for i, stroke in enumerate(strokes):
        line = []
        for j, point in enumerate(stroke):
            if not (_is_sequence(point) and len(point) == 2 and all(_is_number(v) for v in point)):
                raise InputError(f"strokes[{i}][{j}] is {_short(point)}; expected [x, y], two finite numbers "
                                 "(canvas pixels from the top-left corner).")
            x, y = float(point[0]), float(point[1])
            if not (-width <= x <= 2 * width and -height <= y <= 2 * height):
                raise InputError(f"strokes[{i}][{j}] is at ({x:g}, {y:g}), far outside the {width}×{height} "
                                 "canvas; expected canvas pixels from the top-left corner.")
            line.append((x, y))
        result.append(tuple(line))
    return tuple(result)


def _is_sequence(value: object) -> bool:
    return isinstance(value, Sequence | np.ndarray) and not isinstance(value, (str, bytes))


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
