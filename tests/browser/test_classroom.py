"""A classroom on one server: five students, five browser contexts, the real app (`panel serve app.py`) at once.

The students act in turns, one step of every student before anyone's next step (Playwright's sync API is one
thread; the five pages work in parallel in the browser while the test waits on one of them, so the server has five
sessions busy at once). Every student opens every lesson and every part of the convolution lesson, sees its content
(named Bokeh sources with data on screen, a known text, never the "Loading the lesson…" placeholder) and works one
control in it (a button, a select, a slider, a number), waiting for the answer that proves the control was heard.

Models: each student starts on another model and switches model with each part open (from the sidebar, as a
student would), so that across the class every part is seen with mnist-cnn, mnist-vit and mobilenet_v2 and every
part is open during model switches. The attention lesson applies to the ViT only (mnist-vit): every student opens
it on mnist-vit and leaves it by switching to a CNN, which must then show the lesson's message. After each switch,
nothing on screen may still describe the previous model: every Bokeh model on screen whose tags hold
`explorer-model=NAME` (explorer/session/tags.py, `model_tag`) must name the new model, and the open lesson must
hold at least one such tag, so that the check cannot pass on a lesson that tags nothing.

Throughout: no page error, no console error, no request that leaves 127.0.0.1, and no traceback, error or
RuntimeWarning in the server's log. At the end, with every lesson built in each page: no stylesheet and no style
attribute of the page sets a `--bk-*` CSS variable: the app themes its plots through Bokeh's models, so the served
page's BokehJS fixes read no such variable (explorer/serve/bokehjs_fixes.js, fix 2; the reads forced style
recalculations while a lesson was built).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Error, Locator, Page, expect

from explorer.core import zoo
from explorer.session.tags import MODEL_TAG

from .conftest import EVERY_PART_PLACED, ROOT, screenshot, serve, start_placing_every_part

STUDENTS = 5
MODELS = ("mnist-cnn", "mnist-vit", "mobilenet_v2")
VIT = "mnist-vit"
TIMEOUT_S = 60  # a lesson's first build for MobileNetV2 with five sessions busy on two cores takes seconds
LOCAL = ("http://127.0.0.1", "ws://127.0.0.1", "data:", "blob:", "about:")
SERVER_LOG_PROBLEM = re.compile(r"Traceback|Error|RuntimeWarning")

# What the page shows: the named data sources and the model tags of every Bokeh view on screen (not in a closed
# tab, not hidden), which of them are inside the open lesson, and whether the lesson still shows its placeholder.
SCREEN = """(prefix) => {
  const seen = new Set(), counted = new Set(), rows = {}, tags = [];
  let placeholder = false;
  const onScreen = (view) => view.model.visible !== false &&
      (!(view.el instanceof Element) || view.el.checkVisibility({visibilityProperty: true}));
  function walk(view, inLesson) {
    if (seen.has(view) || !onScreen(view)) return;
    seen.add(view);
    const model = view.model;
    inLesson = inLesson || (model.css_classes || []).includes("lesson-tabs");
    for (const m of [model, model.data_source]) {
      if (!m || counted.has(m.id)) continue;
      counted.add(m.id);
      if (m.name && typeof m.get_length === "function") rows[m.name] = m.get_length() ?? 0;
      for (const tag of m.tags || [])
        if (typeof tag === "string" && tag.startsWith(prefix))
          tags.push({model: tag.slice(prefix.length), what: `${m.type} ${m.name || m.id}`, lesson: inLesson});
    }
    if (inLesson && typeof model.text === "string" && model.text.includes("Loading the lesson")) placeholder = true;
    for (const child of view.children_views ? view.children_views() : []) walk(child, inLesson);
  }
  for (const root of Bokeh.index) walk(root, false);
  return {rows, tags, placeholder};
}"""

# True once the open lesson shows `sources` with data, no placeholder, and every tag on screen names `model`
# (and, with `tagged`, at least one tag inside the lesson).
SHOWS = f"""(spec) => {{
  if (typeof Bokeh === "undefined" || !Bokeh.index) return false;
  const s = ({SCREEN})(spec.prefix);
  return !s.placeholder && spec.sources.every((name) => (s.rows[name] ?? 0) > 0)
      && s.tags.every((t) => t.model === spec.model) && (!spec.tagged || s.tags.some((t) => t.lesson));
}}"""

# A named source's data, reduced to a short string, to see that an answer changed it.
FINGERPRINT = """(name) => {
  const source = Bokeh.documents[0].get_model_by_name(name);
  return JSON.stringify(Object.entries(source.data).map(([k, v]) => [k, Array.from(v, (x) =>
      (x && typeof x !== "string" && x.length !== undefined)  // an array (an image): a hash of its values
          ? Array.from(x).reduce((a, b) => (a * 31 + b) % 1000000007, 7) : x)]));
}"""


class Deadline:
    """One deadline for a step of the whole class: the pages work in parallel, so each wait gets what is left."""

    def __init__(self, seconds: float = TIMEOUT_S):
        self.end = time.monotonic() + seconds

    def ms(self) -> float:
        """What is left, but at least one more look: a page that has answered passes at once."""
        return max(1000.0, (self.end - time.monotonic()) * 1000)


Check = Callable[[Deadline], None]  # waits for the answer to a control, until the deadline


def fingerprint(page: Page, source: str) -> str:
    return page.evaluate(FINGERPRINT, source)


def wait_changed(page: Page, source: str, before: str, deadline: Deadline) -> None:
    try:
        page.wait_for_function(f"([name, before]) => ({FINGERPRINT})(name) !== before", arg=[source, before],
                               polling=200, timeout=deadline.ms())
    except Error:
        raise AssertionError(f"the data of {source} did not change: the control got no answer") from None


def text_of(locator: Locator) -> str:
    """The text an element shows, also when it is drawn in its shadow root (Panel's and Bokeh's panes)."""
    return locator.evaluate("(e) => (e.shadowRoot || e).textContent")


def slider(page: Page, title: str) -> Locator:
    """The handle of the visible slider whose title starts with `title`."""
    return page.locator(".bk-input-group").filter(has_text=re.compile(rf"^{re.escape(title)}")).get_by_role("slider")


# --- the controls: each starts an action and returns the check that waits for the server's answer ---

def step_the_window(page: Page) -> Check:
    """Button: the window moves one position."""
    k = int(re.search(r"Window position (\d+) ", text_of(page.locator(".conv-arithmetic")))[1])
    page.get_by_role("button", name="Step ▶", exact=True).click()
    return lambda deadline: expect(page.locator(".conv-arithmetic")).to_contain_text(
        f"Window position {k + 1} (of", timeout=deadline.ms())


def pick_a_preset(page: Page) -> Check:
    """Select: another kernel preset; the playground filters the picture with it."""
    select = page.get_by_role("combobox", name="Preset", exact=True)
    preset = "Laplacian" if select.input_value() != "Laplacian" else "sharpen"
    before = fingerprint(page, "convolution-playground-output")
    select.select_option(preset)
    return lambda deadline: wait_changed(page, "convolution-playground-output", before, deadline)


def says_and_changed(page: Page, where: str, text: str, source: str, before: str) -> Check:
    """The check of a control whose answer is a text (in the element matching `where`) and new data in `source`."""
    def check(deadline: Deadline) -> None:
        expect(page.locator(where)).to_contain_text(text, timeout=deadline.ms())
        wait_changed(page, source, before, deadline)
    return check


def move_the_unit(page: Page) -> Check:
    """Number input: another unit row; the receptive field and the summary follow."""
    box = page.get_by_role("textbox", name="Unit row", exact=True)  # Bokeh's spinner is a text input
    row = int(box.input_value())
    new = row - 1 if row > 0 else row + 1
    before = fingerprint(page, "convolution-rf-box")
    box.fill(str(new))
    box.press("Enter")
    return says_and_changed(page, ".rf-summary", f"Unit (row {new}, column", "convolution-rf-box", before)


def sort_the_filters(page: Page) -> Check:
    """Button: sort the atlas by L2 norm."""
    before = fingerprint(page, "convolution-atlas-filters")
    page.get_by_role("button", name="L2 norm", exact=True).click()
    return says_and_changed(page, ".atlas-legend", "largest weights first", "convolution-atlas-filters", before)


def pick_a_norm(page: Page) -> Check:
    """Button (radio group): another kind of normalization; the picture of shared values follows."""
    # LayerNorm and BatchNorm share different values at any batch size (at a batch of 1, as for an ImageNet model,
    # BatchNorm and InstanceNorm share the same ones)
    kind = "BatchNorm" if "LayerNorm:" in text_of(page.locator(".normalization-axes")) else "LayerNorm"
    before = fingerprint(page, "normalization-axes")
    page.get_by_role("button", name=kind, exact=True).click()
    return says_and_changed(page, ".normalization-axes", f"{kind}:", "normalization-axes", before)


def next_head(page: Page) -> Check:
    """Slider: another attention head; the enlarged map shows it."""
    before = fingerprint(page, "attention-map")
    handle = slider(page, "Head")
    head = float(handle.get_attribute("aria-valuenow"))
    handle.press("ArrowLeft" if head > 0 else "ArrowRight")
    return lambda deadline: wait_changed(page, "attention-map", before, deadline)


def prune_one_percent_more(page: Page) -> Check:
    """Slider: one percent more sparsity; the pruned model's prediction says so."""
    handle = slider(page, "Sparsity")
    sparsity = round(float(handle.get_attribute("aria-valuenow")))
    handle.press("ArrowRight")
    return lambda deadline: expect(page.locator(".pruning-prediction")).to_contain_text(
        f"pruned at {sparsity + 1} %", timeout=deadline.ms())


