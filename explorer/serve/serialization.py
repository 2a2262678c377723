"""The `quick_serialization` tuning: a model's values for the page (`HasProps.query_properties_with_values` without
its defaults, what Bokeh's serializer writes for each new model), with the same answer in less time.

Bokeh writes a model that is new to the page as the values it holds: those set on it, the defaults it keeps (made
per model: containers, models), and its theme's. To find them it reads every one of the class's properties, 50 to
150, through the property's descriptor, each read of a default asking the theme and making the default, and only
then drops the ones it does not write (a TODO in Bokeh's code says so). That was 85 % of writing a lesson's new
models (80-150 ms of a first opening, headless).

Here a property the model does not hold is not read when reading it could change nothing: its default is the same
for every model of the class (Bokeh does not keep it per model) and is a value (not Bokeh's Undefined, whose read
raises). Every other property is read as Bokeh reads it, in the same order, so that the same defaults are made and
kept, the same errors raised, and the answer is the same dict.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bokeh.core.has_props import HasProps
from bokeh.core.property.descriptors import PropertyDescriptor, UnsetValueError
from bokeh.core.property.singletons import Undefined
from bokeh.core.property.wrappers import PropertyValueContainer

from explorer.serve import defaults

BOKEH_QUERY = HasProps.query_properties_with_values

Plan = tuple[tuple[str, PropertyDescriptor, bool, bool], ...]
_plans: dict[type, Plan] = {}  # class -> (name, descriptor, its default read always?, a plain descriptor?)


def _plan(cls: type[HasProps]) -> Plan:
    """The class's properties in Bokeh's order, each with whether its default must be read even when not written
    (one Bokeh makes and keeps per model, or Undefined, whose read raises), and whether its descriptor serializes
    the value it holds as it is (not a data spec's, which rewrites it)."""
    try:
        return _plans[cls]
    except KeyError:
        pass
    plan = []
    for name in cls.properties(_with_props=True):
        descriptor = cls.lookup(name)
        try:
            must_read = (descriptor.property._may_have_unstable_default()
                         or descriptor.is_unstable(cls.__overridden_defaults__.get(name))
                         or descriptor.class_default(cls) is Undefined)
        except Exception:  # a default that cannot be made without a model: read it as Bokeh does
            must_read = True
        kind = type(descriptor)
        plain = all(getattr(kind, method, None) is getattr(PropertyDescriptor, method)
                    for method in ("get_value", "__get__", "_get"))  # not an alias's, not a data spec's
        plan.append((name, descriptor, must_read, plain))
    found = _plans[cls] = tuple(plan)
    return found


def query_properties_with_values(self: HasProps, query: Callable[[PropertyDescriptor[Any]], bool], *,
                                 include_defaults: bool = True, include_undefined: bool = False) -> dict[str, Any]:
    if include_defaults:
        return BOKEH_QUERY(self, query, include_defaults=include_defaults, include_undefined=include_undefined)
    held, kept = self._property_values, self._unstable_default_values
    themed = self.themed_values() or {}
    written = set(held) | set(kept) | set(themed)
    result: dict[str, Any] = {}
    for name, descriptor, must_read, plain in _plan(type(self)):
        if not (must_read or name in written) or not query(descriptor) or (
                name not in written and defaults.made_empty(descriptor, type(self))):
            continue  # an empty container default the model has not made: Bokeh would make it, then not write it
        try:
            value = _value(self, name, descriptor, plain, themed)
        except UnsetValueError:
            if not include_undefined:
                raise
            value = Undefined
        else:
            if name not in written:
                continue
            if name not in themed and isinstance(value, PropertyValueContainer) and name in kept:
                continue  # a container default the model keeps untouched: the page makes its own
        result[name] = value
    return result


def _value(model: HasProps, name: str, descriptor: PropertyDescriptor, plain: bool, themed: dict) -> Any:
    """`descriptor.get_value(model)`, read where the plain descriptor finds it: the value set, else the default the
    model keeps (unless its theme sets one)."""
    if plain:
        if name in model._property_values:
            value = model._property_values[name]
        elif name in model._unstable_default_values and name not in themed:
            value = model._unstable_default_values[name]
        else:
            value = Undefined
        if value is not Undefined:
            return value
    return descriptor.get_value(model)  # raises UnsetValueError for an Undefined value, as Bokeh does


def quick_serialization() -> None:
    HasProps.query_properties_with_values = query_properties_with_values
