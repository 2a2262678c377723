"""`panel serve tests/browser/apps/convolution_parts_app.py`: the receptive-field panel and the filter atlas.

Two tabs sharing one session state; `?model=NAME` picks the model. A line of text above them says what
the panels hold (layer, unit, sort), for tests/browser/test_convolution_receptive.py and the benchmark.
"""

import panel as pn

from explorer.lessons.convolution.view_atlas import FilterAtlas
from explorer.lessons.convolution.view_receptive import ReceptiveFieldPanel
from explorer.session.state import ExplorerState

pn.extension(inline=True)

model = pn.state.session_args.get("model", [b"mnist-cnn"])[0].decode()
state = ExplorerState(model=model)
receptive = ReceptiveFieldPanel(state=state)
atlas = FilterAtlas(state=state)


def shown(layer: str, row: int, column: int, atlas_layer: str, sort: str) -> str:
    return f"receptive={layer} unit=({row}, {column}) atlas={atlas_layer} sort={sort}"


# The layers shown are the menus': each panel shows the session's layer when it is one of its own choices.
status = pn.pane.Str(pn.bind(shown, receptive.layer_menu.param.value, receptive.param.row, receptive.param.column,
                             atlas.layer_menu.param.value, atlas.param.sort), css_classes=["parts-status"])
pn.Column(status, pn.Tabs(("Receptive field", receptive), ("Filter atlas", atlas), dynamic=False),
          sizing_mode="stretch_width").servable(title="Convolution: receptive field and filter atlas")
