"""The cached_defaults tuning (explorer/serve/defaults.py) reads every default as Bokeh does, and a model made by its
constructor (empty container defaults made on first read) holds, reads, writes and leads to what Bokeh's does."""

from __future__ import annotations

import random

import pytest
from bokeh.core.has_props import HasProps
from bokeh.core.property.descriptors import AliasPropertyDescriptor, PropertyDescriptor, UnsetValueError
from bokeh.core.property.override import Override
from bokeh.core.property.wrappers import PropertyValueContainer
from bokeh.model import Model
from bokeh.models import Div
from bokeh.themes import Theme

from explorer.serve import defaults

from .bokeh_twins import constructor, model_classes, same_values

BOKEH_GET_DEFAULT = getattr(PropertyDescriptor._get_default, "__wrapped__", PropertyDescriptor._get_default)
BOKEH_HAS_UNSTABLE_DEFAULT = getattr(PropertyDescriptor.has_unstable_default, "__wrapped__",
                                     PropertyDescriptor.has_unstable_default)


def concrete_models() -> list[type[Model]]:
    import bokeh.models  # noqa: F401  (registers every model class)

    return sorted((cls for cls in Model.model_class_reverse_map.values()
                   if not getattr(cls, "__abstract__", False) and cls.__module__.startswith("bokeh.")),
                  key=lambda cls: cls.__qualname__)


@pytest.fixture
def tuned():
    """The tuning installed for the test; Bokeh's own code back after it, unless the process had it installed."""
    saved = (PropertyDescriptor._get_default, PropertyDescriptor.has_unstable_default, HasProps.__init__)
    defaults.cached_defaults()
    yield
    PropertyDescriptor._get_default, PropertyDescriptor.has_unstable_default, HasProps.__init__ = saved


def twins(cls: type[Model]) -> tuple[Model, Model] | None:
    """A model made by Bokeh's constructor and one by the tuning's, after a first one made by Bokeh's (from which the
    tuning learns which defaults are empty containers); None for a class that needs arguments."""
    try:
        with constructor():
            cls()
            theirs = cls()
        return cls(), theirs
    except Exception:
        return None


def kinds(walk, model: Model) -> list[str] | str:
    """The classes of the models the walk finds from `model`, or the error it raised (an unset required model)."""
    try:
        return sorted(type(found).__name__ for found in walk(model))
    except UnsetValueError as error:
        return type(error).__name__


def default_of(obj: HasProps, name: str, get_default) -> object:
    return get_default(obj.lookup(name), obj)


@pytest.mark.parametrize("seed", range(3))
def test_every_default_of_random_bokeh_models_is_the_one_bokeh_makes(seed):
    cached = defaults._cached(BOKEH_GET_DEFAULT)
    classes = random.Random(seed).sample(concrete_models(), 40)
    for cls in classes:
        try:
            first, second, third = cls(), cls(), cls()
        except Exception:  # a model that needs arguments to be made
            continue
        for name in sorted(first.properties()):
            if name in first._property_values or isinstance(first.lookup(name), AliasPropertyDescriptor):
                continue  # set by the constructor, or another name for a property
            theirs = default_of(second, name, BOKEH_GET_DEFAULT)
            made = []
            for model in (first, third):  # the first by Bokeh's path, the next from what the cache learnt of it
                ours = default_of(model, name, cached)
                assert type(ours) is type(theirs), (cls.__name__, name)
                if isinstance(theirs, HasProps | PropertyValueContainer):  # made for each model, kept by it
                    assert ours is not theirs and ours is default_of(model, name, cached), (cls.__name__, name)
                    made.append(ours)
                if isinstance(theirs, PropertyValueContainer):  # owned: a change inside it is the model's change
                    assert (model, model.lookup(name)) in ours._owners, (cls.__name__, name)
                if not isinstance(theirs, HasProps):
                    assert ours == theirs, (cls.__name__, name)
            assert made == [] or made[0] is not made[1], (cls.__name__, name)  # never another model's container


@pytest.mark.parametrize("seed", range(3))
def test_whether_a_default_is_unstable_is_bokeh_s_answer_for_every_property_of_random_bokeh_models(seed):
    kept = defaults._kept_per_class(BOKEH_HAS_UNSTABLE_DEFAULT)
    answers = set()
    for cls in random.Random(seed).sample(concrete_models(), 60):
        for name in sorted(cls.properties()):
            descriptor = cls.lookup(name)
            if isinstance(descriptor, AliasPropertyDescriptor):
                continue
            model = object.__new__(cls)  # the answer is the class's: no model needs to be made
            theirs = BOKEH_HAS_UNSTABLE_DEFAULT(descriptor, model)
            assert kept(descriptor, model) == theirs == kept(descriptor, model), (cls.__name__, name)
            answers.add(theirs)
    assert answers == {True, False}


