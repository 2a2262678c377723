"""A classroom on one server: N simulated students (browser contexts in one Chromium) on one `explorer serve`.

    python benchmarks/classroom.py [--students 5 15 30] [--seconds 90] [--calibrate 20] [--think 0.5]
                                   [--model mnist-cnn] [--rate 6]

For each N, a fresh server and N students, each a task of one asyncio loop (Playwright's async API) with its own
browser context. Each student loops gallery clicks, layer clicks and lesson switches, in turn, for --seconds,
with --think seconds between an answer and the next click. Printed per N:

- actions done, and latency median / p95 / max per action kind, measured in the page (performance.now()) from the
  click's pointerup to the condition below, polled every 30 ms:
  gallery click -> the prediction line names the new image; layer click (on the overview strip) -> the layer
  summary names the layer; lesson tab -> the lesson's input-dependent source (LESSONS) is on screen with data, no
  "Loading the lesson…" placeholder, and, when the image differs from the one the student last saw that lesson
  on, its data differs from what the hidden lesson held (a lesson in a closed tab catches up when shown; the sources are
  chosen to change with the image: a feature map, a histogram, the pruned model's probabilities, per-layer SQNR).
- the server's share of a gallery click, in the pages of --watched students (the first ones): from the browser
  sending the click's message (the gallery's new value) to the browser receiving the message that carries the
  answer (the new prediction's text), both timed by Chromium's network stack (CDP Network.webSocketFrameSent and
  webSocketFrameReceived), outside the page's busy main thread. The rest of the latency is the page's: reacting to
  the click before sending it, and drawing the answer once received. On this machine the pages and the server share
  the cores, and Chromium's network process, busy too, timestamps a frame when it gets to it: the share is an upper
  bound of what the server adds, which is all it adds where each student's browser has a machine of its own.
- with --browser-nice N, every Chromium process runs at niceness N (set again at each phase, for reloaded pages): the
  server gets the CPU first, as it would on a machine of its own, and the pages take what it leaves.
- how late the server's event loop ran a callback: a --setup script ticks every TICK_S and prints how late each tick
  ran (what a message arriving then waited before the server read it: the loop runs one session's work at a time),
  per phase. The ticks' own CPU is in the idle rate subtracted below. The same script times every full (generation
  2) garbage collection, whoever runs it: one holds the loop throughout.
- errors: page errors and console errors, lines of the server's log with Traceback / Error / RuntimeWarning, and
  actions with no answer within 30 s (the student then reloads the page and goes on).
- requests that left 127.0.0.1.
- the CPU the server and the browsers (every Chromium process) took during the mixed loop, in CPU s per s: which of
  the two the machine was busy with.
- server CPU seconds per action kind. Method: after the mixed loop, one calibration phase per kind (--calibrate
  seconds) in which every student does only that kind. The server process's CPU time (utime + stime of all its
  threads, /proc/PID/stat) is read when the server is quiet before the phase and again when it is quiet after
  it, so that work an action starts after its answer (the open lesson following a new input once the page has
  painted, a lesson's accuracy measurement on worker threads) counts; the server's idle rate with the N sessions
  open (three quiet 1-s windows after the students arrived: keep-alive pings, periodic callbacks) times that
  interval is subtracted; the rest is divided by the actions answered in the phase. From the three figures: the
  students one server core serves, each doing --rate actions a minute, the three kinds in equal parts:
  60 / (rate · mean CPU s per action).
- server memory (RSS): with one session open (its model loaded, its first lesson built), after all N arrived
  (per session: the growth over the N - 1 later sessions), after the mixed loop and after the calibration phases
  (lessons are built in a session when first opened, so these grow with the lessons opened). Then the steady
  state: every student opens each lesson not built in their session yet (for at most 3 × --seconds; how many
  sessions got there is printed), and RSS is read; a second mixed loop follows, and RSS is read again. Growth over
  that loop is what use adds once every lesson is built: it should be flat (a reload's new session, also printed,
  adds one session's lessons again). The latencies of the second loop are those of lessons already built.
- documents built vs sessions opened: a --setup script (written to a temporary file) counts Panel's
  on_session_created calls in the server's log (and its on_session_destroyed calls, which
  benchmarks/session_memory.py reads); sessions opened = N + reloads.

Prints figures; asserts nothing. Chromium and the server share the machine: on a small machine the browser's
work slows the server's answers, so compare runs on the same machine, as ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from playwright.async_api import Error, Page, async_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from explorer.core import zoo  # noqa: E402
from explorer.core.gallery import gallery_for  # noqa: E402
from explorer.session.state import ExplorerState  # noqa: E402
from explorer.ui.overview import CELL  # noqa: E402
from tests.browser.conftest import CHROMIUM, CHROMIUM_FLAGS, FIGURE_POINT, FIND_FIGURE, free_port  # noqa: E402

KINDS = ("gallery", "layer", "lesson")
ANSWER_S = 30  # an action with no answer within this is an error
POLL_MS = 30
LOCAL = ("http://127.0.0.1", "ws://127.0.0.1", "data:", "blob:", "about:")
LOG_PROBLEM = re.compile(r"Traceback|Error|RuntimeWarning")
BUILT = "classroom-benchmark: document built"
DESTROYED = "classroom-benchmark: session destroyed"
LATE = "classroom-benchmark: tick"  # the server's event loop: a tick's time and how late it ran (ms)
FULL = "classroom-benchmark: full collection"  # a generation-2 garbage collection: its start and length (ms)
TICK_S = 0.05
SETUP = f"""import panel as pn
pn.state.on_session_created(lambda context: print({BUILT!r}, flush=True))
pn.state.on_session_destroyed(lambda context: print({DESTROYED!r}, flush=True))
"""
LOOP_TICKS = f"""import asyncio, gc, time
from tornado.ioloop import IOLoop

