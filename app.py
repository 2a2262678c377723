"""`panel serve app.py`: the explorer. Builds the shell, nothing else (see explorer/ui/shell.py)."""

import os

# Before torch loads: idle OpenMP threads sleep instead of spinning. On a busy server, spinning threads made
# tiny ops (a 17x17 softmax) cost milliseconds each, and with the browser on the same two cores they slowed
# the lessons (docs/performance.md). A server that runs no browser may add GOMP_SPINCOUNT=10000 (libgomp then
# spins briefly before it sleeps): MobileNetV2's trace 37 -> 18 ms.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import panel as pn  # noqa: E402

from explorer.ui.server import serve_resources_locally, tune_server  # noqa: E402
from explorer.ui.shell import TITLE, build_app  # noqa: E402

tune_server()  # TCP_NODELAY and no 50 ms debounce: see docs/performance.md
serve_resources_locally()  # before anything is built: no page, however it was made, loads from a CDN
pn.extension(inline=True, notifications=True)
build_app().servable(title=TITLE)