def test_an_overridden_default_is_asked_of_the_class_that_overrides_it():
    kept = defaults._kept_per_class(BOKEH_HAS_UNSTABLE_DEFAULT)
    made_per_model = type("DivWithMadeText", (Div,), {"text": Override(default=lambda: "made for each model")})
    descriptor = Div.lookup("text")
    answers = [kept(descriptor, object.__new__(cls)) for cls in (Div, made_per_model, Div)]
    assert answers == [False, True, False]
    theirs = [BOKEH_HAS_UNSTABLE_DEFAULT(descriptor, object.__new__(cls)) for cls in (Div, made_per_model, Div)]
    assert answers == theirs


def test_a_new_model_s_empty_container_default_is_its_own():
    cached = defaults._cached(BOKEH_GET_DEFAULT)
    first, second = Div(), Div()
    default_of(first, "tags", cached).append("first's")
    assert default_of(second, "tags", cached) == []
    assert first.tags == ["first's"]


def test_a_property_a_theme_sets_is_the_theme_s_not_a_cached_default():
    cached = defaults._cached(BOKEH_GET_DEFAULT)
    plain, themed = Div(), Div()
    assert default_of(plain, "text", cached) == ""
    themed.apply_theme(Theme(json={"attrs": {"Div": {"text": "from the theme"}}})._for_class(Div))
    assert default_of(themed, "text", cached) == "from the theme"
    assert default_of(plain, "text", cached) == ""


def test_only_immutable_values_are_kept():
    assert all(defaults.is_immutable(v) for v in (None, True, 3, 2.5, "a", (1, ("b", None))))
    assert not any(defaults.is_immutable(v) for v in ([], {}, (1, []), {"a"}))


@pytest.mark.filterwarnings("ignore::bokeh.util.warnings.BokehDeprecationWarning")  # deprecated classes, made too
@pytest.mark.parametrize("seed", range(3))
def test_a_model_made_without_its_empty_containers_reads_writes_and_leads_to_what_bokeh_s_twin_does(tuned, seed):
    from bokeh.model.util import collect_models

    from explorer.serve import serialization, walk

    def written(model: HasProps, query) -> dict:
        return query(model, lambda descriptor: descriptor.serialized, include_defaults=False, include_undefined=True)

    left_out = 0
    for cls in random.Random(seed).sample(model_classes(), 120):
        made = twins(cls)
        if made is None:
            continue
        ours, theirs = made
        unmade = set(theirs._unstable_default_values) - set(ours._unstable_default_values)
        assert set(ours._unstable_default_values) <= set(theirs._unstable_default_values), cls
        assert all(isinstance(theirs._unstable_default_values[name], PropertyValueContainer)
                   and len(theirs._unstable_default_values[name]) == 0 for name in unmade), cls
        left_out += len(unmade)
        # the quick walk and serializer find what Bokeh's find in the twin, and make none of the missing defaults
        if issubclass(cls, Model):  # not a HasProps that is only a model's value
            assert kinds(walk.references, ours) == kinds(collect_models, theirs), cls
        assert same_values(written(ours, serialization.query_properties_with_values),
                           written(theirs, serialization.BOKEH_QUERY)), cls
        assert set(theirs._unstable_default_values) - set(ours._unstable_default_values) == unmade, cls
        for name in sorted(cls.properties()):  # each read makes and keeps it, as Bokeh's constructor did
            if isinstance(cls.lookup(name), AliasPropertyDescriptor):
                continue
            try:
                mine, bokehs = getattr(ours, name), getattr(theirs, name)
            except Exception as error:  # a property that cannot be read unset: the same error for both
                with pytest.raises(type(error)):
                    getattr(theirs, name)
                continue
            assert same_values(mine, bokehs), (cls.__name__, name)
            if name in unmade:
                assert (ours, cls.lookup(name)) in mine._owners and mine is getattr(ours, name), (cls.__name__, name)
        assert sorted(ours._unstable_default_values) == sorted(theirs._unstable_default_values), cls
        assert same_values(written(ours, serialization.BOKEH_QUERY), written(theirs, serialization.BOKEH_QUERY)), cls
    assert left_out > 100  # the tuning left out defaults: the comparison above was of something


def test_a_change_inside_a_container_made_on_first_read_is_the_model_s_change(tuned):
    with constructor():
        Div()
    div, changes = Div(), []
    assert "tags" not in div._unstable_default_values
    div.on_change("tags", lambda attr, old, new: changes.append(new))
    div.tags.append("first")
    assert changes == [["first"]] and div.tags == ["first"] and Div().tags == []