async def ticks():  # how late the event loop runs a callback: what a message arriving then waits before it is read
    while True:
        start = time.monotonic()
        await asyncio.sleep({TICK_S})
        print({LATE!r}, f"{{start:.3f}}", f"{{1000 * (time.monotonic() - start - {TICK_S}):.1f}}", flush=True)

IOLoop.current().add_callback(ticks)

started = {{}}
def timed(phase, info):  # every full collection, whoever runs it: it holds the loop (and the interpreter) throughout
    if info["generation"] == 2 and phase == "start":
        started["at"] = time.monotonic()
    elif info["generation"] == 2 and "at" in started:
        at = started.pop("at")
        print({FULL!r}, f"{{at:.3f}}", f"{{1000 * (time.monotonic() - at):.1f}}", flush=True)

gc.callbacks.append(timed)
"""
# lesson tab title -> a named source that changes with the student's input (for the CNN and the ViT): a feature
# map, a histogram of activations, the pruned model's probabilities, every layer's SQNR
LESSONS = {"Convolution": "convolution-output", "Normalization": "normalization-hist",
           "Pruning": "pruning-pruned", "Quantization": "quantization-sqnr", "Saliency": "saliency-map-gradient"}

# Start the clock at the next pointerup anywhere in the page (capture: before any widget handles it).
ARM = """() => {
  window.__t0 = null;
  window.addEventListener("pointerup", () => { window.__t0 = performance.now(); }, {capture: true, once: true});
}"""

# The view of the first Bokeh model carrying CSS class `cls`, found once per page.
FIND = """(cls) => {
  if (typeof Bokeh === "undefined" || !Bokeh.index) return null;
  window.__views = window.__views || {};
  const known = window.__views[cls];
  if (known && known.el.isConnected) return known;
  const find = (v) => {
    if ((v.model.css_classes || []).includes(cls)) return v;
    for (const c of v.children_views ? v.children_views() : []) { const f = find(c); if (f) return f; }
    return null;
  };
  for (const root of Bokeh.index) {
    const view = find(root);
    if (view) return window.__views[cls] = view;
  }
  return null;
}"""

# Whether the element of the Bokeh model with CSS class `cls` shows `text`.
TEXT_IN = f"""([cls, text]) => {{
  const view = ({FIND})(cls);
  return view !== null && (view.el.shadowRoot || view.el).textContent.includes(text);
}}"""

# The start of what the element with class `cls` shows, for a report of what was on screen instead of the answer.
TEXT_NOW = f"""(cls) => {{
  const view = ({FIND})(cls);
  if (view === null) return null;
  const nodes = Array.from((view.el.shadowRoot || view.el).childNodes).filter((n) => n.nodeName !== "STYLE");
  return nodes.map((n) => n.textContent).join(" ").trim().slice(0, 60);
}}"""

# Milliseconds since the pointerup once the element with class `cls` shows `text`; false until then.
TEXT_SHOWN = f"""(arg) => window.__t0 !== null && ({TEXT_IN})(arg)
    && Math.max(performance.now() - window.__t0, 0.001)"""

# The page coordinates of data point (x, y) of the figure whose title starts with `title`, scrolled into view and
# held still for two animation frames (at most STILL_FRAMES frames waited), scrolled again where it then lies off
# screen (three times at most): the page may still be scrolling from an earlier click (scroll anchoring as a lesson
# below grows, Playwright scrolling a tab into view), and a point read while it moves is a click beside the column.
STILL_FRAMES = 60
STRIP_POINT = f"""async ([title, x, y]) => {{
  {FIND_FIGURE}
  const point = () => ({FIGURE_POINT})([title, x, y]);
  const frame = () => new Promise((done) => requestAnimationFrame(done));
  const onScreen = ([px, py]) => px >= 0 && px < innerWidth && py >= 0 && py < innerHeight;
  for (let tries = 0; tries < 3; tries++) {{
    const view = findFigure(title);
    if (view === null) return null;
    view.el.scrollIntoView({{block: "nearest", inline: "nearest"}});
    let at = point();
    for (let still = 0, frames = 0; still < 2 && frames < {STILL_FRAMES}; frames++) {{
      await frame();
      const now = point();
      if (now === null) return null;
      still = now[0] === at[0] && now[1] === at[1] ? still + 1 : 0;
      at = now;
    }}
    if (onScreen(at)) return at;
  }}
  return null;
}}"""

# A named source's data reduced to a short string.
FINGERPRINT = """(name) => {
  const source = Bokeh.documents[0].get_model_by_name(name);
  if (source === null) return null;
  return JSON.stringify(Object.values(source.data).map((v) => Array.from(v, (x) =>
      (x && typeof x !== "string" && x.length !== undefined)  // an array (an image): a hash of its values
          ? Array.from(x).reduce((a, b) => (a * 31 + b) % 1000000007, 7) : x)));
}"""

# Milliseconds since the pointerup once the open lesson shows `source` on screen with data, no placeholder, and
# (when `before` is not null) data other than `before`; false until then. The source's own data is checked first:
# the walk over the lesson's views (each one's visibility: a style computation) runs only once that data is there.
# Walked on every poll, it took 0.5 CPU s/s of the machine's 2 cores while 15 pages waited, a third of what the
# students' browsers took in all: the benchmark slowed the pages it measured.
LESSON_SHOWN = f"""([name, before]) => {{
  if (window.__t0 === null) return false;
  const source = Bokeh.documents[0].get_model_by_name(name);
  if (source === null || !(source.get_length() > 0)) return false;
  if (before !== null && ({FINGERPRINT})(name) === before) return false;
  const tabs = ({FIND})("lesson-tabs");
  if (tabs === null) return false;
  const onScreen = (v) => v.model.visible !== false &&
      (!(v.el instanceof Element) || v.el.checkVisibility({{visibilityProperty: true}}));
  let rows = 0, placeholder = false;
  const walk = (v) => {{
    if (!onScreen(v)) return;
    const m = v.model;
    if (typeof m.text === "string" && m.text.includes("Loading the lesson")) placeholder = true;
    if (m.data_source && m.data_source.name === name) rows = Math.max(rows, m.data_source.get_length() ?? 0);
    for (const c of v.children_views ? v.children_views() : []) walk(c);
  }};
  walk(tabs);
  if (placeholder || rows === 0) return false;
  return Math.max(performance.now() - window.__t0, 0.001);
}}"""

ACTIVE_LESSON = """() => {
  for (const root of Bokeh.index) {
    const stack = [root];
    while (stack.length) {
      const v = stack.pop();
      if ((v.model.css_classes || []).includes("lesson-tabs")) return v.model.tabs[v.model.active].title;
      stack.push(...(v.children_views ? v.children_views() : []));
    }
  }
  return null;
}"""


def launch(port: int, log: Path, setup: Path, options: list[str]) -> subprocess.Popen:
    """`explorer serve` (one process: `panel serve app.py` with the class's settings, explorer/cli.py, and the panel
    serve `options`), its output in `log`. It becomes panel serve in the same process, so the returned process is
    the server."""
    command = [sys.executable, "-m", "explorer.cli", "serve", "--port", str(port), "--address", "127.0.0.1",
               "--allow-websocket-origin", f"127.0.0.1:{port}", "--setup", str(setup), *options]
    with open(log, "w") as out:
        return subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "BOKEH_BROWSER": "none", "OMP_WAIT_POLICY": "PASSIVE"})


def cpu_s(pid: int) -> float:
    """The process's CPU time so far, user + system, all threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # fields 14 and 15 of stat(5)


