"""The table of cases: one tiny random-weight model per layer kind (no downloads).

Each case builds its model from a seed (so "the same base" can be built twice), an input batch of
three rows (in dimension ``batch_dim``), and the targets to adapt, like PEFT's custom-model tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[], nn.Module]  # a fresh model with the same base weights every call
    inputs: Callable[[], torch.Tensor]  # three rows
    targets: tuple[str, ...]
    batch_dim: int = 0  # where the rows are (1: a sequence-first model)

    def model(self) -> nn.Module:
        torch.manual_seed(0)
        return self.build().eval()

    def out(self, model: nn.Module, x: torch.Tensor | None = None) -> torch.Tensor:
        x = self.inputs() if x is None else x
        y = model(x)
        return y if isinstance(y, torch.Tensor) else y.last_hidden_state  # type: ignore[no-any-return]


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))  # type: ignore[no-any-return]


class CNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.relu(self.conv1(x)))  # type: ignore[no-any-return]


class Signal(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(4, 6, 3, stride=1, padding=1)
        self.out = nn.Conv1d(6, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.conv(x)))  # type: ignore[no-any-return]


class Tokens(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(40, 12, padding_idx=0)
        self.lin = nn.Linear(12, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(self.emb(x))  # type: ignore[no-any-return]


class Attention(nn.Module):
    """Batch-first self-attention (its adapter covers in_proj and out_proj), then a linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.lin = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(self.attn(x, x, x, need_weights=False)[0])  # type: ignore[no-any-return]


def seq_first_encoder_layer() -> nn.Module:
    """PyTorch's own encoder layer, sequence first: inputs are [sequence, batch, features]
    (pre-norm, so that the output is not normalised: a loss on it has a gradient)."""
    return nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, norm_first=True)


def tiny_gpt2() -> nn.Module:
    from transformers import GPT2Config, GPT2Model

    config = GPT2Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=2, n_head=2)
    return GPT2Model(config)


def _ids(vocab: int) -> Callable[[], torch.Tensor]:
    return lambda: torch.randint(1, vocab, (3, 6), generator=torch.Generator().manual_seed(5))


def _randn(*shape: int) -> Callable[[], torch.Tensor]:
    return lambda: torch.randn(*shape, generator=torch.Generator().manual_seed(5))


CASES = [
    Case("linear", MLP, _randn(3, 8), ("fc1", "fc2")),
    Case("conv1d-hf", tiny_gpt2, _ids(50), ("c_attn", "c_proj")),
    Case("conv2d", CNN, _randn(3, 3, 6, 6), ("conv1", "conv2")),
    Case("conv1d", Signal, _randn(3, 4, 10), ("conv", "out")),
    Case("embedding", Tokens, _ids(40), ("emb", "lin")),
    Case("attention", Attention, _randn(3, 5, 8), ("attn", "lin")),
    Case(
        "attention-seq-first", seq_first_encoder_layer, _randn(5, 3, 8), ("self_attn", "linear1"), 1
    ),
]
