"""Errors a student or teacher can act on, and the one helper that validates names."""

from __future__ import annotations

from collections.abc import Iterable


class InputError(ValueError):
    """Bad user input: the message says what was found, what was expected and what to do."""


def choice(name: str, options: Iterable[str], kind: str = "option") -> str:
    """Return `name` if it is one of `options`, else raise an InputError listing them."""
    valid = list(options)
    if name not in valid:
        listed = ", ".join(repr(o) for o in valid) or "(none available)"
        raise InputError(f"no {kind} named {name!r}; choose one of: {listed}")
    return name
