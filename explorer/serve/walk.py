"""The `quick_model_walk` tuning: `Model.references()`, the walk over every model a model leads to, with the same
answer in less time.

Bokeh walks the whole page (`DocumentModelManager.recompute`: every root's `references()`) whenever a layout's
children change; the explorer does it once per lesson built (explorer/serve/recompute.py). On a page of 1,333 models
(two lessons built) the walk took 63-70 ms, about 47 microseconds a model, and it grows with every lesson opened.
Bokeh's `collect_models` reads each property that can hold a model through the property's descriptor, which for a
value the model does not hold asks the theme and makes or fetches the default on every read; rebuilds the list of
such properties for every model; and calls itself once per item of every list it meets, a source's columns included.

Here each value is read where the descriptor would find it: a value set on the model (`_property_values`), else the
default Bokeh already made and keeps for it (`_unstable_default_values`), unless the document's theme sets that
property, else through the descriptor, as Bokeh does. A default that Bokeh does not keep per model (a stable one)
and that is None, a bool, a number or a string leads to no model: after the first read of one for a (class,
property), it is not read again. Lists, tuples, dicts, non-model HasProps and dataclasses are followed exactly as
`bokeh.model.util.visit_value_and_its_immediate_references` follows them; a scalar item is skipped without a call.
"""

from __future__ import annotations

import inspect
from typing import Any

from bokeh.core.has_props import HasProps
from bokeh.core.property.descriptors import PropertyDescriptor
from bokeh.core.property.singletons import Undefined
from bokeh.model import Model
from bokeh.util.dataclasses import entries, is_dataclass

from explorer.serve import defaults

SCALARS = frozenset({int, float, str, bool, type(None)})  # values that lead to no model, as Bokeh's visit finds
_MISSING = object()

# class -> (property that can hold a model, read by the plain descriptor?, its descriptor)
_read_directly: dict[type, tuple[tuple[str, bool, PropertyDescriptor], ...]] = {}
_leads_nowhere: set[tuple[type, str]] = set()  # (class, property) whose stable default is a scalar


def _properties_with_refs(cls: type[HasProps]) -> tuple[tuple[str, bool, PropertyDescriptor], ...]:
    """The class's properties that can hold a model, each with whether the class reads it through Bokeh's plain
    descriptor (the fast path's reads are that descriptor's own) and its descriptor, once per class."""
    try:
        return _read_directly[cls]
    except KeyError:
        found = _read_directly[cls] = tuple((name, _plain(inspect.getattr_static(cls, name, None)), cls.lookup(name))
                                            for name in cls.properties_with_refs())
        return found


def _plain(descriptor: object) -> bool:
    """Whether reading the property is Bokeh's plain descriptor's read (the value held, else the default)."""
    return all(getattr(type(descriptor), method, None) is getattr(PropertyDescriptor, method)
               for method in ("__get__", "_get"))


def references(model: Model) -> set[Model]:
    """Every model that `model` leads to, itself included: `set(bokeh.model.util.collect_models(model))`."""
    found: dict[str, Model] = {}
    waiting: list[Model] = [model]

    def visit(value: Any) -> None:
        kind = type(value)
        if kind in SCALARS:
            return
        if kind is list or issubclass(kind, (list, tuple)):
            for item in value:
                if type(item) not in SCALARS:
                    visit(item)
        elif issubclass(kind, dict):
            for key, item in value.items():
                if type(key) not in SCALARS:
                    visit(key)
                if type(item) not in SCALARS:
                    visit(item)
        elif issubclass(kind, HasProps):
            if issubclass(kind, Model):
                if value.id not in found:
                    waiting.append(value)
            else:
                visit_properties(value)
        elif is_dataclass(value):
            for _, item in entries(value):
                visit(item)

    def visit_properties(owner: HasProps) -> None:
        cls = type(owner)
        held, kept = owner._property_values, owner._unstable_default_values
        themed = owner.themed_values() or {}
        for name, plain, descriptor in _properties_with_refs(cls):
            if not plain or name in themed:
                visit(getattr(owner, name))
            elif (value := held.get(name, _MISSING)) is not _MISSING or (
                    value := kept.get(name, _MISSING)) is not _MISSING:
                visit(getattr(owner, name) if value is Undefined else value)  # Bokeh's error for an unset value
            elif (cls, name) not in _leads_nowhere and not defaults.made_empty(descriptor, cls):
                value = getattr(owner, name)  # makes and keeps an unstable default, as Bokeh's read does
                if name not in kept and type(value) in SCALARS:
                    _leads_nowhere.add((cls, name))
                visit(value)

    while waiting:
        current = waiting.pop()
        if current.id not in found:
            found[current.id] = current
            visit_properties(current)
    return set(found.values())


def quick_model_walk() -> None:
    if getattr(Model.references, "explorer_quick", False):
        return
    Model.references = references
    references.explorer_quick = True

