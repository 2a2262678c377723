"""The server-side patches: each function here makes one tuning of explorer/serve/tunings.py (where its measured gain
and its upstream issue are listed), and each is idempotent.

1. `nodelay`: TCP_NODELAY on Bokeh's websocket. Bokeh never sets it, so Nagle's algorithm holds back the last
   frame of a multi-frame message until the browser's delayed ACK (about 40 ms) arrives.
2. `no_debounce`: Panel holds each change from the browser for 50 ms (`Syncable._debounce`) to coalesce bursts;
   the explorer's views coalesce instead (a drawing sends at most every 100 ms and only the newest is classified;
   a slider whose work is slow uses `value_throttled` or computes on the latest value only).
3. `messages_at_once`: Bokeh's `Message.send` awaits every frame (header, metadata, content, then two frames per
   binary buffer), and tornado turns each write into a task: one event-loop turn per frame, with the socket's
   write lock held throughout. An interaction's own reply (its "OK") is sent that way while the interaction's
   callback blocks the loop, so the lock is still held when the callback's patch is ready; Panel then sees the
   lock, and retries its write every 10 ms (`panel.io.document._dispatch_msgs`). Writing all frames synchronously
   (tornado's writes are synchronous; awaiting them is only flow control) keeps frames of two messages from
   interleaving, as the lock did, and frees the lock at once.
4. `patches_as_tasks`: Bokeh collects a locked callback's patches as coroutines
   (`ServerConnection.send_patch_document`) and awaits them once it returns; when it raises, they are dropped: the
   page misses changes the server's document has, and the next full collection reports "coroutine
   'WSHandler.send_message' was never awaited". Each patch is a task from the start instead: it is written in order
   (each waits for the socket's write lock in turn) whether or not anyone awaits it.
5. `idle_collections`: full garbage collections while the server is idle, walking only what is new while it is busy
   (explorer/serve/idle_gc.py).
6. `closed_pages_quiet`: a page that closes while the server writes to it costs nothing but the dropped writes.
   Panel writes a patch's frames itself (`panel.io.document.dispatch_tornado`): when the socket closed after the
   first frame, the next write raised at once and the futures of the frames already written were lost, each
   logging "Task exception was never retrieved ... WebSocketClosedError" when collected; Panel's `_destroy_document`
   `cancel()`s the futures it still holds, which does nothing to one that already failed, with the same log. And a
   message of the browser's handled for a connection whose session was detached (its socket closed) failed
   Bokeh's `assert self._session is not None` (`ServerConnection.session`), logged with a traceback as a
   "Handler or its work threw an exception". Both now drop the closed page's work quietly; any other error of a
   write is raised and logged as before.
7. `left_pages_freed`: a session whose page has left is discarded at Bokeh's next check for unused sessions
   (every 17 s) instead of after the class's session lifetime (2 minutes, explorer/cli.py: kept that long for
   pages that load slowly and connect late). A browser closes the websocket with code 1001, "going away", when
   its page is closed, reloaded or navigated elsewhere; nothing can reconnect to that session any more (a
   connection that drops for another reason, 1006, keeps the lifetime, and BokehJS reconnects within it). In a
   class whose pages are reloaded, the old sessions no longer hold their memory beside the new ones for 2 minutes.
   Not every leaving page says so: in a test whose server wrote to pages as they left, 1 to 5 in 12-15 runs logged
   a leaving page's close without a code (code=None), and that session kept the lifetime, as a dropped one does.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging

import panel as pn
import panel.io.document
from bokeh.protocol.message import Message
from bokeh.server.connection import ServerConnection
from bokeh.server.session import ServerSession
from bokeh.server.views.ws import WSHandler
from panel.reactive import Syncable
from tornado.ioloop import PeriodicCallback
from tornado.websocket import WebSocketClosedError, WebSocketHandler

from explorer.serve import idle_gc

log = logging.getLogger("explorer.serve")

DEBOUNCE_MS = 0


def nodelay() -> None:
    if not getattr(WSHandler.open, "explorer_nodelay", False):
        WSHandler.open = _with_nodelay(WSHandler.open)


def no_debounce() -> None:
    Syncable._debounce = DEBOUNCE_MS


def messages_at_once() -> None:
    if not getattr(Message.send, "explorer_at_once", False):
        Message.send = _sent_at_once(Message.send)


def patches_as_tasks() -> None:
    if not getattr(ServerConnection.send_patch_document, "explorer_scheduled", False):
        ServerConnection.send_patch_document = _scheduled(ServerConnection.send_patch_document)


def idle_collections() -> None:
    """Full collections only while no websocket message arrives; the check runs on the server's loop (app.py runs
    there). The collector watches each session's document, to know when one was destroyed."""
    if not getattr(WSHandler.on_message, "explorer_idle", False):
        collector = idle_gc.IdleCollector()
        WSHandler.on_message = _noting_messages(WSHandler.on_message, collector)
        idle_gc.take_over_full_collections()
        PeriodicCallback(collector.tick, idle_gc.CHECK_S * 1000).start()
    doc = pn.state.curdoc
    if doc is not None and doc.session_context is not None:
        WSHandler.on_message.collector.watch(doc)


