"""The quick_edit_readonly tuning (explorer/serve/readonly.py): inside and after the block, every parameter is as
Panel's edit_readonly leaves it, and a watcher of `readonly` or `constant` hears the same events."""

from __future__ import annotations

import random

import panel as pn
import param
import pytest

from explorer.serve import readonly

KINDS = (lambda: param.Number(1.0), lambda: param.String("a"), lambda: param.List([]), lambda: param.Boolean(False),
         lambda: param.Selector(objects=[1, 2], default=1), lambda: param.Dict({}))


def twins(rng: random.Random) -> tuple[param.Parameterized, param.Parameterized, list, list]:
    """Two objects of one random class: parameters of several kinds, some read-only, some constant, some with a
    watcher of `readonly` or `constant` that hears every write; and the two objects' event lists."""
    params = {}
    for i in range(rng.randint(1, 12)):
        p = rng.choice(KINDS)()
        p.readonly, p.constant = rng.random() < 0.2, rng.random() < 0.3
        params[f"p{i}"] = p
    cls = param.parameterized_class(f"Random{rng.randrange(10**6)}", params)
    watched = [(name, what) for name in params for what in ("readonly", "constant") if rng.random() < 0.15]
    made, heard = [], []
    for _ in range(2):
        obj, events = cls(), []
        for name, what in watched:
            obj.param.watch(lambda e, events=events: events.append((e.name, e.what, e.old, e.new)), [name],
                            what=what, onlychanged=False)
        made.append(obj)
        heard.append(events)
    return made[0], made[1], heard[0], heard[1]


def flags(obj: param.Parameterized) -> dict:
    return {name: (p.readonly, p.constant) for name, p in obj.param.objects("existing").items()}


@pytest.mark.parametrize("seed", range(60))
def test_random_parameters_are_left_as_panels_edit_readonly_leaves_them(seed):
    theirs, ours, their_events, our_events = twins(random.Random(seed))
    before = flags(theirs)
    assert flags(ours) == before
    with readonly.PANEL_EDIT_READONLY(theirs):
        theirs_inside = flags(theirs)
    with readonly.edit_readonly(ours):
        ours_inside = flags(ours)
    assert ours_inside == theirs_inside
    assert all(value == (False, False) for value in ours_inside.values())
    assert flags(ours) == flags(theirs) == before
    assert our_events == their_events


def test_the_flags_come_back_when_the_block_raises():
    theirs, ours, _, _ = twins(random.Random(7))
    before = flags(ours)
    for edit, obj in ((readonly.PANEL_EDIT_READONLY, theirs), (readonly.edit_readonly, ours)):
        with pytest.raises(KeyError), edit(obj):
            raise KeyError("inside")
    assert flags(ours) == flags(theirs) == before


def test_panels_busy_state_goes_through_the_same_values_with_the_tuning(monkeypatch):
    import sys

    state_module = sys.modules["panel.io.state"]
    runs = []
    for edit in (readonly.PANEL_EDIT_READONLY, readonly.edit_readonly):
        monkeypatch.setattr(state_module, "edit_readonly", edit)
        seen = []
        watcher = pn.state.param.watch(lambda e, seen=seen: seen.append(e.new), ["busy"])
        try:
            pn.state._add_busy_event("first")
            pn.state._add_busy_event("second")
            pn.state._remove_busy_event("first")
            pn.state._remove_busy_event("second")
        finally:
            pn.state.param.unwatch(watcher)
        runs.append((seen, pn.state.busy, pn.state.param["busy"].readonly))
    assert runs[0] == runs[1] == ([True, False], False, True)
