"""`panel serve app.py`: the explorer. Builds the shell, nothing else (see explorer/ui/shell.py)."""

from explorer import serve

serve.before_torch()  # OpenMP reads its wait policy when torch loads: before any import that loads torch

import panel as pn  # noqa: E402

from explorer.ui.shell import TITLE, build_app  # noqa: E402

serve.tune()  # every runtime tuning, for the process and this session's page (EXPLORER_TUNE=0: none)
serve.serve_resources_locally()  # before anything is built: no page, however it was made, loads from a CDN
pn.extension(inline=True, notifications=True)
build_app().servable(title=TITLE)
