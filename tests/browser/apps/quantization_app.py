"""`panel serve tests/browser/apps/quantization_app.py`: the quantization lesson alone, its settings as text, and a
model picker (as the app's sidebar has one).

`?model=mnist-vit` picks the first model. Served by tests/browser/test_quantization.py and used by
benchmarks/lesson_quantization.py; the server is tuned as app.py tunes it.
"""

import panel as pn

from explorer.lessons.quantization.view import QuantizationLesson
from explorer.serve import tune
from explorer.session.state import ExplorerState

tune()
pn.extension(inline=True)

state = ExplorerState()
requested = pn.state.session_args.get("model", [b""])[0].decode()
if requested in state.param.model.objects:
    state.model = requested
lesson = QuantizationLesson(state=state)


def shown(bits: int, act_bits: int, granularity: str, scheme: str, clip: str) -> str:
    return f"bits={bits} act_bits={act_bits} granularity={granularity} scheme={scheme} clip={clip}"


settings = pn.bind(shown, lesson.param.bits, lesson.param.act_bits, lesson.param.granularity, lesson.param.scheme,
                   lesson.param.clip)
picker = pn.widgets.Select.from_param(state.param.model, name="Model", css_classes=["model-picker"], width=200)
pn.Column(pn.pane.Str(settings, css_classes=["settings"]), picker, lesson.with_tour(),
          sizing_mode="stretch_width").servable(title="Quantization")
