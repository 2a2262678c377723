"""tune()'s Message.send: every frame of one Bokeh message is written before the event loop turns, the same
frames in the same order as Bokeh's own send, and the socket's write lock is free when it returns. Its
send_patch_document: a patch reaches the page even when the callback that made it fails. Its WSHandler.on_close:
a session whose page went away is discarded at Bokeh's next check, one whose connection dropped is kept."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import logging
import warnings

import numpy as np
import panel.io.document
import pytest
from bokeh.document import Document
from bokeh.document.events import DocumentPatchedEvent
from bokeh.models import ColumnDataSource, Div
from bokeh.protocol import Protocol
from bokeh.protocol.message import Message
from bokeh.server.connection import ServerConnection
from bokeh.server.protocol_handler import ProtocolHandler
from bokeh.server.session import ServerSession
from bokeh.server.views.ws import WSHandler
from tornado.ioloop import IOLoop
from tornado.locks import Lock
from tornado.websocket import WebSocketClosedError

from explorer.serve import references, tune


class RecordingStream:
    """Stands for tornado's websocket protocol object: records each frame when it is written."""

    def __init__(self, log: list, closing: bool = False):
        self.log, self.closing = log, closing

    def is_closing(self) -> bool:
        return self.closing

    def write_message(self, message, binary: bool = False):
        self.log.append(("frame", message, binary))

        async def flushed() -> None:
            return None

        return asyncio.ensure_future(flushed())  # as tornado 6 does: a task, done one loop turn later


class RecordingHandler(WSHandler):
    def __init__(self, log: list, closing: bool = False):  # no tornado application: only the writing half
        self.ws_connection = RecordingStream(log, closing)
        self.write_lock = Lock()


