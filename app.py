"""`panel serve app.py`: the explorer. Builds the shell, nothing else (see explorer/ui/shell.py)."""

import panel as pn

from explorer.ui.shell import TITLE, build_app

pn.extension(inline=True, notifications=True)
build_app().servable(title=TITLE)