def one_bit_fewer(page: Page) -> Check:
    """Slider: one weight bit fewer; the summary says so."""
    handle = slider(page, "Weight bits")
    bits = round(float(handle.get_attribute("aria-valuenow")))
    handle.press("ArrowLeft")
    return lambda deadline: expect(page.get_by_text(re.compile(rf"^{bits - 1}-bit \w+ per-\w+ weights"))
                                   ).to_be_visible(timeout=deadline.ms())


# The index of a class menu option that explains another class than the predicted one (option 0 names it).
OTHER_CLASS = """(select) => {
  const texts = Array.from(select.options, (o) => o.text);
  const predicted = texts[0].slice(texts[0].indexOf("(") + 1, -1);
  return texts.findIndex((t, i) => i > 0 && i !== select.selectedIndex && t !== predicted
                                   && !t.endsWith(`: ${predicted}`));
}"""


def explain_another_class(page: Page) -> Check:
    """Select: another class to explain; the gradient map (the first the lesson computes) follows."""
    select = page.get_by_role("combobox", name="Class explained", exact=True)
    before = fingerprint(page, "saliency-map-gradient")
    select.select_option(index=select.evaluate(OTHER_CLASS))
    return lambda deadline: wait_changed(page, "saliency-map-gradient", before, deadline)


