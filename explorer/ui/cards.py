"""A page listing the zoo's models and their cards: the app until the shell issue lands."""

from __future__ import annotations

import panel as pn

from explorer.core import device, zoo


def card_markdown(name: str) -> str:
    if not zoo.is_available(name):
        return f"### {name}\nNot on this machine yet: run `{zoo.FETCHABLE.get(name, f'explorer train {name}')}`."
    card = zoo.card(name)
    accuracy = (f"not measured: {card.evaluated_on}" if card.top1 is None
                else f"**{card.top1:.2%}** top-1 on {card.evaluated_on} ({card.evaluated_date})")
    return "\n".join([
        f"### {card.name}",
        f"{card.task}. Input {' × '.join(map(str, card.input_shape))}.",
        "",
        "| Card | |", "|---|---|",
        f"| Parameters | {card.n_params:,} |",
        f"| Multiply-accumulates per image | {card.macs / 1e6:,.2f} M |",
        f"| Accuracy | {accuracy} |",
        f"| Measured by | `{card.evaluated_by}` |",
        f"| Weights | {card.source} |",
        f"| Licence | {card.license} |",
        f"| SHA-256 | `{card.sha256}` |",
    ])


def cards_page() -> pn.viewable.Viewable:
    header = pn.pane.Markdown("# Neural network explorer\n"
                              f"Models on this machine. Computing on **{device.describe()}**.")
    cards = [pn.pane.Markdown(card_markdown(name), sizing_mode="stretch_width", css_classes=["model-card"])
             for name in zoo.list()]
    return pn.Column(header, *cards, sizing_mode="stretch_width", max_width=900)
