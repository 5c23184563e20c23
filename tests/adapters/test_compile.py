"""``torch.compile`` of an adapted model: no graph break in any layer, one graph per setting (not
per layer, not per route), and the compiled outputs and gradients equal eager ones."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext

import pytest
import torch
from torch import nn

import mlra
from mlra import AdapterSpec

from ..conftest import make_tiny_bert
from .test_kinds import _randomise

dynamo = pytest.importorskip("torch._dynamo")
counters = dynamo.utils.counters


def _model() -> nn.Module:
    model = make_tiny_bert()
    mlra.add_adapter(model, "a", AdapterSpec(rank=4, targets=["query", "value"]))
    mlra.add_adapter(model, "b", AdapterSpec(rank=2, targets=["query", "dense"], dropout=0.1))
    _randomise(model)
    return model


def _settings(model: nn.Module) -> Iterator[tuple[str, Callable[[], AbstractContextManager[None]]]]:
    mlra.set_active(model, "a")
    yield "one adapter", nullcontext
    mlra.set_active(model, {"a": 0.7, "b": -0.2})
    yield "weighted set", nullcontext
    yield "disabled", lambda: mlra.disabled(model)
    yield "route", lambda: mlra.route(model, ["a", None, "b", "a"])
    yield "another route", lambda: mlra.route(model, [None, "b", "b", "a"])


def test_compiled_equals_eager_without_graph_breaks_or_per_layer_recompiles() -> None:
    model = _model().eval()
    compiled = torch.compile(model, backend="aot_eager")
    ids = torch.randint(0, 64, (4, 7), generator=torch.Generator().manual_seed(0))
    dynamo.reset()
    counters.clear()
    settings = 0
    with torch.no_grad():
        for what, block in _settings(model):
            with block():
                eager = model(ids).last_hidden_state
                fast = compiled(ids).last_hidden_state
            torch.testing.assert_close(fast, eager, atol=1e-6, rtol=1e-6, msg=what)
            settings += 1
    assert dict(counters["graph_break"]) == {}
    # one graph per setting at most (the second route reuses the first one's)
    assert counters["stats"]["unique_graphs"] <= settings - 1


def test_compiled_training_steps_equal_eager_ones() -> None:
    ids = torch.randint(0, 64, (4, 7), generator=torch.Generator().manual_seed(1))
    grads = []
    for compile_it in (False, True):
        model = _model().train()
        for m in model.modules():
            if isinstance(m, nn.Dropout):
                m.p = 0.0  # the same computation in both (dropout masks differ between runs)
        params = mlra.mark_trainable(model, ["a", "b"])
        run = torch.compile(model, backend="aot_eager") if compile_it else model
        dynamo.reset()
        counters.clear()
        mlra.set_active(model, ["a", "b"])
        run(ids).last_hidden_state.pow(2).mean().backward()
        with mlra.route(model, ["a", "b", None, "a"]):
            run(ids).last_hidden_state.pow(2).mean().backward()
        grads.append([torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in params])
        if compile_it:
            assert dict(counters["graph_break"]) == {}
    assert len(grads[0]) == len(grads[1]) > 0
    for eager, fast in zip(*grads, strict=True):
        torch.testing.assert_close(fast, eager, atol=1e-5, rtol=1e-5)


def test_a_compiled_forward_never_applies_another_threads_setting() -> None:
    """Compiled forwards read the setting from the layers, which two threads would share. While
    blocks of two threads are open the layer refuses its compiled path, so Dynamo runs that frame
    eagerly (the thread's own ContextVar): the result is this thread's routing, not the other's."""
    import threading

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4))
    mlra.add_adapter(model, "a", AdapterSpec(rank=2, targets=["0"]))
    _randomise(model)
    compiled = torch.compile(model, backend="eager")
    x = torch.randn(2, 4)
    with torch.no_grad(), mlra.route(model, ["a", None]):
        expected = model(x)
    inside, leave = threading.Event(), threading.Event()

    def other_thread() -> None:
        with mlra.disabled(model):
            inside.set()
            leave.wait(timeout=30)

    with torch.no_grad(), mlra.route(model, ["a", None]):
        thread = threading.Thread(target=other_thread)
        thread.start()  # its block opens after ours: the layers' attribute now says "disabled"
        inside.wait(timeout=30)
        try:
            assert torch.equal(compiled(x), expected)
        finally:
            leave.set()
            thread.join()
    with torch.no_grad(), mlra.route(model, ["a", None]):
        assert torch.equal(compiled(x), expected)  # one thread again: the compiled path
