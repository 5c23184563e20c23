"""``nn.MultiheadAttention`` adapters beyond the table of cases: what reads the weights directly
(the fused eval fast paths), per-row routing with masks and attention weights, cross-attention,
what is refused, and how PEFT's own MultiheadAttention LoRA differs (huggingface/peft#3774)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import safetensors.torch
import torch
from torch import nn

import mlra
from mlra import AdapterSpec
from mlra.errors import ConfigError, IntegrityError

from .cases import Attention
from .test_kinds import _randomise

peft = pytest.importorskip("peft")


def _encoder(layers: int = 2) -> nn.TransformerEncoder:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, batch_first=True)
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=True).eval()


def _attention() -> Attention:
    torch.manual_seed(0)
    return Attention().eval()


def _with_weights(model: Attention, in_delta: float, out_delta: float) -> Attention:
    """A plain copy of ``model``'s base with ``in_delta``/``out_delta`` times the adapter's
    scaled ``B A`` added to in_proj/out_proj by hand: the reference LoRA computes against."""
    reference = _attention()
    layer = model.attn
    assert isinstance(layer, mlra.adapters.LowRankMultiheadAttention)
    with torch.no_grad():
        reference.attn.in_proj_weight += in_delta * layer.delta("a") * layer.scaling["a"]
        out = layer.out_layer
        reference.attn.out_proj.weight += out_delta * out.delta("a") * out.scaling["a"]
    return reference


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")
def test_fused_fast_paths_in_eval_compute_with_the_adapted_weights() -> None:
    """nn.TransformerEncoder (nested tensors for padded batches) and nn.TransformerEncoderLayer
    read in_proj/out_proj weights themselves in eval; the adapter is never skipped there."""
    model = _encoder()
    x = torch.randn(3, 5, 8)
    padding = torch.tensor([[False] * 5, [False] * 3 + [True] * 2, [False] * 4 + [True]])
    with torch.no_grad():
        base = model(x, src_key_padding_mask=padding)
        mlra.add_adapter(model, "a", AdapterSpec(rank=2, targets=["self_attn", "linear1"]))
        _randomise(model)
        for mask in (None, padding):
            adapted = model(x, src_key_padding_mask=mask)
            mlra.merge(model)
            merged = model(x, src_key_padding_mask=mask)
            mlra.unmerge(model)
            torch.testing.assert_close(adapted, merged, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(adapted, base)
    attention = model.layers[0].self_attn
    assert attention.batch_first and attention.num_heads == 2  # what the fast paths ask for
    assert attention.in_proj_weight is attention.base_layer.in_proj_weight
    assert attention.out_proj.weight is attention.base_layer.out_proj.base_layer.weight


def _cross_attend(
    attention: nn.Module, rows: slice, batch_first: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-attention of ``rows`` of a fixed batch of 3, with a per-row 3-D attn_mask and a key
    padding mask, returning per-head attention weights."""
    g = torch.Generator().manual_seed(3)
    q, kv = torch.randn(3, 4, 8, generator=g), torch.randn(3, 6, 8, generator=g)  # [N, L|S, E]
    attn_mask = torch.rand(3, 2, 4, 6, generator=g) > 0.7  # [N, heads, L, S]
    attn_mask[..., 0] = False
    padding = torch.zeros(3, 6, dtype=torch.bool)
    padding[1, 4:] = True
    q, kv = (
        (q[rows], kv[rows]) if batch_first else (q[rows].transpose(0, 1), kv[rows].transpose(0, 1))
    )
    masks = {"key_padding_mask": padding[rows], "attn_mask": attn_mask[rows].flatten(0, 1)}
    out, weights = attention(q, kv, kv, **masks, average_attn_weights=False)
    return out, weights


@pytest.mark.parametrize("batch_first", [True, False], ids=["batch-first", "seq-first"])
def test_routed_rows_with_masks_and_attention_weights_equal_each_row_alone(
    batch_first: bool,
) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.MultiheadAttention(8, 2, batch_first=batch_first)).eval()
    for name, rank in (("a", 2), ("b", 3)):
        mlra.add_adapter(model, name, AdapterSpec(rank=rank, targets=["0"]))
    _randomise(model)
    dim, rows = (0 if batch_first else 1), ["b", None, "a"]
    with torch.no_grad():
        with mlra.route(model, rows, batch_dim=dim):
            mixed, mixed_weights = _cross_attend(model[0], slice(None), batch_first)
        for i, name in enumerate(rows):
            if name is None:
                with mlra.disabled(model):
                    alone, weights = _cross_attend(model[0], slice(i, i + 1), batch_first)
            else:
                mlra.set_active(model, name)
                alone, weights = _cross_attend(model[0], slice(i, i + 1), batch_first)
            torch.testing.assert_close(mixed.narrow(dim, i, 1), alone, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(mixed_weights[i : i + 1], weights)


def test_a_seq_first_attention_must_be_routed_on_its_batch_dimension() -> None:
    torch.manual_seed(0)
    model = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0).eval()
    mlra.add_adapter(model, "a", AdapterSpec(rank=2, targets=["self_attn"]))
    x = torch.randn(3, 3, 8)  # sequence length == rows: the trap route() used to fall into
    with pytest.raises(ConfigError, match="batch_dim=1"), mlra.route(model, ["a", None, "a"]):
        model(x)
    with torch.no_grad(), mlra.route(model, ["a", None, "a"], batch_dim=1):
        model(x)


