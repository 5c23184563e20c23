"""Shared fixtures: tiny models (no downloads) and offline, quiet process defaults."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from mlra._env import apply_runtime_defaults

os.environ.setdefault("MLRA_HOME", os.path.join(os.path.dirname(__file__), "..", ".mlra", "test"))
# signing keys of the tests' actors (pipeline, approvers): never the user's own keyring
os.environ.setdefault("MLRA_KEYS", os.path.join(os.environ["MLRA_HOME"], "keys"))
apply_runtime_defaults()


@pytest.fixture
def tiny_mlp():  # type: ignore[no-untyped-def]
    """A 3-layer MLP with named Linear layers (fc1, fc2 inside a block, out)."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc2 = nn.Linear(16, 16)
            self.act = nn.GELU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.act(self.fc2(x))

    class MLP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(8, 16)
            self.block = Block()
            self.out = nn.Linear(16, 4, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(self.block(torch.relu(self.fc1(x))))

    torch.manual_seed(0)
    return MLP()


def make_tiny_bert(seed: int = 0):  # type: ignore[no-untyped-def]
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=48,
        max_position_embeddings=32,
    )
    return BertModel(config).eval()


@pytest.fixture
def tiny_bert():  # type: ignore[no-untyped-def]
    """A random 2-layer BertModel from a transformers config (no download)."""
    return make_tiny_bert()


class WrappedBert(nn.Module):
    """A user's classifier around a tiny BertModel: the adapter's modules sit under ``bert.``."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.bert = make_tiny_bert(seed)
        torch.manual_seed(seed + 100)
        self.head = nn.Linear(32, 3)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.bert(input_ids=input_ids).last_hidden_state[:, 0])
        return out
