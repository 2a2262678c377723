"""The example notebook runs top to bottom and its views render with inline resources (no CDN)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "tour.ipynb"
# A resource the page would fetch: a script or stylesheet tag pointing at a server. (Bokeh's inline
# bundle itself names a MathJax CDN in a string, which is only used for LaTeX; no view here uses it.)
REMOTE_RESOURCE = re.compile(r"<(?:script|link)[^>]*(?:src|href)=[\\'\"]*https?://")


@pytest.fixture(scope="module")
def executed() -> nbformat.NotebookNode:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
                   ).execute()
    return notebook


def outputs(notebook: nbformat.NotebookNode) -> list[dict]:
    return [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]


def test_every_cell_runs_without_error(executed):
    errors = [o for o in outputs(executed) if o.output_type == "error"]
    assert errors == [], errors[0]["evalue"] if errors else ""


def test_resources_are_inline_and_nothing_is_fetched_from_a_server(executed):
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs(executed))
    assert "Bokeh" in json.dumps(outputs(executed)), "no Bokeh resources were written into the notebook"
    remote = REMOTE_RESOURCE.findall(html)
    assert not remote, f"{len(remote)} remote resources, first: {remote[0]}"


def test_every_lesson_of_the_app_is_shown_in_the_notebook():
    from explorer.ui.shell import LESSONS

    sources = "".join(c.source for c in nbformat.read(NOTEBOOK, as_version=4).cells if c.cell_type == "code")
    missing = [name for name, lesson in LESSONS.items()
               if lesson.target is not None and f"explorer.{lesson.target.partition(':')[2]}(" not in sources]
    assert missing == [], f"the notebook shows no {', '.join(missing)} lesson"


def test_every_view_displays_a_widget(executed):
    view_cells = [c for c in executed.cells if c.cell_type == "code" and c.source.startswith("explorer.")]
    assert view_cells
    for cell in view_cells:
        kinds = {kind for o in cell.outputs for kind in o.get("data", {})}
        assert "application/vnd.holoviews_exec.v0+json" in kinds, f"{cell.source!r} displayed {sorted(kinds)}"