async def idle_rate(pid: int, settle_s: float = 30) -> tuple[float, bool]:
    """The server's CPU s per s with no student acting: the mean of three quiet 1-s windows in a row (below
    0.05 CPU s/s), once the work the students started has ended; else, after `settle_s`, the lowest window."""
    windows: list[float] = []
    deadline = time.monotonic() + settle_s
    while time.monotonic() < deadline:
        start_cpu, start = cpu_s(pid), time.monotonic()
        await asyncio.sleep(1)
        windows.append((cpu_s(pid) - start_cpu) / (time.monotonic() - start))
        if len(windows) >= 3 and max(windows[-3:]) < 0.05:
            return statistics.fmean(windows[-3:]), True
    return min(windows), False


def chromium_pids(kind: str | None = None) -> list[int]:
    """Every Chromium process on the machine (the students' browsers), or those of one kind (`renderer`: the
    pages)."""
    pids = []
    for process in Path("/proc").iterdir():
        if not process.name.isdigit():
            continue
        try:
            # Chromium rewrites its command line as one text (arguments joined by spaces)
            command = (process / "cmdline").read_bytes().replace(b" ", b"\0").split(b"\0")
        except OSError:  # a process that ended meanwhile
            continue
        if b"chromium" in command[0] and (kind is None or f"--type={kind}".encode() in command):
            pids.append(int(process.name))
    return pids