def patch_message(buffers: int) -> Message:
    doc = Document()
    text = Div(text="before")
    sources = [ColumnDataSource(data={"x": np.zeros(3)}) for _ in range(buffers)]
    for model in (text, *sources):
        doc.add_root(model)
    events: list = []
    doc.on_change(lambda event: events.append(event))
    text.text = "after"  # a change without a buffer
    for i, source in enumerate(sources):
        # larger than an array written inside the message's text (tuning small_buffers_inline): a buffer of its own
        source.data = {"x": np.arange(references.INLINE_BYTES // 4 + 1, dtype=np.float32) + i}
    message = Protocol().create("PATCH-DOC", [e for e in events if isinstance(e, DocumentPatchedEvent)])
    assert len(message.buffers) == buffers
    return message


def send(send_function, message: Message, closing: bool = False) -> tuple[list, int, RecordingHandler]:
    async def run():
        log: list = []
        handler = RecordingHandler(log, closing)
        asyncio.get_running_loop().call_soon(lambda: log.append(("loop turned",)))
        sent = await send_function(message, handler)
        return log, sent, handler
    # a loop of its own, in a thread of its own: the browser tests may leave a running loop in this one
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result()


@pytest.mark.parametrize("buffers", [0, 1, 7])
def test_every_frame_of_a_message_is_written_before_the_loop_turns(buffers):
    tune()
    message = patch_message(buffers)
    log, sent, handler = send(Message.send, message)
    frames = [entry for entry in log if entry[0] == "frame"]
    assert len(frames) == 3 + 2 * buffers  # header, metadata, content, then a header and a payload per buffer
    assert log[:len(frames)] == frames and log[len(frames):] == [("loop turned",)]
    assert handler.write_lock._block._value == 1  # free: what panel.io.document checks before writing itself
    assert sent == sum(len(frame) for _, frame, _ in frames)


def test_the_frames_are_bokehs_own():
    tune()
    message = patch_message(3)
    ours, ours_sent, _ = send(Message.send, message)
    theirs, theirs_sent, _ = send(Message.send.__wrapped__, message)  # Bokeh's send, one frame per loop turn
    frames = [entry for entry in ours if entry[0] == "frame"]
    assert frames == [entry for entry in theirs if entry[0] == "frame"]
    assert [binary for _, _, binary in frames] == [False] * 3 + [False, True] * 3
    assert ours_sent == theirs_sent
    assert theirs.index(("loop turned",)) < len(frames)  # why: Bokeh's own send yields between frames


def test_a_closed_socket_raises_as_bokeh_expects():
    tune()
    with pytest.raises(WebSocketClosedError):  # WSHandler.send_message catches this one and logs a warning
        send(Message.send, patch_message(1), closing=True)


def test_tune_patches_once():
    tune()
    patched = Message.send, ServerConnection.send_patch_document
    tune()
    assert (Message.send, ServerConnection.send_patch_document) == patched
    assert patched[0].explorer_at_once and patched[1].explorer_scheduled


def test_a_change_made_before_a_callback_fails_still_reaches_the_page():
    """Bokeh runs a browser's message (or a next-tick callback) under the document lock and collects each change's
    patch as a coroutine, awaited once the callback returns. A callback that changes the page and then raises
    left them unawaited: the page never got the change, and the next full collection (explorer/serve/idle_gc.py)
    warned "coroutine 'WSHandler.send_message' was never awaited"."""
    tune()

    async def run() -> list:
        doc, log = Document(), []
        text = Div(text="before")
        doc.add_root(text)
        session = ServerSession("student", doc, io_loop=IOLoop.current())
        ServerConnection(Protocol(), RecordingHandler(log), None, session)  # subscribes itself to the session

        def change_then_fail() -> None:
            text.text = "after"
            raise ValueError("a view failed halfway")

        with pytest.raises(ValueError, match="halfway"):
            await session.with_document_locked(change_then_fail)
        for _ in range(5):  # the patch's task, then tornado's write futures
            await asyncio.sleep(0)
        return log

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # a loop of its own, as send() above
            log = pool.submit(asyncio.run, run()).result()
        gc.collect()  # what finalizes a dropped coroutine, and warns
    assert [str(w.message) for w in caught if "never awaited" in str(w.message)] == []
    content = [frame for _, frame, _ in log if isinstance(frame, str) and "ModelChanged" in frame]
    assert len(content) == 1 and '"after"' in content[0]


def test_a_page_closed_while_its_frames_are_on_their_way_fails_once_and_leaves_no_unretrieved_error():
    """The socket closes after the frames were written: each write's future fails. The send raises
    WebSocketClosedError once (Bokeh's WSHandler.send_message catches it), and no frame's failure is left for
    asyncio to report as "Task exception was never retrieved" with a traceback in the server log."""
    tune()

    class ClosingStream(RecordingStream):
        def write_message(self, message, binary: bool = False):
            async def lost() -> None:
                raise WebSocketClosedError()

            return asyncio.ensure_future(lost())

    loop_errors: list = []

    def run_in_own_loop() -> None:
        async def run() -> None:
            handler = RecordingHandler([])
            handler.ws_connection = ClosingStream([])
            with pytest.raises(WebSocketClosedError):
                await Message.send(patch_message(2), handler)

        loop = asyncio.new_event_loop()
        loop.set_exception_handler(lambda _loop, context: loop_errors.append(context))
        try:
            loop.run_until_complete(run())
        finally:
            loop.close()
        gc.collect()  # where a never-retrieved task exception is reported

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(run_in_own_loop).result()
    assert loop_errors == []


class ClosingAfterOneFrame(RecordingStream):
    """The page closes while the first frame is on its way: that write fails, and the socket is closing from then on,
    so tornado refuses every later write at once (WebSocketHandler.write_message raises)."""

    def write_message(self, message, binary: bool = False):
        self.closing = True

        async def lost() -> None:
            raise WebSocketClosedError()

        return asyncio.ensure_future(lost())


class Connection:
    """Stands for Bokeh's ServerConnection as Panel's writers see it."""

    def __init__(self, socket):
        self._socket, self.protocol = socket, Protocol()


def loop_errors_of(work) -> tuple[list, list]:
    """Run `work` (a coroutine function) in a loop of its own; what the loop reported (never-retrieved exceptions
    included, after a full collection) and the log records of warning level or above."""
    loop_errors: list = []
    records: list = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    def run_in_own_loop() -> None:
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(lambda _loop, context: loop_errors.append(context))
        try:
            loop.run_until_complete(work())
            loop.run_until_complete(asyncio.sleep(0.01))  # the writes' tasks finish
        finally:
            loop.close()
        gc.collect()  # where a never-retrieved task exception is reported

    keep = Keep(level=logging.WARNING)
    logging.getLogger().addHandler(keep)
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(run_in_own_loop).result()
    finally:
        logging.getLogger().removeHandler(keep)
    return loop_errors, records


def test_panels_own_writes_to_a_page_closed_mid_message_are_dropped_quietly():
    """Panel writes a patch's frames itself (panel.io.document.dispatch_tornado). The page closed after the first
    frame: the second write raised at once, the first frame's future was lost, and once Panel destroyed the session
    (cancelling the futures it held, which does nothing to a failed one) the log said "Task exception was never
    retrieved ... WebSocketClosedError"."""
    tune()

    async def write_then_destroy() -> None:
        handler = RecordingHandler([])
        handler.ws_connection = ClosingAfterOneFrame([])
        try:
            futures = panel.io.document.dispatch_tornado(Connection(handler), msg=patch_message(2))
        except WebSocketClosedError:  # what Panel's unlocked() catches, falling back to scheduling the message
            futures = []
        for future in futures:  # panel.io.document._destroy_document
            future.cancel()

    loop_errors, records = loop_errors_of(write_then_destroy)
    assert loop_errors == [] and [record.getMessage() for record in records] == []


def test_panels_writes_to_a_closed_page_complete_without_error_and_a_real_error_is_passed_on():
    tune()
    outcomes: list = []

    class Failing(RecordingStream):
        def write_message(self, message, binary: bool = False):
            async def broken() -> None:
                raise ValueError("not a closed page")

            return asyncio.ensure_future(broken())

    async def write() -> None:
        for stream in (ClosingAfterOneFrame([]), Failing([])):
            handler = RecordingHandler([])
            handler.ws_connection = stream
            futures = panel.io.document.dispatch_tornado(Connection(handler), msg=patch_message(1))
            outcomes.append(await asyncio.gather(*futures, return_exceptions=True))

    loop_errors, _ = loop_errors_of(write)
    closed, failing = outcomes
    assert closed == [None, None]  # the first frame lost to the closed page, the second refused; no more written
    assert len(failing) == 5 and all(isinstance(outcome, ValueError) for outcome in failing)
    assert loop_errors == []


def test_a_message_from_a_page_whose_session_was_detached_is_dropped_quietly():
    """Bokeh's ServerSession.pull/push/patch read `connection.session`, which asserts that the session is attached:
    a browser's message handled after the page's socket closed and its session was detached logged an
    AssertionError with a traceback."""
    tune()

    async def run() -> list:
        doc = Document()
        doc.add_root(Div(text="before"))
        session = ServerSession("student", doc, io_loop=IOLoop.current())
        connection = ServerConnection(Protocol(), RecordingHandler([]), None, session)
        connection.detach_session()  # what BokehTornado.client_lost does when the socket closes
        message = Protocol().create("PULL-DOC-REQ")
        return [await ProtocolHandler().handle(message, connection)]

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        assert pool.submit(asyncio.run, run()).result() == [None]


def test_a_detached_connection_closing_tells_no_session():
    tune()
    lost: list = []

    class Application:
        def client_lost(self, connection) -> None:
            lost.append(connection)

    async def run() -> None:
        doc = Document()
        session = ServerSession("student", doc, io_loop=IOLoop.current())
        handler = RecordingHandler([])
        handler.connection = ServerConnection(Protocol(), handler, None, session)
        handler.connection.detach_session()
        handler.application, handler.close_code, handler.close_reason = Application(), 1001, None
        handler.on_close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()
    assert len(lost) == 1


class LosingApplication:
    """Stands for BokehTornado: detaches a lost connection from its session, as Bokeh's does."""

    def client_lost(self, connection) -> None:
        connection.detach_session()


def close_connections(codes: list[int | None], closing: int | None = None) -> ServerSession:
    """A session with one connection per code; the first `closing` of them (all by default) then closed by the
    page with its code, in turn."""
    tune()

    async def run() -> ServerSession:
        session = ServerSession("student", Document(), io_loop=IOLoop.current())
        handlers = []
        for code in codes:
            handler = RecordingHandler([])
            handler.connection = ServerConnection(Protocol(), handler, None, session)
            handler.application, handler.close_code, handler.close_reason = LosingApplication(), code, None
            handlers.append(handler)
        for handler in handlers[:closing]:
            handler.on_close()
        return session

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result()


def test_a_session_whose_page_went_away_is_discarded_at_the_next_check():
    session = close_connections([1001])
    assert session.connection_count == 0 and session.expiration_requested


@pytest.mark.parametrize("code", [1006, 1000, None])  # dropped, closed by the page's script, no close frame
def test_a_session_whose_connection_dropped_keeps_its_lifetime_for_a_reconnection(code):
    session = close_connections([code])
    assert session.connection_count == 0 and not session.expiration_requested


def test_a_session_another_page_still_shows_is_kept():
    session = close_connections([1001, 1001], closing=1)
    assert session.connection_count == 1 and not session.expiration_requested
