"""`panel serve app.py`: the explorer. Builds the shell, nothing else (see explorer/ui/shell.py)."""

import os

# Before torch loads: idle OpenMP threads sleep instead of spinning. On a busy server, spinning threads made
# tiny ops (a 17x17 softmax) cost milliseconds each (docs/performance.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import panel as pn  # noqa: E402

from explorer.ui.server import tune_server  # noqa: E402
from explorer.ui.shell import TITLE, build_app  # noqa: E402

tune_server()  # TCP_NODELAY and no 50 ms debounce: see docs/performance.md
pn.extension(inline=True, notifications=True)
build_app().servable(title=TITLE)
