"""Which model a result on screen was computed for: every figure, data source and pane that shows one carries the
tag `explorer-model=NAME`, set together with the result. A page (and the classroom test) can then check that nothing
on screen describes another model than the one chosen.
"""

from __future__ import annotations

MODEL_TAG = "explorer-model="  # tags=[MODEL_TAG + name] on whatever shows a result computed for one model


def model_tag(model_name: str) -> list[str]:
    """The tags of a figure, data source or pane that shows a result of `model_name`: set them together with the
    result, so that a page (and the classroom test) can check that nothing on screen describes another model."""
    return [MODEL_TAG + model_name]


def tag_results(model_name: str, *results) -> None:
    """Mark figures, data sources and panes as showing a result computed for `model_name` (model_tag). Call it
    where their content is set, in the same one_update() (explorer.session.state): the page then never holds a result
    tagged for another model than the one it was computed for. Setting the tags a result already has sends nothing."""
    for result in results:
        result.tags = model_tag(model_name)
