"""Which layers can carry an adapter, as which kind, and which must be refused (and why).

A layer is refused when wrapping it would be silently wrong: its parent computes with the layer's
weights directly (``nn.MultiheadAttention`` passes ``out_proj.weight`` to its functional form, so
an adapter there would never run: the attention itself is the target, which adapts both of its
projections), or the layer has options the adapter cannot follow.
"""

from __future__ import annotations

from torch import nn

from mlra.adapters.attention import LowRankMultiheadAttention, attention_refusal
from mlra.adapters.base import AdapterLayer
from mlra.adapters.conv import LowRankConv, conv_refusal
from mlra.adapters.embedding import LowRankEmbedding
from mlra.adapters.linear import LowRankConv1D, LowRankLinear, is_hf_conv1d

__all__ = ["SUPPORTED", "adapter_class", "refusal", "wrap"]

SUPPORTED = (
    "nn.Linear, transformers Conv1D, nn.Conv1d, nn.Conv2d, nn.Embedding and nn.MultiheadAttention"
)


def adapter_class(module: nn.Module) -> type[AdapterLayer] | None:
    """The adapter kind for ``module`` (a plain layer or one already wrapped), or None."""
    if isinstance(module, AdapterLayer):
        return type(module)
    if isinstance(module, nn.Linear):
        return LowRankLinear
    if is_hf_conv1d(module):
        return LowRankConv1D
    if isinstance(module, nn.Conv1d | nn.Conv2d):
        return LowRankConv
    if isinstance(module, nn.Embedding):
        return LowRankEmbedding
    if isinstance(module, nn.MultiheadAttention):
        return LowRankMultiheadAttention
    return None


def refusal(parent: nn.Module | None, child: str, module: nn.Module) -> str | None:
    """Why ``module`` (attribute ``child`` of ``parent``) must not be wrapped, or None."""
    base = module.base_layer if isinstance(module, AdapterLayer) else module
    if isinstance(parent, nn.MultiheadAttention | LowRankMultiheadAttention):
        return (
            f"nn.MultiheadAttention computes with {child}.weight itself "
            "(F.multi_head_attention_forward), so an adapter on it would never run; target the "
            "attention module instead (its adapter covers in_proj and out_proj, as in PEFT)"
        )
    if isinstance(base, nn.MultiheadAttention):
        return attention_refusal(base)
    if isinstance(base, nn.Conv1d | nn.Conv2d):
        return conv_refusal(base)
    if isinstance(base, nn.Embedding) and (base.max_norm is not None or base.sparse):
        return "it has max_norm or sparse gradients set (not supported for adapters)"
    if adapter_class(base) is None:
        return f"{type(base).__name__} is not a supported layer ({SUPPORTED})"
    return None


def wrap(module: nn.Module) -> AdapterLayer:
    cls = adapter_class(module)
    assert cls is not None
    return cls(module)