@dataclass(frozen=True)
class Part:
    """One lesson, or one tab of the convolution lesson, as the class visits it."""

    lesson: str                       # the lesson's tab title
    tab: str | None                   # the part's tab inside the lesson
    sources: tuple[str, ...]          # named Bokeh sources that must show data
    text: tuple[str, str | re.Pattern]  # (selector, text) that the part shows once it is filled
    control: Callable[[Page], Check]
    vit_only: bool = False

    @property
    def name(self) -> str:
        return self.lesson if self.tab is None else f"{self.lesson} › {self.tab}"

    def applies(self, model: str) -> bool:
        return model == VIT or not self.vit_only


PARTS = (
    Part("Convolution", "Step through", ("convolution-input", "convolution-output", "convolution-kernel",
                                         "convolution-taps"), (".conv-arithmetic", "Window position"),
         step_the_window),
    Part("Convolution", "Playground", ("convolution-playground-input", "convolution-playground-output",
                                       "convolution-playground-kernel"), (".playground-formula", "Output size"),
         pick_a_preset),
    Part("Convolution", "Receptive field", ("convolution-rf-map", "convolution-rf-input", "convolution-rf-box",
                                            "convolution-rf-erf", "convolution-rf-depth"),
         (".rf-summary", "theoretical receptive field"), move_the_unit),
    Part("Convolution", "Filter atlas", ("convolution-atlas-filters", "convolution-atlas-maps"),
         (".atlas-legend", "filters, sorted by"), sort_the_filters),
    Part("Normalization", None, ("normalization-axes", "normalization-stats", "normalization-hist"),
         (".normalization-axes", "share its mean and variance"), pick_a_norm),
    Part("Attention", None, ("attention-picture", "attention-grid", "attention-map", "attention-rollout",
                             "attention-distance"), ("body", "2. Where every head looks"), next_head, vit_only=True),
    Part("Pruning", None, ("pruning-dense", "pruning-pruned", "pruning-weights-after", "pruning-sparsity"),
         (".pruning-prediction", "Dense model"), prune_one_percent_more),
    Part("Quantization", None, ("quantization-histogram", "quantization-predictions", "quantization-sqnr"),
         ("body", re.compile(r"^\d+-bit \w+ per-\w+ weights")), one_bit_fewer),
    Part("Saliency", None, ("saliency-picture", "saliency-map-gradient"), (".saliency-target", "Explaining class"),
         explain_another_class),
)


