"""`panel serve tests/browser/apps/nodelay_app.py`: reports its own websocket's TCP_NODELAY, after tune().

Served by tests/browser/test_server.py. Once the page has connected, the text shows the option as the
kernel reports it for this session's socket, Panel's debounce, and whether freed memory is kept (the
allocator setting was made). A second line reports the garbage collector: automatic full collections
off, objects frozen, how many full collections ran since (only the idle collector runs them), and how
many destroyed sessions the collector has seen (each makes its next collection a thorough one); in a
page opened with `?gc`, every 200 ms.
"""

import gc
import socket

import panel as pn
from bokeh.server.views.ws import WSHandler
from panel.reactive import Syncable

from explorer.core import allocator
from explorer.serve import idle_gc, tune

tune()
pn.extension(inline=True)
report = pn.pane.Str("connecting", css_classes=["report"])
gc_report = pn.pane.Str("", css_classes=["gc-report"])
# Kept in the server's cache, not this page's module: Panel empties a session's module when it destroys the session.
if "nodelay-app-full-collections" not in pn.state.cache:
    pn.state.cache["nodelay-app-full-collections"] = []
    gc.callbacks.append(lambda phase, info, counted=pn.state.cache["nodelay-app-full-collections"]:
                        counted.append(info["generation"]) if phase == "stop" and info["generation"] == 2 else None)
full_collections = pn.state.cache["nodelay-app-full-collections"]


def report_gc() -> None:
    gc_report.object = (f"automatic full collections off: {gc.get_threshold()[2] == idle_gc.NEVER}; "
                        f"frozen: {gc.get_freeze_count() > 0}; full collections: {len(full_collections)}; "
                        f"sessions destroyed: {WSHandler.on_message.collector.sessions_destroyed}")


def allocate() -> None:
    """What a session's work leaves: enough young collections that objects reach the oldest generation."""
    kept = [[] for _ in range(100_000)]
    for a, b in zip(kept, kept[1:] + kept[:1], strict=True):
        a.append(b)  # one ring: only the collector frees it
    kept.clear()


def inspect_socket() -> None:
    session = pn.state.curdoc.session_context._session  # bokeh.server.session.ServerSession
    handlers = [connection._socket for connection in session._subscribed_connections]
    options = [h.ws_connection.stream.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for h in handlers]
    kept = allocator.keep_freed_memory.cache_info().currsize == 1 and allocator.keep_freed_memory()
    allocate()  # first: once the report is shown, the server has nothing more to do for this page
    report.object = f"sockets={len(options)} nodelay={options} debounce={Syncable._debounce} memory kept={kept}"


pn.state.onload(inspect_socket)
if "gc" in pn.state.session_args:
    # Only where asked (?gc). Sent to every page, the report changed as pages left (a session destroyed, a
    # collection), and 1 to 5 in 12-15 runs lost a leaving page's closing code (the server logged code=None): Bokeh
    # then keeps its session the whole lifetime.
    pn.state.add_periodic_callback(report_gc, period=200)  # sends to the page only: the server stays idle
pn.Column(report, gc_report).servable(title="nodelay")