def test_training_reaches_both_projections_and_compiles_without_graph_breaks() -> None:
    dynamo = pytest.importorskip("torch._dynamo")
    model = _encoder(layers=1).train()
    mlra.add_adapter(model, "a", AdapterSpec(rank=2, targets=["self_attn"]))
    _randomise(model)
    params = mlra.mark_trainable(model, "a")
    assert len(params) == 4  # in_proj A, B and out_proj A, B
    x = torch.randn(2, 5, 8)
    model(x).pow(2).mean().backward()
    eager = [p.grad.clone() for p in params]  # type: ignore[union-attr]
    assert all(g.abs().sum() > 0 for g in eager)
    model.zero_grad()
    dynamo.reset()
    dynamo.utils.counters.clear()
    compiled = torch.compile(model, backend="aot_eager")
    compiled(x).pow(2).mean().backward()
    for p, g in zip(params, eager, strict=True):
        torch.testing.assert_close(p.grad, g, atol=1e-6, rtol=1e-6)
    with torch.no_grad():
        model.eval()
        torch.testing.assert_close(compiled(x), model(x), atol=1e-6, rtol=1e-6)
    assert dict(dynamo.utils.counters["graph_break"]) == {}


def test_the_attention_covers_its_out_proj_which_alone_is_refused() -> None:
    model = _attention()
    with pytest.raises(ConfigError, match="target the attention module instead"):
        mlra.add_adapter(model, "a", AdapterSpec(rank=2, targets=["out_proj"]))
    assert mlra.add_adapter(model, "a", AdapterSpec(rank=2, targets=["attn", "out_proj"])) == [
        "attn"
    ]
    assert mlra.add_adapter(model, "b", AdapterSpec(rank=2, targets="attn.*")) == ["attn"]
    assert list(mlra.adapters.adapter_modules(model, "b")) == ["attn", "attn.base_layer.out_proj"]
    mlra.set_active(model, "b")
    mlra.remove_adapter(model, "a")
    mlra.remove_adapter(model, "b")
    assert type(model.attn) is nn.MultiheadAttention
    assert type(model.attn.out_proj) is nn.modules.linear.NonDynamicallyQuantizableLinear


def test_attentions_mlra_cannot_follow_are_refused_and_hooks_are_not_skipped() -> None:
    separate = nn.Sequential(nn.MultiheadAttention(8, 2, kdim=4, vdim=4))
    with pytest.raises(ConfigError, match="kdim=4"):
        mlra.add_adapter(separate, "a", AdapterSpec(rank=2, targets=["0"]))
    model = _attention()
    with pytest.warns(UserWarning, match="dropout=0.1 does not apply"):
        mlra.add_adapter(model, "a", AdapterSpec(rank=2, targets=["attn"], dropout=0.1))
    model.attn.base_layer.register_forward_hook(lambda *args: None)
    with pytest.raises(ConfigError, match="forward hooks"):
        model(torch.randn(1, 2, 8))


def test_peft_reads_and_writes_the_same_tensors_but_adds_out_proj_twice(tmp_path: Path) -> None:
    """PEFT 0.21's MultiheadAttention merges W + ΔW into out_proj and then merges out_proj again
    (huggingface/peft#3774): its output is the attention with W_out + 2 ΔW_out. mlra computes
    W + ΔW for both projections. The artifact format is the same both ways, tensor for tensor.
    If this fails because PEFT now equals the reference, PEFT fixed it: drop the zeroing of the
    out_proj adapters in test_kinds.py."""
    ours = _attention()
    mlra.add_adapter(ours, "a", AdapterSpec(rank=2, alpha=4, targets=["attn"]))
    _randomise(ours)
    mlra.save_adapter(ours, "a", tmp_path / "a")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = peft.PeftModel.from_pretrained(_attention(), tmp_path / "a").eval()
    ours_tensors = {k.replace(".a.", "."): v for k, v in ours.state_dict().items() if "lora" in k}
    theirs_tensors = {
        k.removeprefix("base_model.model.").replace(".default.", "."): v
        for k, v in theirs.state_dict().items()
        if "lora" in k
    }
    assert ours_tensors.keys() == theirs_tensors.keys() and len(ours_tensors) == 4
    assert all(torch.equal(ours_tensors[k], theirs_tensors[k]) for k in ours_tensors)
    x = torch.randn(3, 5, 8)
    with torch.no_grad():
        reference = _with_weights(ours, 1.0, 1.0)(x)
        torch.testing.assert_close(ours(x), reference, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(
            theirs(x), _with_weights(ours, 1.0, 2.0)(x), atol=1e-5, rtol=1e-5
        )
        assert not torch.allclose(theirs(x), reference, atol=1e-3)
    theirs.save_pretrained(tmp_path / "p")
    again = _attention()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mlra.load_adapter(again, tmp_path / "p", strict=False)
    assert any("out_proj update twice" in str(w.message) for w in caught)
    with torch.no_grad():
        assert torch.equal(again(x), ours(x))


def test_an_attention_adapter_without_its_out_proj_tensors_is_refused(tmp_path: Path) -> None:
    model = _attention()
    mlra.add_adapter(model, "a", AdapterSpec(rank=2, targets=["attn"]))
    mlra.save_adapter(model, "a", tmp_path / "a")
    weights = tmp_path / "a" / "adapter_model.safetensors"
    tensors = safetensors.torch.load_file(weights)
    tensors = {k: v for k, v in tensors.items() if "out_proj" not in k}
    safetensors.torch.save_file(tensors, weights)
    (tmp_path / "a" / "manifest.json").unlink()  # as PEFT writes it: nothing to verify against
    fresh = _attention()
    keys = list(fresh.state_dict())
    refused = pytest.raises(
        IntegrityError, match=r"no LoRA weights for 'attn\.base_layer\.out_proj'"
    )
    with refused, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no manifest", "out_proj update twice"
        mlra.load_adapter(fresh, tmp_path / "a", strict=False)
    assert list(fresh.state_dict()) == keys  # put back as it was
