"""Convolution kind: ``nn.Conv1d`` and ``nn.Conv2d``.

PEFT's layout: A is a convolution like the base one (same kernel, stride and padding) into ``r``
channels, B a 1×1 convolution back to the output channels; ``B A`` as a weight is
``B[o, r] · A[r, i, k…]``. Groups and dilation (which PEFT's A does not follow) are refused.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mlra.adapters.base import AdapterLayer, tensor_of

__all__ = ["LowRankConv", "conv_refusal"]


def conv_refusal(conv: nn.Module) -> str | None:
    """Why a convolution cannot carry an adapter here, or None."""
    assert isinstance(conv, nn.Conv1d | nn.Conv2d)
    if conv.groups != 1:
        return f"it has groups={conv.groups} (grouped convolutions are not supported)"
    if any(d != 1 for d in conv.dilation):
        return f"it has dilation={conv.dilation} (dilated convolutions are not supported)"
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        return (
            f"it pads with padding={conv.padding!r}, padding_mode={conv.padding_mode!r} "
            "(only numeric zero padding is supported)"
        )
    return None


class LowRankConv(AdapterLayer):
    """Wraps one ``nn.Conv1d`` or ``nn.Conv2d``."""

    kind = "conv"

    @classmethod
    def features(cls, base: nn.Module) -> tuple[int, int]:
        return int(tensor_of(base).shape[1]), int(tensor_of(base).shape[0])

    @classmethod
    def pair_shapes(cls, base: nn.Module, rank: int) -> dict[str, tuple[int, ...]]:
        out_ch, in_ch, *kernel = tensor_of(base).shape
        ones = (1,) * len(kernel)
        return {"A": (rank, int(in_ch), *map(int, kernel)), "B": (int(out_ch), rank, *ones)}

    def make_pair(self, rank: int, factory: dict[str, Any]) -> tuple[nn.Module, nn.Module]:
        base = self.base_layer
        assert isinstance(base, nn.Conv1d | nn.Conv2d)
        conv: Any = type(base)  # Conv1d or Conv2d: the same arguments, tuples of 1 or 2
        ones = (1,) * len(base.kernel_size)
        a = conv(base.in_channels, rank, base.kernel_size, base.stride, base.padding, bias=False,
                 **factory)  # fmt: skip
        b = conv(rank, base.out_channels, ones, ones, bias=False, **factory)
        return a, b

    def delta(self, name: str) -> torch.Tensor:
        a = self.a_weight(name).float()  # [r, in, k…]
        b = self.b_weight(name).float()  # [out, r, 1…]
        return (b.flatten(1) @ a.flatten(1)).view(b.shape[0], *a.shape[1:])  # [out, in, k…]
