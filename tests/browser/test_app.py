"""The whole app in a real browser, acting as a student: offline, gallery, upload, drawing, shared URLs."""

from __future__ import annotations

import re
import time

import numpy as np
import torch
from playwright.sync_api import Page, WebSocketRoute, expect

from explorer.core import device, images, trace, zoo
from explorer.core.gallery import mnist_gallery
from explorer.core.names import labelled_name
from explorer.ui.overview import CELL

from .conftest import FIGURE_POINT, click_figure, draw_vertical_line, screenshot


def open_app(page: Page, url: str) -> list[str]:
    """Open the page, recording page errors and every request that leaves this machine."""
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("request", lambda r: problems.append(f"external request: {r.url}")
            if not r.url.startswith(("http://127.0.0.1", "ws://127.0.0.1", "data:", "blob:")) else None)
    page.set_viewport_size({"width": 1400, "height": 1000})
    page.goto(url)
    expect(page.locator(".prediction-summary")).to_contain_text("The model says", timeout=30_000)
    return problems


def summary(model_name: str, source: object, description: str) -> re.Pattern:
    """What the prediction line must say, computed on an independent path: preprocess, trace, softmax."""
    model = zoo.load(model_name)
    probs = trace.run(model.module, images.to_input(source, model.card)).logits[0].softmax(-1)
    label = model.labels[int(probs.argmax())]
    return re.compile(rf"The model says {re.escape(label)} \({probs.max():.1%}\) for {re.escape(description)}\.")


def test_the_page_works_offline_and_a_gallery_digit_is_classified_as_traced(page: Page, app_url: str):
    problems = open_app(page, app_url)
    expect(page.get_by_text(f"Computing on {device.describe()}")).to_be_visible()
    item = mnist_gallery()[17]
    page.get_by_role("button", name=item.description).click()
    expect(page.locator(".prediction-summary")).to_have_text(summary("mnist-cnn", item.source, item.description))
    screenshot(page, "app-gallery")
    assert problems == []


def test_the_bokehjs_fixes_skip_identical_stylesheet_writes_css_variable_and_font_size_reads(page: Page,
                                                                                             app_url: str):
    problems = open_app(page, app_url)
    page.wait_for_function("window.__explorer_bokehjs_fixed === true")
    writes = page.evaluate("""async () => {
      const {InlineStyleSheet} = Bokeh.require("core/dom");
      const sheet = new InlineStyleSheet(":host { left: 1px; }");
      let mutations = 0;
      new MutationObserver((records) => { mutations += records.length; }).observe(sheet.el, {childList: true});
      const settle = () => new Promise((resolve) => setTimeout(resolve, 0));
      sheet.replace(":host { left: 1px; }");
      await settle();
      const same = mutations;
      sheet.replace(":host { left: 2px; }");
      await settle();
      return [same, mutations, sheet.css];
    }""")
    assert writes == [0, 1, ":host { left: 2px; }"]
    # Before the fixes an input change called getComputedStyle about 2,400 times (docs/performance.md).
    font_reads = page.evaluate("""() => {
      const {PlotView} = Bokeh.require("models/plots/plot_canvas");
      const views = [];
      const walk = (view) => { views.push(view); for (const child of view.children_views()) walk(child); };
      for (const root of Bokeh.index) walk(root);
      const view = views.find((v) => v instanceof PlotView && v.el.isConnected);
      const first = view.base_font_size;
      const original = window.getComputedStyle;
      let reads = 0;
      window.getComputedStyle = function (...args) { reads++; return original.apply(this, args); };
      const sizes = [first, view.base_font_size, view.base_font_size];
      window.getComputedStyle = original;
      return [reads, sizes.every((size) => size === sizes[0] && size > 0)];
    }""")
    assert font_reads == [0, True]  # the plot asked once and keeps the answer
    page.evaluate("""() => {
      const original = window.getComputedStyle;
      window.__style_reads = 0;
      window.getComputedStyle = function (...args) { window.__style_reads++; return original.apply(this, args); };
    }""")
    item = mnist_gallery()[5]
    page.get_by_role("button", name=item.description).click()
    expect(page.locator(".prediction-summary")).to_have_text(summary("mnist-cnn", item.source, item.description))
    page.wait_for_timeout(500)  # the repaint after the new data
    reads = page.evaluate("window.__style_reads")
    # 60 measured with the fixes on a first input change (Bokeh's and Panel's layout); 293-344 while each element's
    # --bk-* variables were still read once per frame, about 2,400 before any fix
    assert reads < 120, reads
    assert problems == []


