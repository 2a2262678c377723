"""The quick_model_walk tuning (explorer/serve/walk.py) finds exactly the models Bokeh's own walk finds, and leaves
the models as Bokeh's walk leaves them (the defaults it makes and keeps)."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from typing import Any

import numpy as np
import pytest
from bokeh.core.has_props import HasProps
from bokeh.core.properties import Instance, List, Nullable
from bokeh.model import Model
from bokeh.model.util import collect_models
from bokeh.models import Column, ColumnDataSource, CustomJS, Div, Menu, Plot, Range1d, UIElement

from explorer.serve import walk

from .bokeh_twins import constructor


class Holder(HasProps):  # not a model: Bokeh's walk looks inside it, as into a list
    item = Nullable(Instance(Model))
    items = List(Instance(Model))


@dataclasses.dataclass
class Pair:
    first: Any
    second: Any


def graph(rng: random.Random) -> tuple[list[Model], Model]:
    """Models made in an order the seed decides, each way Bokeh's walk can reach a model: a layout's children, a
    callback's arguments, a model as a dict's key or value, inside a tuple, a non-model HasProps or a dataclass, a
    default made on first read (a plot's title and toolbar), a theme's value; and the root."""
    made: list[Model] = []

    def keep(model: Model) -> Model:
        made.append(model)
        return model

    def leaf() -> Model:
        return keep(rng.choice([
            lambda: Div(text="x"),
            lambda: ColumnDataSource(data=dict(a=[1, 2], b=np.arange(2.0), c=["x", "y"], d=[[1.5], [2.5]])),
            Plot, Range1d, lambda: Div(context_menu=Menu())])())

    def node(depth: int) -> Model:
        if depth == 0:
            return leaf()
        children = [node(depth - 1) for _ in range(rng.randint(0, 3))]
        how = rng.randrange(7)
        if how == 0:
            shown = [child for child in children if isinstance(child, UIElement)]
            return keep(Column(children=shown, tags=[child for child in children if child not in shown]))
        if how == 1:
            return keep(Div(tags=[Holder(item=children[0] if children else None, items=children[1:])]))
        if how == 2:
            return keep(CustomJS(args={f"a{i}": child for i, child in enumerate(children)}, code=""))
        if how == 3:
            return keep(Div(tags=[Pair(first=children, second=(1, "two", children[:1]))]))
        if how == 4:
            return keep(Div(tags=[{child: i for i, child in enumerate(children)}, {"plain": 1.5}]))
        if how == 5:
            div = keep(Div())
            if rng.random() < 0.5:
                assert div.tags == []  # a default kept before the theme: the theme's value still wins
            div.apply_theme({"tags": [tuple(children)]})
            return div
        return keep(Div(tags=[tuple(children), 3.5, None, "text", True]))

    root = node(rng.randint(1, 4))
    return made, root


def by_place(found: set[Model], made: list[Model]) -> tuple[set[int], Counter]:
    """What a walk found, comparable between two graphs made alike: the places in `made` of the models made there,
    and the classes of the others (defaults the walk made)."""
    place = {id(model): i for i, model in enumerate(made)}
    return ({place[id(m)] for m in found if id(m) in place},
            Counter(type(m).__name__ for m in found if id(m) not in place))


@pytest.mark.parametrize("seed", range(40))
def test_a_random_graph_is_walked_to_the_same_models_leaving_the_same_kept_defaults(seed):
    with constructor():  # Bokeh's models as Bokeh makes them, for ours too (walk.py meets models made either way)
        theirs_made, theirs_root = graph(random.Random(seed))
        ours_made, ours_root = graph(random.Random(seed))
    theirs = set(collect_models(theirs_root))
    ours = walk.references(ours_root)
    assert by_place(ours, ours_made) == by_place(theirs, theirs_made)
    assert ([sorted(m._unstable_default_values) for m in ours_made]
            == [sorted(m._unstable_default_values) for m in theirs_made])
    assert walk.references(ours_root) == ours  # a second walk, with what the first learnt, finds the same


def test_a_model_held_where_its_class_default_leads_nowhere_is_found():
    walk.references(Div())
    assert (Div, "context_menu") in walk._leads_nowhere  # learnt: a Div's own context_menu default is None
    menu = Menu()
    div = Div(context_menu=menu)
    assert menu in walk.references(div)
    assert walk.references(div) == set(collect_models(div))


def test_the_real_page_with_every_lesson_open_is_walked_to_the_same_models():
    from explorer.session.state import ExplorerState
    from explorer.ui.shell import build_app

    from .doc_events import Page

    state = ExplorerState(model="mnist-cnn")
    page = Page(build_app(state))
    for lesson in ("convolution", "normalization", "pruning", "quantization", "saliency", "attention"):
        state.lesson = lesson
    roots = page.doc.roots
    everything = set().union(*(set(collect_models(root)) for root in roots))
    assert len(everything) > 2000
    assert set().union(*(walk.references(root) for root in roots)) == everything
    for model in random.Random(0).sample(sorted(everything, key=lambda m: m.id), 200):
        assert walk.references(model) == set(collect_models(model))
