"""`panel serve tests/browser/apps/overview_app.py`: the overview alone, and the state it writes as text.

`?model=mnist-vit` picks the model. Served by tests/browser/test_overview.py.
"""

import panel as pn

from explorer.session.state import ExplorerState
from explorer.ui.overview import Overview

pn.extension(inline=True)

state = ExplorerState()
requested = pn.state.session_args.get("model", [b""])[0].decode()
if requested in state.param.model.objects:
    state.model = requested
overview = Overview(state=state)


def shown(layer: str, lesson: str, channel: int) -> str:
    return f"layer={layer} lesson={lesson} channel={channel}"


pn.Column(pn.pane.Str(pn.bind(shown, state.param.layer, state.param.lesson, state.param.channel)),
          overview, sizing_mode="stretch_width").servable(title="Overview")
