"""The `cached_defaults` tuning: a Bokeh property's default value, made once per class instead of on every read.

A Bokeh model stores only the properties set on it; reading any other one makes its default anew
(`PropertyDescriptor._get_default`: the class's overridden defaults gathered along its MRO, the raw default copied,
validated and transformed by `prepare_value`). Building a lesson reads every property of every model many times:
each model's constructor, the document walking all of its models when the lesson is attached
(`DocumentModelManager.recompute`), and the serializer writing the new models. Measured on a first lesson opening,
this was about 40 % of the server's time.

Here a default that Bokeh itself treats as stable (not a container, not made by a function: Bokeh does not keep it
per model either) and that is an immutable value (None, a bool, a number, a string, or a tuple of those) is made once
per (property, class) and then returned as is.

Most reads are of the other kind: a container default (a model's `tags`, its callbacks, a source's `data`), which
Bokeh makes anew for each model on its first read and then keeps in the model, owned by it. Where Bokeh's own path
made an empty container for a (property, class), a new empty container of the same type is made, owned and kept the
same way, without that path. A model whose theme sets the property, and every other default, goes through Bokeh's
own path.

Whether a default is unstable is asked of every property of every new model (`HasProps.__init__`, to make the
unstable ones at once) and on each default's first read: Bokeh answers it by walking the property's type
parameters (`_may_have_unstable_default`), about 17 % of a page's build. The answer depends only on the property and
the model's class (its overridden defaults), so it is kept per (property, class).

And Bokeh's constructor makes every unstable default at once, most of them empty containers a model never reads
(its `tags`, `css_classes`, JavaScript callbacks...): 9 per model, each a container, its owners' set and a tuple,
about 60,000 of the 141,000 objects a session with every lesson open added for the garbage collector to walk
(explorer/serve/idle_gc.py). `lazy_init` is Bokeh's constructor without them, once Bokeh's own path has shown that
the (property, class)'s default is an empty container: one is made, owned and kept as before on its first read.
Bokeh writes such an untouched default to no page, so the page is the same; the model walk
(explorer/serve/walk.py) and the serializer (explorer/serve/serialization.py) skip one not made yet, where Bokeh's
would make it to find nothing in it.
"""

from __future__ import annotations

from typing import Any

from bokeh.core.has_props import HasProps
from bokeh.core.property.descriptors import PropertyDescriptor
from bokeh.core.property.singletons import Intrinsic, Undefined
from bokeh.core.property.wrappers import PropertyValueContainer

IMMUTABLE = (type(None), bool, int, float, str)

BOKEH_INIT = HasProps.__init__  # Bokeh's constructor, for lazy_init's tests

# Each bounded by the (property, model class) pairs of the models made: a few thousand, for the process's life.
_made: dict[tuple[int, type], Any] = {}  # (id of the descriptor, the model's class) -> its default
_empty: dict[tuple[int, type], type] = {}  # the same key -> the type of the empty container Bokeh made as its default
_unstable: dict[tuple[int, type], bool] = {}  # the same key -> whether Bokeh makes the default anew for each model


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
        kept = obj._unstable_default_values
        if self.name in kept:
            return kept[self.name]
        container = _empty.get(key)
        if container is not None:  # what Bokeh's path ends with, for a default it made empty before
            value = kept[self.name] = container()
            value._register_owner(obj, self)
            return value
        value = get_default(self, obj)
        if self.has_unstable_default(obj):
            if isinstance(value, PropertyValueContainer) and len(value) == 0:
                _empty[key] = type(value)
        elif is_immutable(value):
            _made[key] = value
        return value

    cached_default.explorer_cached = True
    cached_default.__wrapped__ = get_default
    return cached_default


def _kept_per_class(has_unstable_default):
    def kept_has_unstable_default(self: PropertyDescriptor, obj: HasProps) -> bool:
        key = (id(self), obj.__class__)
        try:
            return _unstable[key]
        except KeyError:
            unstable = _unstable[key] = has_unstable_default(self, obj)
            return unstable

    kept_has_unstable_default.explorer_cached = True
    kept_has_unstable_default.__wrapped__ = has_unstable_default
    return kept_has_unstable_default


def made_empty(descriptor: PropertyDescriptor, cls: type) -> bool:
    """Whether the property's default, for a model of `cls`, is an empty container Bokeh makes for each model (known
    once Bokeh's own path made one): a model that has not read it yet holds no such container, and it holds no
    model."""
    return (id(descriptor), cls) in _empty


def lazy_init(self: HasProps, **properties: Any) -> None:
    """Bokeh's `HasProps.__init__`, except that an empty container default is not made until it is first read."""
    super(HasProps, self).__init__()  # the classes after HasProps in the model's MRO (Model's callback managers)
    self._property_values = {}
    self._unstable_default_values = {}
    self._unstable_themed_values = {}
    for name, value in properties.items():
        if value is Undefined or value is Intrinsic:
            continue
        setattr(self, name, value)
    cls = self.__class__
    for name in self.properties(_with_props=True):
        if name in properties:
            continue
        descriptor = self.lookup(name)
        if descriptor.has_unstable_default(self) and not made_empty(descriptor, cls):
            descriptor._get(self)  # makes and keeps the default, as Bokeh's constructor does
    self._initialized = True


def cached_defaults() -> None:
    if not getattr(PropertyDescriptor._get_default, "explorer_cached", False):
        PropertyDescriptor._get_default = _cached(PropertyDescriptor._get_default)
    if not getattr(PropertyDescriptor.has_unstable_default, "explorer_cached", False):
        PropertyDescriptor.has_unstable_default = _kept_per_class(PropertyDescriptor.has_unstable_default)
    HasProps.__init__ = lazy_init
