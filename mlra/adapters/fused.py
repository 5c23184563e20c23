"""One autograd node for a training step through ``nn.Linear`` plus one low-rank adapter.

    y = x Wᵀ + b + coef · (x Aᵀ) Bᵀ

Computed as autograd would compute the two branches (the same products, in the same order), but
the sums happen in place: the adapter's product is accumulated into the base output, and in the
backward pass the adapter's share of ``∂L/∂x`` into the base's. On a CPU each of those saves a
fresh [tokens × features] tensor and a pass over it (an unfused LoRA step allocates two more such
tensors per layer than the frozen layer alone). ``LowRankLinear`` uses it only where nothing can
tell the difference (see ``LowRankLinear.fused``); gradients match the unfused path to rounding.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["FusedLowRankLinear"]


class FusedLowRankLinear(torch.autograd.Function):
    """``apply(x, weight, bias, a, b, coef)``: ``F.linear(x, weight, bias) + coef · b(a(x))``."""

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, a: Tensor, b: Tensor, coef: float
    ) -> Tensor:
        flat = x.reshape(-1, x.shape[-1])  # [tokens, in]
        h = flat @ a.T  # [tokens, r]
        y = flat @ weight.T if bias is None else torch.addmm(bias, flat, weight.T)
        y.addmm_(h, b.T, alpha=coef)  # [tokens, out]
        ctx.save_for_backward(flat, h, weight, a, b)
        ctx.coef, ctx.has_bias = coef, bias is not None
        return y.view(*x.shape[:-1], y.shape[-1])

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        flat, h, weight, a, b = ctx.saved_tensors
        need_x, need_w, need_bias, need_a, need_b, _ = ctx.needs_input_grad
        g = grad.reshape(-1, grad.shape[-1])  # [tokens, out]
        g_h = (g @ b).mul_(ctx.coef)  # [tokens, r]
        g_x = g_w = g_bias = g_a = g_b = None
        if need_x:
            g_x = torch.mm(g, weight).addmm_(g_h, a).view(*grad.shape[:-1], flat.shape[-1])
        if need_w:
            g_w = g.T @ flat
        if need_bias and ctx.has_bias:
            g_bias = g.sum(0)
        if need_a:
            g_a = g_h.T @ flat  # [r, in]
        if need_b:
            g_b = (g.T @ h).mul_(ctx.coef)  # [out, r]
        return g_x, g_w, g_bias, g_a, g_b, None
