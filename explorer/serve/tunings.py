"""Every runtime tuning, one row each: what it does, the versions it was tested on, its measured gain (benchmarks/
and docs/performance.md), and its upstream issue or the condition for deleting it.

`apply_all()` makes the rows that are on: none with EXPLORER_TUNE=0; none whose libraries differ from the versions
tested (one log line per row says so); the `served_only` ones only inside a served session.
"""

from __future__ import annotations

import panel as pn

from explorer.core import allocator
from explorer.serve import (
    bokehjs,
    defaults,
    markup,
    readonly,
    recompute,
    references,
    serialization,
    server,
    validation,
    walk,
)
from explorer.serve.gate import ENV_VAR, Tuning, log, tuning_on, untested

BOKEH, PANEL, TORNADO = {"bokeh": "3.9.2"}, {"panel": "1.9.4"}, {"tornado": "6.6.1"}

TUNINGS: tuple[Tuning, ...] = (
    Tuning("nodelay", server.nodelay, {**BOKEH, **TORNADO},
           gain="with no_debounce: an input change 37 ms (CNN) / 31 ms (ViT) faster, median",
           upstream="tornado#755 gave websockets set_nodelay(), off by default; Bokeh's WSHandler never calls it "
                    "(no Bokeh issue found): delete once it does"),
    Tuning("no_debounce", server.no_debounce, PANEL,
           gain="with nodelay: an input change 37 ms (CNN) / 31 ms (ViT) faster, median",
           upstream="none: Panel's 50 ms hold is a deliberate default. Delete if a view comes to rely on Panel to "
                    "coalesce a burst of browser changes"),
    Tuning("messages_at_once", server.messages_at_once, {**BOKEH, **PANEL, **TORNADO},
           gain="an input change's patch sent 31 ms after the click instead of 46 (Panel no longer finds the write "
                "lock held and retries 10 ms later)",
           upstream="no issue found: delete when Bokeh's Message.send writes its frames without awaiting each, or "
                    "Panel's _dispatch_msgs waits on the write lock instead of polling it every 10 ms"),
    Tuning("patches_as_tasks", server.patches_as_tasks, {**BOKEH, **TORNADO},
           gain="none in time: a callback that fails halfway no longer leaves the page without the changes it made "
                "(nor a 'coroutine was never awaited' warning)",
           upstream="no issue found: delete when Bokeh's _needs_document_lock awaits the pending writes even when "
                    "the callback raises"),
    Tuning("closed_pages_quiet", server.closed_pages_quiet, {**BOKEH, **PANEL, **TORNADO},
           gain="none in time: no traceback in the server log for a page closed mid-send (30 pages reloading on "
                "one server logged both kinds)",
           upstream="holoviz/panel#3341 (closed, same log: 'Task exception was never retrieved ... "
                    "WebSocketClosedError' on reload; dispatch_tornado still loses the futures in 1.9.4); no Bokeh "
                    "issue found for the assertion: delete when both are fixed upstream"),
    Tuning("left_pages_freed", server.left_pages_freed, {**BOKEH, **TORNADO},
           gain="memory, not time: the sessions of pages reloaded, navigated away or closed were discarded 4.9-16.8 s "
                "after (Bokeh's next check) instead of 120 s. Not yet shown in a class's memory: at N = 30 "
                "(classroom.py, one run each) the server grew 81 MB over the second minute with 30 reloads, 93 MB "
                "with 26 before, within the runs' variation",
           upstream="none: Bokeh keeps a session whose connection closed for --unused-session-lifetime whatever the "
                    "close code; ServerSession.request_expiration() is public (documented 'used in test suite for "
                    "now'). Delete if Bokeh comes to discard a session whose page went away"),
    Tuning("references_on_demand", references.references_on_demand, BOKEH,
           gain="one PATCH-DOC message of an input change 11.3 -> 2.3 ms (a page of 825 models, headless); served, "
                "one student, server CPU per gallery click 43.6 -> 37.9 ms and per lesson reopened 20.6 -> 14.2 ms "
                "(with the convolution lesson's strings sent as one text each, which alone saved about 1 ms)",
           upstream="no issue found: delete when Bokeh's patch_doc.create stops building every synced model's "
                    "reference for each message"),
    Tuning("small_buffers_inline", references.small_buffers_inline, BOKEH,
           gain="served, one page (benchmarks/page_cost.py, alternating runs): server CPU per gallery click with "
                "convolution open 47 / 42 -> 36 / 38 / 38 ms, with saliency 79 / 76 -> 52 / 59 / 64 ms; the page's "
                "CPU 197 / 175 -> 148 / 149 / 192 ms with convolution (the page's figure varies by +-25 ms)",
           upstream="bokeh/bokeh#12043 (closed unmerged: one binary message in place of a frame pair per buffer); no "
                    "issue found for a size below which arrays stay in the message's text: delete when Bokeh writes "
                    "a message's buffers in fewer frames"),
    Tuning("known_models_by_id", references.known_models_by_id, BOKEH,
           gain="each message from the page (a click, a painted page) applied in 0.02 ms instead of 0.38 ms on a page "
                "of 2,364 models (every lesson open, headless); two or three such messages per input change",
           upstream="no issue found: delete when Bokeh's Document.apply_json_patch stops building a table of every "
                    "model by id for each message"),
    Tuning("text_only_updates", markup.text_only_updates, PANEL,
           gain="an input change's server CPU, headless on mnist-cnn with each lesson open (the six summed, two runs): "
                "176 / 186 -> 136 / 142 ms; a markup pane's new text cost 2-3 ms, 5 to 14 of them per input change",
           upstream="none found: Panel computes every property on each update by design (holoviz/panel#4485 made "
                    "_get_properties serve both). Delete if an object change stops costing more than its text"),
    Tuning("quick_edit_readonly", readonly.quick_edit_readonly, PANEL,
           gain="Panel's bookkeeping per event from the page (a busy event added and removed, the widget made "
                "editable), headless, three runs: 0.79-1.40 -> 0.34-0.62 ms; two or three such events per gallery "
                "click, within the served benchmark's noise (about +-5 ms per click)",
           upstream="holoviz/param#379 (open: edit_readonly belongs in param) and holoviz/panel#8498 (busy events "
                    "tracked by id, each through edit_readonly on Panel's state); delete when edit_readonly writes "
                    "only the parameters it changes"),
    Tuning("markdown_rendered_once", markup.markdown_rendered_once, PANEL,
           gain="an input change's server CPU, headless on mnist-cnn with each lesson open, the gallery's digits "
                "met again (the six lessons summed, two runs): 115 / 113 -> 101 / 90 ms; saliency, 14 texts per "
                "click, 24.3 / 20.6 -> 15.3 / 14.1 ms",
           upstream="none: Panel renders on every update by design (its parser is cached, not the text). Delete if "
                    "rendering a text costs less than looking it up"),
    Tuning("cached_defaults", defaults.cached_defaults, BOKEH,
           gain="a lesson's first opening, built headless on mnist-cnn, 10-20 % less CPU (normalization 761/804 -> "
                "673/624 ms, quantization 415/418 -> 337/339 ms, two runs each); empty containers made directly "
                "took another 14-17 % (normalization 770 -> 659 ms, pruning 508 -> 436, quantization 432 -> 374, "
                "saliency 555 -> 459, mean of two runs); whether a default is unstable kept per class, another "
                "10-15 % (benchmarks/page_build.py, two runs each: a page's build 346 / 349 -> 284 / 365 ms and "
                "305 / 318 -> 268 / 279 in a first script, normalization's first opening 301 / 280 -> 249 / 247, "
                "pruning 210 / 208 -> 182 / 188, quantization 170 / 166 -> 147 / 148 ms); empty container "
                "defaults made on first read: a session with every lesson open adds 80,000 objects for the garbage "
                "collector instead of 141,000, a full walk over 6 such sessions 473 / 460 -> 360 / 344 ms, RSS "
                "711 -> 650 MB (headless), the CPU of a page's build and a lesson's opening unchanged",
           upstream="bokeh/bokeh#13174 made reading a container's default cheaper; bokeh/bokeh#11959 made the "
                    "constructor make every unstable default so that a default model is always written (models "
                    "still are here; an untouched empty container is never written). No issue found for the stable "
                    "defaults made again on every read, for HasProps.__init__ asking every property whether its "
                    "default is unstable, nor for the empty containers: delete when Bokeh keeps them and makes "
                    "containers on demand"),
    Tuning("one_recompute", recompute.once_per_update, {**BOKEH, **PANEL},
           gain="a lesson's first opening, built headless on mnist-cnn after the lessons before it: one walk over "
                "the page's models instead of two, pruning 436 -> 370 ms, quantization 374 -> 285 ms, saliency "
                "459 -> 365 ms of CPU (mean of two runs)",
           upstream="none: Bokeh's DocumentModelManager.freeze() is public; Panel's hold(freeze=True), marked "
                    "experimental in 1.9, ends its freeze after its hold and sent new figures unthemed (no issue "
                    "found). Delete the switch, keeping the freeze, once benchmarks show it is always a gain"),
    Tuning("quick_model_walk", walk.quick_model_walk, BOKEH,
           gain="the walk over every model of the page (Bokeh's recompute at the end of a lesson's build, and each "
                "Model.references()), headless on mnist-cnn, same answer: 772 models 33.7 -> 12.2 ms, 1,333 models "
                "63.7 -> 21.7 ms, 2,363 models (every lesson open) 107.5 -> 33.6 ms",
           upstream="bokeh/bokeh#14962 (open: a maintainer asks whether the recompute's code paths can be made "
                    "faster) and bokeh/bokeh#11916 (closed: recompute's cost on large pages); no issue found for "
                    "collect_models reading every default through the descriptor: delete when Bokeh's walk reads "
                    "the values a model holds directly"),
    Tuning("quick_serialization", serialization.quick_serialization, BOKEH,
           gain="a lesson's new models written for the page, headless on mnist-cnn (two runs each): convolution "
                "91 / 86 -> 71 / 53 ms, normalization 143 / 138 -> 78 / 75 ms, pruning 111 / 125 -> 58 / 52 ms, "
                "saliency 92 / 88 -> 56 / 51 ms; with quick_model_walk, served (benchmarks/lesson_cpu.py, 8 students), "
                "the median of the six lessons' first openings 363 -> 252 ms",
           upstream="none found; Bokeh's own TODO in HasProps.query_properties_with_values says the unset check "
                    "belongs before the read: delete when Bokeh reads only the values it writes"),
    Tuning("skip_validation", validation.skip_in_updates, BOKEH,
           gain="validation took 15-25 % of an input change's server time (one_update() in explorer/session/state.py)",
           upstream="none: Bokeh validates every assignment by design. Delete if benchmarks/ui_latency.py shows no "
                    "difference without it"),
    Tuning("idle_collections", server.idle_collections, {**BOKEH, **TORNADO}, served_only=True,
           gain="a full collection (126-138 ms with one session, more with each) no longer lands inside an "
                "interaction: 2 in 30 input changes before, none now. Survivors frozen after each: at N = 15 "
                "(benchmarks/classroom.py, one run each) full collections held the loop 14.6 -> 5.5 s of a run, "
                "775 -> 105 ms each (median); recent walks at most 15 s apart and a busy server's thorough walk "
                "once 3 destroyed sessions wait: the mixed loop's collections 4.0 -> 0.8 s, 912 -> 126 ms each, "
                "the longest 2.1 -> 0.3 s; costs the cycles among frozen objects kept until the next thorough "
                "walk (+58 MB of RSS in one run; a class that never pauses left 26,694 such objects in 6 min at "
                "N = 30, benchmarks/class_server.py: walked every 10 min, 1.3 s)",
           upstream="none: CPython's schedule by allocation counts. Delete when benchmarks/ui_latency.py shows no "
                    "full collection inside an interaction without it"),
    Tuning("keep_freed_memory", allocator.keep_freed_memory, {}, served_only=True,
           gain="MobileNetV2 trace 36.7 -> 19.2 ms median; page faults per 25 traces 516,000 -> 99,000; costs the "
                "peak memory kept mapped",
           upstream="none: glibc's malloc hands large blocks back by default. Delete when benchmarks/trace.py shows "
                    "no difference (a trace that reuses its buffers, or another allocator)"),
    Tuning("bokehjs", bokehjs.fix_this_page, BOKEH, served_only=True,
           gain="1: 57 forced style recalculations (1.5 ms each) per input change gone, the 12 plots' paint "
                "95 -> 21 ms; 2: getComputedStyle calls per input change 2,410 -> 60; a lesson's first opening, "
                "the page's main thread (benchmarks/page_cost.py --action lesson, the five lessons summed, two "
                "runs each) 7,584 / 6,541 -> 5,097 / 6,022 ms, of which style recalculation 3,173 / 2,691 -> "
                "1,733 / 2,045 ms; "
                "3: getComputedStyle calls 97 -> 9 per input change; 4: 12-17 ms per click in the "
                "strip or the grid; 5: two steps of the convolution lesson's animation 14 page layouts -> 0, "
                "MobileNetV2 input with the convolution lesson 317 / 439 -> 290 / 347 ms",
           upstream="2: bokeh/bokeh#15286 (open: every visual read consults the CSS cascade even when no "
                    "--bk-* variable is defined; bokeh/bokeh#15205 caches the reads per visual, which still forces "
                    "a recalculation for each new plot): delete when BokehJS skips the reads on such a page; 1, 3, "
                    "4, 5: no issue found, delete each when BokehJS stops "
                    "rewriting unchanged stylesheets, caches base_font_size, keeps an open tooltip in place, or "
                    "updates a fixed-size Div's text in place"),
)

_reported: set[str] = set()


def apply_all() -> None:
    if not tuning_on():
        _report_once("all", f"{ENV_VAR}=0: every runtime tuning is off")
        return
    doc = pn.state.curdoc
    serving = doc is not None and doc.session_context is not None
    for tuning in TUNINGS:
        if tuning.served_only and not serving:
            continue
        missing = untested(tuning)
        if missing:
            _report_once(tuning.name, f"tuning {tuning.name!r} is off: not tested on {', '.join(missing)}")
            continue
        tuning.apply()


def _report_once(key: str, text: str) -> None:
    if key not in _reported:
        _reported.add(key)
        log.warning(text)
