"""Lessons in notebooks: `import explorer; explorer.extension()`, then display any view.

Resources are inlined: the default `pn.extension()` loads BokehJS from a CDN, and a notebook
opened offline (a lecture hall's network, a train) would show nothing.
"""

from __future__ import annotations

import panel as pn


def extension(**params) -> None:
    """Load Panel's notebook support with every resource inline; extra `params` go to `pn.extension`."""
    pn.extension(inline=True, **params)
