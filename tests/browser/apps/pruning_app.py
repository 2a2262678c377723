"""`panel serve tests/browser/apps/pruning_app.py`: the pruning lesson alone, and its settings as text.

`?model=NAME` picks the model (default mnist-cnn). Served with the app's server tuning (TCP_NODELAY, no
debounce) by tests/browser/test_pruning.py and benchmarks/lesson_pruning.py.
"""

import panel as pn

from explorer.lessons.pruning.view import PruningLesson
from explorer.serve import tune
from explorer.session.state import ExplorerState

tune()
pn.extension(inline=True)

model = pn.state.session_args.get("model", [b"mnist-cnn"])[0].decode()
lesson = PruningLesson(state=ExplorerState(model=model))


def shown(method: str, scope: str, sparsity: int) -> str:
    return f"method={method} scope={scope} sparsity={sparsity}"


pn.Column(pn.pane.Str(pn.bind(shown, lesson.param.method, lesson.param.scope, lesson.param.sparsity),
                      css_classes=["settings"]),
          lesson.with_tour(), sizing_mode="stretch_width").servable(title="Pruning")
