"""What one figure update costs the server: raw Bokeh against HoloViews, for a lesson's typical picture.

    python benchmarks/holoviews_update.py [--repeats 200]

The lessons' figures are raw Bokeh (explorer/lessons/plots.py): a change assigns new data to the figure's data
source. HoloViews is the higher-level way to make the same figure, and what a notebook author composes. This
measures, for a 28×28 heat map with a colour bar (a feature map of the MNIST CNN) in a Bokeh document rendered
by Panel, one update each way:

- raw Bokeh: `source.data = {...}` on the figure's ColumnDataSource;
- HoloViews, streamed: a DynamicMap fed by a `Pipe`, `pipe.send(array)` (HoloViews updates the data source);
- HoloViews, replaced: `pane.object = hv.Image(array)` (a new element each time, as simple code does).

Per update: the server's wall time to apply it and turn the document's change events into the JSON patch the page
would get (median over the repeats), the Bokeh models created, and the patch's size. Prints figures; asserts
nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import holoviews as hv
import numpy as np
import panel as pn
from bokeh.document import Document
from bokeh.document.events import DocumentPatchedEvent
from bokeh.models import ColorBar, ColumnDataSource, LinearColorMapper
from bokeh.plotting import figure
from holoviews.streams import Pipe

SIDE = 28


def served(viewable: pn.viewable.Viewable) -> tuple[Document, list]:
    """`viewable` in a fresh document, and the list its change events collect in."""
    doc = Document()
    doc.add_root(viewable.get_root(doc))
    events: list = []
    doc.on_change(lambda event: events.append(event) if isinstance(event, DocumentPatchedEvent) else None)
    return doc, events


def timed(doc: Document, events: list, update, arrays: list[np.ndarray]) -> tuple[float, float, float]:
    """Median ms per update, Bokeh models created per update, kB of patch per update."""
    times, created, sizes = [], [], []
    for array in arrays:
        before = {m.id for m in doc.models}
        events.clear()
        start = time.perf_counter()
        update(array)
        patch = [event.to_serializable(_Serializer()) for event in events if hasattr(event, "to_serializable")]
        text = json.dumps(patch, default=str)
        times.append((time.perf_counter() - start) * 1000)
        after = {m.id for m in doc.models}
        created.append(len(after - before))
        sizes.append(len(text) / 1000)
    return statistics.median(times), statistics.mean(created), statistics.median(sizes)


class _Serializer:
    """Bokeh's Serializer, for the patch's JSON (imported lazily: its module path is Bokeh's)."""

    def __new__(cls):
        from bokeh.core.serialization import Serializer
        return Serializer()


def raw_bokeh() -> tuple[pn.viewable.Viewable, callable]:
    source = ColumnDataSource(data=dict(image=[np.zeros((SIDE, SIDE))], dw=[SIDE], dh=[SIDE]))
    mapper = LinearColorMapper(palette="Viridis256", low=0, high=1)
    fig = figure(width=300, height=300, x_range=(0, SIDE), y_range=(SIDE, 0))
    fig.image(image="image", x=0, y=SIDE, dw="dw", dh="dh", source=source, color_mapper=mapper)
    fig.add_layout(ColorBar(color_mapper=mapper), "right")

    def update(array: np.ndarray) -> None:
        with pn.io.hold():
            source.data = dict(image=[array], dw=[SIDE], dh=[SIDE])
            mapper.update(low=float(array.min()), high=float(array.max()))

    return pn.pane.Bokeh(fig), update


def image(data: np.ndarray) -> hv.Image:
    return hv.Image(data, bounds=(0, 0, SIDE, SIDE)).opts(cmap="viridis", colorbar=True, width=300, height=300)


def holoviews_streamed() -> tuple[pn.viewable.Viewable, callable]:
    pipe = Pipe(data=np.zeros((SIDE, SIDE)))
    return pn.pane.HoloViews(hv.DynamicMap(image, streams=[pipe])), pipe.send


def holoviews_replaced() -> tuple[pn.viewable.Viewable, callable]:
    pane = pn.pane.HoloViews(image(np.zeros((SIDE, SIDE))))

    def update(array: np.ndarray) -> None:
        pane.object = image(array)

    return pane, update


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    hv.extension("bokeh")
    rng = np.random.default_rng(0)
    arrays = [rng.random((SIDE, SIDE)) for _ in range(args.repeats + 10)]
    print(f"One update of a {SIDE}×{SIDE} heat map with a colour bar, {args.repeats} repeats (after 10 warm-up)")
    print(f"{'way':<28}{'median ms':>10}{'models made':>13}{'patch kB':>10}")
    for name, make in (("raw Bokeh (source.data)", raw_bokeh), ("HoloViews, Pipe stream", holoviews_streamed),
                       ("HoloViews, new element", holoviews_replaced)):
        viewable, update = make()
        doc, events = served(viewable)
        timed(doc, events, update, arrays[:10])
        ms, made, kb = timed(doc, events, update, arrays[10:])
        print(f"{name:<28}{ms:>10.2f}{made:>13.1f}{kb:>10.1f}")


if __name__ == "__main__":
    main()
