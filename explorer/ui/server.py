"""Two server settings that lower the floor under every interaction of the served app (docs/performance.md).

1. TCP_NODELAY on Bokeh's websocket. Bokeh never sets it, so Nagle's algorithm holds back the last
   frame of a multi-frame message until the browser's delayed ACK (about 40 ms) arrives.
2. No debounce of browser changes. Panel holds each change from the browser for 50 ms
   (`Syncable._debounce`) to coalesce bursts; the explorer's views coalesce instead (a drawing
   sends at most every 100 ms and only the newest is classified; a slider whose work is slow uses
   `value_throttled` or computes on the latest value only).

`tune_server()` is called by app.py. It is idempotent, and harmless outside a server: in a notebook
there is no Bokeh websocket to patch, and the debounce only affects served sessions.
"""

from __future__ import annotations

import functools

from bokeh.server.views.ws import WSHandler
from panel.reactive import Syncable

DEBOUNCE_MS = 0


def tune_server() -> None:
    """Set TCP_NODELAY on every new websocket and stop Panel's 50 ms hold on browser changes."""
    if not getattr(WSHandler.open, "explorer_nodelay", False):
        WSHandler.open = _with_nodelay(WSHandler.open)
    Syncable._debounce = DEBOUNCE_MS


def _with_nodelay(open_websocket):
    @functools.wraps(open_websocket)
    def open(self, *args, **kwargs):
        self.set_nodelay(True)  # tornado's WebSocketHandler.set_nodelay: TCP_NODELAY on this socket
        return open_websocket(self, *args, **kwargs)

    open.explorer_nodelay = True
    return open
