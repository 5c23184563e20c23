"""The base fingerprint: stable across instances and processes, sensitive to the touched weights."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import torch

import mlra
from mlra import AdapterSpec

from ..conftest import make_tiny_bert


def _fingerprinted(seed: int = 0, dtype: torch.dtype = torch.float32) -> str:
    model = make_tiny_bert(seed).to(dtype)
    mlra.add_adapter(model, "a", AdapterSpec(rank=2))
    return mlra.fingerprint(model)


def test_same_weights_same_fingerprint_other_weights_other_fingerprint() -> None:
    fp = _fingerprinted()
    assert re.fullmatch(r"[0-9a-f]{64}", fp), fp  # a hex sha256
    assert _fingerprinted() == fp
    assert _fingerprinted(seed=1) != fp
    assert _fingerprinted(dtype=torch.bfloat16) != fp


def test_only_the_touched_weights_count(tiny_bert) -> None:  # type: ignore[no-untyped-def]
    mlra.add_adapter(tiny_bert, "a", AdapterSpec(rank=2))
    mlra.add_adapter(tiny_bert, "b", AdapterSpec(rank=2, targets=["key"]))
    fp_all, fp_a = mlra.fingerprint(tiny_bert), mlra.fingerprint(tiny_bert, "a")
    with torch.no_grad():
        tiny_bert.embeddings.word_embeddings.weight.add_(1.0)  # not touched by any adapter
        assert mlra.fingerprint(tiny_bert, "a") == fp_a
        tiny_bert.encoder.layer[1].attention.self.key.base_layer.bias.add_(1e-3)
        assert mlra.fingerprint(tiny_bert, "a") == fp_a  # "a" does not cover key
        assert mlra.fingerprint(tiny_bert) != fp_all
        tiny_bert.encoder.layer[0].attention.self.value.base_layer.weight[0, 0] += 1e-6
        assert mlra.fingerprint(tiny_bert, "a") != fp_a


def test_the_same_in_another_process() -> None:
    code = textwrap.dedent(
        """
        import mlra
        from tests.conftest import make_tiny_bert
        model = make_tiny_bert(0)
        mlra.add_adapter(model, "a", mlra.AdapterSpec(rank=2))
        print(mlra.fingerprint(model))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == _fingerprinted()
