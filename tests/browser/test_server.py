"""tune() in a served session: TCP_NODELAY on the session's own websocket, no 50 ms debounce, freed memory
kept for reuse, and full garbage collections only when the server is idle. serve_resources_locally(): no page of
the app loads anything from outside the server, however and whenever its session was made."""

from __future__ import annotations

import re
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from bokeh.util.token import generate_jwt_token, get_token_payload
from playwright.sync_api import Page, Route, expect

from .conftest import CHROMIUM, CHROMIUM_FLAGS, serve

APP = Path(__file__).resolve().parent / "apps" / "nodelay_app.py"


def test_a_served_sessions_websocket_has_tcp_nodelay(page: Page):
    with serve(APP) as url:
        page.goto(f"{url}?gc")
        expect(page.locator(".report")).to_have_text("sockets=1 nodelay=[1] debounce=0 memory kept=True",
                                                     timeout=30_000)
        # the page sends nothing more: after idle_gc.IDLE_S (and MIN_GAP_S after start) the idle collector collects
        expect(page.locator(".gc-report")).to_have_text(
            re.compile(r"automatic full collections off: True; frozen: True; full collections: [1-9]"), timeout=30_000)


def test_a_session_whose_page_left_is_discarded_at_the_next_check_not_after_its_lifetime(page: Page, tmp_path: Path):
    setup, log = tmp_path / "setup.py", tmp_path / "server.log"
    setup.write_text("import panel as pn\n"
                     "pn.state.on_session_destroyed(lambda context: print('session destroyed', flush=True))\n")
    # a class's lifetime (explorer/cli.py), checked every half second as Bokeh checks every 17 s
    options = ("--unused-session-lifetime", "120000", "--check-unused-sessions", "500", "--setup", str(setup))
    with serve(APP, log=log, options=options) as url:
        page.goto(url)
        for leave in (page.reload, lambda: page.goto(f"{url}?again=1"), page.close):  # each ends one session
            expect(page.locator(".report")).to_contain_text("nodelay", timeout=30_000)  # its session is connected
            destroyed = log.read_text().count("session destroyed")
            leave()
            deadline = time.monotonic() + 10  # the check's period, on a busy machine
            while log.read_text().count("session destroyed") == destroyed and time.monotonic() < deadline:
                time.sleep(0.1)
            assert log.read_text().count("session destroyed") == destroyed + 1, log.read_text()[-2000:]
        # the idle collector saw each destroyed (its next collection thaws what it froze and walks it all:
        # tests/ui/test_idle_gc.py)
        page = page.context.new_page()
        page.goto(f"{url}?gc")
        expect(page.locator(".gc-report")).to_contain_text("sessions destroyed: 3", timeout=30_000)


def test_tune_is_idempotent():
    from bokeh.server.views.ws import WSHandler

    from explorer.serve import tune

    tune()
    patched = WSHandler.open
    tune()
    assert WSHandler.open is patched and patched.explorer_nodelay


# A page the test fulfils itself counts, for Chromium, as coming from outside the local network: its Local Network
# Access checks would then refuse the page's websocket to 127.0.0.1.
LOCAL_ACCESS_FLAGS = [*CHROMIUM_FLAGS, "--disable-features=LocalNetworkAccessChecks"]
READY = "The model says"


