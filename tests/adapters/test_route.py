"""Per-row routing: row i equals row i run alone with its adapter; request-scoped across threads."""

from __future__ import annotations

import threading

import pytest
import torch

import mlra
from mlra import AdapterSpec
from mlra.errors import AdapterNotFoundError, ConfigError

from .test_api import _randomise


@pytest.fixture
def routed_bert(tiny_bert):  # type: ignore[no-untyped-def]
    mlra.add_adapter(tiny_bert, "a", AdapterSpec(rank=4, targets=["query", "value"]))
    mlra.add_adapter(tiny_bert, "b", AdapterSpec(rank=2, alpha=8, targets=["query", "dense"]))
    mlra.add_adapter(tiny_bert, "c", AdapterSpec(rank=8, targets=["key"], rslora=True))
    _randomise(tiny_bert)
    return tiny_bert


def _alone(model, ids: torch.Tensor, name: str | None) -> torch.Tensor:  # type: ignore[no-untyped-def]
    if name is None:
        with mlra.disabled(model):
            return model(ids).last_hidden_state
    mlra.set_active(model, name)
    return model(ids).last_hidden_state


def test_each_row_equals_the_row_alone(routed_bert) -> None:  # type: ignore[no-untyped-def]
    rows = ["a", None, "b", "c", "a", "b"]
    ids = torch.randint(0, 64, (len(rows), 7))
    with torch.no_grad():
        with mlra.route(routed_bert, rows):
            mixed = routed_bert(ids).last_hidden_state
        for i, name in enumerate(rows):
            alone = _alone(routed_bert, ids[i : i + 1], name)
            torch.testing.assert_close(mixed[i : i + 1], alone, atol=1e-5, rtol=1e-5)


def test_routing_is_scoped_to_the_block(routed_bert) -> None:  # type: ignore[no-untyped-def]
    ids = torch.randint(0, 64, (2, 5))
    mlra.set_active(routed_bert, "b")
    with torch.no_grad():
        before = routed_bert(ids).last_hidden_state
        with mlra.route(routed_bert, ["a", "c"]):
            routed_bert(ids)
        assert torch.equal(routed_bert(ids).last_hidden_state, before)
    assert mlra.active_adapters(routed_bert) == {"b": 1.0}


def test_bad_routes(routed_bert) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(AdapterNotFoundError, match="'z'"), mlra.route(routed_bert, ["a", "z"]):
        pass
    with pytest.raises(ConfigError, match="empty"), mlra.route(routed_bert, []):
        pass
    with (
        pytest.raises(ConfigError, match="3 rows but a layer received a batch of 2"),
        mlra.route(routed_bert, ["a", "b", None]),
    ):
        routed_bert(torch.randint(0, 64, (2, 5)))


def test_gradients_reach_only_the_adapters_in_use(routed_bert) -> None:  # type: ignore[no-untyped-def]
    routed_bert.train()
    ids = torch.randint(0, 64, (3, 5))
    with mlra.route(routed_bert, ["a", None, "a"]):
        routed_bert(ids).last_hidden_state.sum().backward()
    a_grads = [p.grad for p in mlra.adapter_parameters(routed_bert, "a")]
    assert all(g is not None and g.abs().sum() > 0 for g in a_grads[1::2])  # B of "a" learns
    for name in ("b", "c"):
        grads = [p.grad for p in mlra.adapter_parameters(routed_bert, name)]
        assert all(g is None or torch.count_nonzero(g) == 0 for g in grads)


def test_threads_never_see_each_others_routing(routed_bert) -> None:  # type: ignore[no-untyped-def]
    plans = [["a", "b", None, "c"], ["c", "c", "a", None], [None, "b", "b", "a"], ["b"] * 4]
    ids = torch.randint(0, 64, (4, 6))
    with torch.no_grad():
        expected = []
        for rows in plans:
            with mlra.route(routed_bert, rows):
                expected.append(routed_bert(ids).last_hidden_state.clone())
    barrier = threading.Barrier(len(plans))
    failures: list[str] = []

    def worker(k: int) -> None:
        barrier.wait()
        for _ in range(15):
            with torch.no_grad(), mlra.route(routed_bert, plans[k]):
                out = routed_bert(ids).last_hidden_state
            if not torch.allclose(out, expected[k], atol=1e-6):
                failures.append(f"thread {k} saw another routing")
                return

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(len(plans))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
