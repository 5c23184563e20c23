"""Layouts that used to fail: sequence-first inputs under route(), generation that expands rows
(beam search, num_return_sequences), layers whose parent reads their weights, T5's ``wo``."""

from __future__ import annotations

import threading
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import mlra
from mlra import AdapterSpec
from mlra.errors import ConfigError

from .cases import tiny_gpt2
from .test_kinds import _randomise


def _encoder_layer() -> nn.TransformerEncoderLayer:
    torch.manual_seed(0)
    return nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, dropout=0.0).eval()


def test_a_seq_first_model_must_be_routed_on_its_batch_dimension() -> None:
    model = _encoder_layer()  # batch_first=False: inputs are [seq, batch, d]
    mlra.add_adapter(model, "a", AdapterSpec(rank=2, targets=["linear1", "linear2"]))
    mlra.add_adapter(model, "b", AdapterSpec(rank=3, targets=["linear1"]))
    _randomise(model)
    x = torch.randn(3, 3, 8)  # the sequence length equals the number of rows: the old trap
    rows = ["a", None, "b"]
    refused = pytest.raises(ConfigError, match=r"batch_first=False.*batch_dim=1")
    with refused, mlra.route(model, rows):
        pass
    with torch.no_grad():
        with mlra.route(model, rows, batch_dim=1):
            mixed = model(x)
        for i, name in enumerate(rows):
            if name is None:
                with mlra.disabled(model):
                    alone = model(x[:, i : i + 1])
            else:
                mlra.set_active(model, name)
                alone = model(x[:, i : i + 1])
            torch.testing.assert_close(mixed[:, i : i + 1], alone, atol=1e-5, rtol=1e-5)


def test_a_batch_that_does_not_fit_the_rows_is_refused() -> None:
    model = _encoder_layer()
    mlra.add_adapter(model, "a", AdapterSpec(rank=2, targets=["linear1"]))
    with (
        pytest.raises(ConfigError, match="2 rows but a layer received a batch of 3"),
        torch.no_grad(),
        mlra.route(model, ["a", None], batch_dim=1),
    ):
        model(torch.randn(4, 3, 8))


