"""Every layer kind × every lifecycle step (PEFT's custom-model table): add, train, merge/unmerge,
route, save/load, PEFT both ways, unload, half precision, meta device."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import mlra
from mlra import AdapterSpec
from mlra.errors import ConfigError

from .cases import CASES, Case

peft = pytest.importorskip("peft")
cases = pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])


def _spec(case: Case, **kw: object) -> AdapterSpec:
    return AdapterSpec(rank=2, alpha=4, targets=case.targets, **kw)  # type: ignore[arg-type]


def _randomise(model: nn.Module, seed: int = 1) -> None:
    """Non-zero A and B everywhere (a fresh adapter is the base, which would prove nothing)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in mlra.adapters.lowrank_layers(model).values():
            for name in layer.specs:
                for w in (layer.a_weight(name), layer.b_weight(name)):
                    w.copy_(torch.randn(w.shape, generator=g).to(w.dtype) * 0.3)


def _zero_attention_out_proj(model: nn.Module) -> None:
    """Zero the out_proj adapters of every nn.MultiheadAttention (mlra's and PEFT's names alike).

    PEFT 0.21 adds an attention's out_proj delta twice (its merge writes W + ΔW, then merges
    out_proj again: huggingface/peft#3774), so PEFT's outputs equal mlra's only while that delta
    is zero.
    test_attention.py pins the difference; here the in_proj adapters and the format are compared.
    """
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "base_layer.out_proj.lora_B." in name:
                param.zero_()


def _adapted(case: Case, *names: str) -> nn.Module:
    model = case.model()
    for i, name in enumerate(names or ("a",)):
        mlra.add_adapter(model, name, AdapterSpec(rank=2 + i, alpha=4, targets=case.targets))
    _randomise(model)
    return model


@cases
def test_add_starts_as_the_base_and_changes_it_once_trained(case: Case) -> None:
    model = case.model()
    base = case.out(model)
    wrapped = mlra.add_adapter(model, "a", _spec(case))
    assert wrapped and all(isinstance(model.get_submodule(n), mlra.AdapterLayer) for n in wrapped)
    assert torch.equal(case.out(model), base)
    params = mlra.mark_trainable(model, "a")
    opt = torch.optim.SGD(params, lr=0.1)
    model.train()
    case.out(model).float().pow(2).mean().backward()
    assert all(p.grad is not None for p in params)
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)
    opt.step()
    model.eval()
    assert not torch.allclose(case.out(model), base)


@cases
def test_merge_equals_unmerged_and_unmerge_is_bit_exact(case: Case) -> None:
    model = _adapted(case)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        eager = case.out(model)
        mlra.merge(model)
        merged = case.out(model)
    torch.testing.assert_close(merged, eager, atol=1e-5, rtol=1e-5)
    mlra.unmerge(model)
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())


@cases
def test_routed_rows_equal_each_row_alone(case: Case) -> None:
    model = _adapted(case, "a", "b")
    x = case.inputs()
    rows, dim = ["b", None, "a"], case.batch_dim
    with torch.no_grad():
        with mlra.route(model, rows, batch_dim=dim):
            mixed = case.out(model, x)
        for i, name in enumerate(rows):
            if name is None:
                with mlra.disabled(model):
                    alone = case.out(model, x.narrow(dim, i, 1))
            else:
                mlra.set_active(model, name)
                alone = case.out(model, x.narrow(dim, i, 1))
            torch.testing.assert_close(mixed.narrow(dim, i, 1), alone, atol=1e-5, rtol=1e-5)


@cases
def test_save_and_load_give_the_same_outputs(case: Case, tmp_path: Path) -> None:
    model = _adapted(case)
    mlra.save_adapter(model, "a", tmp_path / "a")
    fresh = case.model()
    assert mlra.load_adapter(fresh, tmp_path / "a") == "a"
    with torch.no_grad():
        assert torch.equal(case.out(fresh), case.out(model))


