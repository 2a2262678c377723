"""A class on the server alone: N students' messages on one process's event loop, no browser.

    python benchmarks/class_server.py [--students 15 30] [--seconds 90] [--calibrate 20] [--think 0.5]
                                      [--paint-ms 50] [--loops 1] [--model mnist-cnn] [--rate 6]

benchmarks/classroom.py runs N Chromium pages beside the server: from N = 15 on, the pages take most of this
machine's two cores, and what a student waits for is mostly their own page. In a class each page has a computer of
its own; this measures what is left, the server's part, with the server given the machine as it would be.

Each student is a session of the real app, its document built as `panel serve app.py` builds it (the page's
request; tests/ui/test_shared_models.py's Server), with one connection whose socket sends nothing but writes every
message's frames as the websocket would (explorer/serve/server.py's `frames`: the serialization a page's messages
cost): the whole document when the page loads (PULL-DOC), then every patch. A student's messages are the PATCH-DOC
messages a page sends, written to JSON, read back and applied by `ServerSession.patch` under the document lock, as
the server applies a browser's. Each student loops, with --think seconds between an answer and the next action:

- gallery click: the gallery's value -> answered by the patch that carries the prediction naming the image;
- layer click: a tap on the overview strip at the layer's column -> the patch with the layer summary naming it;
- lesson tab: the lesson tabs' active tab, in turn (classroom.py's LESSONS) -> the patch that carries the lesson's
  input-dependent source, new or with new data; a lesson shown again on the image it last showed needs neither,
  and is answered once the tab's change is applied.

The page's answer to each after-paint ticket (explorer/ui/after_paint.py) comes --paint-ms after the patch that
carried it: a page on a computer of its own paints a click's answer within a few frames. Parts of a lesson below
its first screen (explorer/session/later.py) stay placeholders: no student scrolls.

Latency: from the moment the student's message is due (their think time over) to the answering patch's frames
written. A loop held by other students' work delays both the message's turn and its answer, as a message waits
in its socket while the loop is held. Phases: a mixed loop of --seconds (the kinds in turn), one phase per kind of
--calibrate seconds, then --loops more mixed loops, every lesson built by then. Printed per N (each N in a
process of its own):

- each page's opening (its document built, written and loaded, students arriving one after another);
- latency median / p95 / max per kind in the first and the last mixed loop and alone, and the actions with no
  answer within 30 s;
- how late the loop ran a 50-ms tick, and the full garbage collections (each holds the loop), in the first loop;
- the process's CPU in the first loop (s per s; the students' own part, building and reading messages, is in it:
  about 1 ms per action); the CPU per action of each kind from the one-kind phases less the idle rate; students
  per core at --rate actions a minute, the kinds in equal parts;
- RSS: one session, all arrived, after each loop and phase (memory in use once every lesson is built should stay
  flat), and what a thorough collection finds at the end (everything thawed and walked, as the idle collector
  does after a session ends: the garbage cycles kept among frozen objects);
- log records at WARNING or above from any logger (a traceback is one).

Every runtime tuning is on, as served (EXPLORER_TUNE=0: none), the idle collector included (it hears each
student's message as it would a page's). Prints figures; asserts nothing. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import html
import logging
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "ui"))

from explorer import serve  # noqa: E402

serve.before_torch()

import panel as pn  # noqa: E402

serve.serve_resources_locally()
pn.extension(inline=True, notifications=True)

import panel.io.document  # noqa: E402
from bokeh.document.events import MessageSentEvent, ModelChangedEvent  # noqa: E402
from bokeh.events import DocumentReady, Tap  # noqa: E402
from bokeh.model import Model  # noqa: E402
from bokeh.models import Plot, Tabs  # noqa: E402
from bokeh.protocol import Protocol  # noqa: E402
from bokeh.protocol.message import Message  # noqa: E402
from bokeh.server.connection import ServerConnection  # noqa: E402
from bokeh.server.session import ServerSession  # noqa: E402
from bokeh.server.views.ws import WSHandler  # noqa: E402
from classroom import KINDS, LESSONS, Course, course, cpu_s, rss_mb, summary  # noqa: E402
from panel.io.state import set_curdoc  # noqa: E402
from test_shared_models import Server  # noqa: E402

from explorer.serve.server import frames  # noqa: E402
from explorer.session.state import ExplorerState  # noqa: E402

ANSWER_S = 30  # an action with no answer within this is counted, and the student goes on
TICK_S = 0.05
PROTOCOL = Protocol()
DATA_EVENTS = ("ModelChanged", "ColumnDataChanged", "ColumnsStreamed", "ColumnsPatched")  # a model's value changed


class NoAnswer(Exception):
    """An action got no answer within ANSWER_S."""


class QuietSocket:
    """A connection's socket that writes every message's frames (their serialization) and sends them nowhere: the
    student's page reads each message from here."""

    def __init__(self, student: Student):
        self.student = student

    async def send_message(self, message: Message) -> None:  # Bokeh's path (ServerConnection.send_patch_document)
        self.write(message)

    def write(self, message: Message) -> None:
        frames(message)
        self.student.received(message)


