"""The `quick_edit_readonly` tuning: Panel's `edit_readonly`, which lets Panel set its own read-only parameters, with
the same effect in less time.

Panel's `edit_readonly(obj)` sets `readonly = False` and `constant = False` on every parameter of `obj`, and sets
both back afterwards: four parameter attribute writes per parameter, each one param's full `Parameter.__setattr__`.
Panel runs it for every event the page sends (`Syncable._process_events`, on the widget, 20-40 parameters) and, since
Panel 1.9 tracks busy events by id (holoviz/panel#8498), seven times per event on its global state: adding and
removing the event's id, each time through a watcher that sets `state.busy`. On a served gallery click that was about
12 % of the server's time (py-spy, the normalization lesson open).

Writing `False` over `False` changes nothing, so here only the parameters that are read-only or constant, or whose
`readonly` or `constant` someone watches (a watcher may want every write), are written, in Panel's order: first
every one to False, then every `readonly` back, then every `constant` back.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import panel.util.parameters
import param

PANEL_EDIT_READONLY = panel.util.parameters.edit_readonly


@contextlib.contextmanager
def edit_readonly(parameterized: param.Parameterized) -> Iterator[None]:
    """Panel's `edit_readonly`, writing only the parameters that the writes can change or that are watched."""
    params = [p for p in parameterized.param.objects("existing").values()
              if p.readonly or p.constant or "readonly" in p.watchers or "constant" in p.watchers]
    readonlys, constants = [p.readonly for p in params], [p.constant for p in params]
    for p in params:
        p.readonly = False
        p.constant = False
    try:
        yield
    finally:
        for p, readonly in zip(params, readonlys, strict=True):
            p.readonly = readonly
        for p, constant in zip(params, constants, strict=True):
            p.constant = constant


def quick_edit_readonly() -> None:
    """Every loaded Panel module that calls Panel's `edit_readonly` by its own name calls this one (a module loaded
    later keeps Panel's: the same effect)."""
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] == "panel" and getattr(module, "edit_readonly", None) is PANEL_EDIT_READONLY:
            module.edit_readonly = edit_readonly
