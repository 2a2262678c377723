"""What the page's URL holds, both ways: a shared link opens the same screen.

The page: the session state's model, lesson, layer, channel (a head in the attention lesson) and input (named as in
explorer/core/input_link.py). Each lesson: the settings its class lists in `Lesson.url_settings`, synced once the
lesson is built (lessons are built when first opened) and has drawn itself once. Until then the URL keeps what the
link asked for, and syncing the lesson applies it. After that, every change of a synced setting rewrites the URL
(`pn.state.location.sync`); a value that cannot be used is skipped, and `state.error` says which.
"""

from __future__ import annotations

import json

import panel as pn
import param
from panel.io.location import Location

from explorer.session.lesson import Lesson
from explorer.session.state import ExplorerState

# The state's parameter -> its name in the URL.
PAGE_SETTINGS = {"model": "model", "lesson": "lesson", "layer": "layer", "channel": "channel", "input": "input"}


def link_page(state: ExplorerState, location: Location | None) -> None:
    """Keep the URL (`location`, the page's; None outside a server: nothing to do) and the page's settings in step,
    applying the URL's first."""
    if location is None:
        return
    location.sync(state, PAGE_SETTINGS, on_error=lambda values: apply_link(state, state, values))
    # Once loaded, the page sends its own address, and what the server writes while applying it is not sent back
    # (the default input in place of a refused one): write every setting again then.
    pn.state.onload(lambda: location.update_query(**url_values(state, PAGE_SETTINGS)))


def link_lesson(lesson: pn.viewable.Viewable, state: ExplorerState, location: Location | None) -> None:
    """Keep the URL and a newly built lesson's `url_settings` in step, applying the URL's first."""
    if location is None or not isinstance(lesson, Lesson) or not lesson.url_settings:
        return
    names = {setting: url_name for url_name, setting in lesson.url_settings.items()}

    def sync() -> None:
        location.sync(lesson, names, on_error=lambda values: apply_link(state, lesson, values, names))

    if state.after_paint is None:
        sync()
    else:  # after the lesson's first drawing, which waits for the page too: its parts know the state's layer then
        state.after_paint.run((id(lesson), "link"), sync)


def url_values(target: param.Parameterized, names: dict[str, str]) -> dict[str, str]:
    """The URL's text for each of `target`'s parameters in `names` (parameter -> URL name), as `Location.sync` writes
    them: the parameter's serialization, JSON where that is not text; a None is left out."""
    values = {}
    for setting, url_name in names.items():
        value = getattr(target, setting)
        if value is not None:
            value = target.param[setting].serialize(value)
            values[url_name] = value if isinstance(value, str) else json.dumps(value)
    return values


def apply_link(state: ExplorerState, target: param.Parameterized, values: dict[str, object],
               names: dict[str, str] = PAGE_SETTINGS) -> None:
    """Apply what a shared link asks of `target` (the state or a lesson, whose parameter -> URL names are `names`) one
    value at a time, and say in `state.error` which values could not be used, and what is shown instead."""
    refused, shown = [], []
    for setting, value in values.items():
        if value == "null" and target.param[setting].allow_None:  # how the URL writes None
            value = None
        try:
            target.param.update(**{setting: value})
        except ValueError:
            refused.append(f"{names[setting]}={value}")
            shown.append(f"{names[setting]}={getattr(target, setting)}")
    if refused:
        state.ensure()  # an input first: the first one would clear the message
        state.error = (f"The link asked for {', '.join(refused)}, which is not available here; "
                       f"showing {', '.join(shown)} instead.")
