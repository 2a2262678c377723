"""User images to model inputs: checked against MNIST's own digits, scipy, torch and PIL references,
and against a corpus of bad files, each with its exact message."""

from __future__ import annotations

import io
import math
import re
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image, ImageDraw, ImageFilter
from scipy import ndimage

from explorer.core import data, images, zoo
from explorer.core.card import ModelCard
from explorer.core.images import MAX_BYTES, Strokes, model_view, open_image, to_input
from explorer.errors import InputError

BLANK = "is blank: draw or upload a digit, dark on light or light on dark, that fills a good part of the picture."


def card(preprocess: str, shape=(1, 28, 28), mean=None, std=None) -> ModelCard:
    channels = shape[0]
    return ModelCard(
        name=f"test-{preprocess}", family="cnn", task="test", architecture="custom", input_shape=shape,
        preprocess=preprocess, mean=mean or (0.1307,) * channels, std=std or (0.3081,) * channels,
        labels=tuple("0123456789"), n_params=0, macs=0, top1=None, evaluated_on="", evaluated_date="",
        evaluated_by="", source="", license="", weights="", sha256="")


MNIST = card("mnist")
IMAGENET = card("imagenet", (3, 224, 224), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
RESIZE_GRAY = card("resize", (1, 32, 24))
RESIZE_RGB = card("resize", (3, 24, 40), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
CARDS = [MNIST, IMAGENET, RESIZE_GRAY, RESIZE_RGB]


@pytest.fixture
def np_rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def png(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **options)
    return buffer.getvalue()


def digit_on_paper() -> Image.Image:
    """A dark "7" with grey antialiased edges on light paper, 64x48, grey levels only."""
    ink = Image.new("L", (48, 64), 0)
    draw = ImageDraw.Draw(ink)
    draw.rectangle((8, 8, 40, 16), fill=255)
    draw.line([(38, 12), (20, 56)], fill=255, width=7)
    ink = ink.resize((24, 32), Image.Resampling.BOX).resize((48, 64), Image.Resampling.BILINEAR)
    return Image.fromarray(230 - (np.asarray(ink, np.float32) * 210 / 255).round().astype(np.uint8))


def ascii_art(view: np.ndarray) -> str:  # for failure messages
    return "\n".join("".join("#" if v > 127 else "." if v > 0 else " " for v in row) for row in view)


# ---------------------------------------------------------------------------------------------
# A corpus of bad files: each gives its message, and a good image still converts afterwards.

def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_declaring(width: int, height: int) -> bytes:
    """A tiny 1-bit PNG whose header declares width x height pixels."""
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b"")


def noise_image(rng: np.random.Generator, size=(96, 64)) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def bad_file_bytes(rng: np.random.Generator) -> dict[str, bytes]:
    good_png = png(noise_image(rng))
    jpeg = io.BytesIO()
    noise_image(rng).save(jpeg, "JPEG", quality=90)
    return {
        "empty.png": b"",
        "random.bin": b"\xfe\xed" + rng.integers(0, 256, 2000, dtype=np.uint8).tobytes(),
        "notes.txt": b"These are my notes, not an image.\n",
        "truncated.png": good_png[:len(good_png) // 2],
        "truncated.jpg": jpeg.getvalue()[:len(jpeg.getvalue()) // 2],
        "corrupt.png": good_png[:33] + png_chunk(b"IDAT", b"this is not deflate data" * 20) + png_chunk(b"IEND", b""),
        "bomb.png": png_declaring(20_000, 20_000),
        "wide.png": png_declaring(9000, 10),
        "huge.png": good_png + b"\0" * MAX_BYTES,
        "paper.pdf": b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n",
        "drawing.svg": b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="28" height="28">'
                       b'<path d="M14 4 L14 24" stroke="white"/></svg>\n',
        "photo.heic": b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\0" * 100,
    }


NOT_AN_IMAGE = ("; expected a PNG, JPEG, GIF, BMP, WebP or TIFF file. Save or export it in one of these formats and "
                "try again.")
DAMAGED = ("; expected a complete PNG, JPEG, GIF, BMP, WebP or TIFF image. Upload it again, or open and re-save it "
           "in an image editor.")
BAD_FILE_MESSAGES = {
    "empty.png": re.escape("empty.png is empty (0 bytes); expected an image file (PNG, JPEG, GIF, BMP, WebP or TIFF). "
                           "Choose the file again."),
    "random.bin": re.escape("random.bin is not an image: found unrecognised data starting with fe ed ")
                  + r"[0-9a-f ]{17}" + re.escape(NOT_AN_IMAGE),
    "notes.txt": re.escape("notes.txt is not an image: found text" + NOT_AN_IMAGE),
    "truncated.png": re.escape("truncated.png is a damaged or incomplete PNG file (") + r".+\)" + re.escape(DAMAGED),
    "truncated.jpg": re.escape("truncated.jpg is a damaged or incomplete JPEG file (") + r".+\)" + re.escape(DAMAGED),
    "corrupt.png": re.escape("corrupt.png is a damaged or incomplete PNG file (") + r".+\)" + re.escape(DAMAGED),
    "bomb.png": re.escape("bomb.png declares more pixels than can be decoded safely (") + r".*400000000 pixels.*"
                + re.escape("); the largest side may be 8192 px. Shrink the image and try again."),
    "wide.png": re.escape("wide.png is 9000×10 px; the largest side may be 8192 px. Shrink the image and try again."),
    "huge.png": re.escape("huge.png is 10.0 MB; the limit is 10 MB. Upload a smaller image, or save it as JPEG."),
    "paper.pdf": re.escape("paper.pdf is not an image: found a PDF document" + NOT_AN_IMAGE),
    "drawing.svg": re.escape("drawing.svg is not an image: found an SVG drawing (vector graphics)" + NOT_AN_IMAGE),
    "photo.heic": re.escape("photo.heic is not an image: found a HEIC/AVIF photo (as phones save them)" + NOT_AN_IMAGE),
}


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bad_files")
    for name, content in bad_file_bytes(np.random.default_rng()).items():
        (folder / name).write_bytes(content)
    return folder


@pytest.mark.parametrize("name", sorted(BAD_FILE_MESSAGES))
def test_bad_file_gives_its_message_and_a_good_image_still_converts(name, bad_files, np_rng):
    content = (bad_files / name).read_bytes()
    with pytest.raises(InputError, match=f"^{BAD_FILE_MESSAGES[name]}$"):
        open_image(content, filename=name)
    with pytest.raises(InputError):
        to_input(content, IMAGENET)
    good = noise_image(np_rng)
    assert torch.equal(to_input(png(good), IMAGENET), to_input(good, IMAGENET))


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow's own, then refused
@pytest.mark.parametrize(("side", "detail"), [
    (40, "40×40 = 1,600 pixels, over Pillow's limit of 1,000"),  # Pillow only warns
    (100, "Image size (10000 pixels) exceeds limit of 2000 pixels, could be decompression bomb DOS attack."),
])
def test_decompression_bombs_are_refused_when_pillow_warns_and_when_it_raises(side, detail, monkeypatch):
    content = png(Image.new("L", (side, side), 128))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    filters = list(warnings.filters)
    with pytest.raises(InputError) as raised:
        open_image(content)
    assert str(raised.value) == (f"upload declares more pixels than can be decoded safely ({detail}); the largest "
                                 "side may be 8192 px. Shrink the image and try again.")
    assert warnings.filters == filters  # no process-wide warning filter is changed, not even briefly


def test_an_animation_gives_its_first_frame():
    frames = [Image.new("L", (20, 10), 0), Image.new("L", (20, 10), 255)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100)
    assert np.asarray(open_image(buffer.getvalue()).convert("L")).max() == 0


def test_the_size_limit_is_ten_mebibytes():
    assert MAX_BYTES == 10 * 1024 * 1024
    assert images.MAX_SIDE == 8192


# ---------------------------------------------------------------------------------------------
# Every mode, array type and alpha channel gives the same view as the plain picture.

def as_rgb(image): return image.convert("RGB")
def as_rgba(image): return image.convert("RGBA")
def as_la(image): return image.convert("LA")
def as_palette(image): return image.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=256)
def as_cmyk(image): return image.convert("RGB").convert("CMYK")
def as_i16(image): return Image.fromarray(np.asarray(image).astype(np.uint16) * 257)
def as_i32_8bit(image): return Image.fromarray(np.asarray(image).astype(np.int32))
def as_i32_16bit(image): return Image.fromarray(np.asarray(image).astype(np.int32) * 257)
def as_float_image(image): return Image.fromarray(np.asarray(image, np.float32) / 255)
def as_png_bytes(image): return png(image)
def as_i16_png_bytes(image): return png(as_i16(image))
def as_bmp_bytes(image): return (buffer := io.BytesIO(), image.save(buffer, "BMP"))[0].getvalue()
def as_tiff_bytes(image): return (buffer := io.BytesIO(), as_cmyk(image).save(buffer, "TIFF"))[0].getvalue()
def as_webp_bytes(image): return (buffer := io.BytesIO(), image.save(buffer, "WEBP", lossless=True))[0].getvalue()
def as_uint8_array(image): return np.asarray(image)
def as_hw1_array(image): return np.asarray(image)[:, :, None]
def as_rgb_array(image): return np.asarray(image.convert("RGB"))
def as_rgba_array(image): return np.asarray(image.convert("RGBA"))
def as_uint16_array(image): return np.asarray(image).astype(np.uint16) * 257
def as_float_array(image): return np.asarray(image) / 255.0
def as_int64_array(image): return np.asarray(image).astype(np.int64)


SAME_PICTURE = [as_rgb, as_rgba, as_la, as_palette, as_cmyk, as_i16, as_i32_8bit, as_i32_16bit, as_float_image,
                as_png_bytes, as_i16_png_bytes, as_bmp_bytes, as_tiff_bytes, as_webp_bytes, as_uint8_array,
                as_hw1_array, as_rgb_array, as_rgba_array, as_uint16_array, as_float_array, as_int64_array]


@pytest.mark.parametrize("model_card", CARDS, ids=lambda c: f"{c.preprocess}{c.input_shape}")
@pytest.mark.parametrize("convert", SAME_PICTURE, ids=lambda f: f.__name__)
def test_every_mode_and_array_type_gives_the_view_of_the_grey_picture(convert, model_card):
    picture = digit_on_paper()
    if convert is as_palette:
        assert convert(picture).mode == "P"  # the conversions are lossless: views must be equal
    assert np.array_equal(model_view(convert(picture), model_card), model_view(picture, model_card))


@pytest.mark.parametrize("model_card", CARDS, ids=lambda c: f"{c.preprocess}{c.input_shape}")
def test_to_input_has_the_cards_shape_and_value_range(model_card, np_rng):
    x = to_input(noise_image(np_rng, (50, 70)) if model_card is not MNIST else digit_on_paper(), model_card)
    c, h, w = model_card.input_shape
    assert x.shape == (1, c, h, w) and x.dtype == torch.float32
    mean, std = torch.tensor(model_card.mean).view(-1, 1, 1), torch.tensor(model_card.std).view(-1, 1, 1)
    pixels = x[0] * std + mean
    assert pixels.min() >= -1e-6 and pixels.max() <= 1 + 1e-6


@pytest.mark.parametrize("model_card", CARDS, ids=lambda c: f"{c.preprocess}{c.input_shape}")
def test_to_input_is_the_model_view_normalized(model_card, np_rng):
    obj = digit_on_paper() if model_card is MNIST else noise_image(np_rng, (61, 45))
    view = torch.from_numpy(model_view(obj, model_card)).float() / 255
    view = view.unsqueeze(-1) if view.dim() == 2 else view
    mean, std = torch.tensor(model_card.mean), torch.tensor(model_card.std)
    expected = ((view - mean) / std).permute(2, 0, 1).unsqueeze(0)
    torch.testing.assert_close(to_input(obj, model_card), expected, rtol=0, atol=1e-6)  # float32 rounding only


def test_transparency_is_composited_over_white_for_photos(np_rng):
    rgb = np_rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    alpha = np_rng.integers(0, 256, (30, 40, 1), dtype=np.uint8)
    rgba = np.concatenate([rgb, alpha], axis=2)
    over_white = np.rint(rgb * (alpha / 255) + 255 * (1 - alpha / 255))
    view = model_view(rgba, card("resize", (3, 30, 40)))  # same size: the view is the composite itself
    assert np.abs(view.astype(int) - over_white).max() <= 1  # Pillow composites in 8-bit integers


@pytest.mark.parametrize("ink_colour", [0, 255, 120])
def test_a_digit_drawn_on_a_transparent_background_is_a_white_digit(ink_colour):
    ink = 255 - np.asarray(digit_on_paper()).astype(np.int32)  # white on black, 25..255
    ink = np.where(ink > 30, ink, 0).astype(np.uint8)          # paper exactly transparent
    rgba = np.dstack([np.full(ink.shape, ink_colour, np.uint8)] * 3 + [ink])
    assert np.array_equal(model_view(rgba, MNIST), model_view(ink, MNIST))


def test_a_palette_digit_with_a_transparent_index_is_a_white_digit():
    mask = np.asarray(digit_on_paper()) < 128
    palette = Image.fromarray(mask.astype(np.uint8), "P")  # index 0: paper, 1: ink
    palette.putpalette([255, 255, 255, 40, 40, 40])
    content = png(palette, transparency=0)  # the tRNS chunk makes index 0 transparent
    assert Image.open(io.BytesIO(content)).mode == "P"
    assert np.array_equal(model_view(content, MNIST), model_view(mask.astype(np.uint8) * 255, MNIST))


def test_an_opaque_card_with_transparent_corners_is_read_as_paper():
    picture = np.asarray(digit_on_paper().convert("RGBA")).copy()
    picture[:3, :3, 3] = 0  # rounded corners of a scanned card
    assert np.array_equal(model_view(picture, MNIST), model_view(digit_on_paper(), MNIST))


def test_exif_orientation_is_applied():
    picture = Image.fromarray(np.add.outer(np.arange(20) * 10, np.arange(40) * 3).astype(np.uint8))  # 40 wide
    picture.paste(255, (0, 0, 8, 4))  # a marker in the top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    content = png(picture, exif=exif)
    upright = picture.transpose(Image.Transpose.ROTATE_270)  # 20 wide, 40 tall
    portrait = card("resize", (1, 40, 20))
    assert open_image(content).size == (20, 40)
    assert np.array_equal(model_view(content, portrait), np.asarray(upright))
    assert np.array_equal(model_view(Image.open(io.BytesIO(content)), portrait), np.asarray(upright))


# ---------------------------------------------------------------------------------------------
# Geometry against independent references.

def torchvision_classic(image: Image.Image) -> np.ndarray:
    """torchvision's Resize(256) + CenterCrop(224) on a PIL image, step by step (its documented algorithm)."""
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = 256, int(256 * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    resized = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    top, left = int(round((new_h - 224) / 2.0)), int(round((new_w - 224) / 2.0))
    return np.asarray(resized.crop((left, top, left + 224, top + 224)))


@pytest.mark.parametrize("size", [(300, 500), (500, 300), (224, 224), (257, 256), (90, 60), (1000, 41)])
def test_imagenet_crop_matches_torchvisions_resize_then_crop(size, np_rng):
    image = noise_image(np_rng, size).resize(size, Image.Resampling.BILINEAR)
    smooth = image.filter(ImageFilter.GaussianBlur(2))
    for picture in (image, smooth):
        ours, reference = model_view(picture, IMAGENET).astype(int), torchvision_classic(picture).astype(int)
        # The same filter windows, resampled from the crop's box: PIL then rounds its two passes to
        # 8 bits in another order (about a quarter of the values differ by one level, never more).
        assert np.abs(ours - reference).max() <= 1
        assert np.abs(ours - reference).mean() < 0.35


def test_a_thin_panorama_is_cropped_without_a_huge_intermediate():
    view = model_view(np.zeros((2, 8000), np.uint8), IMAGENET)  # whole-image resize: 256 x 1,024,000 px
    assert view.shape == (224, 224, 3)


def test_resize_matches_torch_antialiased_bilinear(np_rng):
    picture = np_rng.integers(0, 256, (90, 70, 3), dtype=np.uint8)
    x = torch.from_numpy(picture).permute(2, 0, 1)[None].float()
    reference = F.interpolate(x, size=(24, 40), mode="bilinear", antialias=True, align_corners=False)[0]
    ours = torch.from_numpy(model_view(picture, RESIZE_RGB)).permute(2, 0, 1).float()
    # PIL resamples each axis separately and rounds to 8 bits in between and at the end.
    assert (ours - reference).abs().max() <= 2
    assert (ours - reference).abs().mean() < 0.6


def centre_of_mass(view: np.ndarray) -> np.ndarray:
    return np.array(ndimage.center_of_mass(view.astype(np.float64)))


def ink_box(view: np.ndarray) -> tuple[int, int]:
    rows, cols = np.flatnonzero(view.any(axis=1)), np.flatnonzero(view.any(axis=0))
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


def students_upload(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An MNIST digit as a student's photo: dark on light paper, 6-12x larger, somewhere on a bigger sheet."""
    side = int(rng.integers(170, 340))
    sheet_h, sheet_w = side + int(rng.integers(0, 200)), side + int(rng.integers(0, 200))
    paper = np.full((sheet_h, sheet_w), 235, np.uint8)
    big = np.asarray(Image.fromarray(digit).resize((side, side), Image.Resampling.BILINEAR)).astype(np.float32)
    top, left = int(rng.integers(0, sheet_h - side + 1)), int(rng.integers(0, sheet_w - side + 1))
    paper[top:top + side, left:left + side] = np.rint(235 - big * 215 / 255).astype(np.uint8)
    return paper


def test_mnist_preprocessing_of_uploaded_mnist_digits_gives_them_back(np_rng):
    digits = data.mnist("sample")
    picked = np_rng.choice(len(digits), 40, replace=False)
    blurred_correlations, correlations = [], []
    for i in picked:
        original = digits.images[i]
        view = model_view(png(Image.fromarray(students_upload(original, np_rng))), MNIST)
        # MNIST put each digit's centre of mass at (14, 14) by whole-pixel shifts: at most half a pixel
        # off, plus 8-bit rounding of the intensities.
        assert np.abs(centre_of_mass(view) - 14).max() <= 0.55, ascii_art(view)
        assert 19 <= max(ink_box(view)) <= 20 and min(ink_box(view)) <= 20, ascii_art(view)
        # The shape is compared where MNIST placed it: MNIST's own centre of mass is up to half a pixel off (14, 14)
        # and the round trip's up to 0.55 the other way, together a whole pixel (a thin "0" then correlates 0.79
        # blurred): the view is moved by the whole pixels that best align the two centres.
        shift = np.rint(centre_of_mass(original) - centre_of_mass(view)).astype(int)
        view = np.roll(view, tuple(shift), axis=(0, 1))
        correlations.append(np.corrcoef(view.ravel(), original.ravel())[0, 1])
        blur = [ndimage.gaussian_filter(v.astype(float), 1.0) for v in (view, original)]
        blurred_correlations.append(np.corrcoef(blur[0].ravel(), blur[1].ravel())[0, 1])
    # Thin strokes lose pixel-level correlation to sub-pixel shifts of the round trip (as low as 0.55
    # for a thin "4" over the 2,000 samples); blurred by 1 px the shapes agree (aligned: at least 0.945, and a
    # mean correlation of 0.965-0.973, in 13 runs of 40 digits).
    assert min(blurred_correlations) > 0.9
    assert np.mean(correlations) > 0.95


def test_mnist_digits_at_their_own_size_are_nearly_unchanged():
    digits = data.mnist("sample").images[:200]
    views = np.stack([model_view(d, MNIST) for d in digits]).astype(int)
    per_digit = np.abs(views - digits).reshape(len(digits), -1).mean(axis=1)
    # Most come back up to rounding (the brightest pixel is stretched to 255); the 2% whose faint
    # edge pixels (< 10% of the brightest) fell outside the crop are rescaled by a pixel or two.
    assert np.median(per_digit) < 0.5 and per_digit.mean() < 1.0


@pytest.mark.parametrize("trial", range(5))
def test_mnist_digit_puts_the_centre_of_mass_where_scipy_finds_it(trial, np_rng):
    h, w = (int(n) for n in np_rng.integers(5, 300, 2))
    ink = np.zeros((h, w), np.float32)
    for _ in range(int(np_rng.integers(1, 5))):  # a few random bright rectangles
        top, left = int(np_rng.integers(0, h)), int(np_rng.integers(0, w))
        height, width = int(np_rng.integers(1, h + 1)), int(np_rng.integers(1, w + 1))
        ink[top:top + height, left:left + width] = np_rng.uniform(0.3, 1)
    view = images.mnist_digit(ink)
    assert max(ink_box(view)) == 20
    # Whole-pixel shifts put the centre of mass within half a pixel of 14 (plus 8-bit rounding), unless
    # the ink already touches the field's edge on that axis, where the shift is clipped.
    touches = [view[[0, -1]].any(), view[:, [0, -1]].any()]
    for axis, off in enumerate(np.abs(centre_of_mass(view) - 14)):
        assert off <= 0.55 or touches[axis], ascii_art(view)


def test_dark_ink_on_paper_gives_the_same_digit_as_light_ink_on_black():
    picture = np.asarray(digit_on_paper())
    assert np.array_equal(model_view(picture, MNIST), model_view(255 - picture, MNIST))


def test_a_large_photo_gives_the_digit_of_a_small_one():
    small = digit_on_paper().resize((300, 400), Image.Resampling.BILINEAR)
    large = digit_on_paper().resize((3000, 4000), Image.Resampling.BILINEAR)  # shrunk before the search
    a, b = model_view(small, MNIST).astype(float), model_view(large, MNIST).astype(float)
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.95


def test_an_mnist_card_of_another_size_and_three_channels_scales_the_field():
    view = model_view(digit_on_paper(), card("mnist", (3, 56, 56)))
    assert view.shape == (56, 56, 3) and np.array_equal(view[..., 0], view[..., 2])


# ---------------------------------------------------------------------------------------------
# Canvas strokes.

def polyline(points) -> list[list[float]]:
    return [[float(x), float(y)] for x, y in points]


def circle(cx, cy, rx, ry, n=32):
    return [(cx + rx * math.sin(2 * math.pi * t / n), cy - ry * math.cos(2 * math.pi * t / n)) for t in range(n + 1)]


DIGIT_STROKES = {  # on a 280x280 canvas, as a student would draw them
    0: [circle(140, 140, 60, 95)],
    1: [[(150, 40), (140, 240)]],
    7: [[(70, 50), (210, 50), (120, 240)]],
}


def drawing(digit: int, scale: float = 1.0, shift=(0.0, 0.0), line_width: float = 20.0) -> dict:
    strokes = [polyline((x * scale + shift[0], y * scale + shift[1]) for x, y in s) for s in DIGIT_STROKES[digit]]
    return {"strokes": strokes, "width": 280, "height": 280, "line_width": line_width}


def test_a_one_is_tall_thin_and_centred():
    view = model_view(drawing(1), MNIST)
    height, width = ink_box(view)
    assert height == 20 and width <= 5, ascii_art(view)
    assert np.abs(centre_of_mass(view) - 14).max() <= 0.55


def test_a_zero_is_a_centred_ring():
    view = model_view(drawing(0), MNIST)
    height, width = ink_box(view)
    assert height == 20 and 10 <= width <= 16, ascii_art(view)
    assert view[14, 14] == 0  # the hole
    assert np.abs(centre_of_mass(view) - 14).max() <= 0.55


def test_a_one_point_stroke_draws_a_dot():
    view = model_view({"strokes": [[[100, 100]]], "width": 280, "height": 280}, MNIST)
    assert ink_box(view) == (20, 20) and view[14, 14] == 255  # scaled up to the 20 px box, like any ink


@pytest.mark.parametrize("line_width", [6.0, 15.0, 31.0])
def test_a_rasterized_stroke_covers_its_geometric_area(line_width):
    length = 150.0
    strokes = Strokes(((( 60.0, 100.0), (60.0 + length, 100.0)),), 280, 280, line_width)
    area = np.asarray(images.rasterize(strokes), np.float64).sum() / 255
    # a stadium: a rectangle plus two half-discs; supersampled edges are accurate to a fraction of a pixel
    exact = length * line_width + math.pi * (line_width / 2) ** 2
    assert abs(area - exact) <= 0.02 * exact + 2 * length / 4


def test_a_dict_and_a_strokes_object_give_the_same_view():
    as_dict = drawing(7)
    as_object = Strokes(tuple(tuple(map(tuple, s)) for s in as_dict["strokes"]), 280, 280, 20.0)
    assert Strokes.from_dict(as_dict) == as_object
    assert np.array_equal(model_view(as_dict, MNIST), model_view(as_object, MNIST))


def test_a_drawing_on_a_photo_model_is_dark_lines_on_white():
    view = model_view(drawing(1), RESIZE_GRAY)
    assert view[0, 0] == 255 and view.min() < 64  # the 20 px line is 1.7 px wide at 24 px: blurred


BAD_STROKES = {
    "zero width": ({"strokes": [], "width": 0, "height": 280},
                   "the canvas width is 0; expected a whole number of pixels from 1 to 8192."),
    "negative height": ({"strokes": [], "width": 280, "height": -5},
                        "the canvas height is -5; expected a whole number of pixels from 1 to 8192."),
    "absurd width": ({"strokes": [], "width": 10**9, "height": 280},
                     "the canvas width is 1000000000; expected a whole number of pixels from 1 to 8192."),
    "fractional width": ({"strokes": [], "width": 280.5, "height": 280},
                         "the canvas width is 280.5; expected a whole number of pixels from 1 to 8192."),
    "text width": ({"strokes": [], "width": "280", "height": 280},
                   "the canvas width is '280'; expected a whole number of pixels from 1 to 8192."),
    "bool height": ({"strokes": [], "width": 280, "height": True},
                    "the canvas height is True; expected a whole number of pixels from 1 to 8192."),
    "nan width": ({"strokes": [], "width": float("nan"), "height": 280},
                  "the canvas width is nan; expected a whole number of pixels from 1 to 8192."),
    "zero line": ({"strokes": [], "width": 280, "height": 280, "line_width": 0},
                  "the line width is 0; expected a number of pixels above 0 and at most the canvas size (280)."),
    "nan line": ({"strokes": [], "width": 280, "height": 280, "line_width": float("nan")},
                 "the line width is nan; expected a number of pixels above 0 and at most the canvas size (280)."),
    "strokes a string": ({"strokes": "M 1 2 L 3 4", "width": 280, "height": 280},
                         "the strokes are 'M 1 2 L 3 4'; expected a list of strokes, each a list of [x, y] points "
                         "in canvas pixels."),
    "text point": ({"strokes": [[[1, 2], ["a", 1]]], "width": 280, "height": 280},
                   "strokes[0][1] is ['a', 1]; expected [x, y], two finite numbers (canvas pixels from the "
                   "top-left corner)."),
    "nan point": ({"strokes": [[[1, 2]], [[float("nan"), 1]]], "width": 280, "height": 280},
                  "strokes[1][0] is [nan, 1]; expected [x, y], two finite numbers (canvas pixels from the "
                  "top-left corner)."),
    "three numbers": ({"strokes": [[[1, 2, 3]]], "width": 280, "height": 280},
                      "strokes[0][0] is [1, 2, 3]; expected [x, y], two finite numbers (canvas pixels from the "
                      "top-left corner)."),
    "far outside": ({"strokes": [[[10, 10], [1e12, 5]]], "width": 280, "height": 280},
                    "strokes[0][1] is at (1e+12, 5), far outside the 280×280 canvas; expected canvas pixels from "
                    "the top-left corner."),
    "too many points": ({"strokes": [[[1, 1]] * 100_001], "width": 280, "height": 280},
                        "the drawing has 100,001 points; at most 100,000 are accepted. Simplify the strokes or "
                        "send fewer points."),
    "missing key": ({"strokes": [], "width": 280},
                    "a drawing has keys ['strokes', 'width']; expected 'strokes', 'width', 'height' and "
                    "optionally 'line_width'."),
    "unknown key": ({"strokes": [], "width": 280, "height": 280, "colour": "red"},
                    "a drawing has keys ['colour', 'height', 'strokes', 'width']; expected 'strokes', 'width', "
                    "'height' and optionally 'line_width'."),
    "no strokes": ({"strokes": [], "width": 280, "height": 280}, f"the drawing {BLANK}"),
    "empty strokes": ({"strokes": [[], []], "width": 280, "height": 280}, f"the drawing {BLANK}"),
}


@pytest.mark.parametrize("case", sorted(BAD_STROKES))
def test_bad_strokes_give_their_message(case):
    obj, message = BAD_STROKES[case]
    with pytest.raises(InputError) as raised:
        to_input(obj, MNIST)
    assert str(raised.value) == message
    assert to_input(drawing(7), MNIST).isfinite().all()


def test_drawn_digits_are_classified_by_the_trained_cnn():
    model = zoo.load("mnist-cnn")
    for digit in DIGIT_STROKES:
        # large and centred, then small in a corner: the MNIST preprocessing makes them the same
        for scale, shift in [(1.0, (0, 0)), (0.4, (10, 10)), (0.5, (130, 120))]:
            strokes = drawing(digit, scale, shift, line_width=20 * scale)
            with torch.no_grad():
                predicted = int(model.module(to_input(strokes, model.card)).argmax())
            assert predicted == digit, f"{digit} at scale {scale} read as {predicted}:\n" + ascii_art(
                model_view(strokes, model.card))


# ---------------------------------------------------------------------------------------------
# Bad arrays, images and objects.

BAD_ARRAYS = {
    "1-d": (np.zeros(10, np.uint8), "the array has shape (10,); expected (height, width) for grayscale or "
                                     "(height, width, channels) with 1, 3 or 4 channels."),
    "channels first": (np.zeros((3, 32, 32), np.uint8),
                       "the array has shape (3, 32, 32); expected (height, width) for grayscale or (height, width, "
                       "channels) with 1, 3 or 4 channels. If the channels come first, use array.transpose(1, 2, 0)."),
    "batch": (np.zeros((1, 28, 28, 1), np.uint8),
              "the array has shape (1, 28, 28, 1); expected (height, width) for grayscale or (height, width, "
              "channels) with 1, 3 or 4 channels. Drop the batch axis: array[0]."),
    "five channels": (np.zeros((8, 8, 5), np.uint8),
                      "the array has shape (8, 8, 5); expected (height, width) for grayscale or (height, width, "
                      "channels) with 1, 3 or 4 channels."),
    "empty": (np.zeros((0, 5), np.uint8), "the array has shape (0, 5) and no pixels; expected at least 1×1 pixels."),
    "too wide": (np.zeros((1, 9000), np.uint8),
                 "the array is 9000×1 px; the largest side may be 8192 px. Shrink the image and try again."),
    "nan": (np.array([[0.5, np.nan], [np.inf, 0.1]]),
            "the array contains 2 NaN or infinite values; expected finite values in [0, 1]. Replace them first, "
            "e.g. with np.nan_to_num."),
    "float 0..255": (np.array([[0.0, 255.0]]),
                     "the array holds floats from 0 to 255; expected floats in [0, 1]. Divide by 255 if they are "
                     "0..255, or rescale with (a - a.min()) / (a.max() - a.min())."),
    "negative float": (np.array([[-0.5, 0.5]], np.float32),
                       "the array holds floats from -0.5 to 0.5; expected floats in [0, 1]. Divide by 255 if they "
                       "are 0..255, or rescale with (a - a.min()) / (a.max() - a.min())."),
    "int out of range": (np.array([[-3, 300]]),
                         "the array holds integers from -3 to 300 (int64); expected 0..255 for an 8-bit image. "
                         "Use dtype uint16 for 16-bit images, or floats in [0, 1]."),
    "complex": (np.zeros((4, 4), np.complex64),
                "the array has dtype complex64; expected uint8 (0..255), uint16 (0..65535), bool, or floats in "
                "[0, 1]."),
    "object": (np.full((4, 4), None, object),
               "the array has dtype object; expected uint8 (0..255), uint16 (0..65535), bool, or floats in [0, 1]."),
}


@pytest.mark.parametrize("case", sorted(BAD_ARRAYS))
def test_bad_arrays_give_their_message(case):
    array, message = BAD_ARRAYS[case]
    with pytest.raises(InputError) as raised:
        to_input(array, RESIZE_RGB)
    assert str(raised.value) == message


@pytest.mark.parametrize(("image", "message"), [
    (Image.new("L", (0, 5)), "the image is 0×5 px and has no pixels; expected an image at least 1×1 px."),
    (Image.new("1", (9000, 1)), "the image is 9000×1 px; the largest side may be 8192 px. Shrink the image and "
                                "try again."),
])
def test_bad_pil_images_give_their_message(image, message):
    with pytest.raises(InputError) as raised:
        to_input(image, IMAGENET)
    assert str(raised.value) == message


@pytest.mark.parametrize("obj", ["digit.png", [[0, 1], [1, 0]], torch.zeros(1, 28, 28), None],
                         ids=["path string", "list", "tensor", "None"])
def test_other_types_are_refused_with_what_is_accepted(obj):
    with pytest.raises(InputError) as raised:
        to_input(obj, MNIST)
    kind = f"{type(obj).__module__}.{type(obj).__qualname__}"
    assert str(raised.value) == (
        f"cannot use a {kind} as an image; expected the bytes of an image file (PNG, JPEG, GIF, BMP, WebP or "
        "TIFF), a PIL image, a NumPy array (height × width, or height × width × 1, 3 or 4 channels) or canvas "
        "strokes. For a file on disk, pass Path(name).read_bytes().")


@pytest.mark.parametrize("blank", [np.full((30, 30), 255, np.uint8), np.zeros((30, 30)),
                                   np.full((9, 9, 4), 0, np.uint8), np.full((40, 40), 0.5)],
                         ids=["white paper", "black", "transparent", "grey"])
def test_an_image_without_ink_is_blank_for_mnist(blank):
    with pytest.raises(InputError) as raised:
        to_input(blank, MNIST)
    assert str(raised.value) == f"the array {BLANK}"


def test_a_lazily_opened_damaged_pil_image_is_refused(np_rng):
    content = png(noise_image(np_rng))
    lazy = Image.open(io.BytesIO(content[:len(content) // 2]))  # Pillow reads only the header here
    with pytest.raises(InputError, match=re.escape("the image is a damaged or incomplete PNG file (")):
        to_input(lazy, IMAGENET)


def test_a_blank_upload_names_the_upload():
    with pytest.raises(InputError) as raised:
        to_input(png(Image.new("RGB", (50, 50), "white")), MNIST)
    assert str(raised.value) == f"upload {BLANK}"


def test_a_card_with_four_channels_or_mismatched_normalization_is_refused():
    with pytest.raises(InputError) as raised:
        to_input(digit_on_paper(), card("resize", (4, 8, 8)))
    assert str(raised.value) == ("test-resize takes 4 input channels; images can feed models with 1 (grayscale) "
                                 "or 3 (RGB) channels.")
    with pytest.raises(InputError) as raised:
        to_input(digit_on_paper(), card("resize", (3, 8, 8), mean=(0.5,), std=(0.5,)))
    assert str(raised.value) == ("test-resize has 3 input channels but mean (0.5,) and std (0.5,); give one mean "
                                 "and one std per channel.")
    with pytest.raises(InputError, match=r"^no preprocessing named 'crop'; choose one of: 'mnist', 'imagenet', "
                                         r"'resize'$"):
        to_input(digit_on_paper(), card("crop"))


def test_to_input_does_not_mutate_the_callers_objects():
    array = np.asarray(digit_on_paper().convert("RGBA")).copy()
    image = digit_on_paper()
    strokes = drawing(7)
    before = (array.copy(), image.tobytes(), repr(strokes))
    for model_card in CARDS:
        to_input(array, model_card), to_input(image, model_card), to_input(strokes, model_card)
    assert np.array_equal(array, before[0]) and image.tobytes() == before[1] and repr(strokes) == before[2]


# ---------------------------------------------------------------------------------------------
# Property: any array gives a finite (1, C, H, W) tensor or an InputError, never another exception.

DTYPES = [np.uint8, np.uint16, np.int8, np.int64, np.float16, np.float32, np.float64, np.bool_, np.complex64]
SHAPES = st.tuples(st.integers(0, 12), st.integers(0, 12)).flatmap(
    lambda hw: st.sampled_from([hw, (*hw, 1), (*hw, 2), (*hw, 3), (*hw, 4), (*hw, 5), (1, *hw, 3), hw[:1]]))


@settings(max_examples=60, deadline=None)
@given(array=st.sampled_from(DTYPES).flatmap(lambda dtype: hnp.arrays(dtype, SHAPES)))
def test_any_array_gives_a_finite_input_or_an_input_error(array):
    for model_card in (MNIST, IMAGENET, RESIZE_GRAY):
        try:
            x = to_input(array, model_card)
        except InputError:
            continue
        assert x.shape == (1, *model_card.input_shape) and x.dtype == torch.float32 and x.isfinite().all()


POINTS = st.lists(st.tuples(st.floats(-400, 700, allow_nan=False), st.floats(-400, 700, allow_nan=False)),
                  min_size=1, max_size=6)


@settings(max_examples=40, deadline=None)
@given(strokes=st.lists(POINTS, max_size=3), side=st.integers(1, 400), line_width=st.floats(0.5, 40))
def test_any_drawing_gives_a_finite_input_or_an_input_error(strokes, side, line_width):
    drawn = {"strokes": [[list(p) for p in s] for s in strokes], "width": side, "height": side,
             "line_width": line_width}
    for model_card in (MNIST, RESIZE_GRAY):
        try:
            x = to_input(drawn, model_card)
        except InputError:
            continue
        assert x.shape == (1, *model_card.input_shape) and x.isfinite().all()
