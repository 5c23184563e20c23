"""Merging is reversible bit-for-bit, idempotent, faithful to the unmerged output, and refuses
non-finite results."""

from __future__ import annotations

import copy

import pytest
import torch

import mlra
from mlra import AdapterSpec
from mlra.errors import MergeError

from .test_api import _randomise

# tolerance of "merged output equals unmerged output" per dtype (the merge rounds once to the dtype)
TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-2, torch.bfloat16: 1e-1}


def _adapted_bert(tiny_bert, dtype: torch.dtype):  # type: ignore[no-untyped-def]
    model = tiny_bert.to(dtype)
    mlra.add_adapter(model, "a", AdapterSpec(rank=4, targets=["query", "value", "dense"]))
    mlra.add_adapter(model, "b", AdapterSpec(rank=2, alpha=8, targets=["query", "key"]))
    _randomise(model)
    mlra.set_active(model, {"a": 0.6, "b": 0.4})
    return model


def _base_weights(model) -> dict[str, torch.Tensor]:  # type: ignore[no-untyped-def]
    return {k: v.clone() for k, v in model.state_dict().items() if "lora_" not in k}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_merged_output_equals_unmerged(tiny_bert, dtype) -> None:  # type: ignore[no-untyped-def]
    model = _adapted_bert(tiny_bert, dtype)
    ids = torch.randint(0, 64, (2, 9))
    with torch.no_grad():
        unmerged = model(ids).last_hidden_state.float()
        mlra.merge(model)
        assert mlra.is_merged(model)
        merged = model(ids).last_hidden_state.float()
    tol = TOLERANCE[dtype]
    torch.testing.assert_close(merged, unmerged, atol=tol, rtol=tol)


@pytest.mark.parametrize(
    ("dtype", "cycles"), [(torch.float32, 10), (torch.float16, 10), (torch.bfloat16, 100)]
)
def test_unmerge_restores_base_weights_bit_for_bit(tiny_bert, dtype, cycles) -> None:  # type: ignore[no-untyped-def]
    model = _adapted_bert(tiny_bert, dtype)
    before = _base_weights(model)
    for _ in range(cycles):
        mlra.merge(model)
        mlra.unmerge(model)
    after = _base_weights(model)
    assert list(after) == list(before)
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert not mlra.is_merged(model)


def test_merge_twice_is_a_noop_with_a_warning(tiny_bert) -> None:  # type: ignore[no-untyped-def]
    model = _adapted_bert(tiny_bert, torch.float32)
    base = _base_weights(model)
    mlra.merge(model)
    once = _base_weights(model)
    assert any(not torch.equal(v, base[k]) for k, v in once.items())  # the merge did something
    for _ in range(2):
        with pytest.warns(UserWarning, match="already merged"):
            mlra.merge(model)
    assert all(torch.equal(v, once[k]) for k, v in _base_weights(model).items())
    mlra.unmerge(model)
    mlra.unmerge(model)  # unmerging an unmerged model is harmless: the base weights stay
    assert not mlra.is_merged(model)
    assert all(torch.equal(v, base[k]) for k, v in _base_weights(model).items())


def test_a_merge_that_would_overflow_is_refused_and_changes_nothing(tiny_bert) -> None:  # type: ignore[no-untyped-def]
    model = _adapted_bert(tiny_bert, torch.float16)
    last = "encoder.layer.1.attention.self.value"
    with torch.no_grad():
        mlra.adapters.lowrank_layers(model)[last].B("a").weight.fill_(6e4)  # fp16 max is 65504
    before = _base_weights(model)
    with pytest.raises(MergeError, match=last.replace(".", r"\.")):
        mlra.merge(model)
    assert not mlra.is_merged(model)
    assert all(torch.equal(v, before[k]) for k, v in _base_weights(model).items())


def test_what_a_merged_model_refuses(tiny_bert) -> None:  # type: ignore[no-untyped-def]
    model = _adapted_bert(tiny_bert, torch.float32)
    mlra.merge(model)
    with pytest.raises(MergeError, match="unmerge"):
        mlra.set_active(model, "a")
    with pytest.raises(MergeError, match="unmerge"), mlra.disabled(model):
        pass
    with pytest.raises(MergeError, match="unmerge"), mlra.route(model, ["a"]):
        pass
    with pytest.raises(MergeError, match="unmerge"):
        mlra.add_adapter(model, "c", AdapterSpec(rank=1))
    mlra.unmerge(model)
    mlra.set_active(model, "a")


def test_merge_keeps_parameter_identity_for_optimisers(tiny_bert) -> None:  # type: ignore[no-untyped-def]
    model = _adapted_bert(tiny_bert, torch.float32)
    param = mlra.adapters.lowrank_layers(model)["encoder.layer.0.attention.self.query"]
    weight = param.base_layer.weight
    mlra.merge(model)
    assert param.base_layer.weight is weight
    mlra.unmerge(model)
    assert param.base_layer.weight is weight


def test_fingerprint_ignores_merging(tiny_bert) -> None:  # type: ignore[no-untyped-def]
    model = _adapted_bert(tiny_bert, torch.float32)
    twin = copy.deepcopy(model)
    mlra.merge(model)
    assert mlra.fingerprint(model) == mlra.fingerprint(twin)


def test_the_kept_base_weight_moves_with_the_model(tiny_bert) -> None:  # type: ignore[no-untyped-def]
    """While merged, the exact base weight is a buffer of the layer: model.to() moves and casts
    it with the weights, so unmerge after a move restores the moved base."""
    model = _adapted_bert(tiny_bert, torch.float32)
    base = _base_weights(model)
    mlra.merge(model)
    layer = mlra.adapters.lowrank_layers(model)["encoder.layer.0.attention.self.query"]
    assert "_unmerged_weight" in dict(layer.named_buffers())
    assert not any("_unmerged_weight" in k for k in model.state_dict())  # not saved
    model.to(torch.float64)
    assert layer._unmerged_weight is not None and layer._unmerged_weight.dtype == torch.float64
    mlra.unmerge(model)
    assert all(torch.equal(v, base[k].double()) for k, v in _base_weights(model).items())
