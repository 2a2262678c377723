"""The input picker, headless: gallery picks, uploads and drawings reach the state, and what it shows.

Every expected prediction comes from the independent path trace.run(model.module, images.to_input(...));
every shown image is decoded from its PNG and compared with images.model_view or the gallery source.
"""

from __future__ import annotations

import base64
import html
import io
import os
import random

import numpy as np
import panel as pn
import pytest
from panel.models.esm import DataEvent
from PIL import Image

from explorer.core import images, trace, zoo
from explorer.core.gallery import PHOTOS, mnist_gallery, photo_gallery
from explorer.errors import InputError
from explorer.session.state import ExplorerState
from explorer.ui import inputs
from explorer.ui.camera import CAPTURE_PX
from explorer.ui.inputs import CAMERA, DRAWING, InputPicker, too_large_message

HAS_MOBILENET = zoo.is_available("mobilenet_v2")
VERTICAL_LINE = [[[140.0, 40.0 + 20 * i] for i in range(11)]]  # a '1', down the middle of the 280x280 canvas


@pytest.fixture
def rnd() -> random.Random:
    seed = int.from_bytes(os.urandom(4), "little")
    print(f"random seed {seed}")  # pytest shows it on failure
    return random.Random(seed)


@pytest.fixture
def picker() -> InputPicker:
    return InputPicker(state=ExplorerState())


def traced_label(model_name: str, source: object) -> str:
    model = zoo.load(model_name)
    logits = trace.run(model.module, images.to_input(source, model.card)).logits
    return model.labels[int(logits.argmax())]


def top1(picker: InputPicker) -> str:
    return picker.state.inference.top(1)[0][0]


def shown_view(picker: InputPicker) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(picker.view_image.object)))


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def open_image_error(data: bytes, filename: str) -> str:
    with pytest.raises(InputError) as error:
        images.open_image(data, filename)
    return str(error.value)


def test_a_new_picker_shows_the_first_gallery_digit_as_its_png_model_view(picker):
    first = mnist_gallery()[0]
    card = picker.state.inference.model.card
    assert picker.state.inference.description == first.description
    np.testing.assert_array_equal(shown_view(picker), images.model_view(first.source, card))
    assert (picker.view_image.width, picker.view_image.height) == (28 * 6, 28 * 6)  # crisp: a whole zoom
    assert first.description in picker.view_image.alt_text
    assert inputs.PREPROCESS_CAPTIONS["mnist"][1:] in picker.view_caption.object
    assert picker.gallery.value == first.key
    assert not picker.error_alert.visible


def test_gallery_thumbnails_are_the_digits_themselves_with_their_descriptions_as_alt_text(picker):
    assert [row[:2] for row in picker.gallery.items] == [[i.key, i.description] for i in mnist_gallery()]
    for (_, _, url), item in zip(picker.gallery.items, mnist_gallery(), strict=True):
        pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.removeprefix("data:image/png;base64,")))))
        np.testing.assert_array_equal(pixels, item.source)


@pytest.mark.parametrize("how", ["pick", "click"])
def test_picked_gallery_digit_top1_matches_trace_of_to_input(picker, rnd, how):
    item = rnd.choice(mnist_gallery()[1:])
    if how == "pick":
        assert picker.pick(item.key)
    else:
        picker.gallery.value = item.key  # what a click in the browser sends
    assert picker.state.inference.description == item.description
    assert top1(picker) == traced_label("mnist-cnn", item.source)
    assert picker.gallery.value == item.key
    assert picker.input_label.object.endswith(inputs.markdown_text(item.description))
    np.testing.assert_array_equal(shown_view(picker), images.model_view(item.source, picker.state.inference.model.card))


@pytest.mark.parametrize("kind", ["random bytes", "empty", "over 10 MB"])
def test_a_bad_upload_sets_the_error_and_does_not_change_the_input(picker, rnd, kind):
    data = {"random bytes": rnd.randbytes(2000), "empty": b"",
            "over 10 MB": png(np.zeros((8, 8), np.uint8)) + bytes(images.MAX_BYTES)}[kind]
    before = picker.state.inference
    assert not picker.upload(data, "digit_7.png")
    expected = open_image_error(data, "digit_7.png")
    assert picker.state.error == expected
    assert picker.state.inference is before
    assert picker.error_alert.visible and html.escape(expected) in picker.error_alert.object
    assert picker.error_alert.alert_type == "danger"

    digit = rnd.choice(mnist_gallery())
    scan = png(255 - digit.source)  # then a good upload: dark ink on white paper, as scanned
    assert picker.upload(scan, "scan.png")
    assert picker.state.error == "" and not picker.error_alert.visible
    assert picker.state.inference.description == "upload: scan.png"
    assert top1(picker) == traced_label("mnist-cnn", scan)
    assert picker.gallery.value == ""  # no thumbnail is highlighted for an upload


def test_the_message_for_a_file_kept_back_by_the_browser_is_the_one_open_image_gives(picker):
    size = images.MAX_BYTES + 1
    before = picker.state.inference
    picker.receive_file({"name": "huge.png", "size": size})
    assert picker.state.error == too_large_message("huge.png", size) == open_image_error(bytes(size), "huge.png")
    assert picker.state.inference is before


