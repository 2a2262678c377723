"""The base of every lesson view.

A lesson is a `SessionView` (it follows the session's state while shown, explorer/session/state.py) that adds what
every lesson needs, once:

- `changed(part, key)`: whether a part of the page must be redrawn, because what it shows (`key`) differs from what
  it showed last. A lesson's update method asks it for each part, and redraws only those.
- `errors`: one pane that says what went wrong for the student (`show_error`, `clear_error`), in place of a
  traceback, tagged with the model it is about.
- `slow(name)`: the lesson's slow work (explorer/session/work.py), off the event loop in a served page, newest
  answer only, dropped when the session ends; a failure lands in `errors`.
- `tour`: the lesson's guided tour (explorer/session/narrative.py), from `steps()`. A step's `layer` and `channel`
  are the session's (`shared_settings`), so a tour moves the whole page, not a copy inside the lesson. The lesson
  does not place it: `open_tour` is the one tour to show (its own, or an open part's), and the app shows it in
  one place under the lesson (explorer/ui/shell.py); alone (a notebook, a test page), `lesson.with_tour()`.

A lesson fills in the rest: `steps()` and its parts, each deriving its numbers from the lesson's math.py and then
showing them (data only: its figures are made once).
"""

from __future__ import annotations

import panel as pn
import param

from explorer.session.narrative import Narrative, Step
from explorer.session.state import SessionView, one_update
from explorer.session.tags import tag_results
from explorer.session.work import SlowWork


class Lesson(SessionView):
    """Base of a lesson: memo of what each part shows, one error pane, slow work, the tour (see the module)."""

    tour_title = "Guided tour"
    # A tour step's settings that belong to the session's state: the step's name -> the state's parameter.
    shared_settings: dict[str, str] = {"layer": "layer", "channel": "channel"}
    # The lesson's settings a shared link keeps: the name in the URL -> the lesson's parameter (explorer/ui/link.py).
    # URL names are public (old links must still open) and unique across the page: a test checks.
    url_settings: dict[str, str] = {}

    open_tour = param.ClassSelector(class_=Narrative, doc="The tour to show: the lesson's, or its open part's.")

    def __init__(self, model: str | None = None, **params):
        super().__init__(model=model, **params)
        self._memo: dict[str, object] = {}
        self._slow: dict[str, SlowWork] = {}
        self.errors = pn.pane.Alert("", alert_type="warning", visible=False, sizing_mode="stretch_width",
                                    css_classes=["lesson-error"])
        self.tour = Narrative(self.steps(), self, title=self.tour_title, state=self.state,
                              shared=self.shared_settings)
        self.open_tour = self.tour

    def steps(self) -> tuple[Step, ...]:
        """The lesson's guided tour."""
        raise NotImplementedError

    def with_tour(self) -> pn.Column:
        """The lesson under its open tour, for showing it alone; the app places the tour itself."""
        tour = pn.bind(lambda open_tour: pn.Spacer(height=0) if open_tour is None else open_tour, self.param.open_tour)
        return pn.Column(pn.panel(tour), self, sizing_mode="stretch_width")

    def changed(self, part: str, key: object) -> bool:
        """True (and `key` remembered) when `part` last showed something else than `key`."""
        if part in self._memo and self._memo[part] == key:
            return False
        self._memo[part] = key
        return True

    def forget(self, *parts: str) -> None:
        """Redraw these parts (all when none is named) on their next update."""
        for part in parts or list(self._memo):
            self._memo.pop(part, None)

    def slow(self, name: str, background: bool = False) -> SlowWork:
        """The lesson's strand of slow work called `name` (made on first use); `background` for a measurement that
        yields the CPU to every student's interactive work (see SlowWork)."""
        if name not in self._slow:
            self._slow[name] = SlowWork(f"{type(self).__name__}.{name}", on_error=self._slow_failed,
                                        background=background, document=self.state.document)
        return self._slow[name]

    def show_error(self, text: str) -> None:
        """Say what went wrong (Markdown), tagged with the model of the session's current input."""
        with one_update():
            tag_results(self.state.inference.model.name, self.errors)
            self.errors.param.update(object=text, visible=True)

    def clear_error(self) -> None:
        if self.errors.visible:
            self.errors.visible = False

    def _slow_failed(self, error: Exception) -> None:
        self.show_error(f"**This could not be computed:** {error}")
