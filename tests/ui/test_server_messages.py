"""tune_server()'s Message.send: every frame of one Bokeh message is written before the event loop turns, the same
frames in the same order as Bokeh's own send, and the socket's write lock is free when it returns. Its
send_patch_document: a patch reaches the page even when the callback that made it fails."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import warnings

import numpy as np
import pytest
from bokeh.document import Document
from bokeh.document.events import DocumentPatchedEvent
from bokeh.models import ColumnDataSource, Div
from bokeh.protocol import Protocol
from bokeh.protocol.message import Message
from bokeh.server.connection import ServerConnection
from bokeh.server.session import ServerSession
from bokeh.server.views.ws import WSHandler
from tornado.ioloop import IOLoop
from tornado.locks import Lock
from tornado.websocket import WebSocketClosedError

from explorer.ui.server import tune_server


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
        source.data = {"x": np.arange(5, dtype=np.float32) + i}
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
    tune_server()
    message = patch_message(buffers)
    log, sent, handler = send(Message.send, message)
    frames = [entry for entry in log if entry[0] == "frame"]
    assert len(frames) == 3 + 2 * buffers  # header, metadata, content, then a header and a payload per buffer
    assert log[:len(frames)] == frames and log[len(frames):] == [("loop turned",)]
    assert handler.write_lock._block._value == 1  # free: what panel.io.document checks before writing itself
    assert sent == sum(len(frame) for _, frame, _ in frames)


def test_the_frames_are_bokehs_own():
    tune_server()
    message = patch_message(3)
    ours, ours_sent, _ = send(Message.send, message)
    theirs, theirs_sent, _ = send(Message.send.__wrapped__, message)  # Bokeh's send, one frame per loop turn
    frames = [entry for entry in ours if entry[0] == "frame"]
    assert frames == [entry for entry in theirs if entry[0] == "frame"]
    assert [binary for _, _, binary in frames] == [False] * 3 + [False, True] * 3
    assert ours_sent == theirs_sent
    assert theirs.index(("loop turned",)) < len(frames)  # why: Bokeh's own send yields between frames


def test_a_closed_socket_raises_as_bokeh_expects():
    tune_server()
    with pytest.raises(WebSocketClosedError):  # WSHandler.send_message catches this one and logs a warning
        send(Message.send, patch_message(1), closing=True)


def test_tune_server_patches_once():
    tune_server()
    patched = Message.send, ServerConnection.send_patch_document
    tune_server()
    assert (Message.send, ServerConnection.send_patch_document) == patched
    assert patched[0].explorer_at_once and patched[1].explorer_scheduled


def test_a_change_made_before_a_callback_fails_still_reaches_the_page():
    """Bokeh runs a browser's message (or a next-tick callback) under the document lock and collects each change's
    patch as a coroutine, awaited once the callback returns. A callback that changes the page and then raises
    left them unawaited: the page never got the change, and the next full collection (explorer/ui/idle_gc.py)
    warned "coroutine 'WSHandler.send_message' was never awaited"."""
    tune_server()

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
    tune_server()

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