def test_an_uploaded_file_message_is_decoded_and_classified(picker, rnd):
    scan = png(rnd.choice(mnist_gallery()).source)
    picker.receive_file({"name": "seven.png", "size": len(scan), "data": base64.b64encode(scan).decode()})
    assert picker.state.inference.description == "upload: seven.png"
    assert top1(picker) == traced_label("mnist-cnn", scan)
    picker.receive_file({"name": "seven.png", "size": 3, "data": "not base64!"})
    assert picker.state.error == "seven.png arrived damaged; choose the file again."


def test_a_vertical_line_drawn_is_read_as_one_by_mnist_cnn(picker):
    picker.draw(VERTICAL_LINE)
    expected = images.Strokes.from_dict({"strokes": VERTICAL_LINE, "width": 280, "height": 280, "line_width": 20})
    inference = picker.state.inference
    assert inference.description == DRAWING
    assert inference.source == expected  # the canvas's lists became this Strokes
    assert top1(picker) == traced_label("mnist-cnn", expected) == "1"
    np.testing.assert_array_equal(shown_view(picker), images.model_view(expected, inference.model.card))


def test_clearing_the_canvas_goes_back_to_the_input_before_the_drawing(picker, rnd):
    item = rnd.choice(mnist_gallery())
    picker.pick(item.key)
    picker.draw(VERTICAL_LINE)
    picker.draw([[[140.0, 40.0], [1e6, 40.0]]])  # an invalid drawing leaves a message about it
    assert picker.state.error
    picker.draw([])  # Clear
    inference = picker.state.inference
    assert inference.description == item.description and inference.source is item.source
    assert top1(picker) == traced_label("mnist-cnn", item.source)
    np.testing.assert_array_equal(shown_view(picker), images.model_view(item.source, inference.model.card))
    assert picker.gallery.value == item.key
    assert picker.state.error == "" and not picker.error_alert.visible


def test_clearing_after_a_switch_to_mnist_vit_shows_the_earlier_digit_on_mnist_vit(picker, rnd):
    item = rnd.choice(mnist_gallery())
    picker.pick(item.key)
    picker.draw(VERTICAL_LINE)
    picker.state.model = "mnist-vit"
    picker.draw([])
    assert picker.state.inference.model.name == "mnist-vit"
    assert picker.state.inference.description == item.description
    assert top1(picker) == traced_label("mnist-vit", item.source)


def test_clearing_after_a_gallery_pick_keeps_the_pick(picker, rnd):
    picker.draw(VERTICAL_LINE)
    item = rnd.choice(mnist_gallery()[1:])
    picker.pick(item.key)
    picker.draw([])  # the canvas still held the old drawing: clearing it now changes nothing
    assert picker.state.inference.description == item.description


def test_an_invalid_drawing_sets_the_error_and_does_not_change_the_input(picker):
    before = picker.state.inference
    picker.draw([[[140.0, 40.0], [1e6, 40.0]]])
    with pytest.raises(InputError) as error:
        images.Strokes([[[140.0, 40.0], [1e6, 40.0]]], 280, 280, 20)
    assert picker.state.error == str(error.value)
    assert picker.state.inference is before


def test_only_the_newest_of_queued_drawings_is_classified(picker, monkeypatch):
    queued, calls = [], []
    monkeypatch.setattr(pn.state, "execute", lambda callback, schedule="auto": queued.append(callback))
    set_input = picker.state.set_input
    monkeypatch.setattr(picker.state, "set_input", lambda *args: calls.append(args) or set_input(*args))
    for n in range(2, 12):  # a stroke growing point by point, as throttled updates arrive
        picker.draw([VERTICAL_LINE[0][:n]])
    for callback in queued:
        callback()
    assert len(queued) == 10 and len(calls) == 1
    assert picker.state.inference.source.strokes == (tuple(map(tuple, VERTICAL_LINE[0])),)


def test_switching_to_mnist_vit_keeps_the_digit(picker, rnd):
    item = rnd.choice(mnist_gallery())
    picker.pick(item.key)
    picker.state.model = "mnist-vit"
    assert picker.state.inference.model.name == "mnist-vit"
    assert picker.state.inference.description == item.description
    assert top1(picker) == traced_label("mnist-vit", item.source)
    assert picker.gallery.value == item.key and len(picker.gallery.items) == len(mnist_gallery())


def test_switching_to_mnist_vit_keeps_the_drawing(picker):
    picker.draw(VERTICAL_LINE)
    picker.state.model = "mnist-vit"
    assert picker.state.inference.description == DRAWING
    assert top1(picker) == traced_label("mnist-vit", picker.state.inference.source)