def write_through_quiet_socket(conn: ServerConnection, events=None, msg: Message | None = None) -> list:
    """Panel's path for a held update's patch (panel.io.document.extra_socket_handlers)."""
    if msg is None and events:
        msg = conn.protocol.create("PATCH-DOC", events)
    if msg is not None:
        conn._socket.write(msg)
    return []



@dataclass(eq=False)
class Student:
    number: int
    course: Course
    paint_s: float
    session: ServerSession | None = None
    state: ExplorerState | None = None
    conn: ServerConnection | None = None
    ids: dict[str, str] = field(default_factory=dict)  # role -> the id of the model that plays it in this page
    # role -> the model a page's message changes: found once, as a walk over the document's models costs about a
    # millisecond, which the process's CPU per action would count
    models: dict[str, Model] = field(default_factory=dict)
    item: str = ""
    layer: str = ""
    turn: int = 0
    seen: dict[str, str] = field(default_factory=dict)  # lesson -> the gallery image it last showed
    expect: Callable[[Message], bool] | None = None  # what the answer to the action under way carries
    answered: asyncio.Future | None = None

    async def open(self, server: Server) -> float:
        """The page's request, its document written when the page loads, and its load: the time it took (ms)."""
        start = time.monotonic()
        self.session = await server.build_page(f"student-{self.number}", f"model={self.course.model}")
        doc = self.session.document
        self.state = server.states[doc]  # only to know the layer shown (the page's summary names it)
        with set_curdoc(doc):
            serve.tune()  # as app.py does for each session: the idle collector watches its document
        panel.io.document.extra_socket_handlers[QuietSocket] = write_through_quiet_socket  # Panel's path to it
        self.conn = ServerConnection(PROTOCOL, QuietSocket(self), server.context, self.session)
        self.session.subscribe(self.conn)
        reply = await ServerSession.pull(PROTOCOL.create("PULL-DOC-REQ"), self.conn)
        frames(reply)
        self.ids = {
            "prediction": next(m.id for m in doc.models if "prediction-summary" in getattr(m, "css_classes", [])),
            "layer": next(m.id for m in doc.models if "layer-summary" in getattr(m, "css_classes", [])),
        }
        strip = doc.select_one({"name": "overview-strip"})
        self.models = {
            "ticket": doc.select_one({"name": "explorer-ticket"}),
            "painted": doc.select_one({"name": "explorer-painted"}),
            "gallery": next(m.data for m in doc.models if m.name == "Thumbnails" and hasattr(m, "data")),
            "strip": next(p for p in doc.select({"type": Plot}) if any(
                getattr(r, "data_source", None) is strip for r in p.renderers)),
            "lessons": next(t for t in doc.select({"type": Tabs}) if t.tabs[0].title == "Convolution"),
        }
        self.item, self.layer, self.seen = self.course.items[0], "", {"Convolution": self.course.items[0]}
        first = f'"name":"{LESSONS["Convolution"]}"'  # the open lesson, built once the page has loaded
        self.expecting(lambda message: first in message.content_json)
        await self.send(MessageSentEvent(doc, "bokeh_event", DocumentReady()))
        await self.answer()
        return 1000 * (time.monotonic() - start)

    def shown(self) -> str:
        """The open lesson's title, as the lesson tabs hold it."""
        tabs = self.models["lessons"]
        return tabs.tabs[tabs.active].title

    async def send(self, *events) -> None:
        """A page's message: written as a page writes it, read back and applied as the server applies a page's."""
        message = PROTOCOL.create("PATCH-DOC", list(events))
        header, metadata, content = (frame for frame, _ in frames(message)[:3])
        WSHandler.on_message.collector.message_arrived()
        await ServerSession.patch(PROTOCOL.assemble(header, metadata, content), self.conn)

    def received(self, message: Message) -> None:
        if message.msgtype != "PATCH-DOC":
            return
        if _changed(message, self.models["ticket"].id):
            asyncio.get_running_loop().call_later(self.paint_s, lambda: asyncio.ensure_future(self.painted()))
        if self.expect is not None and self.answered is not None and not self.answered.done() and self.expect(message):
            self.answered.set_result(time.monotonic())

    async def painted(self) -> None:
        if self.session.destroyed:
            return
        ticket = list(self.models["ticket"].data["ticket"])
        await self.send(ModelChangedEvent(self.session.document, self.models["painted"], "data", {"ticket": ticket}))

    def expecting(self, expect: Callable[[Message], bool] | None) -> None:
        """The answer to the next message is the first message the server writes that `expect` accepts."""
        self.expect, self.answered = expect, asyncio.get_running_loop().create_future()

    async def answer(self) -> float:
        """The monotonic time the expected answer was written; NoAnswer after ANSWER_S."""
        try:
            return await asyncio.wait_for(asyncio.shield(self.answered), ANSWER_S)
        except TimeoutError:
            raise NoAnswer from None

    async def act(self, kind: str, due: float) -> float:
        """One action of `kind`, due at `due` (monotonic); its latency in ms."""
        doc, self.turn = self.session.document, self.turn + 1
        if kind == "gallery":
            items = [d for d in self.course.items if d != self.item]
            self.item = items[(self.number + self.turn) % len(items)]
            text = f"for {self.item}."
            self.expecting(lambda m: _text_changed(m, self.ids["prediction"], text))
            message = self.send(ModelChangedEvent(doc, self.models["gallery"], "value", self.course.keys[self.item]))
        elif kind == "layer":
            self.layer = self.state.layer  # a lesson switch may have moved it
            layers = [name for name in self.course.layers if name != self.layer]
            self.layer = layers[(self.number + self.turn) % len(layers)]
            text = f"({self.layer}) ·"
            self.expecting(lambda m: _text_changed(m, self.ids["layer"], text))
            tap = page_tap(self.models["strip"], self.course.x[self.layer], 60)
            message = self.send(MessageSentEvent(doc, "bokeh_event", tap))
        else:
            lessons = [title for title in LESSONS if title != self.shown()]
            lesson = lessons[(self.number + self.turn) % len(lessons)]
            source = doc.select_one({"name": LESSONS[lesson]})
            tabs = self.models["lessons"]
            change = ModelChangedEvent(doc, tabs, "active", [p.title for p in tabs.tabs].index(lesson))
            if source is None:  # built on this opening: its source arrives in a patch
                name = f'"name":"{LESSONS[lesson]}"'
                self.expecting(lambda m: name in m.content_json)
            elif self.seen.get(lesson) != self.item:  # catching up with the image: its data arrive
                self.expecting(lambda m: _changed(m, source.id))
            else:  # on the image it last showed: nothing to send but the tab's own change
                self.expecting(None)
            message = self.send(change)
        if self.expect is None:
            await asyncio.wait_for(message, ANSWER_S)
            answer = time.monotonic()
        else:
            sending = asyncio.ensure_future(message)
            answer = await self.answer()
            await sending
        self.seen[self.shown()] = self.item  # a layer click may open another lesson
        return 1000 * (answer - due)


