"""The markdown_rendered_once tuning (explorer/serve/markup.py): a Markdown text rendered once gives what Panel
renders, for every setting the rendering reads; a new setting or text is rendered anew."""

from __future__ import annotations

import random

import panel as pn
import pytest
from panel.pane.markup import Markdown

from explorer.serve import markup

PANEL_TRANSFORM = getattr(Markdown._transform_object, "__wrapped__", Markdown._transform_object)
WORDS = ["**bold**", "*it*", "`code`", "x − 1", "<b>html</b>", "a & b", "[link](#x)", "1. one", "- item", "# Title",
         "| a | b |\n|---|---|\n| 1 | 2 |", "    indented", "line\nbreak", "$x^2$", "3 < 4", "😀"]
SETTINGS = [dict(dedent=False), dict(hard_line_break=True), dict(disable_anchors=True), dict(renderer="markdown"),
            dict(renderer="markdown", extensions=["extra"]), dict(renderer_options={"breaks": True}), {}]


def text(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 8)))


@pytest.mark.parametrize("seed", range(8))
def test_a_text_rendered_again_is_what_panel_renders(seed):
    rng = random.Random(seed)
    once = markup._rendered_once(PANEL_TRANSFORM)
    texts = [text(rng) for _ in range(6)]
    for _ in range(40):  # texts and settings met again and again, in a random order
        pane = Markdown("", **rng.choice(SETTINGS))
        obj = rng.choice(texts)
        assert once(pane, obj) == PANEL_TRANSFORM(pane, obj)
    assert 0 < len(once.kept) <= len(texts) * len(SETTINGS)


def test_the_kept_texts_are_bounded_and_a_text_dropped_is_rendered_again(monkeypatch):
    monkeypatch.setattr(markup, "RENDERED_KEPT", 3)
    calls = []
    once = markup._rendered_once(lambda pane, obj: calls.append(obj) or {"object": obj.upper()})
    pane = Markdown("")
    for obj in ["a", "b", "a", "c", "d", "a", "b"]:
        assert once(pane, obj) == {"object": obj.upper()}
    assert calls == ["a", "b", "c", "d", "b"]  # "a" kept while used; "b" dropped as the least recent, then again
    assert list(once.kept) == [(Markdown, obj, *markup_settings(pane)) for obj in ["d", "a", "b"]]


def markup_settings(pane: Markdown) -> tuple:
    return (pane.dedent, pane.renderer, tuple(pane.extensions), pane.hard_line_break, pane.disable_anchors,
            tuple(pane.plugins), tuple(sorted(pane.renderer_options.items())))


def test_what_cannot_be_a_key_is_rendered_as_panel_renders_it():
    calls = []
    once = markup._rendered_once(lambda pane, obj: calls.append(obj) or {"object": str(obj)})

    class Shown:
        def _repr_markdown_(self):
            return "**shown**"

    shown = Shown()
    pane = Markdown("", renderer_options={"unhashable": ["list"]})
    once(pane, "text")
    once(pane, "text")
    once(Markdown(""), shown)
    once(Markdown(""), shown)
    assert calls == ["text", "text", shown, shown] and not once.kept


def test_a_served_markdown_pane_shows_the_same_html_with_the_tuning():
    pane = pn.pane.Markdown("**Input:** digit 3 — *test*")
    model = pane.get_root()
    once = markup._rendered_once(PANEL_TRANSFORM)
    assert once(pane, pane.object) == {"object": model.text}