@pytest.mark.skipif(not HAS_MOBILENET, reason="run `explorer fetch mobilenet_v2` first")
def test_switching_to_mobilenet_shows_photos_and_back_shows_digits(picker, rnd):
    picker.pick(mnist_gallery()[5].key)
    picker.state.model = "mobilenet_v2"
    assert [row[0] for row in picker.gallery.items] == list(PHOTOS)
    assert not picker.gallery.pixelated
    assert picker.state.inference.description == photo_gallery()[0].description
    assert (picker.view_image.width, picker.view_image.height) == (224, 224)
    assert inputs.PREPROCESS_CAPTIONS["imagenet"][1:] in picker.view_caption.object

    item = rnd.choice(photo_gallery()[1:])
    assert picker.pick(item.key)
    assert top1(picker) == traced_label("mobilenet_v2", item.source)
    np.testing.assert_array_equal(shown_view(picker), images.model_view(item.source, picker.state.inference.model.card))

    picker.state.model = "mnist-cnn"
    assert [row[0] for row in picker.gallery.items] == [i.key for i in mnist_gallery()]
    assert picker.state.inference.description == mnist_gallery()[0].description


def test_a_click_on_a_thumbnail_of_the_previous_gallery_shows_an_error_not_a_crash(picker):
    if not HAS_MOBILENET:
        pytest.skip("run `explorer fetch mobilenet_v2` first")
    picker.state.model = "mobilenet_v2"
    before = picker.state.inference
    picker.gallery.value = mnist_gallery()[3].key  # sent before the new gallery reached the browser
    assert picker.state.error.startswith(f"no gallery image named {mnist_gallery()[3].key!r}")
    assert picker.state.inference is before


def test_markdown_text_shows_file_names_literally():
    assert inputs.markdown_text("my_digit_*7*.png") == r"my\_digit\_\*7\*.png"
    assert inputs.markdown_text("<b>a & b</b>") == "&lt;b&gt;a &amp; b&lt;/b&gt;"


def take_picture(picker: InputPicker, picture: bytes) -> None:
    """What "Take picture" does: camera.js sends the PNG file as ImageUpload sends a file."""
    message = {"name": "camera picture", "size": len(picture), "data": base64.b64encode(picture).decode()}
    picker.mode.value = CAMERA
    picker._camera._process_event(DataEvent(model=None, data=message))  # as Panel delivers send_msg's message


def paper_digit(pixels: np.ndarray, rnd: random.Random) -> np.ndarray:
    """A digit (white on black) as a camera sees it: dark ink on brighter paper, noisy, RGBA, CAPTURE_PX a side."""
    side = CAPTURE_PX
    rng = np.random.default_rng(rnd.getrandbits(32))
    ink = np.asarray(Image.fromarray(pixels).resize((side // 2, side // 2), Image.Resampling.BILINEAR)) / 255
    grey = np.full((side, side), rnd.uniform(170, 250)) + rng.normal(0, 3, (side, side))
    grey[side // 4:side // 4 + side // 2, side // 4:side // 4 + side // 2] *= 1 - 0.8 * ink
    rgb = np.repeat(np.clip(np.rint(grey), 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)
    return np.concatenate([rgb, np.full((side, side, 1), 255, np.uint8)], axis=2)


def test_the_camera_is_built_when_its_tab_opens_and_runs_only_while_it_is_shown(picker):
    assert picker._camera is None  # nothing exported until the student wants the camera
    picker.mode.value = CAMERA
    camera = picker._camera
    assert camera.active and camera.network == "mnist-cnn" and camera.metadata["name"] == "mnist-cnn"
    picker.mode.value = "Gallery"
    assert not camera.active
    picker.state.model = "mnist-vit"
    assert camera.network == "mnist-vit" and camera.metadata["name"] == "mnist-vit"
    picker.mode.value = CAMERA
    assert camera.active and picker._camera is camera


@pytest.mark.skipif(not HAS_MOBILENET, reason="run `explorer fetch mobilenet_v2` first")
def test_the_camera_sends_pictures_but_predicts_nothing_live_for_a_photo_model(picker, rnd):
    picker.mode.value = CAMERA
    picker.state.model = "mobilenet_v2"
    assert picker._camera.network is None and picker._camera.onnx == ""
    photo = rnd.choice(photo_gallery()).source
    take_picture(picker, png(photo))
    assert picker.state.inference.description == "camera picture 1"
    assert top1(picker) == traced_label("mobilenet_v2", png(photo))


def test_a_camera_picture_is_classified_as_an_uploaded_photo_of_a_digit(picker, rnd):
    for n in (1, 2):
        item = rnd.choice(mnist_gallery())
        picture = png(paper_digit(item.source, rnd))
        take_picture(picker, picture)
        inference = picker.state.inference
        assert inference.description == f"camera picture {n}" and picker.state.error == ""
        assert top1(picker) == traced_label("mnist-cnn", picture)
        np.testing.assert_array_equal(shown_view(picker), images.model_view(picture, inference.model.card))


def test_a_blank_camera_picture_sets_the_servers_message_and_keeps_the_input(picker):
    before = picker.state.inference
    blank = png(np.full((CAPTURE_PX, CAPTURE_PX, 3), 230, np.uint8))
    take_picture(picker, blank)
    with pytest.raises(InputError) as error:
        images.to_input(blank, before.model.card)
    assert picker.state.error == str(error.value) and picker.state.inference is before
