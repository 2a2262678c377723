"""Two students on one server: no Bokeh model may belong to both sessions' documents.

A Bokeh model belongs to one document. One made once per process (at module or class level, in a cache,
or a Panel stylesheet reused across pages) is refused by the second session that shows it ("Models must
be owned by only a single document"), and that student's lesson freezes. This test makes two sessions as
`panel serve app.py` makes them (Bokeh's ApplicationContext running Panel's Application), marks each page
loaded as the browser does (document_ready), and then opens every lesson, and every part of the convolution
lesson, on every model the way a student does after the page has painted: the change inside the document lock,
then the page's answer to the ticket (explorer/ui/after_paint.py). Then it walks both documents' model graphs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from dataclasses import dataclass

import pytest
from bokeh.application.handlers.function import FunctionHandler
from bokeh.document import Document
from bokeh.events import DocumentReady
from bokeh.model import Model
from bokeh.models import Tabs
from bokeh.server.contexts import ApplicationContext
from bokeh.server.session import ServerSession
from panel.io.application import Application
from panel.io.state import set_curdoc
from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine
from tornado.ioloop import IOLoop

from explorer.core import zoo
from explorer.session.state import ExplorerState
from explorer.ui.shell import LESSONS, TITLE, build_app

MODELS = ("mnist-cnn", "mnist-vit")  # a CNN, and a ViT for the attention lesson
# the convolution lesson's parts built when their tab opens, and a source each draws into
PARTS = {"Receptive field": "convolution-rf-map", "Filter atlas": "convolution-atlas-filters",
         "Step through": "convolution-input"}


class Server:
    """One Panel application context, its sessions and each session's state."""

    def __init__(self):
        self.states: dict[Document, ExplorerState] = {}
        self.context = ApplicationContext(Application(FunctionHandler(self._page)), io_loop=IOLoop.current(),
                                          url="/app")

    def _page(self, doc: Document) -> None:
        """What app.py does for each session (`panel serve` makes `doc` current; Bokeh's FunctionHandler does not)."""
        with set_curdoc(doc):
            self.states[doc] = state = ExplorerState()
            build_app(state).servable(title=TITLE)

    async def build_page(self, session_id: str, query: str = "") -> ServerSession:
        """What a page's request does: the session's document built, for /app or /app?`query` (the app's settings)."""
        path = f"/app?{query}" if query else "/app"
        request = HTTPServerRequest(start_line=RequestStartLine("GET", path, "HTTP/1.1"),
                                    headers=HTTPHeaders({"Host": "127.0.0.1"}))
        return await self.context.create_session_if_needed(session_id, request)

    async def open_page(self, session_id: str, query: str = "") -> ServerSession:
        """The page built, and then loaded in its browser (its open lesson is built then)."""
        session = await self.build_page(session_id, query)
        await locked(session, lambda: session.document.callbacks.trigger_event(DocumentReady()))
        return session


async def locked(session: ServerSession, change) -> None:
    """Run `change` as Bokeh runs a browser's message: under the document lock, with the document current."""
    def run() -> None:
        with set_curdoc(session.document):
            change()
    await session.with_document_locked(run)
    await asyncio.sleep(0)  # next-tick callbacks the change scheduled


async def painted(session: ServerSession) -> None:
    """The page's answer to the newest ticket: the work waiting for it runs (a lesson opens, views follow)."""
    doc = session.document
    ticket, answer = (doc.select_one({"name": name}) for name in ("explorer-ticket", "explorer-painted"))
    await locked(session, lambda: setattr(answer, "data", {"ticket": list(ticket.data["ticket"])}))


async def click(session: ServerSession, change) -> None:
    await locked(session, change)
    await painted(session)


async def open_part(session: ServerSession, title: str, source: str) -> None:
    """Click a tab of the convolution lesson in the page; Panel takes the browser's change after its debounce and
    builds the part, which then follows the state once the page has painted."""
    doc = session.document
    tabs = next(t for t in doc.select({"type": Tabs}) if title in [panel.title for panel in t.tabs])
    await locked(session, lambda: setattr(tabs, "active", [panel.title for panel in tabs.tabs].index(title)))
    deadline = time.monotonic() + 120
    while doc.select_one({"name": source}) is None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await painted(session)


async def open_every_lesson(server: Server, session: ServerSession) -> None:
    state = server.states[session.document]
    order = [*list(LESSONS)[1:], next(iter(LESSONS))]  # the open one last: each name is a change
    for model in MODELS:
        await click(session, lambda model=model: setattr(state, "model", model))
        for lesson in order:
            await click(session, lambda lesson=lesson: setattr(state, "lesson", lesson))
        for title, source in PARTS.items():  # the convolution lesson, open last, and its parts in their tabs
            await open_part(session, title, source)


def graph(doc: Document) -> dict[int, Model]:
    """Every model the document holds or its roots reach (a failed attach leaves a model out of doc.models)."""
    models = {id(m): m for m in doc.models}
    for root in doc.roots:
        models.update((id(m), m) for m in root.references())
    return models


@dataclass(frozen=True)
class Classroom:
    models: tuple[str, ...]          # the model each session ended on
    unbuilt: tuple[int, ...]         # per session: how many tabs still say they are loading
    drawn: tuple[frozenset, ...]     # per session: the named models of its page
    shared: tuple[str, ...]          # the models in both sessions' documents


def two_students() -> Classroom:
    async def run() -> Classroom:
        server = Server()
        sessions = [await server.open_page(f"student-{i}") for i in range(2)]
        for session in sessions:
            await open_every_lesson(server, session)
        first, second = (graph(session.document) for session in sessions)
        room = Classroom(
            models=tuple(server.states[session.document].model for session in sessions),
            unbuilt=tuple(sum("Loading the lesson" in str(getattr(m, "text", "")) for m in g.values())
                          for g in (first, second)),
            drawn=tuple(frozenset(m.name for m in g.values()) for g in (first, second)),
            shared=tuple(sorted(f"{type(m).__name__}({m.id})" for key, m in second.items() if key in first)))
        await server.context._cleanup_sessions(0)  # as the server does once the students leave: workers stop
        return room
    # a loop of its own, in a thread of its own: the browser tests may leave a running loop in this one
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result()


@pytest.mark.skipif(not all(map(zoo.is_available, MODELS)), reason="the shipped MNIST models are missing")
def test_two_sessions_with_every_lesson_share_no_bokeh_model():
    room = two_students()
    assert room.models == (MODELS[-1],) * 2
    assert room.unbuilt == (0, 0)  # every lesson was built
    assert all(set(PARTS.values()) <= drawn for drawn in room.drawn)  # and every part of the convolution lesson
    assert room.shared == (), f"models in both sessions' documents: {room.shared}"
