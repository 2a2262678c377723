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


def shown(*_changes) -> str:
    """The layer and head the lesson shows (the state's layer and channel, read as the lesson shows them), its query."""
    return f"layer={lesson.layer} head={lesson.head} query={lesson.query}"


pn.Column(pn.pane.Str(pn.bind(shown, state.param.layer, state.param.channel, lesson.param.query),
                      css_classes=["selection"]),
          lesson.with_tour(), sizing_mode="stretch_width").servable(title="Attention")
