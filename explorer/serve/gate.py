"""The one opt-out and the version gate shared by every tuning (see explorer/serve/__init__.py).

A tuning patches the internals of a library at one version: on another version the patched code may have
changed, so a tuning runs only on the versions it was measured and tested on, and says so in one log line
when it does not.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata

ENV_VAR = "EXPLORER_TUNE"  # "0": every tuning off; plain Bokeh, Panel, tornado, CPython and glibc

log = logging.getLogger("explorer.serve")


def tuning_on() -> bool:
    """False when EXPLORER_TUNE=0: the app then runs exactly as upstream's code does, only slower."""
    return os.environ.get(ENV_VAR, "1").strip() != "0"


@dataclass(frozen=True)
class Tuning:
    name: str
    apply: Callable[[], None]           # idempotent; for a served session, called once per session
    tested_on: Mapping[str, str]        # distribution -> the version it was measured and tested on
    gain: str                           # what it was measured to save
    upstream: str                       # the upstream issue, or the condition under which to delete it
    served_only: bool = False           # only inside a served session (never in a notebook or a script)


def installed(distribution: str) -> str:
    return metadata.version(distribution)


def untested(tuning: Tuning) -> list[str]:
    """'bokeh 3.10.0 (tested on 3.9.2)' for each library whose installed version the tuning was not tested on."""
    found = {name: installed(name) for name in tuning.tested_on}
    return [f"{name} {found[name]} (tested on {version})" for name, version in tuning.tested_on.items()
            if found[name] != version]
