"""`panel serve tests/browser/apps/normalization_app.py`: the normalization lesson alone.

`?model=mnist-vit` picks the model. Served by tests/browser/test_normalization.py and
benchmarks/lesson_normalization.py.
"""

import panel as pn

from explorer.lessons.normalization.view import NormalizationLesson
from explorer.session.state import ExplorerState

pn.extension(inline=True)

state = ExplorerState()
requested = pn.state.session_args.get("model", [b""])[0].decode()
if requested in state.param.model.objects:
    state.model = requested
pn.Column(NormalizationLesson(state=state).with_tour(), sizing_mode="stretch_width").servable(title="Normalization")
