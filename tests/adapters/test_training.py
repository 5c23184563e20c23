"""Training support: only the adapter (and named modules) learn; flags come back on removal."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import mlra
from mlra import AdapterSpec
from mlra.errors import AdapterNotFoundError, ConfigError


def test_adapter_parameters_are_a_and_b_of_every_covered_layer(tiny_bert) -> None:  # type: ignore[no-untyped-def]
    mlra.add_adapter(tiny_bert, "a", AdapterSpec(rank=3))
    params = mlra.adapter_parameters(tiny_bert, "a")
    assert [tuple(p.shape) for p in params] == [(3, 32), (32, 3)] * 4
    with pytest.raises(AdapterNotFoundError):
        mlra.adapter_parameters(tiny_bert, "zzz")


def test_only_the_adapter_and_the_head_learn(tiny_mlp) -> None:  # type: ignore[no-untyped-def]
    tiny_mlp.block.fc2.bias.requires_grad_(False)  # a flag of the user's own
    flags = {n: p.requires_grad for n, p in tiny_mlp.named_parameters()}
    base = copy.deepcopy(tiny_mlp.state_dict())
    mlra.add_adapter(tiny_mlp, "a", AdapterSpec(rank=4, targets=["fc1", "fc2"]))
    mlra.add_adapter(tiny_mlp, "b", AdapterSpec(rank=4, targets=["fc1"]))
    trainable = mlra.mark_trainable(tiny_mlp, "a", also=["out"])
    names = {n for n, p in tiny_mlp.named_parameters() if p.requires_grad}
    assert names == {
        "fc1.lora_A.a.weight",
        "fc1.lora_B.a.weight",
        "block.fc2.lora_A.a.weight",
        "block.fc2.lora_B.a.weight",
        "out.weight",
    }
    assert {id(p) for p in trainable} == {
        id(p) for n, p in tiny_mlp.named_parameters() if n in names
    }

    torch.manual_seed(0)
    x, y = torch.randn(64, 8), torch.randint(0, 4, (64,))
    opt = torch.optim.AdamW(trainable, lr=1e-2)
    losses = []
    for _ in range(30):
        loss = nn.functional.cross_entropy(tiny_mlp(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    state = tiny_mlp.state_dict()
    assert torch.equal(state["fc1.base_layer.weight"], base["fc1.weight"])  # the base is frozen
    assert not torch.equal(state["out.weight"], base["out.weight"])  # the head learned

    with pytest.warns(UserWarning, match="no adapter is active"):
        mlra.remove_adapter(tiny_mlp, "a")  # "b" stays, inactive
    assert {n: p.requires_grad for n, p in tiny_mlp.named_parameters() if "lora_" not in n} == {
        n.replace("fc1.", "fc1.base_layer."): f for n, f in flags.items()
    }


def test_mark_trainable_names_bad_modules(tiny_mlp) -> None:  # type: ignore[no-untyped-def]
    mlra.add_adapter(tiny_mlp, "a", AdapterSpec(rank=2, targets=["fc1"]))
    with pytest.raises(ConfigError, match="'head'"):
        mlra.mark_trainable(tiny_mlp, "a", also=["head"])
    with pytest.raises(AdapterNotFoundError):
        mlra.mark_trainable(tiny_mlp, "nope")


def test_unload_restores_flags(tiny_mlp) -> None:  # type: ignore[no-untyped-def]
    mlra.add_adapter(tiny_mlp, "a", AdapterSpec(rank=2, targets=["fc1"]))
    mlra.mark_trainable(tiny_mlp, "a")
    mlra.unload(tiny_mlp)
    assert all(p.requires_grad for p in tiny_mlp.parameters())


@pytest.mark.parametrize("base_trainable", [False, True], ids=["frozen-base", "trained-base"])
def test_the_fused_training_step_equals_the_plain_one(base_trainable: bool) -> None:
    """A training step through a plain nn.Linear and one adapter runs as one autograd node
    (mlra/adapters/fused.py); a forward hook on the base layer forces the plain path, which it
    must equal: output and every gradient (input, base weight and bias, A, B)."""
    from ..conftest import make_tiny_bert
    from .test_kinds import _randomise

    def step(hooked: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor], str]:
        model = make_tiny_bert().train()
        mlra.add_adapter(model, "a", AdapterSpec(rank=4, alpha=8, targets=["query", "value"]))
        mlra.set_active(model, {"a": 0.5})
        _randomise(model)
        for p in model.parameters():
            p.requires_grad_(base_trainable)
        for p in mlra.adapter_parameters(model, "a"):
            p.requires_grad_(True)
        if hooked:
            for layer in mlra.adapters.lowrank_layers(model).values():
                layer.base_layer.register_forward_hook(lambda *args: None)
        query = model.encoder.layer[0].attention.self.query
        embeddings = torch.randn(2, 6, 32, generator=torch.Generator().manual_seed(1))
        embeddings.requires_grad_(True)
        out = model(inputs_embeds=embeddings).last_hidden_state
        out.pow(2).mean().backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        assert embeddings.grad is not None
        grads["inputs_embeds"] = embeddings.grad
        return out, grads, type(query(torch.zeros(1, 32)).grad_fn).__name__

    fused, fused_grads, fused_node = step(hooked=False)
    plain, plain_grads, plain_node = step(hooked=True)
    assert fused_node == "FusedLowRankLinearBackward" and plain_node != fused_node
    torch.testing.assert_close(fused, plain, atol=1e-6, rtol=1e-6)
    assert fused_grads.keys() == plain_grads.keys()
    assert any("base_layer.weight" in n for n in fused_grads) == base_trainable
    for name, grad in fused_grads.items():
        torch.testing.assert_close(grad, plain_grads[name], atol=1e-6, rtol=1e-5, msg=name)
