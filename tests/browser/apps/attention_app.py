"""`panel serve tests/browser/apps/attention_app.py`: the attention lesson alone, and the selection as text.

`?model=NAME` picks the model (default mnist-vit). Served with the app's server tuning (TCP_NODELAY, no
debounce) by tests/browser/test_attention.py and benchmarks/lesson_attention.py.
"""

import panel as pn

from explorer.lessons.attention.view import AttentionLesson
from explorer.serve import tune
from explorer.session.state import ExplorerState

tune()
pn.extension(inline=True)

model = pn.state.session_args.get("model", [b"mnist-vit"])[0].decode()
state = ExplorerState(model=model)
lesson = AttentionLesson(state=state)


def shown(layer: str, head: int, query: int) -> str:
    return f"layer={layer} head={head} query={query}"


pn.Column(pn.pane.Str(pn.bind(shown, lesson.param.layer, lesson.param.head, lesson.param.query),
                      css_classes=["selection"]),
          lesson, sizing_mode="stretch_width").servable(title="Attention")
