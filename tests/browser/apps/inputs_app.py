"""`panel serve tests/browser/apps/inputs_app.py`: the input picker alone, for tests/browser/test_inputs.py.

`?model=NAME` picks the model. Beside the picker, a line with the current top-1 prediction and the input's
description, as the shell will show them.
"""

import panel as pn

from explorer.session.state import ExplorerState
from explorer.ui.inputs import InputPicker

pn.extension(inline=True)

model = pn.state.session_args.get("model", [b"mnist-cnn"])[0].decode()  # e.g. ?model=mobilenet_v2
state = ExplorerState(model=model)
picker = InputPicker(state=state)


def summary(inference) -> str:
    label, probability = inference.top(1)[0]
    return f"prediction: {label} ({probability:.1%}) | input: {inference.description}"


result = pn.pane.Str(pn.bind(summary, state.param.inference), css_classes=["prediction"])
pn.Row(pn.Column(picker, width=320), result).servable(title="Input picker")
