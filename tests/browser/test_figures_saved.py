"""A teacher saves a figure: in the real app (`panel serve app.py`), offline, a click on a figure's save tool downloads
a PNG that BokehJS draws in the page, named after the figure's title as it reads when saved."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from playwright.sync_api import Page

from explorer.lessons import plots
from explorer.ui.saving import slug

from .conftest import FIND_FIGURE

TITLE = "Output channel"  # the convolution step-through's output map, renamed with the channel shown

# The figure's box, scrolled into view, and its save button's centre (shown while the pointer is over the figure).
SAVE_BUTTON = f"""(title) => {{
  {FIND_FIGURE}
  const view = findFigure(title);
  view.el.scrollIntoView({{block: "center"}});
  const find = (root) => {{  // the toolbar's buttons lie in shadow roots inside the figure's
    for (const e of root.querySelectorAll("*")) {{
      if (e.title === "Save") return e;
      const inner = e.shadowRoot && find(e.shadowRoot);
      if (inner) return inner;
    }}
    return null;
  }};
  const button = find(view.el.shadowRoot);
  const figure = view.el.getBoundingClientRect(), b = button.getBoundingClientRect();
  return {{figure: [figure.left, figure.top, figure.width, figure.height], title: view.model.title.text,
           button: [b.left + b.width / 2, b.top + b.height / 2], ratio: window.devicePixelRatio}};
}}"""


def test_a_click_on_save_downloads_a_png_of_the_figure_named_after_its_title(page: Page, app_url: str):
    outside: list[str] = []
    page.on("request", lambda r: outside.append(r.url)
            if not r.url.startswith(("http://127.0.0.1", "ws://127.0.0.1", "data:", "blob:")) else None)
    page.set_viewport_size({"width": 1400, "height": 1000})
    page.goto(f"{app_url}?model=mnist-cnn&lesson=convolution")
    page.wait_for_function(f"() => {{ {FIND_FIGURE} return findFigure({TITLE!r}) !== null; }}", timeout=60_000)
    channel = page.get_by_label("Output channel")
    channel.fill("5")
    channel.press("Enter")  # the title changes in the page: the file is named after the new one
    page.wait_for_function(f"() => {{ {FIND_FIGURE} return findFigure('{TITLE} 5 ') !== null; }}", timeout=30_000)
    page.wait_for_timeout(300)  # the canvas paints after the title arrives
    left, top, width, height = page.evaluate(SAVE_BUTTON, TITLE)["figure"]
    page.mouse.move(left + width / 2, top + height / 2)  # the toolbar shows under the pointer
    page.wait_for_timeout(300)
    box = page.evaluate(SAVE_BUTTON, TITLE)
    with page.expect_download() as download:
        page.mouse.click(*box["button"])
    saved = download.value
    assert saved.suggested_filename == f"convolution-{slug(box['title'])}.png"
    assert saved.suggested_filename.startswith("convolution-output-channel-5-")
    data = saved.path().read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000
    picture = Image.open(io.BytesIO(data)).convert("RGB")
    # the whole figure (title, axes, map, colour bar) at the page's pixel ratio
    assert picture.size == (round(width * box["ratio"]), round(height * box["ratio"]))
    pixels = np.asarray(picture)
    palette = {tuple(int(c[i:i + 2], 16) for i in (1, 3, 5)) for c in plots.DIVERGING}
    on_palette = {tuple(p) for p in np.unique(pixels.reshape(-1, 3), axis=0)} & palette
    assert len(on_palette) > 50, f"only {len(on_palette)} colours of the palette in the file"  # its colour bar
    page.mouse.move(0, 0)  # the toolbar hides: the screen shows the figure as the file has it
    page.wait_for_timeout(300)
    screen = np.asarray(Image.open(io.BytesIO(page.screenshot(clip=dict(x=left, y=top, width=width, height=height))))
                        .convert("RGB"))
    differ = np.any(np.abs(screen.astype(int) - pixels.astype(int)) > 8, axis=2).mean()  # text anti-aliasing
    assert differ < 0.01, f"{differ:.1%} of the file's pixels differ from the figure on screen"
    assert outside == []