def page_tap(figure: Plot, x: float, y: float) -> Tap:
    """A tap at data (x, y) as a page sends it: Bokeh's Python side would write only the event's model."""
    values = dict(model=figure, sx=x, sy=y, x=x, y=y, modifiers=dict(shift=False, ctrl=False, alt=False))
    tap = Tap(**values)
    tap.event_values = lambda: values
    return tap


def _changes(event: dict, model_id: str) -> bool:
    return event.get("kind") in DATA_EVENTS and event.get("model", {}).get("id") == model_id


def _changed(message: Message, model_id: str) -> bool:
    return any(_changes(event, model_id) for event in message.content["events"])


def _text_changed(message: Message, model_id: str, text: str) -> bool:
    return any(_changes(event, model_id) and event.get("attr") == "text" and text in html.unescape(str(event["new"]))
               for event in message.content["events"])


@dataclass
class Tally:
    latency: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})
    no_answer: dict[str, int] = field(default_factory=lambda: {k: 0 for k in KINDS})
    cpu_s: float = 0.0
    seconds: float = 0.0


async def student_loop(student: Student, kinds: tuple[str, ...], until: float, think: float, tally: Tally) -> None:
    i = 0
    due = time.monotonic()
    while due < until:
        kind = kinds[i % len(kinds)]
        i += 1
        try:
            tally.latency[kind].append(await student.act(kind, due))
        except NoAnswer:
            tally.no_answer[kind] += 1
        due = time.monotonic() + think
        await asyncio.sleep(think)