def browsers_cpu_s(kind: str | None = None) -> float:
    """CPU time so far of every Chromium process (`chromium_pids`), user + system."""
    total = 0.0
    for pid in chromium_pids(kind):
        try:
            total += cpu_s(pid)
        except OSError:  # a process that ended meanwhile
            continue
    return total


def renice_browsers(niceness: int) -> None:
    """Give every Chromium process this niceness (0 leaves them as they are): the server then gets the CPU first, as
    it would with each student's browser on a machine of its own."""
    for pid in chromium_pids() if niceness else []:
        try:
            os.setpriority(os.PRIO_PROCESS, pid, niceness)
        except OSError:  # a process that ended meanwhile
            continue


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class NoAnswer(Exception):
    """An action got no answer within ANSWER_S."""


@dataclass
class Course:
    """What the students click, for one model."""

    model: str
    url: str
    items: list[str]   # gallery descriptions
    keys: dict[str, str]  # gallery description -> the key a click on it sends
    layers: list[str]  # overview layers a student clicks
    x: dict[str, float]  # layer -> x of its column in the overview strip


@dataclass
class Watch:
    """One gallery click followed in the browser's network events (CDP timestamps, seconds)."""

    key: str     # the gallery key the click's message carries
    answer: str  # text that only the answer's message carries
    sent: float | None = None
    received: float | None = None

    def frame_sent(self, event: dict) -> None:
        payload = event["response"]["payloadData"]
        if self.sent is None and f'"{self.key}"' in payload and '"value"' in payload:
            self.sent = event["timestamp"]

    def frame_received(self, event: dict) -> None:
        if self.sent is not None and self.received is None and self.answer in event["response"]["payloadData"]:
            self.received = event["timestamp"]