@cases
def test_an_mlra_artifact_loads_in_peft_with_the_same_outputs(case: Case, tmp_path: Path) -> None:
    model = _adapted(case)
    _zero_attention_out_proj(model)
    mlra.save_adapter(model, "a", tmp_path / "a")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PEFT: "fan_in_fan_out is set to True" and the like
        theirs = peft.PeftModel.from_pretrained(case.model(), tmp_path / "a").eval()
    with torch.no_grad():
        torch.testing.assert_close(case.out(theirs), case.out(model), atol=1e-6, rtol=1e-6)


@cases
def test_a_peft_adapter_loads_in_mlra_with_the_same_outputs(case: Case, tmp_path: Path) -> None:
    config = peft.LoraConfig(
        r=2, lora_alpha=4, target_modules=list(case.targets), init_lora_weights=False
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = peft.get_peft_model(case.model(), config).eval()
    _zero_attention_out_proj(theirs)
    theirs.save_pretrained(tmp_path / "p")
    ours = case.model()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mlra.load_adapter(ours, tmp_path / "p", strict=False)
    assert any("no manifest" in str(w.message) for w in caught)
    with torch.no_grad():
        reference = case.out(theirs)
        torch.testing.assert_close(case.out(ours), reference, atol=1e-6, rtol=1e-6)
        assert not torch.allclose(case.out(case.model()), reference)  # the adapter did something


@cases
def test_unload_gives_back_the_original_modules_and_keys(case: Case) -> None:
    model = case.model()
    kinds = {n: type(m) for n, m in model.named_modules()}
    keys = list(model.state_dict())
    mlra.add_adapter(model, "a", _spec(case))
    mlra.unload(model)
    assert {n: type(m) for n, m in model.named_modules()} == kinds
    assert list(model.state_dict()) == keys


@cases
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_half_precision_bases_get_float32_adapters_and_equal_peft(
    case: Case, dtype: torch.dtype, tmp_path: Path
) -> None:
    model = case.model().to(dtype)
    mlra.add_adapter(model, "a", _spec(case))
    _randomise(model)
    _zero_attention_out_proj(model)
    assert {p.dtype for p in mlra.adapter_parameters(model, "a")} == {torch.float32}
    mlra.save_adapter(model, "a", tmp_path / "a")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = peft.PeftModel.from_pretrained(case.model().to(dtype), tmp_path / "a").eval()
    x = case.inputs()
    x = x if not x.is_floating_point() else x.to(dtype)
    with torch.no_grad():
        ours = case.out(model, x)
        assert ours.dtype == dtype
        assert torch.equal(ours, case.out(theirs, x))
    kept = case.model().to(dtype)
    mlra.add_adapter(kept, "a", _spec(case), autocast_adapter_dtype=False)
    assert {p.dtype for p in mlra.adapter_parameters(kept, "a")} == {dtype}


@cases
def test_a_meta_device_model_refuses_hashing_then_initialises_after_to_empty(
    case: Case, tmp_path: Path
) -> None:
    reference = case.model()
    with torch.device("meta"):
        model = case.build().eval()
    mlra.add_adapter(model, "a", _spec(case))
    with pytest.raises(ConfigError, match="meta device"):
        mlra.fingerprint(model)
    with pytest.raises(ConfigError, match="meta device"):
        mlra.save_adapter(model, "a", tmp_path / "a")
    with pytest.raises(ConfigError, match="to_empty"):
        mlra.reset_adapter_parameters(model, "a")
    model.to_empty(device="cpu")
    with torch.no_grad():
        for key, value in reference.state_dict().items():  # every base tensor by its own name
            module, _, attr = key.rpartition(".")
            getattr(model.get_submodule(module), attr).copy_(value)
    mlra.reset_adapter_parameters(model, "a")
    with torch.no_grad():
        assert torch.equal(case.out(model), case.out(reference))
    assert mlra.fingerprint(model) == mlra.fingerprint(_adapted(case))
