"""The saliency lesson in the real app (`panel serve app.py`): a student opens it, sees every method's map and the
faithfulness curves drawn, runs the sanity check, switches model mid-lesson and gets the maps of the new model;
no page error, and no traceback or error in the server's log.

Leaves screenshots in screenshots/saliency-*.png.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from explorer.core import zoo
from explorer.lessons.saliency import math as sm
from explorer.session.tags import MODEL_TAG

from .conftest import ROOT, open_page, place_every_part, screenshot, serve

MAPS = [f"saliency-map-{method}" for method in sm.METHODS]
TIMEOUT_MS = 120_000  # five maps and ten curves on a busy two-core machine
SERVER_LOG_PROBLEM = re.compile(r"Traceback|Error|RuntimeWarning")

# Rows of data in each named source, and the models its tags name.
SHOWN = f"""(names) => Object.fromEntries(names.map((name) => {{
  const m = Bokeh.documents[0].get_model_by_name(name);
  const tags = m ? m.tags.filter((t) => typeof t === "string" && t.startsWith("{MODEL_TAG}")) : [];
  return [name, m ? [m.get_length() ?? 0, tags.map((t) => t.slice({len(MODEL_TAG)}))] : null];
}}))"""

# True once every named source has data computed for the model given.
ALL_SHOWN_FOR = f"""([names, model]) => {{
  if (typeof Bokeh === "undefined" || !Bokeh.documents.length) return false;
  const shown = ({SHOWN})(names);
  return names.every((name) => shown[name] && shown[name][0] > 0 && shown[name][1].length > 0
                               && shown[name][1].every((m) => m === model));
}}"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    log = tmp_path_factory.mktemp("saliency") / "server.log"
    with serve(ROOT / "app.py", log=log) as url:
        yield url, log


def wait_shown(page: Page, names: list[str], model: str) -> None:
    page.wait_for_function(ALL_SHOWN_FOR, arg=[names, model], polling=250, timeout=TIMEOUT_MS)


@pytest.mark.skipif(not zoo.is_available("mnist-vit"), reason="mnist-vit is not trained here")
def test_a_student_sees_maps_and_curves_runs_the_check_and_switches_model(page: Page, served):
    url, log = served
    errors = open_page(page, f"{url}?model=mnist-cnn&lesson=saliency", "Saliency: what the model looks at",
                       width=1440, height=900, timeout=TIMEOUT_MS)
    place_every_part(page)  # the curves and the sanity check lie below the first screen
    wait_shown(page, ["saliency-picture", *MAPS, "saliency-deletion", "saliency-insertion"], "mnist-cnn")
    lines = page.evaluate("() => Bokeh.documents[0].get_model_by_name('saliency-deletion').data.xs.length")
    assert lines == len(sm.METHODS)
    expect(page.locator(".saliency-faithfulness")).to_contain_text("On this input", timeout=TIMEOUT_MS)
    expect(page.locator(".saliency-gap")).to_contain_text("completeness gap")
    screenshot(page, "saliency-mnist-cnn")

    page.get_by_role("button", name="Run the sanity check").click()
    expect(page.locator(".saliency-sanity")).to_contain_text(re.compile("passes the check|fail the check"),
                                                             timeout=TIMEOUT_MS)
    correlations = page.evaluate("() => Bokeh.documents[0].get_model_by_name('saliency-sanity').data.ys")
    assert len(correlations) == len(sm.METHODS) and all(c[0] == 1 and len(c) > 1 for c in correlations)
    screenshot(page, "saliency-sanity", full_page=True)

    page.get_by_role("combobox", name="Model", exact=True).select_option("mnist-vit")
    wait_shown(page, ["saliency-picture", *MAPS, "saliency-deletion", "saliency-insertion"], "mnist-vit")
    layers = page.get_by_role("combobox", name="Grad-CAM layer", exact=True)
    assert layers.input_value() == sm.default_grad_cam_layer(zoo.load("mnist-vit").module)
    assert page.evaluate("() => Bokeh.documents[0].get_model_by_name('saliency-sanity').data.ys.length") == 0
    assert page.get_by_text("Traceback").count() == 0
    assert errors == []
    problems = [line for line in log.read_text().splitlines() if SERVER_LOG_PROBLEM.search(line)]
    assert problems == [], "\n".join(problems[:20])
