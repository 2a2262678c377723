"""`panel serve app.py`: the explorer's page (the model zoo until the app shell lands)."""

import panel as pn

from explorer.ui.cards import cards_page

pn.extension(inline=True)
cards_page().servable(title="Neural network explorer")