def plan(student: int) -> list[tuple[Part, str, tuple[str, ...]]]:
    """(part, the model it is opened with, the models switched to while it is open), in the student's order.

    Models rotate from student to student and from part to part, so that any three students see each part with
    all three models; the attention lesson is opened on the ViT and left for a CNN. With each part open the student
    switches to the next part's model, through another model where the two are the same."""
    seen = [VIT if part.vit_only else MODELS[(student + j) % len(MODELS)] for j, part in enumerate(PARTS)]
    steps = []
    for j, part in enumerate(PARTS):
        after = seen[j + 1] if j + 1 < len(PARTS) else None
        usable = [m for m in MODELS if m != seen[j] and not (part.vit_only and m == VIT)]
        first = after if after in usable else usable[(student + j) % len(usable)]
        steps.append((part, seen[j], (first,) if after in (None, first) else (first, after)))
    return steps


@dataclass(eq=False)
class Student:
    number: int
    page: Page
    url: str
    model: str
    problems: list[str] = field(default_factory=list)  # page errors, console errors, requests that left
    failures: list[str] = field(default_factory=list)  # what the student did not see
    stuck: bool = False  # a step never answered: the student skips the rest of the part and reloads the page


@dataclass
class Classroom:
    students: list[Student]
    log: Path  # the server's output


def enrol(browser: Browser, url: str, number: int, model: str) -> Student:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(15_000)  # a control on a page that shows its lesson is there at once
    page = context.new_page()
    student = Student(number, page, url, model)
    page.on("pageerror", lambda e: student.problems.append(f"page error: {e}"))
    page.on("console", lambda m: student.problems.append(f"console error: {m.text}") if m.type == "error" else None)
    context.on("request", lambda r: None if r.url.startswith(LOCAL) else
               student.problems.append(f"request left the machine: {r.url}"))
    page.goto(f"{url}?model={model}", wait_until="commit")
    return student


def arrive(students: list[Student]) -> None:
    """Wait until each page shows a prediction."""
    together(students, "opening the app", lambda s: None, lambda s, _, deadline: expect(
        s.page.locator(".prediction-summary"), "the prediction").to_contain_text("The model says",
                                                                                 timeout=deadline.ms()))


def rejoin(students: list[Student], models: dict[Student, str]) -> None:
    """Students whose page got stuck reload it, on the model the next part is planned with."""
    stuck = [s for s in students if s.stuck]
    for s in stuck:
        s.stuck, s.model = False, models[s]
        s.page.goto(f"{s.url}?model={s.model}", wait_until="commit")
    arrive(stuck)


@pytest.fixture(scope="module")
def classroom(browser: Browser, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Classroom]:
    log = tmp_path_factory.mktemp("classroom") / "server.log"
    with serve(ROOT / "app.py", log=log) as url:
        students = [enrol(browser, url, n, plan(n)[0][1]) for n in range(STUDENTS)]
        arrive(students)
        yield Classroom(students, log)
        for student in students:
            student.page.context.close()


class Stale(AssertionError):
    """The lesson shows its content, but something on screen describes another model, or nothing is tagged."""


