"""Six server settings: five lower the floor under every interaction of the served app (docs/performance.md), the
sixth keeps the page in step with the server's document.

1. TCP_NODELAY on Bokeh's websocket. Bokeh never sets it, so Nagle's algorithm holds back the last
   frame of a multi-frame message until the browser's delayed ACK (about 40 ms) arrives.
2. No debounce of browser changes. Panel holds each change from the browser for 50 ms
   (`Syncable._debounce`) to coalesce bursts; the explorer's views coalesce instead (a drawing
   sends at most every 100 ms and only the newest is classified; a slider whose work is slow uses
   `value_throttled` or computes on the latest value only).
3. Each Bokeh message written in one go. Bokeh's `Message.send` awaits every frame (header,
   metadata, content, then two frames per binary buffer), and tornado turns each write into a task:
   one event-loop turn per frame, with the socket's write lock held throughout. An interaction's own
   reply (its "OK") is sent that way while the interaction's callback blocks the loop, so the lock is
   still held when the callback's patch is ready; Panel then sees the lock, and retries its write
   every 10 ms (`panel.io.document._dispatch_msgs`). Writing all frames synchronously (tornado's writes
   are synchronous; awaiting them is only flow control) keeps frames of two messages from interleaving,
   as the lock did, and frees the lock at once.
4. Full garbage collections while the server is idle (explorer/ui/idle_gc.py), not at a moment set
   by allocation counts, inside some student's interaction: each walks every object of every session.
5. Freed memory kept for reuse (explorer/core/allocator.py): a trace's layer outputs then land on pages
   the process already has, not on new ones the kernel must zero first (MobileNetV2: 37 -> 19 ms).
6. Every patch of the page sent, even when the callback that made it fails. Bokeh collects a locked callback's
   patches as coroutines (`ServerConnection.send_patch_document`) and awaits them once it returns; when it raises,
   they are dropped: the page misses changes the server's document has, and the next full collection reports
   "coroutine 'WSHandler.send_message' was never awaited". Each patch is a task from the start instead: it is
   written in order (each waits for the socket's write lock in turn) whether or not anyone awaits it.

`tune_server()` is called by app.py. It is idempotent, and harmless outside a server: in a notebook
there is no Bokeh websocket to patch, the debounce only affects served sessions, and the garbage
collector and the allocator are left alone unless a served session calls it.

`serve_resources_locally()`, also called by app.py, makes every page load its scripts and stylesheets from
this server, never from a CDN: the app must work offline.
"""

from __future__ import annotations

import asyncio
import functools
import json

import panel as pn
from bokeh.protocol.message import Message
from bokeh.server.connection import ServerConnection
from bokeh.server.views.ws import WSHandler
from bokeh.settings import settings
from panel.io.resources import LOCAL_DIST
from panel.reactive import Syncable
from tornado.ioloop import PeriodicCallback
from tornado.websocket import WebSocketHandler

from explorer.core import allocator
from explorer.ui import idle_gc

DEBOUNCE_MS = 0
LOCAL_MODES = ("server", "server-dev")  # Bokeh resource modes that load BokehJS and Panel's files from /static


def tune_server() -> None:
    """Set TCP_NODELAY on every new websocket, stop Panel's 50 ms hold on browser changes, write each
    Bokeh message in one go, send every patch even when its callback fails, and, in a served session, collect
    garbage fully only while idle and keep freed memory for reuse."""
    if not getattr(WSHandler.open, "explorer_nodelay", False):
        WSHandler.open = _with_nodelay(WSHandler.open)
    if not getattr(Message.send, "explorer_at_once", False):
        Message.send = _sent_at_once(Message.send)
    if not getattr(ServerConnection.send_patch_document, "explorer_scheduled", False):
        ServerConnection.send_patch_document = _scheduled(ServerConnection.send_patch_document)
    Syncable._debounce = DEBOUNCE_MS
    serving = pn.state.curdoc is not None and pn.state.curdoc.session_context is not None
    if serving and not getattr(WSHandler.on_message, "explorer_idle", False):
        collector = idle_gc.IdleCollector()
        WSHandler.on_message = _noting_messages(WSHandler.on_message, collector)
        idle_gc.take_over_full_collections()
        PeriodicCallback(collector.tick, idle_gc.CHECK_S * 1000).start()  # on the server's loop: app.py runs there
    if serving:
        allocator.keep_freed_memory()


def serve_resources_locally() -> None:
    """Every resource of this session's page from this server, whenever and however its document was made.

    The HTML page takes Bokeh's resource mode ("server" unless BOKEH_RESOURCES says otherwise; with "cdn" or
    "inline", Panel points its stylesheets at cdn.holoviz.org): "server" for the whole process, before the
    first page is written. Panel's stylesheets are models of the document, and Panel points their URLs at this
    server only when it writes a session's HTML page (the document's `dist_url` template variable). A session
    the server had discarded before its websocket connected (under load: no message within
    --unused-session-lifetime) is made again when the websocket connects, with no HTML page, and its
    stylesheets came from the CDN. So every session's document gets `dist_url` before anything is built on it.
    """
    if settings.resources(default="server") not in LOCAL_MODES:
        settings.resources.set_value("server")
    doc = pn.state.curdoc
    if doc is not None and doc.session_context is not None:
        prefix = pn.state.rel_path  # "" for an app at the server's root, "..", "../.." deeper
        doc.template_variables["dist_url"] = f"{prefix}/{LOCAL_DIST}" if prefix else LOCAL_DIST


def _with_nodelay(open_websocket):
    @functools.wraps(open_websocket)
    def open(self, *args, **kwargs):
        self.set_nodelay(True)  # tornado's WebSocketHandler.set_nodelay: TCP_NODELAY on this socket
        return open_websocket(self, *args, **kwargs)

    open.explorer_nodelay = True
    return open


def _noting_messages(on_message, collector: idle_gc.IdleCollector):
    @functools.wraps(on_message)
    async def on_message_noted(self, fragment):
        collector.message_arrived()
        return await on_message(self, fragment)

    on_message_noted.explorer_idle = True
    return on_message_noted


def _sent_at_once(send_by_frame):
    @functools.wraps(send_by_frame)
    async def send(self: Message, conn) -> int:
        if not isinstance(conn, WebSocketHandler):  # bokeh.client's connection: its own writer
            return await send_by_frame(self, conn)
        frames = [(self.header_json, False), (self.metadata_json, False), (self.content_json, False)]
        for buffer in self._buffers:
            frames += [(json.dumps(buffer.ref), False), (buffer.to_bytes(), True)]
        with await conn.write_lock.acquire():
            written = [WebSocketHandler.write_message(conn, frame, binary=binary) for frame, binary in frames]
        # Flow control and errors, after the lock is free. Every frame's outcome is collected: a page closed while
        # its frames were on their way fails each of them, and one left unretrieved logs a traceback.
        for outcome in await asyncio.gather(*written, return_exceptions=True):
            if isinstance(outcome, BaseException):
                raise outcome
        return sum(len(frame) for frame, _ in frames)

    send.explorer_at_once = True
    return send


_patches_on_their_way: set[asyncio.Task] = set()  # the loop keeps only weak references to its tasks


def _scheduled(send_patch_document):
    @functools.wraps(send_patch_document)
    def send(self: ServerConnection, event):
        task = asyncio.get_running_loop().create_task(send_patch_document(self, event))  # runs, awaited or not
        _patches_on_their_way.add(task)
        task.add_done_callback(_patches_on_their_way.discard)
        return task

    send.explorer_scheduled = True
    return send