def test_a_fixed_size_div_gets_new_text_in_place_without_a_page_layout(page: Page, app_url: str):
    problems = open_app(page, app_url)
    page.wait_for_function("window.__explorer_bokehjs_fixed === true")
    expect(page.locator(".conv-arithmetic")).to_contain_text("Window position 0")
    page.evaluate("""() => {
      const views = [];
      const walk = (view) => { views.push(view); for (const child of view.children_views()) walk(child); };
      for (const root of Bokeh.index) walk(root);
      const div = views.find((v) => v.model.name === "convolution-arithmetic");
      window.__div = {view: div, markup: div.markup_el, layouts: 0};
      for (const view of views) {
        const compute = view.compute_layout;
        view.compute_layout = function (...args) { window.__div.layouts++; return compute.apply(this, args); };
      }
    }""")
    kept = """() => {
      const {view, markup, layouts} = window.__div;
      return [view.markup_el === markup, view.markup_el.innerHTML === view.model.text, layouts];
    }"""
    for k in (1, 2):  # the page writes the Div's text at each step (the lesson's animation)
        page.get_by_role("button", name="Step ▶").click()
        expect(page.locator(".conv-arithmetic")).to_contain_text(f"Window position {k}")
    assert page.evaluate(kept) == [True, True, 0]  # the same element holds the new text; no layout of the page
    item = mnist_gallery()[7]  # the server writes it for a new input
    page.get_by_role("button", name=item.description).click()
    expect(page.locator(".prediction-summary")).to_have_text(summary("mnist-cnn", item.source, item.description))
    expect(page.locator(".conv-arithmetic")).to_contain_text("Window position 0")
    assert page.evaluate(kept)[:2] == [True, True]
    assert problems == []


RECORD_MESSAGES = """
(() => {
  const Native = window.WebSocket;
  window.__messages = [];
  window.WebSocket = function (...args) {
    const socket = new Native(...args);
    socket.addEventListener("message", (e) => {
      if (typeof e.data === "string" && e.data.includes('"events"')) window.__messages.push(e.data);
    });
    return socket;
  };
  window.WebSocket.prototype = Native.prototype;
  Object.assign(window.WebSocket, Native);
})();
"""


def test_an_open_tooltip_stays_open_in_place_when_the_hovered_plot_changes(page: Page, app_url: str):
    problems = open_app(page, app_url)
    page.wait_for_function("window.__explorer_bokehjs_fixed === true")
    page.wait_for_timeout(1000)  # the open lesson is built after the first paint; a click would wait behind it
    names = zoo.load("mnist-cnn").trace(torch.zeros(1, 1, 28, 28)).names
    point = page.evaluate(FIGURE_POINT, ["mnist-cnn:", (names.index("features.4") + 1.5) * CELL, 60])
    page.mouse.move(*point)
    tooltip = page.locator(".bk-Tooltip:popover-open")
    expect(tooltip).to_contain_text("features.4")
    page.evaluate("""() => {
      const el = document.querySelector(".bk-Tooltip:popover-open");
      window.__tooltip_moves = 0;
      new MutationObserver((records) => {
        for (const r of records)
          if ([...r.addedNodes, ...r.removedNodes].includes(el)) window.__tooltip_moves++;
      }).observe(el.parentNode, {childList: true});
    }""")
    page.mouse.click(*point)  # selects the layer: its grid and highlight change under the resting pointer
    expect(page.locator(".layer-summary")).to_contain_text("features.4")
    page.mouse.move(point[0] + CELL, point[1])  # the next layer: the same tooltip shows its text
    expect(tooltip).to_contain_text("features.5")
    assert page.evaluate("window.__tooltip_moves") == 0  # never taken out of the page and put back
    assert problems == []


