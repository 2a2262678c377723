"""Playwright against Debian's chromium (never `playwright install`) and `panel serve app.py`."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is missing: `make test` installs it (apt-get install chromium)")
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": CHROMIUM_FLAGS}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(app: Path, log: Path | None = None, options: tuple[str, ...] = ()) -> Iterator[str]:
    """`panel serve APP [OPTIONS]` on a free port, as a student would start it; yields the page's URL. The server's
    output goes to `log` (for a test to read), else to a temporary file: a pipe that nobody reads would block the
    server once its log filled the pipe's buffer."""
    kept = log is not None
    if log is None:
        handle, name = tempfile.mkstemp(prefix="panel-serve-", suffix=".log")
        os.close(handle)
        log = Path(name)
    port = free_port()
    command = [sys.executable, "-m", "panel", "serve", str(app), "--port", str(port), "--address", "127.0.0.1",
               "--allow-websocket-origin", f"127.0.0.1:{port}", *options]
    output = open(log, "w")  # closed once the server has stopped
    server = subprocess.Popen(command, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT, text=True,
                              # as app.py sets it for the real app (the test apps are small scripts)
                              env={**os.environ, "BOKEH_BROWSER": "none", "OMP_WAIT_POLICY": "PASSIVE"})
    url = f"http://127.0.0.1:{port}/{app.stem}"
    deadline = time.monotonic() + 120  # a busy CI machine
    while True:
        try:
            urllib.request.urlopen(url, timeout=30)
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"panel serve did not start:\n{log.read_text()}")
            time.sleep(0.3)
    try:
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)
        output.close()
        if not kept:
            log.unlink()


def open_page(page: Page, url: str, ready_text: str, width: int = 1300, height: int = 1000,
              timeout: int = 60_000) -> list[str]:
    """Open `url` in a `width` x `height` viewport and wait until `ready_text` is shown and painted. Returns the
    page's script errors: a list that keeps filling while the test acts."""
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.set_viewport_size({"width": width, "height": height})
    page.goto(url)
    page.get_by_text(ready_text).first.wait_for(timeout=timeout)
    page.wait_for_timeout(300)  # the canvases paint after the text arrives
    return errors


def screenshot(page: Page, name: str, full_page: bool = False) -> Path:
    """Save a screenshot to look at; not in test-results/, which pytest-playwright empties on every run."""
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=path, full_page=full_page)
    return path


# The shown placeholders of parts placed once the student scrolls to them (explorer/session/later.py), found
# through shadow roots, in page order.
SHOWN_PLACEHOLDERS = """() => {
  const found = [];
  const walk = (root) => {
    for (const el of root.querySelectorAll(".later-placeholder")) if (el.getClientRects().length > 0) found.push(el);
    for (const el of root.querySelectorAll("*")) if (el.shadowRoot) walk(el.shadowRoot);
  };
  walk(document);
  return found;
}"""


# In the page: scroll to each shown placeholder in turn, as a student reading the whole lesson does, until none is
# left (each waits for the server to send its part); then back to where every scrolled box stood. Not awaited: a
# test with several students starts it in each page, then waits for each.
PLACE_EVERY_PART = f"""() => {{
  if (window.__placing) return;
  const first = ({SHOWN_PLACEHOLDERS})()[0];
  const scrolled = [];
  for (let node = first; node; node = node.parentNode || node.host)
    if (node instanceof Element && node.scrollHeight > node.clientHeight) scrolled.push([node, node.scrollTop]);
  const started = performance.now(), waiting = () => performance.now() - started < 120000;
  window.__placing = true;
  (async () => {{
    for (let shown = ({SHOWN_PLACEHOLDERS})(); shown.length > 0 && waiting(); shown = ({SHOWN_PLACEHOLDERS})()) {{
      const mark = shown[0];
      mark.scrollIntoView({{block: "start"}});
      while (mark.isConnected && mark.getClientRects().length > 0 && waiting())
        await new Promise((resolve) => setTimeout(resolve, 50));
    }}
    for (const [el, top] of scrolled) el.scrollTop = top;
    window.__placing = false;
  }})();
}}"""
EVERY_PART_PLACED = f"() => !window.__placing && ({SHOWN_PLACEHOLDERS})().length === 0"


