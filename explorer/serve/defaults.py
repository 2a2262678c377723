"""The `cached_defaults` tuning: a Bokeh property's default value, made once per class instead of on every read.

A Bokeh model stores only the properties set on it; reading any other one makes its default anew
(`PropertyDescriptor._get_default`: the class's overridden defaults gathered along its MRO, the raw default copied,
validated and transformed by `prepare_value`). Building a lesson reads every property of every model many times:
each model's constructor, the document walking all of its models when the lesson is attached
(`DocumentModelManager.recompute`), and the serializer writing the new models. Measured on a first lesson opening,
this was about 40 % of the server's time.

Here a default that Bokeh itself treats as stable (not a container, not made by a function: Bokeh does not keep it
per model either) and that is an immutable value (None, a bool, a number, a string, or a tuple of those) is made once
per (property, class) and then returned as is. A model whose theme sets the property, and every other default, goes
through Bokeh's own path.
"""

from __future__ import annotations

from typing import Any

from bokeh.core.has_props import HasProps
from bokeh.core.property.descriptors import PropertyDescriptor

IMMUTABLE = (type(None), bool, int, float, str)

_made: dict[tuple[int, type], Any] = {}  # (id of the descriptor, the model's class) -> its default


def is_immutable(value: Any) -> bool:
    return type(value) in IMMUTABLE or (type(value) is tuple and all(is_immutable(item) for item in value))


def _cached(get_default):
    def cached_default(self: PropertyDescriptor, obj: HasProps) -> Any:
        themed = obj.themed_values()
        if themed is not None and self.name in themed:
            return get_default(self, obj)
        key = (id(self), obj.__class__)  # descriptors live as long as their class: an id names one for good
        try:
            return _made[key]
        except KeyError:
            pass
        value = get_default(self, obj)
        if not self.has_unstable_default(obj) and is_immutable(value):
            _made[key] = value
        return value

    cached_default.explorer_cached = True
    return cached_default


def cached_defaults() -> None:
    if not getattr(PropertyDescriptor._get_default, "explorer_cached", False):
        PropertyDescriptor._get_default = _cached(PropertyDescriptor._get_default)