def together(students: list[Student], what: str, start: Callable[[Student], object],
             finish: Callable[[Student, object, Deadline], None]) -> None:
    """`start` for each of `students` not stuck, then `finish` for each, all against one deadline (the pages work
    meanwhile). A failure is recorded; after any but `Stale` the student is stuck until the next part."""
    students, began, started = [s for s in students if not s.stuck], time.monotonic(), {}
    if not students:
        return
    for s in students:
        try:
            started[s] = start(s)
        except (AssertionError, Error) as e:
            fail(s, what, e)
    deadline = Deadline()
    for s in students:
        if s not in started:
            continue
        try:
            finish(s, started[s], deadline)
        except (AssertionError, Error) as e:
            fail(s, what, e)
    print(f"{time.monotonic() - began:5.1f} s  {what} ({len(students)} students)")


def fail(student: Student, what: str, error: Exception) -> None:
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    student.failures.append(f"student {student.number} ({student.model}), {what}: {message}")
    student.stuck = not isinstance(error, Stale)
    screenshot(student.page, f"classroom-student-{student.number}-{len(student.failures)}")


def screen(page: Page) -> dict:
    return page.evaluate(SCREEN, MODEL_TAG)


def wait_shows(page: Page, part: Part, model: str, tagged: bool, deadline: Deadline) -> None:
    """Wait until the open part shows its content for `model`; at the deadline, fail saying what is missing."""
    sources = list(part.sources) if part.applies(model) else []
    try:
        page.wait_for_function(SHOWS, arg={"sources": sources, "model": model, "tagged": tagged, "prefix": MODEL_TAG},
                               polling=200, timeout=deadline.ms())
    except Error:
        s = screen(page)
        empty = [name for name in sources if s["rows"].get(name, 0) == 0]
        stale = sorted({f"{t['what']} says {t['model']}" for t in s["tags"] if t["model"] != model})
        missing = ["the placeholder 'Loading the lesson…' is still shown"] if s["placeholder"] else []
        missing += [f"no data on screen in {', '.join(empty)}"] if empty else []
        missing += [f"still describes another model: {'; '.join(stale)}"] if stale else []
        if tagged and not any(t["lesson"] for t in s["tags"]):
            missing.append(f"nothing in the lesson is tagged {MODEL_TAG}NAME, so staleness cannot be checked")
        content_shown = not s["placeholder"] and not empty
        raise (Stale if content_shown else AssertionError)(f"{part.name} with {model}: {'; '.join(missing)}") from None


def open_part(students: list[Student], part: Part) -> None:
    def start(s: Student) -> None:
        s.page.locator(".lesson-tabs .bk-tab").filter(has_text=re.compile(rf"^{part.lesson}$")).click()
        if part.tab is not None:  # the lesson's own tabs exist once it is built
            s.page.locator(".bk-tab").filter(has_text=re.compile(rf"^{part.tab}$")).click(timeout=TIMEOUT_S * 1000)

    def finish(s: Student, _, deadline: Deadline) -> None:
        selector, text = part.text
        expect(s.page.locator(selector).get_by_text(text).first, f"{part.name} shows {text!r}").to_be_visible(
            timeout=deadline.ms())

    def placed(s: Student, _, deadline: Deadline) -> None:
        s.page.wait_for_function(EVERY_PART_PLACED, timeout=deadline.ms())
        wait_shows(s.page, part, s.model, tagged=False, deadline=deadline)

    together(students, f"opening {part.name}", start, finish)
    # each student scrolls through the part to its end, all at once: its lower parts join the page on the way
    together(students, f"scrolling through {part.name}", lambda s: start_placing_every_part(s.page), placed)


def work_the_control(students: list[Student], part: Part) -> None:
    together(students, f"working a control in {part.name}", lambda s: part.control(s.page),
             lambda s, check, deadline: check(deadline))