def test_the_overview_is_sent_first_and_the_open_lesson_after_the_page_painted_it(page: Page, app_url: str):
    page.add_init_script(RECORD_MESSAGES)
    problems = open_app(page, app_url)
    page.wait_for_function("""() => {  // the lesson is built after the first paint, then filled
      const patches = Bokeh.documents[0].get_model_by_name("convolution-patches");
      return patches !== null && patches.data.patch.length > 0;
    }""", timeout=30_000)
    page.wait_for_timeout(500)
    ids = page.evaluate("""() => Object.fromEntries(["overview-strip", "convolution-patches", "explorer-painted"]
        .map((name) => [name, Bokeh.documents[0].get_model_by_name(name).id]))""")
    page.evaluate("""() => {  // the messages from now on, and the lesson's data before the new input
      window.__messages = [];
      window.__old_patches = Array.from(Bokeh.documents[0].get_model_by_name("convolution-patches").data.patch);
    }""")
    item = mnist_gallery()[9]
    page.get_by_role("button", name=item.description).click()
    expect(page.locator(".prediction-summary")).to_have_text(summary("mnist-cnn", item.source, item.description))
    ref = {name: f'"id":"{model_id}"' for name, model_id in ids.items()}  # as a patch names a model
    page.wait_for_function("(ref) => window.__messages.some((m) => m.includes(ref))", arg=ref["convolution-patches"])
    # A message is applied after it arrives (its binary buffers come in frames after it): wait until the page holds
    # the new input's data, not the old input's
    page.wait_for_function("""() => {
      const now = Bokeh.documents[0].get_model_by_name("convolution-patches").data.patch, old = window.__old_patches;
      return now.length !== old.length || Array.from(now).some((v, i) => v !== old[i]);
    }""")
    messages = page.evaluate("window.__messages")
    first = next(i for i, m in enumerate(messages) if ref["overview-strip"] in m)
    lesson = next(i for i, m in enumerate(messages) if ref["convolution-patches"] in m)
    assert first < lesson and ref["convolution-patches"] not in messages[first]
    # the lesson shows the new input: its window's products are the new image's (checked against conv2d elsewhere)
    patches = page.evaluate("Array.from(Bokeh.documents[0].get_model_by_name('convolution-patches').data.patch)")
    x = images.to_input(item.source, zoo.card("mnist-cnn"))[0, 0]  # (28, 28), the first conv's input
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    expected = padded.unfold(0, 3, 1).unfold(1, 3, 1).reshape(-1)  # every 3×3 window, row by row
    assert np.allclose(patches, expected.numpy(), atol=1e-5)
    assert problems == []


def test_a_corrupt_upload_shows_an_error_and_the_app_keeps_working(page: Page, app_url: str):
    problems = open_app(page, app_url)
    first = mnist_gallery()[0]  # a new session's input
    before = summary("mnist-cnn", first.source, first.description)
    expect(page.locator(".prediction-summary")).to_have_text(before)
    page.get_by_role("button", name="Upload", exact=True).click()
    page.locator("input[type=file][accept*=image]").set_input_files(
        files=[{"name": "digit.png", "mimeType": "image/png", "buffer": b"\x89PNG\r\n\x1a\n" + b"\x00" * 64}])
    expect(page.get_by_role("alert")).to_contain_text("digit.png")
    expect(page.locator(".prediction-summary")).to_have_text(before)
    screenshot(page, "app-upload-error")
    page.get_by_role("button", name="Gallery", exact=True).click()
    item = mnist_gallery()[22]
    page.get_by_role("button", name=item.description).click()
    expect(page.locator(".prediction-summary")).to_have_text(summary("mnist-cnn", item.source, item.description))
    assert problems == []


def test_drawing_on_the_canvas_updates_the_prediction(page: Page, app_url: str):
    problems = open_app(page, app_url)
    page.get_by_role("button", name="Draw", exact=True).click()
    draw_vertical_line(page, wiggle=True, pause_ms=20)
    expect(page.locator(".prediction-summary")).to_contain_text(re.compile(r"The model says 1 \(.*\) for your drawing"))
    screenshot(page, "app-draw")
    assert problems == []


def test_a_shared_url_opens_the_same_model_lesson_and_layer(page: Page, app_url: str):
    problems = open_app(page, f"{app_url}?model=mnist-vit&lesson=attention&layer=blocks.1.attn")
    # exactly "Model": once the lesson is on the page, its "Layer of this model" menu matches the name too
    expect(page.get_by_role("combobox", name="Model", exact=True)).to_have_value("mnist-vit")
    expect(page.locator(".bk-tab.bk-active")).to_have_text("Attention")
    expect(page.locator(".layer-summary")).to_contain_text("blocks.1.attn")
    screenshot(page, "app-shared-url")
    # and the URL follows the student's changes, so that it can be shared again
    page.locator(".bk-tab", has_text="Pruning").click()
    # the click waits on the server behind the attention lesson's first build (2 s alone, more on a loaded machine)
    expect(page).to_have_url(re.compile(r"[?&]lesson=pruning(&|$)"), timeout=20_000)
    assert problems == []


