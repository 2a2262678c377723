"""Section 6 of the attention lesson, what attention filters: it shows the numbers of frequency.py for the session's
input, beside the other shipped models, on a ViT and on a CNN; its text follows the numbers; its controls and the
session's input only patch existing Bokeh models."""

from __future__ import annotations

import math
from concurrent.futures import Future

import pytest
import torch
from bokeh.document import Document
from panel.io.state import set_curdoc

from explorer.core import zoo
from explorer.core.gallery import mnist_gallery
from explorer.lessons.attention import frequency as fq
from explorer.lessons.attention.view import AttentionLesson
from explorer.lessons.attention.view_frequency import PLURALS, explanation
from explorer.session import background
from explorer.session.state import ExplorerState
from tests.ui.doc_events import Page, as_served

pytestmark = pytest.mark.skipif(not (zoo.is_available("mnist-vit") and zoo.is_available("mnist-cnn")),
                                reason="the shipped models are not trained here")


def expected(lesson: AttentionLesson) -> dict[str, fq.NetworkSpectra]:
    """Each compared model's spectra, computed here on the session's input."""
    inference = lesson.state.inference
    return {name: fq.network_spectra(zoo.load(name).module, zoo.load(name).preprocess(inference.source))
            for name in fq.compared_models(inference.model.name)}


def shown_highs(lesson: AttentionLesson) -> dict[tuple[str, str], float]:
    section = lesson._frequency
    return {(m, layer): h for source in (section._layers, section._attention)
            for m, layer, h in zip(source.data["model"], source.data["layer"], source.data["high"], strict=True)}


@pytest.mark.parametrize("model", ["mnist-vit", "mnist-cnn"])
def test_the_section_shows_every_compared_models_spectra(model):
    lesson = AttentionLesson(state=ExplorerState(model=model))
    section, want = lesson._frequency, expected(lesson)
    assert section._lines.data["model"] == list(want) and list(want)[0] == model
    highs = shown_highs(lesson)
    assert len(highs) == sum(len(s.layers) for s in want.values())
    for name, spectra in want.items():
        for s in spectra.layers:
            assert math.isclose(highs[(name, s.name)], s.high, abs_tol=1e-9)
    mine = want[model]
    assert section._curves.data["layer"] == [s.name for s in mine.layers]
    assert section._curves.data["ys"][-1] == pytest.approx(mine.layers[-1].delta.tolist(), abs=1e-9)
    marked = section._attention.data["kind"]
    assert set(marked) == {"attention layer"}
    assert len(marked) == sum(s.kind == "attention" for spectra in want.values() for s in spectra.layers)


def test_the_text_says_what_the_numbers_show():
    lesson = AttentionLesson(state=ExplorerState(model="mnist-vit"))
    text, want = lesson._frequency.text.object, expected(lesson)
    for spectra in want.values():
        for kind in ("attention", "mlp", "conv"):
            low, n = spectra.lowering(kind)
            if n:
                assert f"{low} of {n} {PLURALS[kind]} lower it" in text
    low, n = want["mnist-vit"].lowering("attention")
    verdict = ("no clear filter either way" if 2 * low == n else "as in the paper" if 2 * low > n
               else "**unlike the paper**")
    assert f"in mnist-vit, attention layers {'lower' if 2 * low >= n else 'raise'}" in text
    assert verdict in text.split("in mnist-vit, attention layers")[1].split(";")[0]


def test_the_verdict_follows_the_counts_not_the_paper():
    def spectra(kind: str, changes: list[float]) -> fq.NetworkSpectra:
        return fq.NetworkSpectra(tuple(fq.LayerSpectrum(f"l{i}", kind, 4, fq.diagonal_frequencies(4),
                                                        fq.diagonal_frequencies(4) * 0, -c)
                                       for i, c in enumerate(changes)), ())

    # change = high - high_before; high is 0 here, so a layer with high_before = -c changed by c
    text = explanation(fq.Comparison((("vit", spectra("attention", [0.2, 0.3, -0.1, 0.4])),
                                      ("cnn", spectra("conv", [-0.5, -0.2, 0.1]))), ()))
    assert "in vit, attention layers raise them in 3 of 4 layers, **unlike the paper**" in text
    assert "in cnn, convolutions lower the high frequencies in 2 of 3 layers, **unlike the paper**" in text
    text = explanation(fq.Comparison((("vit", spectra("attention", [-0.2, -0.3, -0.1, 0.4])),), ()))
    assert "in vit, attention layers lower the high frequencies in 3 of 4 layers, as in the paper" in text


