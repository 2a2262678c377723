"""`panel serve tests/browser/apps/live_app.py`: the drawing canvas beside live mode; `?model=mnist-vit` picks it.

The canvas announces its strokes as the `explorer:strokes` event that live mode listens to. Served by
tests/browser/test_live.py.
"""

import panel as pn

from explorer.ui.canvas import DrawingCanvas
from explorer.ui.live import LiveInference

pn.extension(inline=True)

network = pn.state.session_args.get("model", [b"mnist-cnn"])[0].decode()
pn.Row(DrawingCanvas(), LiveInference(network=network, width=420, height=520)).servable(title="Live")