class HeldServer:
    """A relay of the page's websocket that holds back the server's messages from the first one that changes a
    given model's property, until released: what the server sends meanwhile joins the end of the queue."""

    def __init__(self, page: Page):
        self.change = ""  # as a patch names the change: '"model":{"id":"p1234"},"attr":"value"'
        self.armed = self.holding = self.page_sent = False
        self.held: list[str | bytes] = []
        self.to_page: WebSocketRoute | None = None
        page.route_web_socket(re.compile(r"/ws$"), self._relay)

    def _relay(self, ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()
        self.to_page = ws

        def from_page(message: str | bytes) -> None:
            if self.holding and isinstance(message, str) and self.change in message:
                self.page_sent = True  # the page's own change of the property, on its way to the server
            server.send(message)
        ws.on_message(from_page)

        def from_server(message: str | bytes) -> None:
            if self.armed and isinstance(message, str) and self.change in message:
                self.armed, self.holding = False, True  # the server's change, and all after it
            if self.holding:
                self.held.append(message)
            else:
                ws.send(message)
        server.on_message(from_server)

    def arm(self, model_id: str, attr: str) -> None:
        """Hold from the server's next change of the model's `attr` (once: a later one is delivered)."""
        self.change, self.armed = f'"model":{{"id":"{model_id}"}},"attr":"{attr}"', True

    def wait(self, page: Page, flag: str, why: str) -> None:
        deadline = time.monotonic() + 30
        while not getattr(self, flag) and time.monotonic() < deadline:
            page.wait_for_timeout(50)
        assert getattr(self, flag), why

    def release(self) -> None:
        while self.held:  # in order: what the server sends meanwhile joins the end of the queue
            self.to_page.send(self.held.pop(0))
        self.holding = False  # no handler runs between the queue found empty and this: they run in Playwright calls


def model_id(page: Page, test: str) -> str:
    """The id of the page's first Bokeh model `m` for which the JavaScript expression `test` holds."""
    return page.evaluate(f"() => [...Bokeh.documents[0].all_models].find((m) => {test}).id")


def test_a_tab_clicked_while_the_server_opens_another_lesson_is_the_one_shown(page: Page, app_url: str):
    """A layer click opens its lesson: the server switches the tabs once the page has painted the click's answer.
    A student who clicks a tab meanwhile crosses that switch on the wire: the page applies the server's older
    switch after its own click. The server then holds the student's lesson and the page must show that one too.

    The crossing is made certain, not waited for: the server's messages are held back from the one that switches
    the tabs, the tab is clicked, and they are released once the page has sent its click. (Not once the server has
    answered it: the held messages may carry a ticket the page must answer before the server sends anything more.)"""
    server = HeldServer(page)
    problems = open_app(page, app_url)
    lesson_tab = page.locator(".bk-tab.bk-active").first  # the lesson tabs' headers come before any in a lesson
    page.wait_for_function("() => Bokeh.documents[0].get_model_by_name('convolution-patches') !== null",
                           timeout=30_000)
    expect(lesson_tab).to_have_text("Convolution")
    server.arm(model_id(page, "m.css_classes?.includes('lesson-tabs')"), "active")
    names = trace.run(zoo.load("mnist-cnn").module, torch.zeros(1, 1, 28, 28)).names
    click_figure(page, "mnist-cnn:", (names.index("features.5") + 1.5) * CELL, 60)  # a BatchNorm: Normalization
    server.wait(page, "holding", "the server never switched the tabs to the layer's lesson")
    page.locator(".bk-tab", has_text="Pruning").click()  # the page still shows Convolution
    server.wait(page, "page_sent", "the page did not send its tab click")
    server.release()
    # the pruning lesson, built once the page has painted the answer to the tab click, comes after all that was held
    expect(page.get_by_text("Guided tour: pruning")).to_be_visible(timeout=60_000)
    expect(page).to_have_url(re.compile(r"[?&]lesson=pruning(&|$)"))
    expect(lesson_tab).to_have_text("Pruning")
    assert problems == []


def test_a_layer_picked_while_the_server_sets_another_is_the_one_shown(page: Page, app_url: str):
    """A layer click sets the open lesson's layer menu once the page has painted the click's answer. A student who
    picks another layer in the menu meanwhile crosses that change on the wire: the menu must end on the layer the
    lesson explains, the one picked. Made certain as the tab's crossing above."""
    server = HeldServer(page)
    problems = open_app(page, app_url)
    page.wait_for_function("() => Bokeh.documents[0].get_model_by_name('convolution-patches') !== null",
                           timeout=30_000)
    layer_text = page.locator(".convolution-layer")
    expect(layer_text).to_contain_text("(features.0)")
    server.arm(model_id(page, "m.title === 'Convolution' && m.options !== undefined"), "value")
    names = trace.run(zoo.load("mnist-cnn").module, torch.zeros(1, 1, 28, 28)).names
    click_figure(page, "mnist-cnn:", (names.index("features.4") + 1.5) * CELL, 60)  # the second convolution
    server.wait(page, "holding", "the server never set the lesson's layer menu to the clicked layer")
    third = labelled_name(zoo.load("mnist-cnn").module, "features.8")  # as the menu names it
    menu = page.locator("select").filter(has=page.locator("option", has_text=third))
    menu.select_option(label=third)  # the menu still shows the first
    server.wait(page, "page_sent", "the page did not send the layer picked")
    server.release()
    # the lesson's answer to the pick comes after all that was held, and after the menu's value sent again
    expect(layer_text).to_contain_text("(features.8)", timeout=30_000)
    expect(menu).to_have_value(third)
    assert problems == []