def test_on_a_cnn_only_this_section_is_made_and_shown():
    lesson = AttentionLesson(model="mnist-cnn")
    page = Page(lesson)
    assert lesson.errors.visible and "Section 6 below" in lesson.errors.object
    figures = [m for m in page.doc.models if type(m).__name__ == "figure"]
    assert {f.title.text for f in figures} == {"high frequencies through the network",
                                               "Δ log amplitude over frequency, every layer of mnist-cnn"}
    assert lesson._frequency.layer_menu.value == "features.8"  # the last convolution
    assert lesson._frequency._lines.data["model"][:2] == ["mnist-cnn", "mnist-vit"]


def test_the_layer_menu_draws_the_chosen_layer():
    lesson = AttentionLesson(state=ExplorerState(model="mnist-vit"))
    section, mine = lesson._frequency, expected(lesson)["mnist-vit"]
    assert section.layer_menu.value == lesson.frequency_layer == "blocks.3.attn"  # the last attention layer
    section.layer_menu.value = "output of blocks.1"
    chosen = next(s for s in mine.layers if s.name == "output of blocks.1")
    assert lesson.frequency_layer == "output of blocks.1"
    assert section._chosen_curve.data["ys"][0] == pytest.approx(chosen.delta.tolist(), abs=1e-9)
    assert section._chosen_point.data["high"] == [pytest.approx(chosen.high, abs=1e-9)]
    assert "**output of blocks.1** (MLP)" in section.curves_text.object
    lesson.tour.index = lesson.tour.param.index.bounds[1]  # the tour's last step: the last attention layer
    assert section.layer_menu.value == "blocks.3.attn" and section._chosen_curve.data["layer"] == ["blocks.3.attn"]


def test_input_and_layer_changes_only_patch_existing_models():
    lesson = AttentionLesson(state=ExplorerState(model="mnist-vit"))
    page, section = Page(lesson), lesson._frequency
    for round_ in (0, 1):
        digit = mnist_gallery()[5 + round_]
        page.check("input", lambda digit=digit: lesson.state.set_input(digit.source, digit.description),
                   lambda: page.data("attention-frequency-layers"), round_)
        layer = ("blocks.0.attn", "output of blocks.2")[round_]
        page.check("layer", lambda layer=layer: setattr(section.layer_menu, "value", layer),
                   lambda: repr(section._chosen_curve.data), round_)
    assert page.data("attention-frequency-curves")


def test_in_a_served_page_the_spectra_come_from_slow_work_and_no_other_models_stay_on_screen(monkeypatch):
    queued = []
    monkeypatch.setattr(background, "submit", lambda work, name, background: queued.append((name, work)) or Future())
    doc = Document()
    context = as_served(doc)  # noqa: F841  (the document holds its context weakly)
    doc.add_next_tick_callback = lambda callback: callback()  # what a worker hands to the session's loop: at once
    with set_curdoc(doc):
        lesson = AttentionLesson(state=ExplorerState(model="mnist-vit"))
        section = lesson._frequency
        assert [name for name, _ in queued] == ["AttentionLesson.frequency"]  # computed off the event loop
        assert not section._shown.visible and "Computing the spectra" in section.status.object
        queued.pop()[1]()
        assert section._shown.visible and not section.status.visible
        assert section._lines.data["model"][0] == "mnist-vit"
        lesson.state.model = "mnist-cnn"
        # mnist-vit's spectra are not shown under mnist-cnn's name while mnist-cnn's are computed
        assert not section._shown.visible and "of mnist-cnn" in section.status.object
        queued.pop()[1]()
        assert section._shown.visible and section._lines.data["model"][0] == "mnist-cnn"
        assert section._high_fig.tags == ["explorer-model=mnist-cnn"]


def test_a_second_student_on_the_same_input_is_shown_the_spectra_computed_for_the_first(monkeypatch, rng):
    calls = []
    real = fq.network_spectra
    monkeypatch.setattr(fq, "network_spectra", lambda module, x: (calls.append(module), real(module, x))[1])
    digit = (torch.rand(28, 28, generator=rng) * 255).to(torch.uint8).numpy()  # an input no earlier test made
    lessons = []
    for student in range(2):
        state = ExplorerState(model="mnist-vit")
        assert state.set_input(digit.copy(), f"student {student}'s copy of one digit"), state.error
        calls.clear()
        lessons.append(AttentionLesson(state=state))
        assert len(calls) == (len(fq.compared_models("mnist-vit")) if student == 0 else 0)
    assert shown_highs(lessons[1]) == shown_highs(lessons[0])
    lessons[1].state.set_input(digit[::-1].copy(), "the digit upside down")
    assert len(calls) == len(fq.compared_models("mnist-vit"))
