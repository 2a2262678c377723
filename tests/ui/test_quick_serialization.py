"""The quick_serialization tuning (explorer/serve/serialization.py): a model's values for the page are the ones
Bokeh's own query finds, in its order, and reading them leaves the model as Bokeh's reading does."""

from __future__ import annotations

import random

import pytest
from bokeh.core.has_props import HasProps
from bokeh.core.properties import Int, List, Required, String
from bokeh.core.property.descriptors import UnsetValueError

from explorer.serve import serialization

from .bokeh_twins import constructor, model_classes, same_values


def serialized(descriptor) -> bool:  # the query Bokeh's serializer asks
    return descriptor.serialized


def handle(rng: random.Random, model: HasProps, names: list[str]) -> None:
    """What a view does to a model before it is sent, decided by `rng`: reads some properties (the defaults Bokeh
    keeps are made), changes a kept list, sets a value, themes some properties."""
    for name in rng.sample(names, min(len(names), rng.randint(0, 12))):
        try:
            value = getattr(model, name)
        except UnsetValueError:  # a required property never set
            continue
        if name in ("tags", "css_classes") and rng.random() < 0.5:
            value.append("changed")
    if "name" in names and rng.random() < 0.5:
        model.name = "named"
    if "tags" in names and rng.random() < 0.3:
        model.apply_theme({"tags": ["themed"]})


def answer(query, model: HasProps, include_undefined: bool) -> dict | str:
    """The query's values, or the error it raised."""
    try:
        return query(model, serialized, include_defaults=False, include_undefined=include_undefined)
    except UnsetValueError as error:
        return f"UnsetValueError: {str(error).split('.', 1)[1]}"  # the model's id differs between twins


@pytest.mark.filterwarnings("ignore::bokeh.util.warnings.BokehDeprecationWarning")  # deprecated classes, made too
@pytest.mark.parametrize("seed", range(4))
def test_twin_models_of_every_class_give_the_same_values_and_keep_the_same_defaults(seed):
    rng = random.Random(seed)
    for cls in rng.sample(model_classes(), 120):
        try:
            with constructor():  # as Bokeh makes them (the tuning's own constructor: test_cached_defaults.py)
                theirs, ours = cls(), cls()
        except Exception:  # a model that needs arguments to be made
            continue
        names = sorted(cls.properties())
        handle(random.Random(f"{seed}{cls.__name__}"), theirs, names)
        handle(random.Random(f"{seed}{cls.__name__}"), ours, names)
        for include_undefined in (False, True):
            bokeh = answer(serialization.BOKEH_QUERY, theirs, include_undefined)
            quick = answer(serialization.query_properties_with_values, ours, include_undefined)
            assert same_values(quick, bokeh), cls
            assert sorted(ours._unstable_default_values) == sorted(theirs._unstable_default_values), cls
            assert sorted(ours._property_values) == sorted(theirs._property_values), cls


class Needs(HasProps):  # a required property never set: Bokeh's query raises, or writes Undefined when asked
    count = Required(Int)
    label = String(default="kept")
    items = List(Int)


def test_a_required_property_never_set_raises_or_is_written_undefined_as_bokeh_does():
    for query in (serialization.BOKEH_QUERY, serialization.query_properties_with_values):
        with pytest.raises(UnsetValueError):
            query(Needs(), serialized, include_defaults=False)
    theirs = serialization.BOKEH_QUERY(Needs(), serialized, include_defaults=False, include_undefined=True)
    assert serialization.query_properties_with_values(Needs(), serialized, include_defaults=False,
                                                      include_undefined=True) == theirs
    assert list(theirs) == ["count"]  # the untouched container default and the stable string are not written


def test_every_model_of_the_real_page_gives_the_values_bokeh_gives():
    from explorer.session.state import ExplorerState
    from explorer.ui.shell import build_app

    from .doc_events import Page

    state = ExplorerState(model="mnist-cnn")
    page = Page(build_app(state))
    for lesson in ("convolution", "normalization", "pruning", "quantization", "saliency", "attention"):
        state.lesson = lesson
    models = list(page.doc.models)
    assert len(models) > 2000
    for model in models:
        theirs = serialization.BOKEH_QUERY(model, serialized, include_defaults=False)
        assert serialization.query_properties_with_values(model, serialized, include_defaults=False) == theirs
