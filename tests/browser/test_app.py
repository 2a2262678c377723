"""The served page, in a real browser: a student sees every model with its card."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Page, expect

from explorer.core import device, zoo

SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-results"


def test_the_page_lists_every_model_with_its_measured_card(page: Page, app_url: str):
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(app_url)
    expect(page.get_by_text("Neural network explorer")).to_be_visible(timeout=30_000)
    expect(page.get_by_text(f"Computing on {device.describe().split(' (')[0]}")).to_be_visible()
    for name in zoo.list(available_only=True):
        card = zoo.card(name)
        expect(page.get_by_role("heading", name=name)).to_be_visible()
        expect(page.get_by_text(f"{card.n_params:,}", exact=True)).to_be_visible()
        if card.top1 is not None:
            expect(page.get_by_text(f"{card.top1:.2%}").first).to_be_visible()
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "cards.png", full_page=True)
    assert errors == []
