"""Runtime tuning of the server and the page, in one place: one opt-out, each tuning version-gated.

Every patch of Bokeh, BokehJS, Panel, tornado, CPython's garbage collector, glibc's malloc and OpenMP that the
explorer makes lives in this package, listed with its measured gain and its upstream issue (or the condition for
deleting it) in `explorer/serve/tunings.py`. None is needed for correctness: with `EXPLORER_TUNE=0` none is made
and the app works as plain upstream code does, only slower. A tuning runs only on the library versions it was
tested on; on any other it is off, with one log line saying so.

- `before_torch()`: the OpenMP wait policy, before torch loads (app.py, the `explorer` command).
- `tune()`: everything else, called by app.py for each session (idempotent).
- `serve_resources_locally()`: not a tuning, a requirement (the app works offline): never switched off.
"""

from __future__ import annotations

import os
import sys

from explorer.serve.gate import ENV_VAR, log, tuning_on

__all__ = ["ENV_VAR", "before_torch", "serve_resources_locally", "tune"]

OMP_POLICY = "PASSIVE"


def before_torch() -> None:
    """Idle OpenMP threads sleep instead of spinning (OMP_WAIT_POLICY=PASSIVE, unless already set).

    Measured (docs/performance.md): on a busy server, spinning threads made tiny ops (a 17x17 softmax) cost ~5 ms of
    CPU each: an attention head change 30 -> 2.4 ms CPU, 100 -> 6 ms wall; `explorer measure` up to 20 times slower
    beside other work. A server that runs no browser may add GOMP_SPINCOUNT=10000 (libgomp then spins briefly
    before it sleeps): MobileNetV2's trace 37 -> 18 ms. No upstream issue: libgomp's default (spin, then sleep) suits
    a machine given to one job; remove this when the app runs alone on its machine. OpenMP reads the variable once,
    when torch loads, so a call after that changes nothing and says so.
    """
    if not tuning_on() or "OMP_WAIT_POLICY" in os.environ:
        return
    if "torch" in sys.modules:
        log.info("OMP_WAIT_POLICY not set: torch was already loaded, and OpenMP reads it only then")
        return
    os.environ["OMP_WAIT_POLICY"] = OMP_POLICY


def tune() -> None:
    """Make every tuning that is on and tested on the installed versions (see explorer/serve/tunings.py)."""
    from explorer.serve import tunings

    tunings.apply_all()


def serve_resources_locally() -> None:
    """Every resource of this session's page from this server, never from a CDN (explorer/serve/resources.py)."""
    from explorer.serve import resources

    resources.serve_locally()