def start_placing_every_part(page: Page) -> None:
    """Start scrolling through the open lesson's parts that join the page when scrolled to (PLACE_EVERY_PART)."""
    page.evaluate(PLACE_EVERY_PART)


def place_every_part(page: Page, timeout: float = 30_000) -> None:
    """Scroll to each part of the open lesson that joins the page when scrolled to, as a student reading the whole
    lesson does, until every one is there; then back to where the page was. For a test that reads the lower parts."""
    start_placing_every_part(page)
    page.wait_for_function(EVERY_PART_PLACED, timeout=timeout)


@pytest.fixture(scope="session")
def app_url() -> Iterator[str]:
    """The app itself: `panel serve app.py`."""
    with serve(ROOT / "app.py") as url:
        yield url


# The view of the Bokeh figure whose title starts with `title`, or null: a function for the scripts below.
FIND_FIGURE = """function findFigure(title) {
  const seen = new Set();
  function find(view) {
    if (!view || seen.has(view)) return null;
    seen.add(view);
    if (view.model.type === "Figure" && view.model.title && view.model.title.text.startsWith(title)) return view;
    const kids = view._child_views ? [...view._child_views.values()] : [];
    if (view.child_views) kids.push(...view.child_views);
    for (const k of kids) { const found = find(k); if (found) return found; }
    return null;
  }
  for (const root of Object.values(Bokeh.index)) {
    const view = find(root);
    if (view) return view;
  }
  return null;
}"""

# The page coordinates of a data point (x, y) of the Bokeh figure whose title starts with `title`.
FIGURE_POINT = f"""([title, x, y]) => {{
  {FIND_FIGURE}
  const view = findFigure(title);
  if (!view) return null;
  const box = view.el.getBoundingClientRect();
  return [box.left + view.frame.x_scale.compute(x), box.top + view.frame.y_scale.compute(y)];
}}"""

# The box of the Bokeh figure whose title starts with the argument, scrolled into the viewport; or null.
FIGURE_BOX = f"""(title) => {{
  {FIND_FIGURE}
  const view = findFigure(title);
  if (!view) return null;
  view.el.scrollIntoView({{block: "center"}});
  const b = view.el.getBoundingClientRect();
  return {{x: b.left, y: b.top, width: b.width, height: b.height}};
}}"""


def draw_vertical_line(page: Page, wiggle: bool = False, pause_ms: float = 0) -> None:
    """Draw a "1" on the Draw tab's canvas with the mouse: top to bottom in 20 moves, `wiggle` moving 2 px sideways
    on every other one (a hand is not a ruler), `pause_ms` between moves."""
    box = page.get_by_role("img", name=re.compile("Drawing area")).bounding_box()
    x, top, bottom = box["x"] + box["width"] / 2, box["y"] + box["height"] * 0.15, box["y"] + box["height"] * 0.85
    page.mouse.move(x, top)
    page.mouse.down()
    for i in range(1, 21):
        page.mouse.move(x + 2 * (i % 2) * wiggle, top + (bottom - top) * i / 20)
        if pause_ms:
            page.wait_for_timeout(pause_ms)
    page.mouse.up()


def select_layer(menu: Locator, layer: str) -> None:
    """Pick `layer` in a layer menu, whose options read what each layer does with its name in brackets."""
    label = next(o for o in menu.locator("option").all_text_contents() if o.endswith(f"({layer})"))
    menu.select_option(label=label)


def click_figure(page: Page, title: str, x: float, y: float, timeout: float = 10) -> None:
    """A real mouse click on the canvas, at data point (x, y) of the figure (waiting up to `timeout` s for a
    figure with that title: a new title may arrive a message after the text the test waited for)."""
    deadline = time.monotonic() + timeout
    while (point := page.evaluate(FIGURE_POINT, [title, x, y])) is None and time.monotonic() < deadline:
        page.wait_for_timeout(50)
    assert point is not None, f"no figure titled {title!r}… on the page"
    page.mouse.click(*point)
