"""The receptive-field panel and the filter atlas patch data of existing Bokeh models; none makes new ones.

Deterministic (no timing): each panel is attached to a Bokeh document as a served session's would be
(tests/ui/doc_events.py), every main control is used twice, and the second round must create nothing.
"""

from __future__ import annotations

import numpy as np
import pytest

from explorer.core import zoo
from explorer.core.gallery import mnist_gallery
from explorer.lessons.convolution.view_atlas import FilterAtlas
from explorer.lessons.convolution.view_receptive import ReceptiveFieldPanel
from tests.ui.doc_events import Page


def shown(page: Page, part: str) -> list[bytes]:
    """A named source's columns in full (Page.data's repr shortens long arrays)."""
    return [np.asarray(v).tobytes() for column in page.model_named(part).data.values() for v in column]


def check_rounds(page: Page, interactions) -> None:
    for round_ in (0, 1):
        for name, act, part in interactions(round_):
            page.check(name, act, lambda part=part: shown(page, part), round_)


def test_receptive_field_controls_only_patch_existing_models():
    panel = ReceptiveFieldPanel(model="mnist-cnn")
    page, state, digits = Page(panel), panel.state, mnist_gallery()

    def interactions(round_: int):
        yield "unit", lambda: panel.select_unit(1 + round_, 6), "convolution-rf-box"  # on every map (7×7 or more)
        yield "unit again", lambda: panel.select_unit(5, 3 + round_), "convolution-rf-box"
        yield "channel", lambda: setattr(panel.channel_input, "value", 2 + round_), "convolution-rf-map"
        yield "layer", lambda: setattr(panel.layer_menu, "value", ("features.8", "features.4")[round_]), \
            "convolution-rf-current"
        yield "input", lambda: state.set_input(digits[3 + round_].source, digits[3 + round_].description), \
            "convolution-rf-input"
        yield "narrative", lambda: setattr(panel.tour, "index", (1, 2)[round_]), "convolution-rf-box"

    check_rounds(page, interactions)


@pytest.mark.parametrize("model", [m for m in ("mnist-cnn", "mnist-vit", "mobilenet_v2") if zoo.is_available(m)])
def test_a_receptive_field_panel_on_the_page_before_it_follows_the_state_draws_every_part(model):
    """Served, a part is on the page (its layer menu rendered) before it first follows the state, after the page
    has painted. The menu then takes the first layer as soon as it gets this model's layers, and that layer was
    drawn before the depth plot was filled (an IndexError, and an empty tab)."""
    panel = ReceptiveFieldPanel(model=model, shown=False)  # hidden: following is put off until shown
    page = Page(panel)
    panel.shown = True
    fields = panel._fields
    assert page.model_named("convolution-rf-depth").data["name"] == [f.name for f in fields]
    current = page.model_named("convolution-rf-current").data
    assert current["name"] == [panel.layer] and current["depth"] == [panel._field().depth]
    map_size = panel.state.inference.trace[panel.layer].output.shape[-2:]
    assert len(page.model_named("convolution-rf-map").data["image"]) == 1
    assert page.model_named("convolution-rf-map").data["dh"] == [map_size[0]]
    assert len(page.model_named("convolution-rf-erf").data["image"]) == 1


def test_filter_atlas_controls_only_patch_existing_models():
    atlas = FilterAtlas(model="mnist-cnn")
    page, state, digits = Page(atlas), atlas.state, mnist_gallery()

    def interactions(round_: int):
        yield "sort", lambda: setattr(atlas, "sort", ("L2 norm", "index")[round_]), "convolution-atlas-filters"
        yield "spectrum", lambda: setattr(atlas, "spectrum", not atlas.spectrum), "convolution-atlas-filters"
        yield "layer", lambda: setattr(atlas.layer_menu, "value", ("features.4", "features.0")[round_]), \
            "convolution-atlas-maps"
        yield "input", lambda: state.set_input(digits[5 + round_].source, digits[5 + round_].description), \
            "convolution-atlas-maps"
        yield "state layer", lambda: setattr(state, "layer", ("features.8", "features.4")[round_]), \
            "convolution-atlas-filters"

    check_rounds(page, interactions)


@pytest.mark.skipif(not zoo.is_available("mobilenet_v2"), reason="MobileNetV2 is not fetched here")
def test_both_panels_switch_to_mobilenet_and_the_vit_without_new_figures():
    receptive = ReceptiveFieldPanel(model="mnist-cnn")
    atlas = FilterAtlas(state=receptive.state)
    for viewer in (receptive, atlas):
        page = Page(viewer)
        figures = {m.id for m in page.doc.models if type(m).__name__ == "figure"}
        for model in ("mobilenet_v2", "mnist-vit", "mnist-cnn"):
            created = page.act(lambda model=model, viewer=viewer: setattr(viewer.state, "model", model))
            assert [kind for kind in created if kind != "ImportedStyleSheet"] == [], (model, created)
        assert figures == {m.id for m in page.doc.models if type(m).__name__ == "figure"}
    receptive.state.model = "mobilenet_v2"
    assert atlas.layer == "features.0.0" and receptive.layer == "features.0.0"
    assert int(atlas._compute().tiny.sum()) == 5  # MobileNetV2's first layer holds five near-zero filters
    receptive.state.layer = "features.2.conv.1.0"  # depthwise, stride 2: 3 + 2·2 + 2·2 (two 3×3 at jump 2) = 11 px
    assert "a **11×11 px** theoretical receptive field" in receptive._summary.object