@dataclass(eq=False)
class Student:
    number: int
    page: Page
    course: Course
    problems: list[str] = field(default_factory=list)  # page and console errors
    outside: list[str] = field(default_factory=list)   # requests that left 127.0.0.1
    reloads: int = 0
    turn: int = 0
    item: str = ""
    layer: str = ""
    # lesson -> the gallery image it last showed: a lesson shown again after other images, but on the one it last
    # showed, holds the right data already (its data then need not change)
    seen: dict[str, str] = field(default_factory=dict)
    opened: set[str] = field(default_factory=set)  # lessons opened (built) in this page's session
    watched: bool = False  # its gallery clicks are followed in the browser's network events (`watch`)
    watch: Watch | None = None  # the gallery click under way, in a watched page
    server_ms: float | None = None  # the server's share of the last action, where it was followed

    async def follow_network(self) -> None:
        """Follow this page's websocket frames (CDP), for the server's share of its gallery clicks."""
        cdp = await self.page.context.new_cdp_session(self.page)
        await cdp.send("Network.enable")
        cdp.on("Network.webSocketFrameSent", lambda e: self.watch and self.watch.frame_sent(e))
        cdp.on("Network.webSocketFrameReceived", lambda e: self.watch and self.watch.frame_received(e))
        self.watched = True

    async def open(self) -> None:
        await self.page.goto(f"{self.course.url}?model={self.course.model}", timeout=120_000)  # 30 arriving at once
        await self.page.wait_for_function(TEXT_IN, arg=["prediction-summary", "The model says"], polling=100,
                                          timeout=120_000)
        self.item, self.layer = self.course.items[0], ""
        self.seen = {"Convolution": self.item}
        self.opened = {"Convolution"}

    async def act(self, kind: str, lesson: str | None = None) -> float:
        """One action of `kind` (a lesson switch to `lesson`, else to the next in turn); its latency in ms. Raises on
        no answer within ANSWER_S."""
        page, self.turn, self.server_ms, self.watch = self.page, self.turn + 1, None, None
        await page.evaluate(ARM)
        if kind == "gallery":
            items = [d for d in self.course.items if d != self.item]
            self.item = items[(self.number + self.turn) % len(items)]
            check, arg = TEXT_SHOWN, ["prediction-summary", f"for {self.item}."]
            self.watch = Watch(self.course.keys[self.item], arg[1]) if self.watched else None
            await page.get_by_role("button", name=self.item, exact=True).click()
        elif kind == "layer":
            layers = [name for name in self.course.layers if name != self.layer]
            self.layer = layers[(self.number + self.turn) % len(layers)]
            point = await page.evaluate(STRIP_POINT, [f"{self.course.model}:", self.course.x[self.layer], 60])
            if point is None:
                raise Error(f"layer {self.layer} of the overview strip is not on screen")
            await page.mouse.click(*point)
            check, arg = TEXT_SHOWN, ["layer-summary", f"({self.layer}) ·"]
        else:
            active = await page.evaluate(ACTIVE_LESSON)
            lessons = [title for title in LESSONS if title != active]
            lesson = lesson or lessons[(self.number + self.turn) % len(lessons)]
            stale = lesson in self.seen and self.seen[lesson] != self.item
            before = await page.evaluate(FINGERPRINT, LESSONS[lesson]) if stale else None
            await page.locator(".lesson-tabs .bk-tab").filter(has_text=re.compile(rf"^{lesson}$")).click()
            check, arg = LESSON_SHOWN, [LESSONS[lesson], before]
            self.opened.add(lesson)
        try:
            handle = await page.wait_for_function(check, arg=arg, polling=POLL_MS, timeout=ANSWER_S * 1000)
        except Error:
            if kind == "lesson":
                shown = await page.evaluate(ACTIVE_LESSON)
                what = f"{lesson} ({'stale' if stale else 'fresh'}; the page shows {shown})"
            else:
                clicked = await page.evaluate("window.__t0 !== null")
                moved = ""
                if kind == "layer":  # where the layer's column is now, against where it was clicked
                    now = await page.evaluate(FIGURE_POINT, [f"{self.course.model}:", self.course.x[self.layer], 60])
                    moved = f", clicked at {point}, the column is now at {now}"
                what = (f"{arg[1]!r} ({'clicked' if clicked else 'no pointerup'}; "
                        f"the page shows {await page.evaluate(TEXT_NOW, arg[0])!r}{moved})")
            raise NoAnswer(f"{kind} {what}") from None
        latency = await handle.json_value()
        if self.watch is not None and self.watch.received is not None:
            self.server_ms = 1000 * (self.watch.received - self.watch.sent)
        self.watch = None
        active = await page.evaluate(ACTIVE_LESSON)  # a layer click may open another lesson
        if active is not None:
            self.seen[active] = self.item
            self.opened.add(active)
        return latency


@dataclass
class Tally:
    latency: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})
    no_answer: dict[str, int] = field(default_factory=lambda: {k: 0 for k in KINDS})
    server_ms: list[float] = field(default_factory=list)  # the server's share of the watched gallery clicks
    unanswered: list[str] = field(default_factory=list)  # what each action with no answer was

    def done(self, kind: str) -> int:
        return len(self.latency[kind])

    def missed(self, kind: str, student: Student, error: Exception) -> None:
        self.no_answer[kind] += 1
        self.unanswered.append(f"student {student.number}: {str(error).splitlines()[0][:400]}")


