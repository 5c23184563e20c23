"""add / set_active / disabled / remove / unload over tiny models."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

import mlra
from mlra import AdapterSpec
from mlra.errors import AdapterExistsError, AdapterNotFoundError, ConfigError


def _randomise(model: nn.Module) -> None:
    """Give every adapter a non-zero B so that adapters change the output."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer in mlra.adapters.lowrank_layers(model).values():
            for name in layer.specs:
                w = layer.B(name).weight
                w.copy_(torch.randn(w.shape, generator=g).to(w.dtype))


def test_a_new_adapter_starts_as_the_base_model(tiny_mlp) -> None:  # type: ignore[no-untyped-def]
    x = torch.randn(5, 8)
    before = tiny_mlp(x)
    mlra.add_adapter(tiny_mlp, "a", AdapterSpec(rank=4, targets=["fc1", "fc2"]))
    assert torch.equal(tiny_mlp(x), before)  # B starts at zero
    _randomise(tiny_mlp)
    assert not torch.allclose(tiny_mlp(x), before)


@pytest.mark.parametrize("init", ["lora", "gaussian"])
def test_init_schemes(init: str) -> None:
    model = nn.Sequential(nn.Linear(64, 64))
    mlra.add_adapter(model, "a", AdapterSpec(rank=16, targets=["0"], init=init))  # type: ignore[arg-type]
    layer = mlra.adapters.lowrank_layers(model)["0"]
    a = layer.A("a").weight
    assert torch.count_nonzero(layer.B("a").weight) == 0
    if init == "gaussian":
        assert a.std().item() == pytest.approx(1 / 16, rel=0.2)
    else:  # Kaiming-uniform with a=sqrt(5): U(-1/sqrt(in), 1/sqrt(in))
        assert a.abs().max().item() <= 1 / 8 and a.std().item() == pytest.approx(
            (1 / 8) / 3**0.5, rel=0.2
        )


def test_outputs_follow_the_formula_for_one_summed_and_weighted() -> None:
    torch.manual_seed(0)
    base = nn.Linear(6, 5)
    model = nn.Sequential(base)
    x = torch.randn(3, 6)
    mlra.add_adapter(model, "a", AdapterSpec(rank=2, alpha=4, targets=["0"]))
    mlra.add_adapter(model, "b", AdapterSpec(rank=3, alpha=3, targets=["0"], rslora=True))
    _randomise(model)
    layer = mlra.adapters.lowrank_layers(model)["0"]

    def delta(name: str) -> torch.Tensor:
        return x @ layer.A(name).weight.T @ layer.B(name).weight.T * layer.specs[name].scaling

    with torch.no_grad():
        plain = base(x)
        assert mlra.active_adapters(model) == {"a": 1.0}  # the first adapter is active
        torch.testing.assert_close(model(x), plain + delta("a"))
        mlra.set_active(model, "b")
        torch.testing.assert_close(model(x), plain + delta("b"))
        mlra.set_active(model, ["a", "b"])
        assert mlra.active_adapters(model) == {"a": 1.0, "b": 1.0}
        torch.testing.assert_close(model(x), plain + delta("a") + delta("b"))
        mlra.set_active(model, {"a": 0.7, "b": 0.3})
        torch.testing.assert_close(model(x), plain + 0.7 * delta("a") + 0.3 * delta("b"))


def test_adapters_on_different_layers_compose(tiny_mlp) -> None:  # type: ignore[no-untyped-def]
    mlra.add_adapter(tiny_mlp, "early", AdapterSpec(rank=2, targets=["fc1"]))
    mlra.add_adapter(tiny_mlp, "late", AdapterSpec(rank=2, targets=["out"]))
    _randomise(tiny_mlp)
    x = torch.randn(4, 8)
    mlra.set_active(tiny_mlp, ["early", "late"])
    both = tiny_mlp(x)
    mlra.set_active(tiny_mlp, "early")
    early = tiny_mlp(x)
    assert not torch.allclose(both, early)
    assert sorted(mlra.adapters.adapter_modules(tiny_mlp, "late")) == ["out"]


@pytest.mark.parametrize("bad", ["nope", ["a", "nope"], {"nope": 1.0}])
def test_unknown_names_raise_instead_of_a_silent_base_output(tiny_mlp, bad) -> None:  # type: ignore[no-untyped-def]
    mlra.add_adapter(tiny_mlp, "a", AdapterSpec(rank=2, targets=["fc1"]))
    with pytest.raises(AdapterNotFoundError, match=r"'nope'.*it has: a"):
        mlra.set_active(tiny_mlp, bad)
    assert mlra.active_adapters(tiny_mlp) == {"a": 1.0}  # unchanged


