"""A class clicks the same gallery digits: every session of the process gets one trace per model and input
(explorer/session/state.py's `infer`, kept in explorer/core/shared_results.py's TRACES, apart from the lessons'
results), and each its own Inference."""

from __future__ import annotations

import torch

from explorer.core import trace, zoo
from explorer.core.shared_results import RESULTS, TRACES, input_digest, model_token
from explorer.session.state import ExplorerState


def test_students_on_the_same_input_share_one_trace_and_another_input_or_model_gets_its_own(monkeypatch, rng):
    traced = []
    real = zoo.ZooModel.trace
    monkeypatch.setattr(zoo.ZooModel, "trace", lambda self, x, **o: (traced.append(self.name), real(self, x, **o))[1])
    digit = (torch.rand(28, 28, generator=rng) * 255).to(torch.uint8).numpy()  # an input no earlier test made
    first, second, other = (ExplorerState(model=name) for name in ("mnist-cnn", "mnist-cnn", "mnist-vit"))
    traced.clear()  # a model other than the default shows its default input
    assert first.set_input(digit.copy(), "the first student's copy"), first.error
    assert second.set_input(digit.copy(), "the second student's copy"), second.error
    assert traced == ["mnist-cnn"]
    a, b = first.inference, second.inference
    assert b.trace is a.trace and b is not a and b.description == "the second student's copy"
    key = (model_token(zoo.load("mnist-cnn")), input_digest(a.x))
    assert TRACES.kept(key) == (a.trace,) and RESULTS.kept(key) is None
    # what the second student would have computed: the same model on the same input, equal bit for bit (a kept
    # result must be the one its reader would have computed, shared_results.py)
    fresh = trace.run(zoo.load("mnist-cnn").module, b.x)
    assert b.trace.names == fresh.names
    for kept, computed in zip(b.trace, fresh, strict=True):
        torch.testing.assert_close(kept.output, computed.output, rtol=0, atol=0)
    torch.testing.assert_close(b.probs, fresh.logits[0].softmax(-1), rtol=0, atol=0)

    assert second.set_input(digit[::-1].copy(), "the digit upside down"), second.error
    assert traced == ["mnist-cnn"] * 2 and second.inference.trace is not a.trace

    assert other.set_input(digit.copy(), "the same digit, another model"), other.error
    assert traced == ["mnist-cnn"] * 2 + ["mnist-vit"] and other.inference.trace.names != a.trace.names
