"""Every page of the app loads its scripts and stylesheets from this server, never from a CDN: the app must work
offline. Not a tuning (EXPLORER_TUNE=0 leaves it on)."""

from __future__ import annotations

import panel as pn
from bokeh.settings import settings
from panel.io.resources import LOCAL_DIST

LOCAL_MODES = ("server", "server-dev")  # Bokeh resource modes that load BokehJS and Panel's files from /static


def serve_locally() -> None:
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
