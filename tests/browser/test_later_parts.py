"""Parts of a lesson below its first screen join the page when the student scrolls to them
(explorer/session/later.py), in the real app: until then the page holds a placeholder, not their figures; once there
they show the session's current model, also after a switch made while they waited; and a tour step that talks about
one brings it."""

from __future__ import annotations

import torch.nn as nn
from playwright.sync_api import Page, expect

from explorer.core import zoo
from explorer.session.tags import MODEL_TAG

from .conftest import SHOWN_PLACEHOLDERS, open_page

MODELS_IN_PAGE = "() => [...Bokeh.documents[0].all_models].length"
GAMMA = "() => { const s = Bokeh.documents[0].get_model_by_name('normalization-gamma'); " \
        "return s === null ? null : {tags: s.tags, layer: s.data.layer, channel: s.data.channel, " \
        "gamma: Array.from(s.data.gamma)}; }"
TAGGED = "([name, tag]) => (Bokeh.documents[0].get_model_by_name(name)?.tags || []).includes(tag)"


def open_normalization(page: Page, url: str) -> list[str]:
    errors = open_page(page, f"{url}?model=mnist-cnn&lesson=normalization", "The model says", height=900)
    expect(page.locator(".normalization-axes")).to_contain_text("BatchNorm", timeout=60_000)
    return errors


def test_a_part_below_the_first_screen_arrives_when_scrolled_to_and_shows_the_model_chosen_meanwhile(
        page: Page, app_url: str):
    errors = open_normalization(page, app_url)
    # sections 3 to 6: their headings, and a placeholder each instead of their figures
    assert page.evaluate(f"() => ({SHOWN_PLACEHOLDERS})().length") == 4
    expect(page.locator(".normalization-part-6")).to_contain_text("Switched-off channels")
    assert page.evaluate(GAMMA) is None
    waiting = page.evaluate(MODELS_IN_PAGE)

    page.get_by_role("combobox", name="Model", exact=True).select_option("mnist-vit")
    page.wait_for_function(TAGGED, arg=["normalization-axes", MODEL_TAG + "mnist-vit"], timeout=60_000)
    assert page.evaluate(GAMMA) is None  # still waiting: the student has not scrolled there

    page.locator(".normalization-part-6").scroll_into_view_if_needed()
    page.wait_for_function(TAGGED, arg=["normalization-gamma", MODEL_TAG + "mnist-vit"], timeout=30_000)
    shown = page.evaluate(GAMMA)
    assert page.evaluate(MODELS_IN_PAGE) > waiting
    # |γ| of every channel of every norm layer of the ViT, from its modules
    vit = zoo.load("mnist-vit").module
    expected = {(name, c): abs(float(g)) for name, m in vit.named_modules()
                if isinstance(m, nn.BatchNorm2d | nn.LayerNorm | nn.GroupNorm) and m.weight is not None
                for c, g in enumerate(m.weight.detach())}
    got = {(layer, c): g for layer, c, g in zip(shown["layer"], shown["channel"], shown["gamma"], strict=True)}
    assert got.keys() == expected.keys()
    assert all(abs(got[k] - expected[k]) <= 1e-6 * max(1.0, expected[k]) for k in expected)
    expect(page.locator(".normalization-part-6")).not_to_contain_text("Drawing this part")
    assert errors == []


def test_a_tour_step_about_a_part_below_the_first_screen_brings_it(page: Page, app_url: str):
    errors = open_normalization(page, app_url)
    for _ in range(6):  # step 6: folding BatchNorm into the convolution, section 5
        page.get_by_role("button", name="Next ▶").click()
    expect(page.locator(".narrative-position")).to_have_text("6 / 7")
    part = page.locator(".normalization-part-5")
    expect(part).to_contain_text("The folded convolution on your input equals conv + BatchNorm", timeout=30_000)
    expect(part).to_be_in_viewport()
    assert errors == []
