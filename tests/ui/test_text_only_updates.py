"""The text_only_updates tuning (explorer/serve/markup.py) leaves a markup pane's model exactly as Panel's full update
does, and sends the page the same changes: random panes, random sequences of changes."""

from __future__ import annotations

import random

import panel as pn
import pytest
from bokeh.document import Document
from bokeh.document.events import ModelChangedEvent
from bokeh.model import Model
from panel.pane.markup import HTMLBasePane

from explorer.serve import markup

PANEL_UPDATE = getattr(HTMLBasePane._update, "__wrapped__", HTMLBasePane._update)
PANEL_UPDATE_PANE = getattr(HTMLBasePane._update_pane, "__wrapped__", HTMLBasePane._update_pane)
TUNED_UPDATE = markup._text_only(PANEL_UPDATE)
TUNED_UPDATE_PANE = markup._noting_full_updates(PANEL_UPDATE_PANE)
KINDS = (pn.pane.Markdown, pn.pane.HTML, pn.pane.Str)


def text(rng: random.Random) -> str:
    value = rng.uniform(-1e4, 1e4)
    return rng.choice([f"**Accuracy** {value:.2f} %", f"| layer | mean |\n|---|---|\n| conv1 | {value:.3g} |",
                       f"<b>{value:.1f}</b> & <i>more</i>", f"    indented {value:.0f}\n    lines", ""])


def change(rng: random.Random, pane: HTMLBasePane) -> None:
    """One change a view makes: mostly the text, sometimes what Panel must update in full."""
    what = rng.choice(["object"] * 4 + ["css_classes", "styles", "both", "dedent", "visible"])
    if what == "object":
        pane.object = text(rng)
    elif what == "css_classes":
        pane.css_classes = rng.sample(["explanation", "lesson", "note"], rng.randint(0, 2))
    elif what == "styles":
        pane.styles = {"color": rng.choice(["#000", "#555"])}
    elif what == "both":  # two parameters in one batch: one event each, in one call
        pane.param.update(object=text(rng), css_classes=[rng.choice(["a", "b"])])
    elif what == "dedent" and isinstance(pane, pn.pane.Markdown):
        pane.dedent = not pane.dedent
    else:
        pane.visible = not pane.visible


def described(value: object) -> object:
    """A property's value with each Bokeh model written as its type and properties (new stylesheet models are made
    for each full update: the same sheet, another id)."""
    if isinstance(value, Model):
        return type(value).__name__, described(value.properties_with_values(include_defaults=False))
    if isinstance(value, dict):
        return {key: described(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [described(item) for item in value]
    return value


def run(seed: int, update, update_pane, monkeypatch) -> tuple[list, dict]:
    """Every pane's model properties after a random sequence of changes, and what the page was sent: the last value
    of each property changed (within one message, the order of two properties' changes means nothing to it)."""
    monkeypatch.setattr(HTMLBasePane, "_update", update)
    monkeypatch.setattr(HTMLBasePane, "_update_pane", update_pane)  # panes watch it from __init__: set before
    rng = random.Random(seed)
    doc = Document()
    panes = [rng.choice(KINDS)(text(rng), css_classes=["explanation"]) for _ in range(6)]
    models = [pane.get_root(doc) for pane in panes]
    for model in models:
        doc.add_root(model)
    sent: list = []
    doc.on_change(sent.append)
    for _ in range(40):
        with pn.io.hold():
            change(rng, rng.choice(panes))
    changes = {(models.index(e.model), e.attr): described(e.new) for e in sent if isinstance(e, ModelChangedEvent)}
    return [described(model.properties_with_values(include_defaults=False)) for model in models], changes


@pytest.mark.parametrize("seed", range(6))
def test_a_pane_ends_as_panels_full_update_leaves_it_and_sends_the_same_changes(seed, monkeypatch):
    theirs = run(seed, PANEL_UPDATE, PANEL_UPDATE_PANE, monkeypatch)
    ours = run(seed, TUNED_UPDATE, TUNED_UPDATE_PANE, monkeypatch)
    assert ours[0] == theirs[0]
    assert ours[1] == theirs[1]
    assert {attr for _, attr in ours[1]} >= {"text", "css_classes"}


def test_a_text_change_computes_only_the_text(monkeypatch):
    monkeypatch.setattr(HTMLBasePane, "_update", TUNED_UPDATE)
    monkeypatch.setattr(HTMLBasePane, "_update_pane", TUNED_UPDATE_PANE)
    pane = pn.pane.Markdown("**one**", css_classes=["explanation"])
    model = pane.get_root(Document())
    computed = []
    monkeypatch.setattr(pn.pane.Markdown, "_get_properties",
                        lambda self, doc: computed.append(doc) or HTMLBasePane._get_properties(self, doc))
    pane.object = "**two**"
    assert "&lt;strong&gt;two" in model.text and computed == []
    pane.param.update(object="**three**", css_classes=["note"])  # with another parameter: in full
    assert "&lt;strong&gt;three" in model.text and len(computed) == 1 and "note" in model.css_classes


def test_a_pane_made_before_the_tuning_keeps_panels_full_update(monkeypatch):
    monkeypatch.setattr(HTMLBasePane, "_update_pane", PANEL_UPDATE_PANE)  # the watcher it was made with
    pane = pn.pane.Markdown("**one**", css_classes=["explanation"])
    model = pane.get_root(Document())
    monkeypatch.setattr(HTMLBasePane, "_update", TUNED_UPDATE)  # the tuning made afterwards
    pane.css_classes = ["note"]
    assert "note" in model.css_classes  # its changes were never noted: every update in full