async def attempt(student: Student, kind: str, tally: Tally, lesson: str | None = None) -> bool:
    """One action, tallied; on no answer the student reloads the page. False if the page could not be opened again."""
    try:
        tally.latency[kind].append(await student.act(kind, lesson))
        if student.server_ms is not None:
            tally.server_ms.append(student.server_ms)
    except (NoAnswer, Error) as e:
        tally.missed(kind, student, e)
        student.reloads += 1
        try:
            await student.open()
        except Error:
            return False
    return True


async def loop(student: Student, kinds: tuple[str, ...], until: float, think: float, tally: Tally) -> None:
    i = 0
    while time.monotonic() < until:
        kind = kinds[i % len(kinds)]
        i += 1
        if not await attempt(student, kind, tally):
            return
        await asyncio.sleep(think)


async def open_every_lesson(student: Student, until: float, think: float, tally: Tally) -> None:
    """Click each lesson the student's session has not built yet, one lesson switch each, until `until`. No reload
    on no answer (a new session would build none of them): the server builds a lesson whose tab was clicked even
    when the page shows it late."""
    while (missing := [title for title in LESSONS if title not in student.opened]) and time.monotonic() < until:
        try:
            tally.latency["lesson"].append(await student.act("lesson", missing[0]))
        except (NoAnswer, Error) as e:
            tally.missed("lesson", student, e)
            student.opened.add(missing[0])
        await asyncio.sleep(think)


async def phase(students: list[Student], kinds: tuple[str, ...], seconds: float, think: float, nice: int = 0
                ) -> Tally:
    renice_browsers(nice)  # a reloaded page's new renderer too
    tally = Tally()
    until = time.monotonic() + seconds
    await asyncio.gather(*(loop(s, kinds, until, think, tally) for s in students))
    return tally


def course(model: str, url: str) -> Course:
    t = ExplorerState(model=model).ensure().trace
    # every fourth layer of the strip, at most 8, so that clicks open different lessons (conv, norm, ...)
    layers = [r.name for r in t.records if r.output.dim() >= 3][::4][:8]
    items = gallery_for(zoo.card(model))[:12]
    return Course(model, url, [item.description for item in items], {item.description: item.key for item in items},
                  layers, {name: (t.names.index(name) + 1.5) * CELL for name in layers})


def summary(values: list[float]) -> str:
    if not values:
        return "no answers"
    p95 = statistics.quantiles(values, n=20, method="inclusive")[-1] if len(values) >= 2 else values[0]
    return f"median {statistics.median(values):7.0f} ms, p95 {p95:7.0f} ms, max {max(values):7.0f} ms"


def start_server(prefix: str, options: list[str] = (), setup_script: str = SETUP
                 ) -> tuple[subprocess.Popen, str, Path]:
    """A new server on a free port, given the panel serve `options`, its log and --setup script (SETUP unless
    given) in a new temporary folder whose name starts with `prefix`: (the process, the app's URL, the log)."""
    port = free_port()
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    log, setup = folder / "server.log", folder / "setup.py"
    setup.write_text(setup_script)
    return launch(port, log, setup, list(options)), f"http://127.0.0.1:{port}/app", log


async def serving(server: subprocess.Popen, log: Path) -> None:
    """Wait until the server has started; raise if it stopped or took more than 2 minutes."""
    deadline = time.monotonic() + 120
    while "Bokeh app running" not in log.read_text():
        if server.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"explorer serve did not start:\n{log.read_text()}")
        await asyncio.sleep(0.2)