def test_the_fused_fast_path_does_not_skip_adapters_in_eval() -> None:
    model = _encoder_layer()
    x = torch.randn(5, 2, 8)
    with torch.no_grad():
        base = model(x)
        mlra.add_adapter(model, "a", AdapterSpec(rank=2, targets=["linear1", "linear2"]))
        _randomise(model)
        adapted = model(x)
        mlra.merge(model)
        merged = model(x)
    assert not torch.allclose(adapted, base)
    torch.testing.assert_close(adapted, merged, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("target", ["out_proj", "self_attn.out_proj"])
def test_layers_whose_parent_reads_their_weights_are_refused(target: str) -> None:
    """out_proj alone would never run: the attention itself is the target (test_attention.py)."""
    with pytest.raises(ConfigError, match=r"MultiheadAttention computes with out_proj\.weight"):
        mlra.add_adapter(_encoder_layer(), "a", AdapterSpec(rank=2, targets=[target]))


def test_t5_reads_wo_weight_and_runs_with_adapters() -> None:
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    config = T5Config(vocab_size=40, d_model=16, d_kv=4, d_ff=24, num_layers=1, num_heads=2)
    model = T5EncoderModel(config).eval()
    ids = torch.randint(0, 40, (2, 5))
    with torch.no_grad():
        base = model(ids).last_hidden_state
        mlra.add_adapter(model, "a", AdapterSpec(rank=2, targets=["q", "v", "wo"]))
        assert model.encoder.block[0].layer[1].DenseReluDense.wo.weight.dtype == torch.float32
        _randomise(model)
        adapted = model(ids).last_hidden_state
        mlra.merge(model)
        torch.testing.assert_close(model(ids).last_hidden_state, adapted, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(adapted, base)


def _tiny_llama() -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=48, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
    )  # fmt: skip
    return LlamaForCausalLM(config)


def _tiny_gpt2_lm() -> nn.Module:
    from transformers import GPT2LMHeadModel

    return GPT2LMHeadModel(tiny_gpt2().config)


@pytest.mark.parametrize(
    ("build", "targets"),
    [(_tiny_llama, ["q_proj", "v_proj"]), (_tiny_gpt2_lm, ["c_attn"])],
    ids=["llama", "gpt2"],
)
@pytest.mark.parametrize(
    "how", [{"num_beams": 3}, {"num_beams": 2, "num_return_sequences": 2}], ids=["beams", "n-seq"]
)
def test_generation_that_expands_rows_keeps_each_rows_adapter(
    build: object, targets: list[str], how: dict[str, int]
) -> None:
    torch.manual_seed(0)
    model = build().eval()  # type: ignore[operator]
    model.generation_config.pad_token_id = 0
    for name in ("a", "b"):
        mlra.add_adapter(model, name, AdapterSpec(rank=2, alpha=8, targets=targets))
    _randomise(model, seed=4)
    ids = torch.randint(1, 40, (2, 4), generator=torch.Generator().manual_seed(2))
    kw = {"max_new_tokens": 5, "do_sample": False, **how}
    with torch.no_grad():
        with mlra.route(model, ["a", "b"]):
            mixed = model.generate(ids, **kw)
        per_row = mixed.shape[0] // 2
        for i, name in enumerate(["a", "b"]):
            mlra.set_active(model, name)
            alone = model.generate(ids[i : i + 1], **kw)
            assert torch.equal(mixed[i * per_row : (i + 1) * per_row], alone)
        mlra.set_active(model, "a")
        assert not torch.equal(model.generate(ids, **kw)[per_row:], mixed[per_row:])


def test_data_parallel_replicas_honour_disabled_and_refuse_route() -> None:
    """DataParallel copies every layer (``_replicate_for_data_parallel``) and runs the copies in
    fresh threads, which see no ContextVar; the layers' own attribute carries ``disabled``. Each
    replica sees a slice of the batch, which route() cannot match to its rows: refused."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4))
    mlra.add_adapter(model, "a", AdapterSpec(rank=2, targets=["0"]))
    _randomise(model)
    x = torch.randn(2, 4)
    results: dict[str, torch.Tensor | Exception] = {}

    def replica_forward(key: str) -> None:
        replica = model[0]._replicate_for_data_parallel()
        try:
            results[key] = replica(x)
        except Exception as exc:  # the test inspects it below
            results[key] = exc

    def in_thread(key: str) -> None:
        thread = threading.Thread(target=replica_forward, args=(key,))
        thread.start()
        thread.join()

    with torch.no_grad():
        base = model[0].base_layer(x)
        in_thread("active")
        with mlra.disabled(model):
            in_thread("disabled")
        with mlra.route(model, [None, "a"]):
            in_thread("route")
    assert torch.equal(results["disabled"], base)  # type: ignore[arg-type]
    assert not torch.equal(results["active"], base)  # type: ignore[arg-type]
    assert isinstance(results["route"], ConfigError) and "DataParallel" in str(results["route"])


def test_a_long_route_block_sees_weights_changed_in_place() -> None:
    """Route keeps the stacked adapters between no-grad forwards (one per generated token); a
    weight changed in place inside the block is seen by the next forward."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4))
    mlra.add_adapter(model, "a", AdapterSpec(rank=2, targets=["0"]))
    _randomise(model)
    x = torch.randn(2, 4)
    with torch.no_grad(), mlra.route(model, ["a", None]):
        first = model(x)
        assert torch.equal(model(x), first)
        model[0].b_weight("a").mul_(2.0)
        second = model(x)
    with torch.no_grad():
        alone = model(x[:1])
    assert not torch.equal(second[:1], first[:1])
    torch.testing.assert_close(second[:1], alone)


def test_a_bf16_llama_equals_peft_bit_for_bit(tmp_path: Path) -> None:
    """The case that differed by 0.01–0.03: float32 adapters on a bfloat16 base, as PEFT."""
    import peft

    torch.manual_seed(0)
    model = _tiny_llama().to(torch.bfloat16).eval()
    base = _tiny_llama()
    base.load_state_dict(model.state_dict())
    base = base.to(torch.bfloat16).eval()
    targets = ["q_proj", "k_proj", "v_proj", "o_proj"]
    mlra.add_adapter(model, "a", AdapterSpec(rank=4, alpha=8, targets=targets))
    _randomise(model)
    path = tmp_path / "a"
    mlra.save_adapter(model, "a", path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = peft.PeftModel.from_pretrained(base, path).eval()
    ids = torch.randint(0, 48, (2, 7), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours_logits = model(ids).logits
        assert ours_logits.dtype == torch.bfloat16
        assert torch.equal(ours_logits, theirs(ids).logits)