def process_cpu_s() -> float:
    return cpu_s(os.getpid())


async def phase(students: list[Student], kinds: tuple[str, ...], seconds: float, think: float) -> Tally:
    tally = Tally()
    cpu, start = process_cpu_s(), time.monotonic()
    await asyncio.gather(*(student_loop(s, kinds, start + seconds, think, tally) for s in students))
    await quiet()
    tally.cpu_s, tally.seconds = process_cpu_s() - cpu, time.monotonic() - start
    return tally


async def quiet(seconds: float = 1.0) -> None:
    """Wait until the process has used under 5 % of a core for `seconds` (the work that follows an answer done)."""
    while True:
        cpu = process_cpu_s()
        await asyncio.sleep(seconds)
        if process_cpu_s() - cpu < 0.05 * seconds:
            return


class LoopWatch:
    """How late the loop ran a TICK_S tick, and every full garbage collection's length (it holds the loop)."""

    def __init__(self):
        self.ticks: list[tuple[float, float]] = []  # (start, ms late)
        self.collections: list[tuple[float, float]] = []  # (start, ms)
        self._started: float | None = None
        gc.callbacks.append(self._timed)
        self._task = asyncio.ensure_future(self._tick())

    async def _tick(self) -> None:
        while True:
            start = time.monotonic()
            await asyncio.sleep(TICK_S)
            self.ticks.append((start, 1000 * (time.monotonic() - start - TICK_S)))

    def _timed(self, phase_name: str, info: dict) -> None:
        if info["generation"] != 2:
            return
        if phase_name == "start":
            self._started = time.monotonic()
        elif self._started is not None:
            self.collections.append((self._started, 1000 * (time.monotonic() - self._started)))
            self._started = None

    def report(self, since: float, until: float) -> str:
        late = [ms for start, ms in self.ticks if since <= start < until]
        lengths = [ms for start, ms in self.collections if since <= start < until]
        return (f"loop late: {summary(late)}; full collections: {len(lengths)}, {sum(lengths) / 1000:.1f} s in all"
                + (f", ms each {summary(lengths)}" if lengths else ""))


class Problems(logging.Handler):
    """Every log record at WARNING or above, from any logger: a traceback in a served app is one."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.records: list[str] = []
        logging.getLogger().addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(f"{record.name}: {record.getMessage().splitlines()[0][:200]}")


def thorough_collection() -> str:
    """Everything thawed and walked, as the idle collector's thorough walk does: what the frozen objects held."""
    before, start = rss_mb(os.getpid()), time.monotonic()
    gc.unfreeze()
    found = gc.collect()
    took = time.monotonic() - start
    gc.freeze()
    return f"{took:.2f} s, {found:,} unreachable objects; RSS {before:.0f} -> {rss_mb(os.getpid()):.0f} MB"


def lessons_built(students: list[Student]) -> int:
    """How many sessions hold every lesson's source (each lesson built)."""
    return sum(all(s.session.document.select_one({"name": name}) is not None for name in LESSONS.values())
               for s in students)


def latencies(name: str, tally: Tally, alone: dict[str, Tally] | None = None) -> None:
    for kind in KINDS:
        line = (f"  {kind:8s} latency ({name}): {summary(tally.latency[kind])} (n={len(tally.latency[kind])}, "
                f"no answer {tally.no_answer[kind]})")
        if alone is not None:
            line += (f"; alone: {summary(alone[kind].latency[kind])} (n={len(alone[kind].latency[kind])}, "
                     f"no answer {alone[kind].no_answer[kind]})")
        print(line)


