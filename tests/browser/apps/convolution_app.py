"""`panel serve tests/browser/apps/convolution_app.py`: the convolution lesson alone, and the state it writes as text.

`?model=mobilenet_v2` picks the model; `?parts=none` leaves out the optional tabs (receptive field,
filter atlas). Served by tests/browser/test_convolution.py and benchmarks/lesson_convolution.py.
"""

import panel as pn

from explorer.lessons.convolution.view import ConvolutionLesson
from explorer.session.state import ExplorerState

pn.extension(inline=True)

state = ExplorerState()
requested = pn.state.session_args.get("model", [b""])[0].decode()
if requested in state.param.model.objects:
    state.model = requested
parts = () if pn.state.session_args.get("parts", [b""])[0] == b"none" else None
lesson = ConvolutionLesson(state=state, parts=parts)


def shown(layer: str, channel: int) -> str:
    return f"layer={layer} channel={channel}"


pn.Column(pn.pane.Str(pn.bind(shown, state.param.layer, state.param.channel)), lesson.with_tour(),
          sizing_mode="stretch_width").servable(title="Convolution")