def switch_model(students: list[Student], part: Part, models: dict[Student, str]) -> None:
    """With `part` open, each student in `models` switches to the model named there; then nothing on screen may
    describe the model before, and the lesson must show its content for the new one."""
    def start(s: Student) -> None:
        s.page.get_by_role("combobox", name="Model", exact=True).select_option(models[s])
        s.model = models[s]

    def finish(s: Student, _, deadline: Deadline) -> None:
        if not part.applies(s.model):  # the attention lesson on a CNN: its message, for this model
            message = re.compile(rf"{re.escape(s.model)}: This model has no attention layers")
            expect(s.page.get_by_text(message), f"{part.name} says {message.pattern!r}").to_be_visible(
                timeout=deadline.ms())
        wait_shows(s.page, part, s.model, tagged=part.applies(s.model), deadline=deadline)

    together([s for s in students if s in models], f"switching the model with {part.name} open", start, finish)


def test_the_plan_covers_every_part_with_every_model():
    steps = [step for n in range(STUDENTS) for step in plan(n)]
    wanted = {(part.name, model) for part in PARTS for model in MODELS if part.applies(model)}
    assert {(part.name, model) for part, model, _ in steps} == wanted  # opened with every model it applies to
    assert {(part.name, model) for part, _, switches in steps for model in switches} >= wanted  # and switched to
    assert all(switches[0] != VIT for part, _, switches in steps if part.vit_only)  # the CNN's message is checked
    for n in range(STUDENTS):  # each switch changes the model, and the next part opens on its planned model
        opened = [model for _, model, _ in plan(n)]
        chain = [opened[0]] + [m for _, _, switches in plan(n) for m in switches]
        assert all(a != b for a, b in zip(chain, chain[1:], strict=False))
        assert [switches[-1] for _, _, switches in plan(n)][:-1] == opened[1:]


# Every `--bk-*` CSS variable that a stylesheet (inline, linked or adopted, in the document or any shadow root) or a
# style attribute of the page sets, as "where: declaration".
BK_VARIABLES_SET = r"""() => {
  const found = [], setting = /--bk-[\w-]+\s*:/g;
  const look = (where, text) => { for (const m of text.matchAll(setting)) found.push(`${where}: ${m[0]}`); };
  const rules = (sheet) => { try { return [...sheet.cssRules].map((rule) => rule.cssText).join("\n"); }
                             catch (error) { found.push(`unreadable: ${sheet.href}`); return ""; } };
  const roots = [document];
  for (let i = 0; i < roots.length; i++) {
    const root = roots[i];
    for (const sheet of [...root.styleSheets, ...(root.adoptedStyleSheets ?? [])])
      look(sheet.href ?? "a <style>", rules(sheet));
    for (const el of root.querySelectorAll("*")) {
      if (el.shadowRoot) roots.push(el.shadowRoot);
      if (el.hasAttribute("style")) look(`style of <${el.localName}>`, el.getAttribute("style"));
    }
  }
  return [roots.length, found];
}"""


@pytest.mark.skipif(not all(zoo.is_available(m) for m in MODELS),
                    reason="the classroom needs mnist-cnn, mnist-vit and mobilenet_v2 (`explorer fetch mobilenet_v2`)")
def test_five_students_use_every_lesson_at_once_and_a_model_switch_leaves_nothing_stale(classroom: Classroom):
    started = time.monotonic()
    students = classroom.students
    plans = {s: plan(s.number) for s in students}
    for j, part in enumerate(PARTS):
        rejoin(students, {s: plans[s][j][1] for s in students})
        assert all(s.model == plans[s][j][1] for s in students if not s.stuck)
        open_part(students, part)
        work_the_control(students, part)
        for k in range(2):  # the model switches with this part open
            switch_model(students, part, {s: plans[s][j][2][k] for s in students if len(plans[s][j][2]) > k})
    print(f"the classroom took {time.monotonic() - started:.0f} s")
    for student in students:
        if not student.stuck:
            roots, variables = student.page.evaluate(BK_VARIABLES_SET)
            if variables or roots < 600:  # the app with one lesson: about 320 shadow roots; every lesson built: 850
                student.failures.append(f"student {student.number}: {roots} shadow roots, --bk-* set: {variables}")

    failures = [f for s in students for f in s.failures]
    problems = [f"student {s.number}: {p}" for s in students for p in s.problems]
    server = [line for line in classroom.log.read_text().splitlines() if SERVER_LOG_PROBLEM.search(line)]
    assert not (failures or problems or server), "\n".join(
        failures + problems + (["the server logged:", *server[:40]] if server else []))
