"""mlra artifacts load in HF PEFT, and PEFT's LoRA adapters load in mlra, with the same outputs.

Each test prints the measured max abs difference of the last hidden states (run with ``-s``).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import mlra
from mlra import AdapterSpec
from mlra.artifact import MANIFEST_FILE
from tests.conftest import WrappedBert as Wrapped
from tests.conftest import make_tiny_bert

peft = pytest.importorskip("peft")

TOL = 1e-5  # float32; measured: 0.0 (both compute base(x) + scaling · B(A(x)) in the same order)


def _ids() -> torch.Tensor:
    return torch.arange(24).reshape(2, 12) % 64


def _out(model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=_ids()).last_hidden_state  # type: ignore[no-any-return]


def _randomise_b(model: nn.Module, seed: int = 3) -> None:
    """Non-zero B everywhere (a fresh adapter is the identity, which would prove nothing)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_B." in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)


def _report(direction: str, diff: float) -> None:
    print(f"\nPEFT interop {direction}: max abs diff {diff:.3g}")


@pytest.mark.parametrize("rslora", [False, True], ids=["lora", "rslora"])
def test_an_mlra_artifact_loads_in_peft(rslora: bool, tmp_path: Path) -> None:
    model = make_tiny_bert(0)
    spec = AdapterSpec(rank=4, alpha=12, targets=["query", "value"], rslora=rslora)
    mlra.add_adapter(model, "airline", spec)
    _randomise_b(model)
    expected = _out(model)
    assert (expected - _out(make_tiny_bert(0))).abs().max() > 0.1  # the adapter matters
    mlra.save_adapter(model, "airline", tmp_path / "a")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        peft_model = peft.PeftModel.from_pretrained(make_tiny_bert(0), tmp_path / "a").eval()
    assert not [w for w in caught if "key" in str(w.message).lower()], [
        str(w.message) for w in caught
    ]
    layer = peft_model.base_model.model.encoder.layer[1].attention.self.value
    assert torch.equal(
        layer.lora_B["default"].weight,
        model.encoder.layer[1].attention.self.value.B("airline").weight,
    )
    assert layer.scaling["default"] == pytest.approx(spec.scaling)
    diff = (_out(peft_model) - expected).abs().max().item()
    _report(f"mlra -> PEFT ({'rslora' if rslora else 'lora'})", diff)
    assert diff < TOL
    with torch.no_grad(), peft_model.disable_adapter():  # and the base under it is untouched
        assert torch.equal(_out(peft_model), _out(make_tiny_bert(0)))


@pytest.mark.parametrize("rslora", [False, True], ids=["lora", "rslora"])
def test_a_peft_adapter_loads_in_mlra(rslora: bool, tmp_path: Path) -> None:
    config = peft.LoraConfig(
        r=4, lora_alpha=12, target_modules=["query", "value"], use_rslora=rslora, lora_dropout=0.1
    )
    peft_model = peft.get_peft_model(make_tiny_bert(0), config).eval()
    _randomise_b(peft_model)
    expected = _out(peft_model)
    assert (expected - _out(make_tiny_bert(0))).abs().max() > 0.1  # the adapter matters
    peft_model.save_pretrained(tmp_path / "p")
    assert not (tmp_path / "p" / MANIFEST_FILE).exists()

    model = make_tiny_bert(0)
    with pytest.raises(mlra.errors.IntegrityError, match="manifest"):
        mlra.load_adapter(model, tmp_path / "p")
    with pytest.warns(UserWarning, match="no manifest.json"):
        name = mlra.load_adapter(model, tmp_path / "p", strict=False)
    assert name == "default"
    spec = mlra.adapter_spec(model, name)
    assert (spec.rank, spec.alpha, spec.rslora, spec.dropout) == (4, 12.0, rslora, 0.1)
    assert len(mlra.adapters.adapter_modules(model, name)) == 4  # query and value of 2 layers
    diff = (_out(model) - expected).abs().max().item()
    _report(f"PEFT -> mlra ({'rslora' if rslora else 'lora'})", diff)
    assert diff < TOL


def test_modules_to_save_travel_both_ways(tmp_path: Path) -> None:
    """A head saved as modules_to_save: mlra -> PEFT, and PEFT -> mlra."""
    trained = Wrapped(0)
    mlra.add_adapter(trained, "a", AdapterSpec(rank=4, targets=["query", "value"]))
    _randomise_b(trained)
    with torch.no_grad():
        trained.head.weight.mul_(-2.0)
        expected = trained(_ids())
    mlra.save_adapter(trained, "a", tmp_path / "m", modules_to_save=["head"])
    peft_model = peft.PeftModel.from_pretrained(Wrapped(0), tmp_path / "m").eval()
    with torch.no_grad():
        diff = (peft_model(_ids()) - expected).abs().max().item()
    _report("mlra -> PEFT (with modules_to_save)", diff)
    assert diff < TOL

    config = peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["query", "value"], modules_to_save=["head"]
    )
    peft_model = peft.get_peft_model(Wrapped(0), config).eval()
    _randomise_b(peft_model)
    with torch.no_grad():
        peft_model.base_model.model.head.modules_to_save["default"].bias.add_(1.0)
        expected = peft_model(_ids())
    peft_model.save_pretrained(tmp_path / "p")
    assert json.loads((tmp_path / "p" / "adapter_config.json").read_text())["modules_to_save"] == [
        "head"
    ]
    model = Wrapped(0)
    with pytest.warns(UserWarning, match="no manifest"):
        mlra.load_adapter(model, tmp_path / "p", strict=False)
    with torch.no_grad():
        diff = (model(_ids()) - expected).abs().max().item()
    _report("PEFT -> mlra (with modules_to_save)", diff)
    assert diff < TOL


def test_gpt2_and_embedding_adapters_use_peft_names_and_flags(tmp_path: Path) -> None:
    """GPT-2's Conv1D stores weights in × out: PEFT marks such adapters ``fan_in_fan_out=True``
    (mlra used to refuse them); embedding adapters use PEFT's ``lora_embedding_A/B`` names."""
    from safetensors.torch import load_file

    from tests.adapters.cases import tiny_gpt2

    torch.manual_seed(0)
    config = peft.LoraConfig(r=2, lora_alpha=4, target_modules=["c_attn", "wte"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "fan_in_fan_out is set to False but ... Conv1D"
        theirs = peft.get_peft_model(tiny_gpt2(), config).eval()
    _randomise_b(theirs)
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            if "lora_embedding_A" in name:
                p.normal_()  # PEFT starts embedding A at zero
    theirs.save_pretrained(tmp_path / "p")
    saved = json.loads((tmp_path / "p" / "adapter_config.json").read_text())
    assert saved["fan_in_fan_out"] is True
    ids = _ids() % 50
    torch.manual_seed(0)
    ours = tiny_gpt2().eval()
    with pytest.warns(UserWarning, match="no manifest"):
        mlra.load_adapter(ours, tmp_path / "p", strict=False)
    with torch.no_grad():
        expected = theirs(input_ids=ids).last_hidden_state
        diff = (ours(input_ids=ids).last_hidden_state - expected).abs().max().item()
    _report("PEFT -> mlra (GPT-2 Conv1D + embedding)", diff)
    assert diff < TOL

    mlra.save_adapter(ours, "default", tmp_path / "m")
    written = json.loads((tmp_path / "m" / "adapter_config.json").read_text())
    assert written["fan_in_fan_out"] is True
    assert set(load_file(tmp_path / "m" / "adapter_model.safetensors")) == set(
        load_file(tmp_path / "p" / "adapter_model.safetensors")
    )
