"""tune_server() in a served session: TCP_NODELAY on the session's own websocket, no 50 ms debounce, freed memory
kept for reuse, and full garbage collections only when the server is idle."""

from __future__ import annotations

import re
from pathlib import Path

from playwright.sync_api import Page, expect

from .conftest import serve

APP = Path(__file__).resolve().parent / "apps" / "nodelay_app.py"


def test_a_served_sessions_websocket_has_tcp_nodelay(page: Page):
    with serve(APP) as url:
        page.goto(url)
        expect(page.locator(".report")).to_have_text("sockets=1 nodelay=[1] debounce=0 memory kept=True",
                                                     timeout=30_000)
        # the page sends nothing more: after idle_gc.IDLE_S (and MIN_GAP_S after start) the idle collector collects
        expect(page.locator(".gc-report")).to_have_text(
            re.compile(r"automatic full collections off: True; frozen: True; full collections: [1-9]"), timeout=30_000)


def test_tune_server_is_idempotent():
    from bokeh.server.views.ws import WSHandler

    from explorer.ui.server import tune_server

    tune_server()
    patched = WSHandler.open
    tune_server()
    assert WSHandler.open is patched and patched.explorer_nodelay