def outside(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme not in ("data", "blob") and parts.hostname != "127.0.0.1"


LATE_SESSIONS: list[str] = []


def as_a_late_session(route: Route) -> None:
    """The app's page, with its session token replaced by one for a session the server does not know: what a page
    holds when the server discarded its session before the websocket connected (a busy server, a slow browser).
    The server then makes the session anew when the websocket connects, with no HTML page written for it."""
    response = route.fetch()
    page = response.text()
    token = re.search(r'"token":"([^"]+)"', page).group(1)
    payload = {k: v for k, v in get_token_payload(token).items() if k not in ("session_id", "session_expiry")}
    LATE_SESSIONS.append(f"late-{time.monotonic_ns()}")
    late = generate_jwt_token(LATE_SESSIONS[-1], extra_payload=payload)
    route.fulfill(response=response, body=page.replace(token, late))


def test_no_page_loads_anything_from_outside_the_server(playwright, app_url: str):
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LOCAL_ACCESS_FLAGS)
    requested: list[str] = []
    try:
        pages = []
        for _ in range(3):  # three students, each in a browser context of their own
            page = browser.new_context(viewport={"width": 1300, "height": 1000}).new_page()
            page.on("request", lambda r: requested.append(r.url))
            page.on("websocket", lambda ws: requested.append(ws.url))
            pages.append(page)
        first, second, late = pages
        for page in (first, second):
            page.goto(app_url)
            expect(page.locator(".prediction-summary")).to_contain_text(READY, timeout=60_000)
        first.reload()  # while the second student's session is open
        expect(first.locator(".prediction-summary")).to_contain_text(READY, timeout=60_000)
        late.route(app_url, as_a_late_session)
        late.goto(app_url)
        expect(late.locator(".prediction-summary")).to_contain_text(READY, timeout=60_000)
        late.locator(".bk-tab", has_text="Normalization").click()  # a lesson built after the page has painted
        expect(late.get_by_text("which numbers share one μ and σ²")).to_be_visible(timeout=30_000)
        for page in pages:
            page.wait_for_load_state("networkidle")
        assert len(LATE_SESSIONS) == 1
        assert len([url for url in requested if "/static/" in url]) > 10  # the pages did load their resources
        assert [url for url in requested if outside(url)] == []
    finally:
        browser.close()


# Ways a page sets a --bk-* variable on a plot's axis, each undone by the second script: on the element's style, in
# a stylesheet BokehJS writes into the axis's shadow root, in a linked stylesheet (a blob: URL) installed there.
THEMING = {
    "style": ('axis.el.style.setProperty("--bk-axis-label-text-color", "rgb(255, 0, 0)")',
              'axis.el.style.removeProperty("--bk-axis-label-text-color")'),
    "stylesheet": ('window.__sheet = new InlineStyleSheet(":host { --bk-axis-label-text-color: rgb(255, 0, 0); }"); '
                   "window.__sheet.install(axis.shadow_el)",
                   "window.__sheet.uninstall()"),
    "linked stylesheet": ('window.__sheet = new ImportedStyleSheet(URL.createObjectURL(new Blob('
                          '[":host { --bk-axis-label-text-color: rgb(255, 0, 0); }"], {type: "text/css"}))); '
                          "window.__sheet.install(axis.shadow_el); "
                          'await new Promise((resolve) => window.__sheet.el.addEventListener("load", resolve))',
                          "window.__sheet.uninstall()"),
}


@pytest.mark.parametrize("how", THEMING)
def test_bokeh_css_theming_still_applies_with_the_bokehjs_fixes(page: Page, app_url: str, how: str):
    """The fixes read no `--bk-*` variable while nothing on the page sets one, and keep each answer for one
    animation frame once something does: a variable set on the page, in any of the ways BokehJS sets styles,
    reaches the plot's visuals from the next frame on (an earlier fix answered "" always, and turned Bokeh's
    theming off)."""
    page.goto(app_url)
    expect(page.locator(".prediction-summary")).to_contain_text(READY, timeout=60_000)
    page.wait_for_function("window.__explorer_bokehjs_fixed === true")
    set_it, undo_it = THEMING[how]
    colours = page.evaluate("""async () => {
      const {InlineStyleSheet, ImportedStyleSheet} = Bokeh.require("core/dom");
      const views = [];
      const walk = (view) => { views.push(view); for (const child of view.children_views()) walk(child); };
      for (const root of Bokeh.index) walk(root);
      const axis = views.find((v) => v.visuals?.axis_label_text !== undefined && v.el.isConnected);
      const text = axis.visuals.axis_label_text;
      const frame = () => new Promise((resolve) => requestAnimationFrame(() => resolve()));
      await frame();
      const before = text.get_text_color();
      SET;
      await frame();
      await frame();
      const themed = text.get_text_color();
      UNDO;
      await frame();
      await frame();
      return [before, themed, text.get_text_color()];
    }""".replace("SET", set_it).replace("UNDO", undo_it))
    assert colours[1] == "rgb(255, 0, 0)" and colours[0] == colours[2] != colours[1]