async def classroom(n: int, args: argparse.Namespace) -> None:
    server, url, log = start_server("classroom-", setup_script=SETUP + LOOP_TICKS)
    try:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            await serving(server, log)
            lesson = course(args.model, url)
            students = []
            for i in range(n):
                context = await browser.new_context(viewport={"width": 1400, "height": 1000})
                student = Student(i, await context.new_page(), lesson)
                student.page.on("pageerror", lambda e, s=student: s.problems.append(f"page error: {e}"))
                student.page.on("console", lambda m, s=student: s.problems.append(f"console error: {m.text}")
                                if m.type == "error" else None)
                context.on("request", lambda r, s=student: None if r.url.startswith(LOCAL) else
                           s.outside.append(r.url))
                if i < args.watched:
                    await student.follow_network()
                students.append(student)
            arrival = time.monotonic()
            await students[0].open()
            rss_one = rss_mb(server.pid)
            await asyncio.gather(*(s.open() for s in students[1:]))
            rss_all = rss_mb(server.pid)
            arrival = time.monotonic() - arrival
            idle, settled = await idle_rate(server.pid)

            mixed_start = (cpu_s(server.pid), browsers_cpu_s(), time.monotonic())
            mixed = await phase(students, KINDS, args.seconds, args.think, args.browser_nice)
            windows = {"mixed loop": (mixed_start[2], time.monotonic())}
            server_rate, browsers_rate = ((cpu_s(server.pid) - mixed_start[0]) / (time.monotonic() - mixed_start[2]),
                                          (browsers_cpu_s() - mixed_start[1]) / (time.monotonic() - mixed_start[2]))
            rss_mixed = rss_mb(server.pid)
            cpu_per: dict[str, float] = {}
            calibration: dict[str, Tally] = {}
            for kind in KINDS:
                await idle_rate(server.pid)  # the work of the phase before has ended
                start_cpu, start = cpu_s(server.pid), time.monotonic()
                calibration[kind] = await phase(students, (kind,), args.calibrate, args.think, args.browser_nice)
                windows[f"{kind} alone"] = (start, time.monotonic())
                await idle_rate(server.pid)  # and the work this phase started after its last answers
                spent = cpu_s(server.pid) - start_cpu - idle * (time.monotonic() - start)
                done = calibration[kind].done(kind)
                cpu_per[kind] = spent / done if done else float("nan")
            rss_end = rss_mb(server.pid)
            # Steady state: every student's session has every lesson built; a second mixed loop then adds only what
            # use adds (and any reload's new session).
            completing, until = Tally(), time.monotonic() + 3 * args.seconds
            await asyncio.gather(*(open_every_lesson(s, until, args.think, completing) for s in students))
            complete = sum(set(LESSONS) <= s.opened for s in students)  # clicked, if not all shown in 30 s
            await idle_rate(server.pid)
            rss_complete, reloads_complete = rss_mb(server.pid), sum(s.reloads for s in students)
            steady_start = time.monotonic()
            steady = await phase(students, KINDS, args.seconds, args.think, args.browser_nice)
            windows["second loop"] = (steady_start, time.monotonic())
            await idle_rate(server.pid)
            rss_steady = rss_mb(server.pid)
            await browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)

    text = log.read_text()
    logged = [line for line in text.splitlines() if LOG_PROBLEM.search(line)]
    built = text.count(BUILT)
    sessions = n + sum(s.reloads for s in students)
    problems = [p for s in students for p in s.problems]
    outside = [u for s in students for u in s.outside]
    tallies = [mixed, *calibration.values(), completing, steady]
    no_answer = {k: sum(tally.no_answer[k] for tally in tallies) for k in KINDS}
    print(f"\n=== {n} students, {args.model}, {args.seconds:.0f} s mixed + {args.calibrate:.0f} s per kind, "
          f"think {args.think} s{f', browsers at niceness {args.browser_nice}' if args.browser_nice else ''} ===")
    print(f"arrival: {n} pages opened in {arrival:.1f} s")
    print(f"actions done (mixed loop): {sum(mixed.done(k) for k in KINDS)} "
          f"({', '.join(f'{k} {mixed.done(k)}' for k in KINDS)}); in the calibration phases: "
          f"{', '.join(f'{k} {calibration[k].done(k)}' for k in KINDS)}")
    for kind in KINDS:
        print(f"  {kind:8s} latency (mixed loop): {summary(mixed.latency[kind])}  (n={mixed.done(kind)}); "
              f"alone: {summary(calibration[kind].latency[kind])}")
    print(f"  the server's share of a gallery click, in {min(args.watched, n)} watched pages (the click's message "
          f"sent → the answer received): mixed loop {summary(mixed.server_ms)} (n={len(mixed.server_ms)}); "
          f"alone: {summary(calibration['gallery'].server_ms)} (n={len(calibration['gallery'].server_ms)})")
    print(f"errors: {len(problems)} page/console errors, {len(logged)} server log lines with "
          f"Traceback/Error/RuntimeWarning, no answer within {ANSWER_S} s: "
          f"{', '.join(f'{k} {no_answer[k]}' for k in KINDS)}")
    unanswered = [u for tally in tallies for u in tally.unanswered]
    for line in (unanswered + problems + logged)[:10]:
        print(f"    {line[:400]}")
    ticks = [(float(start), float(late)) for start, late in re.findall(rf"{LATE} (\S+) (\S+)", text)]
    lateness = {name: summary([late for start, late in ticks if a <= start < b]) for name, (a, b) in windows.items()}
    print(f"the server's event loop, how late a callback ran (a tick every {1000 * TICK_S:.0f} ms: what a message "
          f"arriving then waited before it was read): " + "; ".join(f"{k} {v}" for k, v in lateness.items()))
    fulls = [(float(start), float(ms)) for start, ms in re.findall(rf"{FULL} (\S+) (\S+)", text)]
    print("full garbage collections (each holds the loop throughout): " + "; ".join(
        f"{name} {len(lengths)}, {sum(lengths) / 1000:.1f} s in all, ms each {summary(lengths)}"
        for name, (a, b) in {**windows, "whole run": (0, math.inf)}.items()
        for lengths in [[ms for start, ms in fulls if a <= start < b]]))
    print(f"CPU during the mixed loop, of the machine's {os.cpu_count()} cores: server {server_rate:.2f} CPU s/s, "
          f"browsers {browsers_rate:.2f} CPU s/s")
    print(f"requests that left 127.0.0.1: {len(outside)}" + (f" (first: {outside[0]})" if outside else ""))
    print(f"server CPU per action (calibrated; idle {idle:.3f} CPU s/s subtracted, "
          f"{'measured quiet' if settled else 'the server never went quiet: its lowest 1-s window'}): "
          f"{', '.join(f'{k} {cpu_per[k]:.3f} s' for k in KINDS)}")
    mean = statistics.fmean(cpu_per.values())
    print(f"students one server core serves at {args.rate:g} actions a minute each (kinds in equal parts, "
          f"{mean:.3f} CPU s per action): {60 / (args.rate * mean):.0f}")
    per_session = (rss_all - rss_one) / (n - 1) if n > 1 else float("nan")
    print(f"server RSS: {rss_one:.0f} MB with 1 session, {rss_all:.0f} MB with {n} ({per_session:.1f} MB per "
          f"session), {rss_mixed:.0f} MB after the mixed loop, {rss_end:.0f} MB at the end: {rss_end - rss_all:+.0f} "
          f"MB since arrival (lessons are built when first opened), {rss_end - rss_mixed:+.0f} MB since the mixed "
          f"loop")
    print(f"steady state: every lesson built in {complete} of {n} sessions ({completing.done('lesson')} lessons "
          f"opened to get there, at most {3 * args.seconds:.0f} s): {rss_complete:.0f} MB; after a second mixed loop "
          f"({sum(steady.done(k) for k in KINDS)} actions, "
          f"{sessions - n - reloads_complete} reloads): {rss_steady:.0f} MB, {rss_steady - rss_complete:+.0f} MB")
    for kind in KINDS:
        print(f"  {kind:8s} latency (second mixed loop): {summary(steady.latency[kind])}  (n={steady.done(kind)})")
    print(f"  the server's share of a gallery click (second mixed loop): {summary(steady.server_ms)} "
          f"(n={len(steady.server_ms)})")
    print(f"documents built: {built}, sessions opened: {sessions} ({n} students + "
          f"{sessions - n} reloads)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, nargs="+", default=[5, 15, 30])
    parser.add_argument("--seconds", type=float, default=90, help="length of the mixed loop")
    parser.add_argument("--calibrate", type=float, default=20, help="length of each one-kind phase")
    parser.add_argument("--think", type=float, default=0.5, help="seconds between an answer and the next click")
    parser.add_argument("--model", default="mnist-cnn", choices=["mnist-cnn", "mnist-vit"])
    parser.add_argument("--rate", type=float, default=6, help="actions per student per minute, for the estimate")
    parser.add_argument("--browser-nice", type=int, default=0,
                        help="niceness of the browsers' processes (0: as launched); 10 gives the server the CPU first")
    parser.add_argument("--watched", type=int, default=3,
                        help="students whose gallery clicks are followed in the browser's network events")
    args = parser.parse_args()
    for n in args.students:
        asyncio.run(classroom(n, args))


if __name__ == "__main__":
    main()
