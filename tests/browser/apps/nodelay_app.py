"""`panel serve tests/browser/apps/nodelay_app.py`: reports its own websocket's TCP_NODELAY, after tune_server().

Served by tests/browser/test_server.py. Once the page has connected, the text shows the option as the
kernel reports it for this session's socket, and Panel's debounce.
"""

import socket

import panel as pn
from panel.reactive import Syncable

from explorer.ui.server import tune_server

tune_server()
pn.extension(inline=True)
report = pn.pane.Str("connecting", css_classes=["report"])


def inspect_socket() -> None:
    session = pn.state.curdoc.session_context._session  # bokeh.server.session.ServerSession
    handlers = [connection._socket for connection in session._subscribed_connections]
    options = [h.ws_connection.stream.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for h in handlers]
    report.object = f"sockets={len(options)} nodelay={options} debounce={Syncable._debounce}"


pn.state.onload(inspect_socket)
report.servable(title="nodelay")
