"""`panel serve app.py`: the explorer. Builds the shell, nothing else (see explorer/ui/shell.py)."""

import panel as pn

from explorer.ui.server import openmp_wait_briefly, tune_server

openmp_wait_briefly()  # before torch loads: idle OpenMP threads spin briefly, then sleep (docs/performance.md)

from explorer.ui.shell import TITLE, build_app  # noqa: E402

tune_server()  # TCP_NODELAY and no 50 ms debounce: see docs/performance.md
pn.extension(inline=True, notifications=True)
build_app().servable(title=TITLE)