@pytest.mark.parametrize("bad", [[], {}, ["a", "a"], {"a": float("nan")}, {"a": "1"}, 3])
def test_malformed_active_sets_raise_config_error(tiny_mlp, bad) -> None:  # type: ignore[no-untyped-def]
    mlra.add_adapter(tiny_mlp, "a", AdapterSpec(rank=2, targets=["fc1"]))
    with pytest.raises(ConfigError):
        mlra.set_active(tiny_mlp, bad)


def test_duplicate_and_bad_names(tiny_mlp) -> None:  # type: ignore[no-untyped-def]
    mlra.add_adapter(tiny_mlp, "a", AdapterSpec(rank=2, targets=["fc1"]))
    with pytest.raises(AdapterExistsError, match="'a'"):
        mlra.add_adapter(tiny_mlp, "a", AdapterSpec(rank=2, targets=["out"]))
    for bad in ["", "a.b", 7]:
        with pytest.raises(ConfigError):
            mlra.add_adapter(tiny_mlp, bad, AdapterSpec(rank=2, targets=["out"]))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="AdapterSpec"):
        mlra.add_adapter(tiny_mlp, "c", {"rank": 2})  # type: ignore[arg-type]


def test_disabled_is_exactly_the_base_model(tiny_bert) -> None:  # type: ignore[no-untyped-def]
    reference = copy.deepcopy(tiny_bert)
    ids = torch.randint(0, 64, (3, 7))
    mlra.add_adapter(tiny_bert, "a", AdapterSpec(rank=4, targets=["query", "value", "dense"]))
    _randomise(tiny_bert)
    with torch.no_grad():
        with mlra.disabled(tiny_bert):
            off = tiny_bert(ids).last_hidden_state
        on = tiny_bert(ids).last_hidden_state
        assert torch.equal(off, reference(ids).last_hidden_state)
        assert not torch.allclose(on, off)


def test_remove_and_unload_give_the_original_modules_back(tiny_bert) -> None:  # type: ignore[no-untyped-def]
    original = {k: v.clone() for k, v in tiny_bert.state_dict().items()}
    types = {n: type(m) for n, m in tiny_bert.named_modules()}
    mlra.add_adapter(tiny_bert, "a", AdapterSpec(rank=2))
    mlra.add_adapter(tiny_bert, "b", AdapterSpec(rank=2, targets=["key", "query"]))
    assert any(".base_layer." in k for k in tiny_bert.state_dict())

    with pytest.warns(UserWarning, match="no adapter is active"):
        mlra.remove_adapter(tiny_bert, "a")
    assert mlra.adapters.adapter_names(tiny_bert) == ["b"]
    assert sorted(mlra.adapters.lowrank_layers(tiny_bert)) == [
        f"encoder.layer.{i}.attention.self.{m}" for i in range(2) for m in ("key", "query")
    ]  # value layers are plain nn.Linear again
    with pytest.raises(AdapterNotFoundError):
        mlra.remove_adapter(tiny_bert, "a")

    mlra.unload(tiny_bert)
    state = tiny_bert.state_dict()
    assert list(state) == list(original)
    assert all(torch.equal(state[k], original[k]) for k in original)
    assert {n: type(m) for n, m in tiny_bert.named_modules()} == types


def test_unload_with_merge_keeps_the_adapted_weights(tiny_mlp) -> None:  # type: ignore[no-untyped-def]
    mlra.add_adapter(tiny_mlp, "a", AdapterSpec(rank=2, targets=["fc1", "out"]))
    _randomise(tiny_mlp)
    x = torch.randn(4, 8)
    with torch.no_grad():
        adapted = tiny_mlp(x)
        plain = mlra.unload(tiny_mlp, merge=True)
        assert not mlra.adapters.lowrank_layers(plain)
        torch.testing.assert_close(plain(x), adapted)


def test_removing_the_last_adapter_warns_nothing() -> None:
    model = nn.Sequential(nn.Linear(3, 3))
    mlra.add_adapter(model, "a", AdapterSpec(rank=1, targets=["0"]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mlra.remove_adapter(model, "a")
    assert isinstance(model[0], nn.Linear) and mlra.active_adapters(model) == {}


def test_new_adapters_follow_the_models_train_or_eval_mode(tiny_mlp) -> None:  # type: ignore[no-untyped-def]
    tiny_mlp.eval()
    mlra.add_adapter(tiny_mlp, "a", AdapterSpec(rank=4, targets=["fc1"], dropout=0.5))
    mlra.add_adapter(tiny_mlp, "b", AdapterSpec(rank=4, targets=["fc1"], dropout=0.5))
    _randomise(tiny_mlp)
    mlra.set_active(tiny_mlp, ["a", "b"])
    assert not any(m.training for m in tiny_mlp.modules())
    x = torch.randn(8, 8)
    with torch.no_grad():
        assert torch.equal(tiny_mlp(x), tiny_mlp(x))  # no dropout at inference
    tiny_mlp.train()
    with torch.no_grad():
        assert not torch.equal(tiny_mlp(x), tiny_mlp(x))  # dropout while training
