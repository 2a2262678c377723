"""One session's state (model, input, lesson, layer, channel), the views that follow it, the tour, and slow work off
the event loop. Lessons and the shell import it; it imports neither (see tests/test_layering.py)."""
