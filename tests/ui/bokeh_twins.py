"""Twin models for comparing a tuning with Bokeh: every concrete Bokeh and Panel model class, equal values (a model
standing for another of its class), and models made by a given `HasProps.__init__` inside a `with` block: Bokeh's
own (`defaults.BOKEH_INIT`) whatever the process's tunings installed, so that a comparison with Bokeh's reading does
not depend on which tests ran before."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from bokeh.core.has_props import HasProps
from bokeh.model import Model

from explorer.serve import defaults


@contextmanager
def constructor(init: Callable[..., None] = defaults.BOKEH_INIT) -> Iterator[None]:
    saved, HasProps.__init__ = HasProps.__init__, init
    try:
        yield
    finally:
        HasProps.__init__ = saved


def model_classes() -> list[type[Model]]:
    import bokeh.models  # noqa: F401  (registers every model class)
    import panel.models  # noqa: F401

    return sorted((cls for cls in Model.model_class_reverse_map.values()
                   if not getattr(cls, "__abstract__", False) and cls.__module__.split(".")[0] in ("bokeh", "panel")),
                  key=lambda cls: f"{cls.__module__}.{cls.__qualname__}")


def same_values(ours: object, theirs: object) -> bool:
    """Equal values (dicts in one order), a model standing for the other of its class: each twin made its own."""
    if isinstance(ours, Model) or isinstance(theirs, Model):
        return type(ours) is type(theirs)
    if isinstance(ours, dict) and isinstance(theirs, dict):
        return list(ours) == list(theirs) and all(same_values(ours[k], theirs[k]) for k in ours)
    if isinstance(ours, (list, tuple)) and isinstance(theirs, (list, tuple)):
        return len(ours) == len(theirs) and all(same_values(a, b) for a, b in zip(ours, theirs, strict=True))
    return type(ours) is type(theirs) and (ours == theirs or (ours != ours and theirs != theirs))  # NaN as NaN