def closed_pages_quiet() -> None:
    if getattr(panel.io.document.dispatch_tornado, "explorer_quiet", False):
        return
    panel.io.document.dispatch_tornado = _dispatch_tornado  # looked up by write_events and _dispatch_msgs per call
    WSHandler.on_close = _closing_detached(WSHandler.on_close)
    for name in ("pull", "push", "patch"):  # ProtocolHandler binds these when each connection's handler is made
        setattr(ServerSession, name, classmethod(_unless_detached(getattr(ServerSession, name).__func__)))


def left_pages_freed() -> None:
    if not getattr(WSHandler.on_close, "explorer_left", False):
        WSHandler.on_close = _expiring_left(WSHandler.on_close)


def frames(message: Message) -> list[tuple[str | bytes, bool]]:
    """A Bokeh message's websocket frames, in Bokeh's order, each with whether it is binary."""
    written = [(message.header_json, False), (message.metadata_json, False), (message.content_json, False)]
    for buffer in message._buffers:
        written += [(json.dumps(buffer.ref), False), (buffer.to_bytes(), True)]
    return written


def write_frames(socket: WebSocketHandler, message: Message) -> list[asyncio.Future]:
    """Write every frame now; the futures of the writes made. A socket that closes midway (the next write raises at
    once) ends the message there: what was written is still returned, so that its outcome is collected."""
    written = []
    for frame, binary in frames(message):
        try:
            written.append(WebSocketHandler.write_message(socket, frame, binary=binary))
        except WebSocketClosedError:
            if not written:
                raise
            written.append(_failed(WebSocketClosedError()))
            break
    return written


def _failed(error: BaseException) -> asyncio.Future:
    future = asyncio.get_running_loop().create_future()
    future.set_exception(error)
    return future


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
    on_message_noted.collector = collector
    return on_message_noted


def _sent_at_once(send_by_frame):
    @functools.wraps(send_by_frame)
    async def send(self: Message, conn) -> int:
        if not isinstance(conn, WebSocketHandler):  # bokeh.client's connection: its own writer
            return await send_by_frame(self, conn)
        with await conn.write_lock.acquire():
            written = write_frames(conn, self)
        # Flow control and errors, after the lock is free. Every frame's outcome is collected: a page closed while
        # its frames were on their way fails each of them, and one left unretrieved logs a traceback.
        for outcome in await asyncio.gather(*written, return_exceptions=True):
            if isinstance(outcome, BaseException):
                raise outcome  # WSHandler.send_message catches WebSocketClosedError
        return sum(len(frame) for frame, _ in frames(self))

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


def _dispatch_tornado(conn: ServerConnection, events=None, msg: Message | None = None) -> list[asyncio.Future]:
    """Panel's dispatch_tornado (the same frames, the same checks), where a page closed midway drops the rest of
    its frames quietly: each future returned is done without error once its frame is written or lost to a closed
    page, and carries any other error."""
    socket = conn._socket
    stream = getattr(socket, "ws_connection", None)
    if not stream or stream.is_closing():
        return []
    if msg is None:
        if not events:
            return []
        msg = conn.protocol.create("PATCH-DOC", events)
    try:
        written = write_frames(socket, msg)
    except WebSocketClosedError:
        return []
    return [_unless_closed(future) for future in written]


_dispatch_tornado.explorer_quiet = True


def _unless_closed(write: asyncio.Future) -> asyncio.Future:
    """A future for `write` that a closed page does not fail. Its outcome is collected here whether or not anyone
    awaits the returned future (Panel cancels those it holds when a session is destroyed), and an error other than a
    closed page is passed on, or logged when no one is left to take it."""
    outcome = asyncio.get_running_loop().create_future()

    def settle(write: asyncio.Future) -> None:
        error = None if write.cancelled() else write.exception()
        if outcome.done():  # cancelled by Panel: no one will look at it
            if error is not None and not isinstance(error, WebSocketClosedError):
                log.error("writing to a page failed", exc_info=error)
        elif write.cancelled():
            outcome.cancel()
        elif error is None or isinstance(error, WebSocketClosedError):
            outcome.set_result(None)
        else:
            outcome.set_exception(error)

    write.add_done_callback(settle)
    return outcome


def _closing_detached(on_close):
    @functools.wraps(on_close)
    def close(self: WSHandler) -> None:
        connection = self.connection
        if connection is not None and connection._session is None:  # already detached: nothing left to tell
            log.debug("websocket of a detached connection closed")
            self.application.client_lost(connection)
            return None
        return on_close(self)

    return close


GOING_AWAY = 1001  # RFC 6455: the page was closed or navigated away


def _expiring_left(on_close):
    @functools.wraps(on_close)
    def close(self: WSHandler) -> None:
        session = self.connection._session if self.connection is not None else None  # detached by on_close
        on_close(self)
        if self.close_code == GOING_AWAY and session is not None and session.connection_count == 0:
            session.request_expiration()  # discarded by Bokeh's next check for unused sessions

    close.explorer_left = True
    return close


def _unless_detached(handle):
    @functools.wraps(handle)
    def handle_message(cls, message, connection: ServerConnection):
        if connection._session is None:  # its socket closed and its session was detached: no one to answer
            log.debug("dropped %s from a closed page", message.msgtype)
            return _nothing()
        return handle(cls, message, connection)

    return handle_message


async def _nothing() -> None:
    return None