async def classroom(n: int, args: argparse.Namespace) -> None:
    serve.tune()  # here, in the running loop: the idle collector's periodic check joins it
    problems = Problems()
    server = Server()
    watch = LoopWatch()
    lesson = course(args.model, "")
    students = [Student(i, lesson, args.paint_ms / 1000) for i in range(n)]
    await students[0].open(server)
    await quiet()
    rss = {"one session": rss_mb(os.getpid())}
    opened = [await s.open(server) for s in students[1:]]
    await quiet()
    rss[f"all {n} arrived"] = rss_mb(os.getpid())
    print(f"=== N = {n}, {args.model}, {args.seconds:.0f} s mixed, think {args.think} s, paint {args.paint_ms} ms ===")
    print(f"  a page opened (built, written, loaded; students 2-{n} in turn): {summary(opened)}")
    start, cpu = time.monotonic(), process_cpu_s()
    await asyncio.sleep(3)
    idle_rate = (process_cpu_s() - cpu) / (time.monotonic() - start)
    mixed_start = time.monotonic()
    mixed = await phase(students, KINDS, args.seconds, args.think)
    mixed_end = time.monotonic()
    rss["after the mixed loop"] = rss_mb(os.getpid())
    calibration = {kind: await phase(students, (kind,), args.calibrate, args.think) for kind in KINDS}
    built = lessons_built(students)
    rss["after the one-kind phases"] = rss_mb(os.getpid())
    for loop in range(args.loops):
        steady = await phase(students, KINDS, args.seconds, args.think)
        rss[f"after mixed loop {loop + 2}"] = rss_mb(os.getpid())
    latencies("mixed loop", mixed, calibration)
    latencies(f"mixed loop {args.loops + 1}; every lesson built in {built} of {n} sessions before loop 2", steady)
    print(f"  mixed loop: {watch.report(mixed_start, mixed_end)}")
    print(f"  the process's CPU in the mixed loop: {mixed.cpu_s / mixed.seconds:.2f} s per s; idle {idle_rate:.3f}")
    per_action = {}
    for kind, tally in calibration.items():
        actions = len(tally.latency[kind])
        per_action[kind] = (tally.cpu_s - idle_rate * tally.seconds) / actions if actions else float("nan")
    print("  CPU per action (one kind at a time, less the idle rate; a lesson tab mostly shows a lesson built "
          "already): " + ", ".join(f"{kind} {1000 * s:.0f} ms" for kind, s in per_action.items()))
    mean = statistics.mean(per_action.values())
    print(f"  students per core at {args.rate:g} actions a minute, the kinds in equal parts: "
          f"{60 / (args.rate * mean):.0f}")
    print(f"  RSS: {'; '.join(f'{when} {mb:.0f} MB' for when, mb in rss.items())} "
          f"({(rss[f'all {n} arrived'] - rss['one session']) / max(n - 1, 1):.1f} MB per later session on arrival)")
    print(f"  a thorough collection now: {thorough_collection()}")
    print(f"  log records at WARNING or above: {len(problems.records)}"
          + "".join(f"\n    {line}" for line in problems.records[:10]))
    await server.context._cleanup_sessions(0)  # the lessons' worker threads stop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, nargs="+", default=[15, 30])
    parser.add_argument("--seconds", type=float, default=90, help="length of the mixed loop")
    parser.add_argument("--calibrate", type=float, default=20, help="length of each one-kind phase")
    parser.add_argument("--think", type=float, default=0.5, help="seconds between an answer and the next action")
    parser.add_argument("--paint-ms", type=float, default=50, help="when a page answers an after-paint ticket")
    parser.add_argument("--model", default="mnist-cnn", choices=["mnist-cnn", "mnist-vit"])
    parser.add_argument("--loops", type=int, default=1, choices=range(1, 100), metavar="K",
                        help="mixed loops after the one-kind phases, RSS read after each (memory in use)")
    parser.add_argument("--rate", type=float, default=6, help="actions per student per minute, for the estimate")
    args = parser.parse_args()
    if len(args.students) > 1:  # each N in a process of its own, as each gets a server of its own
        for n in args.students:
            subprocess.run([sys.executable, __file__, *sys.argv[1:], "--students", str(n)], check=True)
        return
    logging.getLogger("bokeh.core.validation").setLevel(logging.ERROR)  # W-1002: placeholders of parts not built
    asyncio.run(classroom(args.students[0], args))


if __name__ == "__main__":
    main()
